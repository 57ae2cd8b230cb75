"""Crash safety: ``adaptlab tune`` killed with SIGKILL at 10 points spread over a run, resumed
each time, ends with the same adapter as an uninterrupted run (bitwise, fp32), and no file under
its own name is ever partial."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

STEPS = 24



def _argv(model, out, resume=False):
    return [sys.executable, "-m", "adaptlab", "tune", "--task", "reviews", "--method", "lora", "--model", model,
            "--out", str(out), "--max-steps", str(STEPS), "--train-limit", "48", "--batch-size", "2",
            "--set", "r=2", "--set", "eval=false", "--set", "save_every=2", "--set", "log_every=1",
            *(["--resume"] if resume else [])]


def _env(tmp):
    # a fixed thread count: --threads auto follows the machine's load, and a float sum split over
    # 1 or 2 threads differs in its last bit, so bitwise equality needs the same count every run
    return dict(os.environ, ADAPTLAB_CACHE=str(tmp / "cache"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                ADAPTLAB_THREADS="1")


def _steps_logged(out: Path) -> int:
    log = out / "log.jsonl"
    if not log.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in log.read_text().splitlines() if line.strip().endswith("}")]
    return max(steps, default=0)


def _check_no_partial_files(out: Path) -> None:
    """Every file under its real name is whole: JSON parses, safetensors load."""
    for p in out.rglob("*"):
        if not p.is_file() or p.name.startswith(".") or p.parent.name.endswith(".tmp"):
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".safetensors":
            load_file(p)


def test_sigkill_at_ten_points_then_resume_equals_uninterrupted(tmp_path, tiny_folder):
    env = _env(tmp_path)
    ref = tmp_path / "ref"
    subprocess.run(_argv(tiny_folder, ref), env=env, check=True, capture_output=True)
    points = [1, 3, 5, 8, 10, 12, 15, 17, 19, 22]
    out = tmp_path / "killed"
    kills = 0
    for k in points:
        resume = (out / "tune_config.json").exists()
        proc = subprocess.Popen(_argv(tiny_folder, out, resume), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while proc.poll() is None and _steps_logged(out) < k and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        _check_no_partial_files(out)
        assert not (out / "adapter_model.safetensors").exists() or _steps_logged(out) >= STEPS
    r = subprocess.run(_argv(tiny_folder, out, resume=True), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert kills >= 8, f"only {kills} kills landed mid-run"
    a = load_file(ref / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key
    _check_no_partial_files(out)


def _compare_argv(model, out):
    return [sys.executable, "-m", "adaptlab", "compare", "--task", "reviews", "--model", model, "--out", str(out),
            "--runs", "zero-shot,few-shot:k=2,lora:r=2", "--limit", "6", "--train-limit", "16", "--max-steps", "6",
            "--batch-size", "2"]


def test_compare_sigkilled_then_rerun_keeps_finished_runs(tmp_path, tiny_folder):
    env = _env(tmp_path)
    ref = tmp_path / "ref"
    subprocess.run(_compare_argv(tiny_folder, ref), env=env, check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_compare_argv(tiny_folder, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:   # kill once the tuning run has started
        if (out / "runs").exists() and any((out / "runs").iterdir()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["run"] for r in finished] == ["zero-shot", "few-shot:k=2"]
    r = subprocess.run(_compare_argv(tiny_folder, out), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 finished run(s) kept, 1 to do" in r.stderr
    got = [json.loads(line) for line in results.read_text().splitlines()]
    want = [json.loads(line) for line in (ref / "results.jsonl").read_text().splitlines()]
    assert all(g.get("status") == "ok" for g in got + want), [g.get("error") for g in got + want]
    assert [(g["run"], g["metrics"]) for g in got] == [(w["run"], w["metrics"]) for w in want]
    assert got[:2] == finished                       # finished runs were not redone
