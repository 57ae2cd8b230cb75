"""Reliability II (docs/reliability.md): concurrent writers, stale locks, results that must not be
lost at the last step, diverging runs, provenance and leftovers. The one-line bad-input rows are
in tests/test_bad_input.py."""

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from adaptlab.cli import main
from adaptlab.outputs import LOCK, check_place, claim_folder

HOLD = """
import sys, time
from adaptlab.outputs import claim_folder
with claim_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, [line for line in out.err.splitlines() if line.strip()]


@pytest.fixture
def holder():
    """A real second process holding an output folder's lock until killed."""
    procs = []

    def start(folder):
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _tune_argv(model, out):
    return ["tune", "--task", "reviews", "--method", "lora", "--model", model, "--out", str(out), "--max-steps", "1",
            "--train-limit", "4", "--batch-size", "2", "--set", "r=2", "--set", "eval=false"]


def test_second_tune_on_a_live_folder_is_refused_and_a_stale_lock_recovered(tmp_path, tiny_folder, holder, capsys,
                                                                          monkeypatch):
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    first = holder(out)
    code, _, err = _run(_tune_argv(tiny_folder, out), capsys)
    assert code == 2 and len(err) == 1 and "another adaptlab run is writing to this folder" in err[0], err
    assert f"pid {first.pid}" in err[0]
    assert sorted(p.name for p in out.iterdir()) == [LOCK]          # the refused run wrote nothing
    first.kill()
    first.wait()                                                     # killed: its lock file stays, stale
    assert (out / LOCK).exists()
    code, _, err = _run(_tune_argv(tiny_folder, out), capsys)
    assert code == 0, err
    assert (out / "adapter_model.safetensors").exists() and not (out / LOCK).exists()


def test_second_compare_on_a_live_folder_is_refused(tmp_path, holder, capsys):
    out = tmp_path / "cmp"
    holder(out)
    code, _, err = _run(["compare", "--task", "reviews", "--runs", "zero-shot", "--limit", "2", "--out", str(out)],
                        capsys)
    assert code == 2 and len(err) == 1 and "another adaptlab run" in err[0], err


def test_claim_removes_a_folder_it_created_when_the_run_fails(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(RuntimeError), claim_folder(out):
        assert (out / LOCK).exists()
        raise RuntimeError("boom")
    assert not out.exists()
    with claim_folder(out):
        (out / "result.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]


def test_eval_out_full_disk_at_the_end_prints_the_result_and_one_line(tmp_path, tiny_folder, capsys, monkeypatch):
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "res.json"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    import adaptlab.evaluate as ev

    real = ev.evaluate

    def evaluate_then_fill_disk(*a, **k):
        res = real(*a, **k)
        monkeypatch.setattr(os, "fsync", full)                      # the disk fills during the evaluation
        return res

    monkeypatch.setattr(ev, "evaluate", evaluate_then_fill_disk)
    code, stdout, err = _run(["eval", "--task", "reviews", "--limit", "2", "--model", tiny_folder, "--out", str(out)],
                             capsys)
    assert code == 2 and len(err) == 1, err
    assert f"{out}: could not write the result (No space left on device); it is printed above" in err[0]
    assert "accuracy" in stdout                                      # the table is there
    assert list(tmp_path.glob("res.json*")) == [] and list(tmp_path.glob(".res.json*")) == []


def test_eval_adapter_without_model_records_the_adapters_base(tmp_path, tiny_folder, capsys, monkeypatch):
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    ad = tmp_path / "ad"
    assert _run(_tune_argv(tiny_folder, ad), capsys)[0] == 0
    code, stdout, err = _run(["eval", "--task", "reviews", "--limit", "2", "--adapter", str(ad), "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["model"] == doc["config"]["model"] == tiny_folder     # not the default model's name


def test_diverging_training_stops_with_one_line_and_saves_no_adapter(tmp_path, capsys, monkeypatch):
    from conftest import make_tiny_decoder

    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    bb = make_tiny_decoder()
    with torch.no_grad():
        bb.model.model.norm.weight.fill_(float("nan"))                # every loss is NaN
    bb.model.save_pretrained(tmp_path / "nanmodel")
    bb.tokenizer.save_pretrained(tmp_path / "nanmodel")
    out = tmp_path / "run"
    code, _, err = _run(_tune_argv(str(tmp_path / "nanmodel"), out), capsys)
    assert code == 2 and len(err) == 1 and "training diverged at step 1: the loss is nan" in err[0], err
    assert not (out / "adapter_model.safetensors").exists() and not (out / LOCK).exists()


def test_save_adapter_refuses_non_finite_tensors(tmp_path, tiny_decoder):
    from adaptlab.errors import TrainingDiverged
    from adaptlab.tuning import apply_method, get_method
    from adaptlab.tuning.io import save_adapter

    tuned = apply_method(tiny_decoder, "lora", get_method("lora").Config(r=2), None)
    with torch.no_grad():
        next(p for n, p in tuned.named_parameters() if "lora_A" in n).fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="non-finite"):
        save_adapter(tmp_path / "a", tuned)
    assert not (tmp_path / "a" / "adapter_model.safetensors").exists()


def test_full_disk_during_a_checkpoint_leaves_no_checkpoint_tmp(tmp_path, monkeypatch):
    from adaptlab.train import checkpoint

    def full(path, tensors):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "save_tensors", full)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(tmp_path / "checkpoint", {"w": torch.zeros(2)}, {}, {"step": 1},
                                   [torch.get_rng_state()])
    assert list(tmp_path.iterdir()) == []


def test_full_disk_error_is_one_line(tmp_path, capsys, monkeypatch, tiny_folder):
    import importlib

    tune_mod = importlib.import_module("adaptlab.train.tune")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "tune_config.json"))

    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tune_mod, "atomic_write_json", full)
    code, _, err = _run(_tune_argv(tiny_folder, tmp_path / "run"), capsys)
    assert code == 2 and len(err) == 1 and "could not write (No space left on device)" in err[0], err


