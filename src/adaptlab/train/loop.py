"""The ONE training loop: ``train(model, data, objective, stepper, cfg, hooks)``.

What varies is passed in: the objective (features, batches, loss: ``train.objectives``), the
stepper (how parameters move: ``train.steppers``), and the hooks (dev evaluation, best-keeping,
saving, a per-step callback). What the loop owns is the same for all of them:

Batching: length-bucketed dynamic padding. Each epoch the features are shuffled with
(seed, epoch), cut into chunks of 50 batches, each chunk sorted by length and split into
batches, and the batch order shuffled again: little padding, still random. ``grad_accum``
micro-batches make one step. At every epoch end ``hooks.evaluate`` (if given) scores the model,
and ``hooks.save`` writes it when the score is the best so far (or every epoch end with
``keep_best=False`` or no score). ``out/checkpoint/`` holds everything a resume needs (the moving
tensors, the stepper's state, every process's RNG, the data position), written atomically every
``save_every`` steps and at epoch ends, so a resumed run is bitwise the run that was not
interrupted. Runs on HF Accelerate: under ``torchrun`` or ``accelerate launch`` with N processes
(gloo on CPU-only machines) each process takes every N-th micro-batch (an epoch's last
``len(batches) % N`` are left out) and DDP averages the gradients, so a step over N processes is
the step one process takes with ``grad_accum`` = N; the main process alone writes files.

Time: ``train_seconds`` is the time spent in steps, over every invocation of the run (a resumed
run restores it from its checkpoint; steps lost after the last checkpoint are not counted);
``resumed_seconds`` / ``resumed_from_step`` say what the checkpoint of an earlier invocation kept.
Progress goes to stderr (``adaptlab.progress``): a bar on a terminal, plain lines elsewhere.

Cost: every step adds the stepper's ``cost(batches)`` (model calls, forward passes) to the run's
``train_calls`` / ``train_forwards``, so a black-box run's budget in model calls and a gradient
run's steps are reported in the same units. ``eval_every`` (steps) moves the dev check from the
epoch ends to every N steps and the last step: a black-box method, whose step is one generation
over the whole k-shot set (one epoch), checks its dev score every N generations instead.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from adaptlab.config import atomic_write_text, check
from adaptlab.errors import ConfigError, TrainingDiverged
from adaptlab.train.checkpoint import FOLDER, find_checkpoint, load_checkpoint, save_checkpoint

CHUNK_BATCHES = 50


@dataclass
class TrainConfig:
    epochs: int = 3
    max_steps: int | None = None        # optimizer steps; overrides epochs when set
    step_cap: int | None = None         # at most this many steps: min(step_cap, the steps epochs/max_steps give)
    batch_size: int = 16
    grad_accum: int = 1
    lr: float | None = None             # None: the method's default
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_seq_len: int = 128
    train_limit: int | None = None
    eval_limit: int | None = 500        # dev examples scored per epoch
    eval: bool = True                   # evaluate on dev each epoch (best-checkpoint keeping)
    eval_every: int | None = None       # steps between dev checks instead of epoch ends (and the last step)
    shots_per_class: int | None = None  # k-shot: k train examples of every label, drawn with the run's seed
    seed: int = 0
    bf16: bool = False                  # bf16 autocast where the device supports it
    save_every: int = 100               # optimizer steps between resume checkpoints
    log_every: int = 10

    def __post_init__(self):
        check(self.epochs >= 1, f"epochs={self.epochs}: must be at least 1")
        check(self.max_steps is None or self.max_steps >= 1, f"max_steps={self.max_steps}: must be at least 1")
        check(self.step_cap is None or self.step_cap >= 1, f"step_cap={self.step_cap}: must be at least 1")
        check(self.batch_size >= 1, f"batch_size={self.batch_size}: must be at least 1")
        check(self.grad_accum >= 1, f"grad_accum={self.grad_accum}: must be at least 1")
        check(self.lr is None or 0 < self.lr < 1, f"lr={self.lr}: must be in (0, 1)")
        check(0 <= self.warmup_ratio < 1, f"warmup_ratio={self.warmup_ratio}: must be in [0, 1)")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay}: must be >= 0")
        check(self.max_grad_norm >= 0, f"max_grad_norm={self.max_grad_norm}: must be >= 0 (0: no clipping)")
        check(8 <= self.max_seq_len <= 8192, f"max_seq_len={self.max_seq_len}: must be in [8, 8192]")
        check(self.train_limit is None or self.train_limit >= 1, "train_limit: must be at least 1")
        check(self.eval_limit is None or self.eval_limit >= 1, "eval_limit: must be at least 1")
        check(self.eval_every is None or self.eval_every >= 1, "eval_every: must be at least 1")
        check(self.shots_per_class is None or self.shots_per_class >= 1, "shots_per_class: must be at least 1")
        check(self.save_every >= 1 and self.log_every >= 1, "save_every and log_every must be at least 1")
        check(0 <= self.seed < 2**63, f"seed={self.seed}: must be in [0, 2**63)")


@dataclass
class Hooks:
    """What the caller decides. Every hook is optional; ``save``/``update`` run on the main process."""

    evaluate: Callable[[], float | None] | None = None   # the dev score at an epoch end (higher is better)
    save: Callable[[dict], None] | None = None           # write the result; gets the run summary
    update: Callable[[dict], None] | None = None         # the summary changed but the saved weights stay
    on_step: Callable[[int, float], None] | None = None  # after every step: (step, loss)
    describe: Callable[[], dict] | None = None           # extra summary fields (e.g. adapter bytes)
    metric: str = "dev"                                  # the name of the evaluate score
    keep_best: bool = True                               # save only when the score improves
    save_on_epoch: bool = True                           # False: save once, at the end


def make_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Length-bucketed batches of example indices for one epoch (deterministic in seed, epoch)."""
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * CHUNK_BATCHES
    batches = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s: s + chunk], key=lambda i: lengths[i])
        batches += [part[j: j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


class _Loss(nn.Module):
    """The model and the objective as one module, so Accelerate/DDP sees one forward."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, **batch):
        return self.objective.loss(self.model, batch)

    def moving_state(self) -> dict[str, torch.Tensor]:
        """What changes while training: the requires_grad tensors, plus what the model saves
        without a gradient (``TunedModel.adapter_state``: a black-box method's vector)."""
        out = {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}
        if hasattr(self.model, "adapter_state"):
            for n, v in self.model.adapter_state().items():
                out.setdefault("model." + n, v)
        return out


# --------------------------------------------------------------------------- processes


def _cpu_only() -> bool:
    """No GPU or other accelerator: tell Accelerate so, or a multi-process launch runs N
    unconnected copies (it joins CPU processes with gloo only when ``cpu`` is set)."""
    acc = getattr(torch, "accelerator", None)
    return not (acc.is_available() if acc is not None else torch.cuda.is_available())


def process_state():
    """Accelerate's view of this process (rank, world size, main or not); one per process."""
    from accelerate import PartialState

    return PartialState(cpu=_cpu_only())


def bf16_ok() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


# --------------------------------------------------------------------------- the loop


def train(model: nn.Module, data: list, objective, stepper, cfg: TrainConfig, hooks: Hooks | None = None, *,
          out: str | os.PathLike, resume: bool = False, progress: bool = True, desc: str = "train") -> dict:
    """Train ``model`` on ``data`` (examples the objective featurizes) and return the run summary."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    from adaptlab.progress import bar as progress_bar

    hooks = hooks or Hooks()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mixed = "bf16" if cfg.bf16 and bf16_ok() else "no"
    autocast = torch.bfloat16 if mixed == "bf16" else None
    # some trainable weights may get no gradient (an encoder's unused pooler under ``full``):
    # DDP must look for them, or its second step fails. Autocast is ours (the stepper's), not
    # Accelerate's ``mixed_precision``: that is fixed per process at the first Accelerator, and
    # one process may train several runs (compare, the Python API) with and without bf16
    accel = Accelerator(cpu=_cpu_only(),
                        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main = accel.is_main_process

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    feats = objective.featurize(data)
    lengths = [objective.length(f) for f in feats]
    world, rank = accel.num_processes, accel.process_index
    micro_per_epoch = len(make_batches(lengths, cfg.batch_size, cfg.seed, 0)) // world
    if micro_per_epoch == 0:
        raise ConfigError(f"{len(feats)} training examples make no batch on {world} processes")
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total = cfg.max_steps if cfg.max_steps else cfg.epochs * steps_per_epoch
    if cfg.step_cap:                            # a cap (compare --max-steps), never more steps than epochs give
        total = min(total, cfg.step_cap)
    module = _Loss(model, objective)
    stepper.setup(module, total)
    module = stepper.prepare(accel, module)
    inner = accel.unwrap_model(module)
    if world > 1:                               # the same init everywhere (DDP checks), own dropout per rank
        torch.manual_seed(cfg.seed + rank)

    st = {"world": world, "epoch": 0, "micro": 0, "step": 0, "tokens": 0, "seconds": 0.0, "best": None,
          "calls": 0, "forwards": 0,
          "best_epoch": None, "dev": [], "losses": [], "metrics": {}}
    log_path = out / "log.jsonl"
    log: list[dict] = []
    resumed = {"step": 0, "seconds": 0.0}      # what a checkpoint of an earlier invocation kept
    ck = find_checkpoint(out)
    if resume and ck is not None:
        saved, stepper_tensors = load_checkpoint(ck, inner, rank, world)
        stepper.load(stepper_tensors, saved.pop("stepper"))
        st.update(saved)
        resumed = {"step": st["step"], "seconds": st["seconds"]}
        if log_path.exists():
            log = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
            log = [r for r in log if r.get("step", 0) <= st["step"]]

    def write_log(rec: dict) -> None:
        log.append(rec)
        if main:
            atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in log))

    def checkpoint() -> None:
        rng = [torch.get_rng_state()]
        if world > 1:                           # every rank's dropout stream, so resume is exact
            from accelerate.utils import gather_object

            rng = gather_object(rng)
        if main:
            tensors, values = stepper.state()
            save_checkpoint(out / FOLDER, inner.moving_state(), tensors, {**st, "stepper": values}, rng)
        accel.wait_for_everyone()

    def summary() -> dict:
        n_tuned = model.n_trainable() if hasattr(model, "n_trainable") else \
            sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {"objective": objective.name, "trainable_params": n_tuned,
                "train_calls": st["calls"], "train_forwards": st["forwards"],
                "train_examples": len(feats), "train_seconds": round(st["seconds"], 2), "tokens_seen": st["tokens"],
                "steps": st["step"], "epochs_done": st["epoch"], "dev_metric": hooks.metric,
                "dev_per_epoch": st["dev"], "best_dev": st["best"], "best_epoch": st["best_epoch"],
                "resumed_from_step": resumed["step"], "resumed_seconds": round(resumed["seconds"], 2),
                "lr": getattr(stepper, "base_lr", None), "mixed_precision": mixed, "train_metrics": st["metrics"],
                **(hooks.describe() if hooks.describe else {})}

    def evaluate_and_keep() -> None:
        metric = None
        if hooks.evaluate is not None:
            was = model.training
            model.eval()
            try:
                metric = hooks.evaluate()
            finally:
                model.train(was)
        st["dev"].append({"epoch": st["epoch"], "step": st["step"], hooks.metric: metric})
        write_log({"event": "eval", "epoch": st["epoch"], "step": st["step"], "dev": metric})
        if not hooks.save_on_epoch:
            return
        if not hooks.keep_best or metric is None or st["best"] is None or metric > st["best"]:
            st["best"], st["best_epoch"] = metric, st["epoch"]
            st["saved"] = True
            if main and hooks.save is not None:
                hooks.save(summary())

    inner.train()
    bar = progress_bar(total, desc, enabled=progress and main, initial=st["step"])
    done = st["step"] >= total
    while not done:
        batches = make_batches(lengths, cfg.batch_size, cfg.seed, st["epoch"])
        ranks = [batches[r::world][:micro_per_epoch] for r in range(world)]
        mine = ranks[rank]
        while st["micro"] < len(mine):
            # one step = up to grad_accum micro-batches on each process
            span = slice(st["micro"], st["micro"] + cfg.grad_accum)
            group = mine[span]
            t0 = time.perf_counter()
            batch_group = [{k: v.to(accel.device) for k, v in objective.collate([feats[i] for i in b]).items()} for b in group]
            loss, metrics = stepper.step(accel, module, batch_group, autocast)
            if not math.isfinite(loss):          # diverged: stop before a bad state is saved anywhere
                ck_now = find_checkpoint(out)
                kept = (f"the last good checkpoint ({ck_now.name}/, step "
                        f"{json.loads((ck_now / 'state.json').read_text()).get('step')}) is kept in {out}"
                        if ck_now is not None else "nothing was saved from this run")
                raise TrainingDiverged(f"training diverged at step {st['step'] + 1}: the loss is {loss}; {kept}. "
                                       "Lower --lr, or check --set values")
            if hasattr(stepper, "cost"):
                calls, fwd = stepper.cost(batch_group)
                st["calls"] += int(calls) * world
                st["forwards"] += int(fwd) * world
            st["tokens"] += sum(lengths[i] for r in ranks for b in r[span] for i in b)   # real tokens, all ranks
            st["micro"] += len(group)
            st["step"] += 1
            st["seconds"] += time.perf_counter() - t0
            st["metrics"] = {k: round(v, 6) for k, v in metrics.items()}
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if st["step"] % cfg.log_every == 0 or st["step"] == 1:
                write_log({"event": "train", "epoch": st["epoch"], "step": st["step"], "loss": loss,
                           "lr": stepper.lr, "tokens": st["tokens"], **st["metrics"]})
            st["losses"].append(loss)
            if st["step"] % cfg.save_every == 0:
                checkpoint()
            if hooks.on_step is not None:
                hooks.on_step(st["step"], loss)
            if st["step"] >= total:
                done = True
            if cfg.eval_every and (st["step"] % cfg.eval_every == 0 or done):
                evaluate_and_keep()
            if done:
                break
        if st["micro"] >= len(mine) or done:
            st["epoch"] += 1
            st["micro"] = 0
            if not cfg.eval_every:
                evaluate_and_keep()
            checkpoint()
    bar.close()
    st["losses"] = st["losses"][-1000:]
    result = summary()
    if main:
        if not st.get("saved") and hooks.save is not None:
            hooks.save(result)
        elif hooks.update is not None:
            hooks.update(result)
    accel.wait_for_everyone()
    return result
