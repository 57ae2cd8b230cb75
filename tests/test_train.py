"""The one training loop: batching, objectives, resume equivalence, and `adaptlab tune`."""

from __future__ import annotations

from conftest import run_cli

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptlab.data import load_split
from adaptlab.engine.local import LocalLM
from adaptlab.errors import ConfigError
from adaptlab.tasks import load_task, load_task_file
from adaptlab.text import encode_lm
from adaptlab.train import TrainConfig, make_batches, train_on_task
from adaptlab.train.objectives import for_task
from adaptlab.tuning import apply_method


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=400), st.integers(1, 9), st.integers(0, 3))
def test_batches_cover_every_example_once(lengths, bs, epoch):
    batches = make_batches(lengths, bs, seed=7, epoch=epoch)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= bs for b in batches)
    assert batches == make_batches(lengths, bs, seed=7, epoch=epoch)


def test_length_bucketing_reduces_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 120, (1600,), generator=g).tolist()
    pad = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in make_batches(lengths, 16, 0, 0))
    assert pad < 0.05 * sum(lengths)
    assert make_batches(lengths, 16, 0, 0) != make_batches(lengths, 16, 0, 1)   # reshuffled per epoch


def test_lm_targets_tokenized_like_the_engine(tiny_decoder):
    lm = LocalLM(tiny_decoder)
    for ctx, cont in [("Review: great\nSentiment:", " positive"), ("Question: 3+4? Answer: ", "7")]:
        c, t = lm._encode_pair(ctx, cont)
        ids, n = encode_lm(tiny_decoder.tokenizer, ctx, cont, 128, add_eos=False)
        assert ids == c + t and n == len(t)
    ids, n = encode_lm(tiny_decoder.tokenizer, "x " * 300, " positive", 32, add_eos=True)
    assert len(ids) == 32 and ids[-1] == tiny_decoder.tokenizer.eos_token_id


def test_collate_marks_only_targets(tiny_decoder):
    task = load_task("reviews")
    tuned = apply_method(tiny_decoder, "lora", {}, task)
    exs = load_split(task, "train", limit=3)
    objective = for_task(tuned, tiny_decoder.tokenizer, task, 64)
    feats = objective.featurize(exs)
    b = objective.collate(feats)
    for i, f in enumerate(feats):
        lab = b["labels"][i]
        kept = lab[lab != -100].tolist()
        assert kept == f["ids"][-f["n_target"]:]
        assert b["attention_mask"][i].sum() == len(f["ids"])
    word = tiny_decoder.tokenizer.decode(feats[0]["ids"][-feats[0]["n_target"]:])
    assert word.strip() == task.answer_text(exs[0])