def test_a_killed_merge_leaves_nothing_the_next_merge_keeps(tmp_path, tiny_folder, capsys, monkeypatch):
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    ad = tmp_path / "ad"
    assert _run(_tune_argv(tiny_folder, ad), capsys)[0] == 0
    out = tmp_path / "merged"
    partial = tmp_path / ".merged.merging"                           # what a kill -9 mid-merge leaves
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 1000)
    out.mkdir()
    (out / LOCK).write_text("pid 1, since long ago\n")               # and its stale lock
    code, _, err = _run(["merge", "--adapter", str(ad), "--out", str(out)], capsys)
    assert code == 0, err
    assert not partial.exists() and (out / "config.json").exists() and not (out / LOCK).exists()


def test_cache_set_to_a_file_is_refused_before_dequantizing(tmp_path, monkeypatch):
    from adaptlab.errors import ModelError
    from adaptlab.models import check_cache_place

    f = tmp_path / "cachefile"
    f.write_text("x")
    monkeypatch.setenv("ADAPTLAB_CACHE", str(f))
    with pytest.raises(ModelError, match="exists and is not a folder"):
        check_cache_place()


def test_check_place_creates_nothing(tmp_path):
    check_place(tmp_path / "a" / "b" / "c.json", "file")
    check_place(tmp_path / "x", "folder")
    assert list(tmp_path.iterdir()) == []


def test_compare_full_disk_at_the_end_prints_the_results_and_one_line(tmp_path, tiny_folder, capsys, monkeypatch):
    """Every run finished, then the disk filled: the table is printed, one line names the file that
    could not be written, exit 2; results.jsonl keeps what was written before (no partial file)."""
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    import adaptlab.compare as cmp

    real, calls = cmp._run_prompt, []

    def run_then_fill_disk(*a, **k):
        res = real(*a, **k)
        calls.append(1)
        if len(calls) == 2:                                           # the disk fills during the 2nd run
            monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
        return res

    monkeypatch.setattr(cmp, "_run_prompt", run_then_fill_disk)
    code, stdout, err = _run(["compare", "--task", "reviews", "--model", tiny_folder, "--runs", "zero-shot,instruction",
                              "--limit", "2", "--out", str(out)], capsys)
    assert code == 2, err
    lines = [line for line in err if line.startswith("error: ")]
    assert lines == [f"error: {out / 'results.jsonl'}: could not write (No space left on device); the results are "
                     f"printed above"], err
    assert "zero-shot" in stdout and "instruction" in stdout          # both rows are on the screen
    kept = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["run"] for r in kept] == ["zero-shot"]                 # the first run's record was written
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary file was left"
