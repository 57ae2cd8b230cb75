"""The one place that checks where outputs go, and locks output folders.

* ``check_place(path, kind)``: before any work starts, a ``--out`` (a file for ``eval``, a folder
  for ``tune``/``pretrain``/``compare``/``merge``) must be writable: not a folder where a file is
  wanted (or a file where a folder is), not under a file, and its nearest existing folder must
  take a new file (probed by creating and removing one, so a read-only mount or a full quota is
  found too, whoever the user is). An evaluation is never run only to fail at its last step.
* ``claim_folder(path)``: a lock on an output folder for as long as a run writes into it, so a
  second run on the same ``--out`` is refused with one line while the first lives. The lock is an
  OS file lock (``filelock``: ``flock`` on ``<out>/.adaptlab.lock``), so the kernel drops it when
  its process dies, however it dies: a lock file a killed run left is taken over by the next run
  (the stale lock is recovered), never waited on. The lock file is removed when the run ends; a
  folder the claim created is removed again if the run failed before writing anything in it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from adaptlab.errors import ConfigError

LOCK = ".adaptlab.lock"


def holds_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds anything but a lock file and a killed atomic write's temp files."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return any(not (p.name == LOCK or (p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file()))
               for p in folder.iterdir())


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_place(path: str | os.PathLike, kind: str = "file", what: str = "--out") -> None:
    """Refuse, with one line, an output ``path`` (``kind``: ``file`` or ``folder``) that cannot be
    written. Creates nothing."""
    path = Path(path).expanduser()
    if path.exists() or path.is_symlink():
        if kind == "file" and path.is_dir():
            raise ConfigError(f"{what} {path}: is a folder; give a file name")
        if kind == "folder" and not path.is_dir():
            raise ConfigError(f"{what} {path}: exists and is not a folder; choose another {what}")
        if kind == "file" and not path.is_file():
            raise ConfigError(f"{what} {path}: exists and is not a regular file")
    anc = _existing_ancestor(path)
    if not anc.is_dir():
        raise ConfigError(f"{what} {path}: {anc} is a file, not a folder")
    probe_in = path if (kind == "folder" and path.is_dir()) else anc
    try:
        fd, tmp = tempfile.mkstemp(prefix=".adaptlab-probe.", suffix=".tmp", dir=probe_in)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot write in {probe_in} ({e.strerror})") from None


def _holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return f" ({text[:80]})" if text else ""


@contextlib.contextmanager
def claim_folder(path: str | os.PathLike, what: str = "--out", enabled: bool = True):
    """Hold the lock of output folder ``path`` for the ``with`` block (created if missing). A run
    already holding it: ``ConfigError`` naming its process. ``enabled=False``: no lock (the
    non-main processes of a multi-process launch; the main one holds it)."""
    if not enabled:
        yield None
        return
    from filelock import FileLock, Timeout

    path = Path(path).expanduser()
    check_place(path, "folder", what)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK
    lock = None
    try:
        for _ in range(5):
            lock = FileLock(str(lock_path), timeout=0, is_singleton=False)
            try:
                lock.acquire()
            except Timeout:
                lock = None
                raise ConfigError(f"{what} {path}: another adaptlab run is writing to this folder{_holder(lock_path)}; "
                                  f"wait for it to end or choose another {what}") from None
            # the file we locked must still be the one at the path (a releasing run unlinks it)
            try:
                same = os.path.samestat(os.fstat(lock._context.lock_file_fd), os.stat(lock_path))
            except (OSError, AttributeError, TypeError):
                same = True
            if same:
                break
            lock.release()
            lock = None
        else:
            raise ConfigError(f"{what} {path}: cannot take the folder's lock")
        with open(lock_path, "w", encoding="utf-8") as f:
            f.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        ok = False
        try:
            yield lock
            ok = True
        finally:
            if not ok and created and not holds_files(path):
                shutil.rmtree(path, ignore_errors=True)       # a run that wrote nothing leaves nothing
    finally:
        if lock is not None:
            with contextlib.suppress(OSError):
                lock_path.unlink()                            # unlinked while held: see the samestat check
            lock.release()
        elif created and path.is_dir() and not holds_files(path) and not lock_path.exists():
            shutil.rmtree(path, ignore_errors=True)
