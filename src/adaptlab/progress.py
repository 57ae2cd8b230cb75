"""Progress on stderr for the long loops (training steps, examples scored).

On a terminal: a tqdm bar, redrawn in place. Anywhere else (a log file, a pipe, ``nohup``, CI),
where a bar would be either nothing or a mess of carriage returns: plain lines, one every 10% of
the total or every 30 s, whichever comes first, and one at the end; none in the first 5 s, so a
short command (or a command that fails at once) keeps its stderr to its result or its one error line:

    train lora: 30/120 (25%), 12 s, ~36 s left, loss=0.4312

``bar(total, desc, enabled=...)`` picks one; both have ``update(n)``, ``set_postfix(**values)``
and ``close()``. ``ADAPTLAB_PROGRESS=lines`` forces the plain lines (``bar`` a bar, ``off``
neither, and no status lines).

A long step with no count to show (loading a model, converting a GGUF file) says what it is doing
with ``with status("loading smollm2-135m-instruct"):``: a line ``loading smollm2-135m-instruct ...``
once the step has run ``STATUS_AFTER`` seconds (at once with ``after=0``, for a step known to be
long), and ``loading smollm2-135m-instruct: done in 41 s`` at its end; a step that ends sooner
prints nothing, and one that fails prints no end line (its error is the line that follows).

``Rows`` turns an engine's progress (``lm.progress(n, total)``: n more of the ``total`` rows of one
call, after each forward) into finished examples of a chunk, so a bar over examples moves while a
chunk of them is scored instead of jumping a whole chunk at once.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

EVERY_FRACTION = 0.1
EVERY_SECONDS = 30.0
QUIET_SECONDS = 5.0      # no lines before this: a short job prints none
STATUS_AFTER = 2.0       # a status line once a step has run this long


def _mode() -> str:
    return os.environ.get("ADAPTLAB_PROGRESS", "").strip().lower()


@contextmanager
def status(what: str, *, after: float | None = None, stream=None, clock=time.monotonic):
    """``what ...`` on stderr once the step has run ``after`` seconds, ``what: done in N s`` at its end."""
    if _mode() == "off":
        yield
        return
    stream = stream if stream is not None else sys.stderr
    after = STATUS_AFTER if after is None else after
    t0 = clock()
    lock = threading.Lock()
    state = {"shown": False, "over": False}

    def say(line: str) -> None:
        if bars_shown(stream):          # above any bar drawn at the time, not through it
            from tqdm import tqdm

            tqdm.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)

    def show() -> None:
        with lock:
            if not state["over"]:
                say(f"{what} ...")
                state["shown"] = True

    timer = None
    if after <= 0:
        show()
    else:
        timer = threading.Timer(after, show)
        timer.daemon = True
        timer.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        if timer is not None:
            timer.cancel()
        with lock:
            state["over"] = True
            if ok and state["shown"]:
                say(f"{what}: done in {clock() - t0:.0f} s")


class Rows:
    """Examples done within one chunk of ``n`` examples, from an engine's row progress.

    ``rows(k, total)`` after each forward of an engine call (k more of its ``total`` rows) moves
    ``update`` by the examples that fraction stands for (at most ``n - 1``: a strategy may make more
    calls for the chunk); ``finish()`` moves it to ``n`` once the chunk's predictions are back."""

    def __init__(self, n: int, update):
        self.n, self.update, self.frac, self.done = n, update, 0.0, 0

    def rows(self, k: int, total: int | None = None) -> None:
        self.frac += k / total if total else 0.0
        now = min(self.n - 1, int(self.n * self.frac))
        if now > self.done:
            self.update(now - self.done)
            self.done = now

    def finish(self) -> None:
        if self.n > self.done:
            self.update(self.n - self.done)
            self.done = self.n


class Lines:
    """Plain progress lines: at every ``every_fraction`` of ``total`` or ``every_seconds``, and at close."""

    def __init__(self, total: int | None, desc: str, *, initial: int = 0, stream=None,
                 every_fraction: float = EVERY_FRACTION, every_seconds: float = EVERY_SECONDS,
                 quiet_seconds: float | None = None, clock=time.monotonic):
        self.total, self.desc, self.n, self.start_n = total, desc, initial, initial
        self.stream = stream if stream is not None else sys.stderr
        self.every_n = max(1, round(total * every_fraction)) if total else None
        self.every_s, self.clock = every_seconds, clock
        self.quiet_s = QUIET_SECONDS if quiet_seconds is None else quiet_seconds
        self.printed = False
        self.t0 = self.t_last = clock()
        self.n_last = initial
        self.postfix = ""
        self.closed = False

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.t0 < self.quiet_s:
            return
        if (self.every_n and (self.n // self.every_n) > (self.n_last // self.every_n)) \
                or now - self.t_last >= self.every_s:
            self._line(now)

    def _line(self, now: float) -> None:
        el = now - self.t0
        parts = [f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}",
                 f"{el:.0f} s"]
        done = self.n - self.start_n
        if self.total and 0 < done and self.n < self.total:
            parts.append(f"~{el / done * (self.total - self.n):.0f} s left")
        if self.postfix:
            parts.append(self.postfix)
        print(f"{self.desc}: " + ", ".join(parts), file=self.stream, flush=True)
        self.t_last, self.n_last, self.printed = now, self.n, True

    def close(self) -> None:
        now = self.clock()
        if not self.closed and self.n != self.n_last and (self.printed or now - self.t0 >= self.quiet_s):
            self._line(now)
        self.closed = True


def bars_shown(stream=None) -> bool:
    """Whether ``bar`` draws tqdm bars on ``stream`` (default stderr), not lines or nothing."""
    stream = stream if stream is not None else sys.stderr
    mode = _mode()
    return mode == "bar" or (mode not in ("lines", "off") and getattr(stream, "isatty", lambda: False)())


def bar(total: int | None, desc: str, *, enabled: bool = True, initial: int = 0, leave: bool = True,
        stream=None):
    """A tqdm bar on a terminal, :class:`Lines` elsewhere, a silent bar when not ``enabled``."""
    from tqdm import tqdm

    stream = stream if stream is not None else sys.stderr
    mode = _mode()
    if not enabled or mode == "off":
        return tqdm(total=total, disable=True)
    tty = getattr(stream, "isatty", lambda: False)()
    if mode == "lines" or (mode != "bar" and not tty):
        return Lines(total, desc, initial=initial, stream=stream)
    return tqdm(total=total, initial=initial, desc=desc, file=stream, dynamic_ncols=True, leave=leave)