class Killed(Exception):
    pass


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_resume_is_bitwise_the_uninterrupted_run(kind, tiny_decoder, tiny_encoder, tmp_path):
    bb = tiny_decoder if kind == "decoder" else tiny_encoder          # the encoder trains with dropout on
    task = load_task("reviews")
    exs = load_split(task, "train", limit=40)
    dev = load_split(task, "dev", limit=8)
    cfg = TrainConfig(epochs=2, batch_size=4, grad_accum=2, save_every=1, seed=3, lr=5e-3)

    def run(out, kill_at=None, resume=False):
        torch.manual_seed(0)
        tuned = apply_method(bb, "lora", {"dropout": 0.1}, task)

        def on_step(step, loss):
            if kill_at is not None and step == kill_at:
                raise Killed
        stats = train_on_task(bb, tuned, task, exs, cfg, out, dev_examples=dev, resume=resume, progress=False,
                      on_step=on_step)
        return tuned, stats

    ref, ref_stats = run(tmp_path / "ref")
    with pytest.raises(Killed):
        run(tmp_path / "cut", kill_at=7)                              # mid-epoch 2 (5 steps per epoch)
    got, got_stats = run(tmp_path / "cut", resume=True)
    a, b = ref.trainable_state(), got.trainable_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert got_stats["steps"] == ref_stats["steps"] == 10
    assert got_stats["tokens_seen"] == ref_stats["tokens_seen"]
    assert got_stats["dev_per_epoch"] == ref_stats["dev_per_epoch"]
    log = [json.loads(x) for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    ref_log = [json.loads(x) for x in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [r["step"] for r in ref_log]


def test_training_lowers_the_loss(tiny_decoder, tmp_path):
    task = load_task("reviews")
    tuned = apply_method(tiny_decoder, "full", {}, task)
    seen = []
    train_on_task(tiny_decoder, tuned, task, load_split(task, "train", limit=64),
          TrainConfig(max_steps=30, batch_size=8, lr=3e-3, eval=False, warmup_ratio=0.0), tmp_path / "r",
          progress=False, on_step=lambda s, loss: seen.append(loss))
    assert sum(seen[-5:]) < 0.7 * sum(seen[:5])


def test_bf16_autocast_where_the_cpu_has_it(tiny_decoder, tmp_path):
    """``bf16=true``: the forward runs under bf16 autocast where the device supports it (fp32 where
    not, recorded either way); the trained weights stay fp32; runs with and without it can follow
    each other in one process (as in ``adaptlab compare``)."""
    from adaptlab.train import bf16_ok

    task = load_task("reviews")
    ok = bf16_ok()
    for i, bf16 in enumerate([False, True, False]):
        tuned = apply_method(tiny_decoder, "lora", {}, task)
        seen, losses = set(), []
        lin = next(m for n, m in tuned.named_modules() if n.endswith("q_proj.lora_A"))
        lin.register_forward_hook(lambda m, i, o: seen.add(o.dtype) if torch.is_grad_enabled() else None)
        stats = train_on_task(tiny_decoder, tuned, task, load_split(task, "train", limit=8),
                      TrainConfig(max_steps=2, batch_size=4, bf16=bf16, eval=False), tmp_path / str(i),
                      progress=False, on_step=lambda step, loss: losses.append(loss))
        on = bf16 and ok
        assert stats["mixed_precision"] == ("bf16" if on else "no")
        assert seen == {torch.bfloat16 if on else torch.float32}
        assert all(v.dtype == torch.float32 for v in tuned.trainable_state().values())
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def test_a_run_killed_mid_write_of_its_first_file_can_start_again(tiny_decoder, tmp_path):
    from adaptlab.train import tune

    out = tmp_path / "r"
    out.mkdir()
    (out / ".tune_config.json.k3j2.tmp").write_text('{"task": "rev')     # what SIGKILL left of the write
    tune("reviews", "lora", out=str(out), backbone=tiny_decoder, sets={"r": "2", "max_steps": "1", "train_limit": "8",
                                                                      "batch_size": "4", "eval_limit": "4"})
    assert (out / "tune_config.json").exists() and not list(out.glob(".*.tmp"))
    other = tmp_path / "r2"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):                  # a user's own files are never touched
        tune("reviews", "lora", out=str(other), backbone=tiny_decoder, sets={"r": "2"})
    assert (tmp_path / "r2" / "notes.txt").read_text() == "mine"


QA_TASK = """name: addqa
schema: qa
template: "Question: {question}\\nAnswer:"
answer_type: number
metric: exact_match
splits: {train: train, dev: dev, test: dev}
"""


def test_qa_objective_and_encoder_refusal(tiny_decoder, tiny_encoder, tmp_path):
    (tmp_path / "addqa.yaml").write_text(QA_TASK)
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"question": f"{a} plus {b}?", "answer": str(a + b)} for a in range(6) for b in range(4)]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    task = load_task_file(tmp_path / "addqa.yaml")
    tuned = apply_method(tiny_decoder, "lora", {}, task)
    feats = for_task(tuned, tiny_decoder.tokenizer, task, 64).featurize(rows[:2])
    assert feats[0]["ids"][-1] == tiny_decoder.tokenizer.eos_token_id      # the answer ends the generation
    stats = train_on_task(tiny_decoder, tuned, task, rows, TrainConfig(max_steps=2, batch_size=4, eval_limit=2),
                  tmp_path / "out", dev_examples=rows[:2], progress=False)
    assert stats["dev_metric"] == "exact_match" and len(stats["dev_per_epoch"]) == 1
    with pytest.raises(ConfigError, match="encoder"):
        apply_method(tiny_encoder, "lora", {}, task)


