"""Launched by tests/test_train.py under ``torchrun --nproc_per_node 2``: the one training loop on
two processes joined by gloo (no code change for the launch), on a tiny backbone saved to a folder
(so every process and every run has the same tokenizer):

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_train.py \
        MODE OUT MODEL [METHOD [GRAD_ACCUM]]

MODE: ``run`` trains to the end; ``kill`` stops every process at step 3 (after its checkpoint);
``resume`` continues the run in OUT. The main process writes OUT/trainable.safetensors and
OUT/stats.json for the test to compare. ``matrix`` (MODEL: any number of model folders) trains
every method on each model for one epoch and writes OUT/matrix.json: per run, the initial
trainable weights' sum and each rank's sum after training (DDP keeps the ranks' copies equal).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from adaptlab.data import load_split
from adaptlab.models import load_backbone
from adaptlab.tasks import load_task
from adaptlab.train import TrainConfig, process_state, train_on_task
from adaptlab.tuning import METHODS, apply_method

KILL_AT = 3
METHOD_VALUES = {"lora": {"dropout": 0.0}, "p-tuning-v2": {"num_virtual_tokens": 4},
                 "prefix": {"num_virtual_tokens": 4, "encoder_hidden_size": 16}}


class Killed(Exception):
    pass


def run(mode: str, out: str, model: str, method: str, grad_accum: int = 1) -> None:
    bb = load_backbone(model)
    task = load_task("reviews")
    cfg = TrainConfig(epochs=2, batch_size=4, grad_accum=grad_accum, save_every=1, seed=3, lr=5e-3)
    torch.manual_seed(0)
    tuned = apply_method(bb, method, METHOD_VALUES.get(method, {}), task)

    def on_step(step, loss):
        if mode == "kill" and step == KILL_AT:
            raise Killed

    try:
        stats = train_on_task(bb, tuned, task, load_split(task, "train", limit=40), cfg, out,
                      dev_examples=load_split(task, "dev", limit=8), resume=mode == "resume", progress=False,
                      on_step=on_step)
    except Killed:
        return
    if process_state().is_main_process:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tuned.trainable_state().items()},
                  str(Path(out) / "trainable.safetensors"))
        (Path(out) / "stats.json").write_text(json.dumps(stats))


def data_parallel(method: str, kind: str) -> bool:
    """Gradient methods for the kinds they support (the black-box ones run in one process: their
    population is one batched forward)."""
    mod = METHODS[method].module
    return getattr(mod, "gradient", True) and kind in getattr(mod, "KINDS", ("decoder", "encoder"))


def matrix(out: str, models: list[str]) -> None:
    from accelerate.utils import gather_object

    task = load_task("reviews")
    exs = load_split(task, "train", limit=16)
    rows = {}
    for model in models:
        bb = load_backbone(model)
        for method in METHODS:
            if not data_parallel(method, bb.kind):
                continue
            torch.manual_seed(0)
            tuned = apply_method(bb, method, METHOD_VALUES.get(method, {}), task)
            start = sum(float(v.double().sum()) for v in tuned.trainable_state().values())
            train_on_task(bb, tuned, task, exs, TrainConfig(epochs=1, batch_size=4, seed=1, lr=5e-3, eval=False),
                  Path(out) / f"{bb.kind}-{method}", progress=False)
            end = sum(float(v.double().sum()) for v in tuned.trainable_state().values())
            rows[f"{bb.kind} {method}"] = {"start": start, "ranks": gather_object([end])}
        # the pretraining objectives (masked LM with its new head, causal LM) under DDP too
        from adaptlab.train import Hooks, train
        from adaptlab.train.objectives import CausalLM, MaskedLM
        from adaptlab.train.pretrain import mlm_head
        from adaptlab.train.steppers import AdamW

        torch.manual_seed(0)
        tuned = apply_method(bb, "lora", {"dropout": 0.0}, None)
        if bb.kind == "encoder":
            objective = MaskedLM(bb.tokenizer, mlm_head(bb, tuned)[0], 32)
        else:
            objective = CausalLM(bb.tokenizer, 32)
        start = sum(float(v.double().sum()) for v in tuned.trainable_state().values())
        texts = [ex["text"] for ex in exs] * 2
        train(tuned, texts, objective, AdamW(5e-3), TrainConfig(epochs=1, batch_size=4, seed=1), Hooks(),
              out=Path(out) / f"{bb.kind}-pretrain", progress=False)
        end = sum(float(v.double().sum()) for v in tuned.trainable_state().values())
        rows[f"{bb.kind} pretrain-{objective.name}"] = {"start": start, "ranks": gather_object([end])}
    if process_state().is_main_process:
        (Path(out) / "matrix.json").write_text(json.dumps(rows))


if __name__ == "__main__":
    mode, out, *rest = sys.argv[1:]
    if mode == "matrix":
        matrix(out, rest)
    else:
        run(mode, out, rest[0], rest[1], *(int(a) for a in rest[2:]))
