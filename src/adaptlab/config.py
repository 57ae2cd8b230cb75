"""Typed configs: one dataclass per concern drives the Python API, the CLI's ``--set k=v``
values and YAML. Also the strict YAML loader (unknown or duplicate keys are errors, no tags
that build objects) and the atomic file writers every output goes through."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from adaptlab.errors import ConfigError

# --------------------------------------------------------------------------- --set parsing


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["r=8", "alpha=16"]`` -> ``{"r": "8", "alpha": "16"}``; values stay strings until a
    dataclass field gives them a type."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key in out:
            raise ConfigError(f"--set {key}: given twice")
        out[key] = value.strip()
    return out


def _coerce(name: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is typing.Literal:
        for a in args:
            if str(a) == str(value):
                return a
        raise ConfigError(f"{name}={value!r}: must be one of {', '.join(map(str, args))}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r}: expected true or false")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: expected an integer")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={value!r}: expected an integer") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: expected a number")
        try:
            out = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name}={value!r}: expected a number") from None
        if not math.isfinite(out):                  # nan / inf: every setting is a finite number
            raise ConfigError(f"{name}={value!r}: must be a finite number")
        return out
    if typ is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}={value!r}: expected text")
        return str(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r}: expected a list")
        inner = args[0] if args else str
        items = [_coerce(name, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    return value


def build_config(cls, values: dict[str, Any] | None = None, *, where: str = "--set"):
    """Make ``cls`` (a dataclass) from defaults plus ``values`` (strings from the CLI or typed
    values from YAML). Unknown keys and wrong types raise ``ConfigError``; the dataclass's
    own ``__post_init__`` checks ranges."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} for {cls.__name__}; known: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def config_dict(cfg) -> dict[str, Any]:
    """JSON-safe dict of a config dataclass (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def check(cond: bool, message: str) -> None:
    """Range checks inside ``__post_init__``: raise ValueError, turned into ConfigError."""
    if not cond:
        raise ValueError(message)


# --------------------------------------------------------------------------- strict YAML


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, not a {type(key).__name__}", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str) -> Any:
    """Safe YAML (no object tags) that refuses duplicate keys. Raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


# --------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    """The process umask, read without changing it (Linux's /proc; else set and restore it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place, so a reader (or a
    crash) never sees half a file. The file gets the mode ``open()`` would give it (0666 less the
    umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder: str | os.PathLike) -> None:
    """Delete what an ``atomic_write_bytes`` killed before its rename left in ``folder``
    (``.<name>.<random>.tmp``): never a file anyone reads, so nothing is lost."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            if p.is_file():
                p.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
