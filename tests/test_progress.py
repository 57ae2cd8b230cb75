"""Progress on stderr (adaptlab.progress): a bar on a terminal, plain lines anywhere else."""

import io

from adaptlab import progress
from adaptlab.progress import Lines, bar


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_lines_every_tenth_and_at_the_end():
    out, clock = io.StringIO(), Clock()
    p = Lines(95, "train lora", stream=out, clock=clock, quiet_seconds=0)
    for _ in range(95):
        clock.t += 1
        p.update(1)
    p.set_postfix(loss="0.1234")
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10                        # 10, 20, ... 90 (every 10% of 95 = 10 steps), then 95 at close
    assert lines[0].startswith("train lora: 10/95 (11%), 10 s, ~85 s left")
    assert lines[-1] == "train lora: 95/95 (100%), 95 s, loss=0.1234"


def test_lines_every_30_seconds_when_progress_is_slow():
    out, clock = io.StringIO(), Clock()
    p = Lines(1000, "eval", stream=out, clock=clock, every_seconds=30, quiet_seconds=0)
    for _ in range(5):
        clock.t += 31
        p.update(1)
    assert len(out.getvalue().splitlines()) == 5


def test_bar_is_lines_off_a_terminal_and_tqdm_on_one(monkeypatch):
    monkeypatch.delenv("ADAPTLAB_PROGRESS", raising=False)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(bar(10, "x", stream=io.StringIO()), Lines)
    assert not isinstance(bar(10, "x", stream=Tty()), Lines)
    silent = bar(10, "x", enabled=False, stream=io.StringIO())
    assert not isinstance(silent, Lines) and silent.disable
    monkeypatch.setenv("ADAPTLAB_PROGRESS", "lines")
    assert isinstance(progress.bar(10, "x", stream=Tty()), Lines)


def test_a_short_job_prints_no_lines():
    out, clock = io.StringIO(), Clock()
    p = Lines(10, "eval", stream=out, clock=clock, quiet_seconds=5)
    for _ in range(10):
        clock.t += 0.4
        p.update(1)
    p.close()
    assert out.getvalue() == ""
    out, clock = io.StringIO(), Clock()
    p = Lines(10, "eval", stream=out, clock=clock, quiet_seconds=5)
    for _ in range(10):
        clock.t += 1
        p.update(1)
    p.close()                                       # the first line once 5 s have passed: 5/10 .. 10/10
    assert [x.split(",")[0] for x in out.getvalue().splitlines()] == [f"eval: {n}/10 (" + f"{10 * n}%)"
                                                                       for n in range(5, 11)]


def test_status_line_before_and_after_a_long_step(monkeypatch):
    monkeypatch.setenv("ADAPTLAB_PROGRESS", "lines")
    out, clock = io.StringIO(), Clock()
    with progress.status("loading smollm2-135m-instruct", after=0, stream=out, clock=clock):
        assert out.getvalue() == "loading smollm2-135m-instruct ...\n"
        clock.t += 41.2
    assert out.getvalue().splitlines()[-1] == "loading smollm2-135m-instruct: done in 41 s"


def test_status_is_silent_for_a_short_step_a_failed_one_and_when_off(monkeypatch):
    monkeypatch.setenv("ADAPTLAB_PROGRESS", "lines")
    out = io.StringIO()
    with progress.status("loading x", after=60, stream=out):      # done long before its line is due
        pass
    assert out.getvalue() == ""
    try:
        with progress.status("loading x", after=0, stream=out):
            raise ValueError("bad")
    except ValueError:
        pass
    assert out.getvalue() == "loading x ...\n"                     # no "done" after a failure
    monkeypatch.setenv("ADAPTLAB_PROGRESS", "off")
    out = io.StringIO()
    with progress.status("loading x", after=0, stream=out):
        pass
    assert out.getvalue() == ""


def test_loading_a_model_says_so(tiny_folder, monkeypatch, capsys):
    from adaptlab.models import load_backbone

    monkeypatch.setenv("ADAPTLAB_PROGRESS", "lines")
    monkeypatch.setattr(progress, "STATUS_AFTER", 0.0)           # a tiny model loads in well under the delay
    load_backbone(tiny_folder)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"loading {tiny_folder} ..." and err[1].startswith(f"loading {tiny_folder}: done in "), err


def test_rows_turn_engine_forwards_into_examples():
    seen = []
    r = progress.Rows(10, seen.append)
    for _ in range(4):
        r.rows(5, 20)                   # four forwards of 5 of the call's 20 rows
    assert seen == [2, 3, 2, 2]         # 2.5, 5, 7.5, 10 examples -> 2, 5, 7, 9: the last waits for the chunk
    r.rows(10, 10)                      # a second call for the same chunk: still below 10
    assert sum(seen) == 9
    r.finish()
    assert sum(seen) == 10 and seen[-1] == 1