_cli = run_cli


def test_tune_command_end_to_end(tiny_decoder, tmp_path, capsys):
    model = tmp_path / "tiny"
    tiny_decoder.model.save_pretrained(model)
    tiny_decoder.tokenizer.save_pretrained(model)
    out = tmp_path / "run"
    base = ["tune", "--task", "reviews", "--method", "lora", "--model", str(model), "--out", str(out),
            "--max-steps", "3", "--train-limit", "16", "--batch-size", "4", "--set", "r=4",
            "--set", "eval_limit=4"]
    assert _cli(base + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["steps"] == 3 and doc["method_config"]["r"] == 4 and doc["train_config"]["eval_limit"] == 4
    for f in ("adapter_config.json", "adapter_model.safetensors", "adaptlab.json", "tune_config.json", "log.jsonl"):
        assert (out / f).exists(), f
    meta = json.loads((out / "adaptlab.json").read_text())
    assert meta["base"]["fingerprint"] and meta["stats"]["trainable_params"] == doc["trainable_params"]
    assert meta["stats"]["adapter_bytes"] > 0 and meta["stats"]["tokens_seen"] > 0
    assert _cli(base) == 2                                              # the run exists: refused
    assert _cli(base + ["--resume", "--lr", "0.5"]) == 2                # different settings: refused
    assert _cli(base + ["--resume"]) == 0                               # finished: nothing to do
    assert _cli(["tune", "--task", "reviews", "--method", "lora", "--model", str(model), "--out",
                 str(tmp_path / "x"), "--set", "rank=4"]) == 2         # unknown key, one line
    assert "unknown key 'rank'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert _cli(["eval", "--task", "reviews", "--adapter", str(out), "--limit", "4", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["metrics"]["n"] == 4


# --------------------------------------------------------------------------- two processes (torchrun, gloo)

DDP_SCRIPT = str(Path(__file__).with_name("ddp_train.py"))


def _torchrun(*args):
    """``torchrun --standalone --nproc_per_node 2 ARGS``; returns stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        *args], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _trainable(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "trainable.safetensors"))


def test_two_processes_take_the_step_one_process_takes_with_grad_accum_2(tiny_folder, tmp_path):
    """DDP over 2 processes (each every 2nd micro-batch, gradients averaged) is grad_accum=2 on one."""
    from adaptlab.models import load_backbone

    _torchrun(DDP_SCRIPT, "run", str(tmp_path / "ddp"), tiny_folder, "lora")
    two = _trainable(tmp_path / "ddp")
    two_stats = json.loads((tmp_path / "ddp" / "stats.json").read_text())
    bb, task = load_backbone(tiny_folder), load_task("reviews")
    torch.manual_seed(0)
    tuned = apply_method(bb, "lora", {"dropout": 0.0}, task)
    cfg = TrainConfig(epochs=2, batch_size=4, grad_accum=2, save_every=1, seed=3, lr=5e-3)
    one_stats = train_on_task(bb, tuned, task, load_split(task, "train", limit=40), cfg, tmp_path / "one",
                      dev_examples=load_split(task, "dev", limit=8), progress=False)
    one = tuned.trainable_state()
    assert one.keys() == two.keys()
    moved = max(one[k].abs().max().item() for k in one if k.endswith("lora_B.weight"))   # B starts at 0
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    assert moved > 1e-2 and diff <= 1e-5, (moved, diff)
    for k in ("steps", "tokens_seen", "train_examples", "dev_per_epoch"):
        assert two_stats[k] == one_stats[k], k
    log = [json.loads(x) for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 5, 10, 10]                  # one log, written by the main process


def test_two_process_resume_is_bitwise_the_uninterrupted_run(tiny_encoder_folder, tmp_path):
    """The encoder trains with dropout on: each rank's RNG stream is saved and restored."""
    from adaptlab.models import load_backbone

    model = tiny_encoder_folder
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    _torchrun(DDP_SCRIPT, "run", ref, model, "p-tuning-v2")
    _torchrun(DDP_SCRIPT, "kill", cut, model, "p-tuning-v2")
    assert json.loads((Path(cut) / "checkpoint" / "state.json").read_text())["step"] == 3
    bb, task = load_backbone(model), load_task("reviews")
    with pytest.raises(ConfigError, match="started on 2"):               # one process can't take it over
        train_on_task(bb, apply_method(bb, "p-tuning-v2", {"num_virtual_tokens": 4}, task), task,
              load_split(task, "train", limit=40), TrainConfig(epochs=2, batch_size=4, save_every=1, seed=3),
              cut, resume=True, progress=False)
    _torchrun(DDP_SCRIPT, "resume", cut, model, "p-tuning-v2")
    a, b = _trainable(ref), _trainable(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (json.loads((Path(d) / "stats.json").read_text()) for d in (ref, cut))
    assert sa["tokens_seen"] == sb["tokens_seen"] and sa["dev_per_epoch"] == sb["dev_per_epoch"]


def test_every_method_trains_on_two_processes(tiny_folder, tiny_encoder_folder, tmp_path):
    """The matrix under DDP: every method, both backbones; the ranks' weights stay equal and move."""
    from adaptlab.tuning import METHODS

    _torchrun(DDP_SCRIPT, "matrix", str(tmp_path), tiny_folder, tiny_encoder_folder)
    rows = json.loads((tmp_path / "matrix.json").read_text())
    from ddp_train import data_parallel

    assert sorted(rows) == sorted([f"{k} {m}" for k in ("decoder", "encoder") for m in METHODS if data_parallel(m, k)]
                                  + ["decoder pretrain-clm", "encoder pretrain-mlm"])
    for name, r in rows.items():
        a, b = r["ranks"]
        assert a == b and a != r["start"], (name, r)


def test_tune_command_under_torchrun_reports_once(tiny_folder, tmp_path):
    out = tmp_path / "run"
    stdout = _torchrun("-m", "adaptlab", "tune", "--task", "reviews", "--method", "lora", "--model", tiny_folder,
                       "--out", str(out), "--max-steps", "2", "--train-limit", "16", "--batch-size", "4",
                       "--set", "eval_limit=4", "--json")
    doc = json.loads(stdout)                                             # one JSON document, not two
    assert doc["steps"] == 2 and doc["tokens_seen"] > 0
    assert json.loads((out / "checkpoint" / "state.json").read_text())["world"] == 2
    for f in ("adapter_config.json", "adapter_model.safetensors", "tune_config.json"):
        assert (out / f).exists(), f


def test_training_progress_is_plain_lines_when_stderr_is_not_a_terminal(tiny_decoder, tmp_path, capsys,
                                                                       monkeypatch):
    import adaptlab.progress

    monkeypatch.delenv("ADAPTLAB_PROGRESS", raising=False)
    monkeypatch.setattr(adaptlab.progress, "QUIET_SECONDS", 0.0)     # a real run this short prints none
    task = load_task("reviews")
    tuned = apply_method(tiny_decoder, "lora", {"r": 2}, task)
    train_on_task(tiny_decoder, tuned, task, load_split(task, "train", limit=20),
                  TrainConfig(max_steps=10, batch_size=2, eval=False), tmp_path / "r", progress=True)
    lines = [x for x in capsys.readouterr().err.splitlines() if "/10 (" in x]
    assert len(lines) == 10 and lines[-1].split(": ", 1)[1].startswith("10/10 (100%)") and "loss=" in lines[-1]
