"""The one reader for files a user (or anyone) hands us: data files, task YAML, adapter folders.

Policy, in one place:

* **Regular files only.** A symlink is followed, but what it points at must be a regular file:
  ``/dev/zero``, a FIFO or a socket is refused (it would be read without end). The check is made
  on the open file (``fstat``), so a swap between check and read changes nothing.
* **Size limits, never silent truncation.** A file read whole is refused above ``max_file_bytes``;
  a record (a JSONL line, a text line) above ``max_record_bytes`` is refused with its line number
  before it is held in memory; a text field above ``max_field_chars`` is refused. A YAML document
  whose aliases expand to more than ``max_yaml_nodes`` values (a "billion laughs" document) is
  refused before anything walks it.
* **Finite numbers.** ``check_finite`` refuses NaN / Inf tensors and tensors above
  ``max_abs_weight`` (a weight of 1e30 overflows every matmul into Inf).

The limits are a ``Limits`` dataclass with documented defaults; ``ADAPTLAB_LIMITS`` overrides
them, e.g. ``ADAPTLAB_LIMITS="max_record_bytes=64MiB,max_field_chars=4000000"``.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from adaptlab.config import build_config, check
from adaptlab.errors import ConfigError

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 64 * MiB        # a file read whole: task YAML, adapter JSON, a .txt line file's line
    max_record_bytes: int = 4 * MiB       # one JSONL record (line) or one text line
    max_field_chars: int = 1_000_000      # one text field of a record
    max_yaml_nodes: int = 100_000         # values a YAML document may expand to (aliases counted each time)
    max_abs_weight: float = 1e6           # largest |value| an adapter tensor may hold

    def __post_init__(self):
        for name in ("max_file_bytes", "max_record_bytes", "max_field_chars", "max_yaml_nodes"):
            check(getattr(self, name) >= 1, f"{name}={getattr(self, name)}: must be at least 1")
        check(self.max_abs_weight > 0, f"max_abs_weight={self.max_abs_weight}: must be positive")


def _size(text: str) -> str:
    t = text.strip()
    for suffix, mult in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if t.endswith(suffix):
            return str(int(float(t[: -len(suffix)]) * mult))
    return t


def limits() -> Limits:
    """The limits in force: the defaults, overridden by ``$ADAPTLAB_LIMITS`` (``k=v,k=v``)."""
    env = os.environ.get("ADAPTLAB_LIMITS", "").strip()
    if not env:
        return Limits()
    values = {}
    for item in env.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"ADAPTLAB_LIMITS: {item!r}: expected key=value")
        try:
            values[key.strip()] = _size(value)
        except ValueError:
            raise ConfigError(f"ADAPTLAB_LIMITS: {key.strip()}={value!r}: expected a number") from None
    return build_config(Limits, values, where="ADAPTLAB_LIMITS")


def limit_hint(name: str, cap: Any = None) -> str:
    value = "" if cap is None else f"={cap}"
    return f"the limit {name}{value} (raise it with ADAPTLAB_LIMITS={name}=N)"


def json_error(e: ValueError) -> str:
    """One short line for a JSON value error (CPython's long-integer message names a Python call)."""
    text = str(e).splitlines()[0]
    if "integer string conversion" in text:
        return "an integer of over 4300 digits"
    return text[:120]


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# --------------------------------------------------------------------------- opening files


def open_regular(path: str | os.PathLike, err) -> BinaryIO:
    """Open ``path`` for reading in binary; ``err(why)`` builds the exception to raise. Refuses
    what is not a regular file once opened (a device, a FIFO), and folders."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode        # never open a FIFO: open() itself would block
    except FileNotFoundError:
        raise err("file not found") from None
    except OSError as e:
        raise err(f"cannot read: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise err("is a folder, expected a file")
    if not stat.S_ISREG(mode):
        raise err(_not_regular(path, mode))
    try:
        f = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as e:
        raise err(f"cannot read: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):   # swapped after the check
        f.close()
        raise err("is not a regular file")
    return f


def _not_regular(path: Path, mode: int) -> str:
    kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else
            "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    target = f" ({os.path.realpath(path)})" if path.is_symlink() else ""
    return f"is {kind}{target}, not a regular file; only regular files are read"


def read_bytes(path: str | os.PathLike, err, max_bytes: int | None = None, limit_name: str = "max_file_bytes") -> bytes:
    """All of a regular file, refused (not cut) above ``max_bytes`` (default ``max_file_bytes``)."""
    cap = limits().max_file_bytes if max_bytes is None else max_bytes
    with open_regular(path, err) as f:
        size = os.fstat(f.fileno()).st_size
        if size > cap:
            raise err(f"file is {human(size)}, over {limit_hint(limit_name, cap)}")
        data = f.read(cap + 1)
    if len(data) > cap:                     # grew while we read it
        raise err(f"file is over {limit_hint(limit_name, cap)}")
    return data


def iter_lines(f: BinaryIO, err_at, max_bytes: int | None = None):
    """``(line_number, bytes)`` for each ``\\n``-ended line of ``f`` without its end of line; a
    line longer than ``max_record_bytes`` raises ``err_at(line, why)`` having held only that many
    bytes."""
    cap = limits().max_record_bytes if max_bytes is None else max_bytes
    i = 0
    while True:
        line = f.readline(cap + 1)
        if not line:
            return
        i += 1
        if len(line) > cap and not (len(line) == cap + 1 and line.endswith(b"\n")):
            raise err_at(i, f"record is over {limit_hint('max_record_bytes', f'{cap} bytes')}")
        yield i, line.rstrip(b"\n").rstrip(b"\r")


# --------------------------------------------------------------------------- JSON and YAML values


def read_json(path: str | os.PathLike, err) -> Any:
    """A JSON document from a regular file under ``max_file_bytes``: bad JSON, integers too long
    to convert, nesting too deep and lone surrogates all become ``err(why)``."""
    raw = read_bytes(path, err)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise err(f"not UTF-8 text (byte 0x{raw[e.start]:02x})") from None
    except RecursionError:
        raise err("not readable JSON (nested too deeply)") from None
    except ValueError as e:               # json.JSONDecodeError, or an integer of over 4300 digits
        raise err(f"not readable JSON ({json_error(e)})") from None
    bad = find_unencodable(doc)
    if bad is not None:
        raise err(f"not valid Unicode text: {bad}")
    return doc


def find_unencodable(value: Any, _depth: int = 0) -> str | None:
    """A description of the first string (or key) in ``value`` that is not valid Unicode (a lone
    surrogate such as ``\\ud800``), or None."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                return f"lone surrogate {v[e.start]!r} in {v[max(0, e.start - 20): e.start + 20]!r}"
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return None


def count_nodes(value: Any, cap: int) -> int:
    """Values in ``value`` counted as a walk would meet them (a shared object once per reference,
    as ``dataclasses.asdict`` or ``json.dumps`` expand it), stopping at ``cap + 1``."""
    n = 0
    stack = [value]
    while stack:
        v = stack.pop()
        n += 1
        if n > cap:
            return n
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return n


def check_yaml_size(value: Any, err) -> None:
    cap = limits().max_yaml_nodes
    if count_nodes(value, cap) > cap:
        raise err(f"the document expands to over {cap} values (YAML aliases?), over {limit_hint('max_yaml_nodes', cap)}")


# --------------------------------------------------------------------------- tensors


def check_finite(tensors: dict, err) -> None:
    """Refuse a tensor with NaN or Inf, or one whose largest |value| is over ``max_abs_weight``;
    ``err(name, why)``."""
    import torch

    cap = limits().max_abs_weight
    for name, t in tensors.items():
        if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = t[~finite].flatten()[0].item()
            raise err(name, f"holds non-finite values ({bad}; {int((~finite).sum())} of {t.numel()})")
        big = float(t.detach().abs().max())
        if big > cap:
            raise err(name, f"holds a value of magnitude {big:.3g}, over {limit_hint('max_abs_weight', f'{cap:g}')}")
