"""The ONE training loop every tuning method uses (the method is passed in as a TunedModel).

Objective, chosen by the model and task, never by the method:
  * decoder, no head:  L = -sum_t log P(y_t | prompt, y_<t) over the target tokens only, where
    prompt = the task's rendered template (exactly what ``adaptlab eval --prompt zero-shot``
    sends) and y = ``task.target_text(ex)``: the verbalizer's label word (classification),
    the answer text + EOS (qa), the gold choice (multiple choice). Logits are computed only
    at the target positions (the LM head on [N_targets, H], not [B, L, V]).
  * a head (every encoder; ``head`` on a decoder): cross-entropy of the head's label logits.

Batching: length-bucketed dynamic padding. Each epoch the examples are shuffled with
(seed, epoch), cut into chunks of 50 batches, each chunk sorted by length and split into
batches, and the batch order shuffled again: little padding, still random. Optimisation: AdamW
(no decay on biases and norms), linear warmup then linear decay, gradient clipping, gradient
accumulation. Dev evaluation at every epoch end (the task's ``dev`` split through the same
engine path as ``adaptlab eval``) keeps the best adapter in ``out/``. ``out/checkpoint/`` holds
everything ``resume`` needs (trainable params, optimizer, scheduler, RNG, data position),
written atomically every ``save_every`` optimizer steps and at epoch ends, so a resumed run is
bitwise the run that was not interrupted. Runs on HF Accelerate: under ``torchrun`` or
``accelerate launch`` with N processes (gloo on CPU-only machines) each process takes every N-th
micro-batch (an epoch's last ``len(batches) % N`` are left out) and DDP averages the gradients,
so an optimizer step over N processes is the step one process takes with ``grad_accum`` = N
(``tests/test_train.py``: equal to 1e-5); the main process alone writes files and prints.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from adaptlab.config import (atomic_write_bytes, atomic_write_json, atomic_write_text, check, config_dict,
                             remove_stale_temp_files)
from adaptlab.errors import ConfigError

CHUNK_BATCHES = 50
TRAIN_SUBSET_SEED = 0      # train_limit takes the first N after this fixed shuffle: same subset every seed


@dataclass
class TrainConfig:
    epochs: int = 3
    max_steps: int | None = None        # optimizer steps; overrides epochs when set
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
    seed: int = 0
    bf16: bool = False                  # bf16 autocast where the device supports it
    save_every: int = 100               # optimizer steps between resume checkpoints
    log_every: int = 10

    def __post_init__(self):
        check(self.epochs >= 1, f"epochs={self.epochs}: must be at least 1")
        check(self.max_steps is None or self.max_steps >= 1, f"max_steps={self.max_steps}: must be at least 1")
        check(self.batch_size >= 1, f"batch_size={self.batch_size}: must be at least 1")
        check(self.grad_accum >= 1, f"grad_accum={self.grad_accum}: must be at least 1")
        check(self.lr is None or 0 < self.lr < 1, f"lr={self.lr}: must be in (0, 1)")
        check(0 <= self.warmup_ratio < 1, f"warmup_ratio={self.warmup_ratio}: must be in [0, 1)")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay}: must be >= 0")
        check(self.max_grad_norm >= 0, f"max_grad_norm={self.max_grad_norm}: must be >= 0 (0: no clipping)")
        check(8 <= self.max_seq_len <= 8192, f"max_seq_len={self.max_seq_len}: must be in [8, 8192]")
        check(self.train_limit is None or self.train_limit >= 1, "train_limit: must be at least 1")
        check(self.eval_limit is None or self.eval_limit >= 1, "eval_limit: must be at least 1")
        check(self.save_every >= 1 and self.log_every >= 1, "save_every and log_every must be at least 1")


# --------------------------------------------------------------------------- examples -> features


def prompt_text(task, tokenizer, example: dict) -> str:
    """The prompt exactly as the zero-shot strategy renders it (chat template when the task asks)."""
    text = task.render(example)
    if task.chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text


def _encode(tok, text: str) -> list[int]:
    # as engine.local.LocalLM.encode: special tokens unless the text already starts with BOS
    bos = tok.bos_token
    ids = tok(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
    if not ids:
        ids = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
    return ids


def encode_lm(tok, context: str, target: str, max_len: int, add_eos: bool) -> tuple[list[int], int]:
    """(ids, n_target): context + target tokenized as the engine scores them (trailing spaces of
    the context move to the target), context cut on the left to fit ``max_len``."""
    n = len(context) - len(context.rstrip())
    if n:
        context, target = context[:-n], context[-n:] + target
    ctx = _encode(tok, context)
    whole = _encode(tok, context + target)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        cont = whole[len(ctx):]
    else:
        cont = tok(target, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
    if add_eos and tok.eos_token_id is not None:
        cont = cont + [tok.eos_token_id]
    cont = cont[: max_len - 1]
    ctx = ctx[-(max_len - len(cont)):]
    return ctx + cont, len(cont)


def featurize(tuned, tokenizer, task, examples: list[dict], max_len: int) -> list[dict]:
    """One feature dict per example: ``ids`` plus ``n_target`` (LM) or ``label`` (head)."""
    feats = []
    for ex in examples:
        ctx = prompt_text(task, tokenizer, ex)
        if tuned.head is not None:
            if tuned.kind == "encoder":
                ids = tokenizer(ctx, truncation=True, max_length=max_len)["input_ids"]
            else:
                ids = _encode(tokenizer, ctx)[-max_len:]
            feats.append({"ids": ids, "label": task.gold_index(ex)})
        else:
            ids, n_t = encode_lm(tokenizer, ctx, task.target_text(ex), max_len, add_eos=task.schema == "qa")
            feats.append({"ids": ids, "n_target": n_t})
    return feats


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


def collate(feats: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row. LM rows get ``labels`` (-100 except target tokens)."""
    B, L = len(feats), max(len(f["ids"]) for f in feats)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for i, f in enumerate(feats):
        ids[i, : len(f["ids"])] = torch.tensor(f["ids"])
        mask[i, : len(f["ids"])] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if "label" in feats[0]:
        out["label"] = torch.tensor([f["label"] for f in feats])
    else:
        labels = torch.full((B, L), -100, dtype=torch.long)
        for i, f in enumerate(feats):
            n, t = f["n_target"], len(f["ids"])
            labels[i, t - n: t] = ids[i, t - n: t]
        out["labels"] = labels
    return out


class Objective(nn.Module):
    """The loss of one batch; wraps the TunedModel so Accelerate/DDP sees one forward."""

    def __init__(self, tuned):
        super().__init__()
        self.tuned = tuned

    def forward(self, input_ids, attention_mask, labels=None, label=None) -> torch.Tensor:
        t = self.tuned
        if label is not None:
            logits = t.classify(input_ids, attention_mask)                       # [B, C]
            return F.cross_entropy(logits.float(), label)
        h = t.body(input_ids=input_ids, attention_mask=attention_mask)           # [B, L, H]
        tgt = labels[:, 1:]                                                      # [B, L-1]: position t predicts t+1
        sel = tgt != -100
        logits = t.lm_head(h[:, :-1][sel])                                       # [N, V]
        return F.cross_entropy(logits.float(), tgt[sel])


# --------------------------------------------------------------------------- checkpoints


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(path.read_bytes())


def save_checkpoint(ckdir: Path, tuned, optimizer, scheduler, state: dict, rng_states: list[torch.Tensor]) -> None:
    """Write the resume state into a fresh folder, then swap it in (old one kept until then).
    ``rng_states``: torch's CPU RNG state of each process, by rank."""
    tmp = ckdir.with_name(ckdir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_tensors(tmp / "trainable.safetensors", tuned.trainable_state())
    osd = optimizer.state_dict()
    flat = {f"{i}.{k}": v for i, st in osd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    _save_tensors(tmp / "optimizer.safetensors", flat)
    rng = {"torch" if r == 0 else f"torch{r}": t for r, t in enumerate(rng_states)}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    _save_tensors(tmp / "rng.safetensors", rng)
    py_state = random.getstate()
    atomic_write_json(tmp / "state.json", {
        **state, "param_groups": osd["param_groups"],
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "python_random": [py_state[0], list(py_state[1]), py_state[2]]})
    old = ckdir.with_name(ckdir.name + ".old")
    if ckdir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(ckdir, old)
    os.replace(tmp, ckdir)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(out: Path) -> Path | None:
    for name in ("checkpoint", "checkpoint.old"):
        p = out / name
        if (p / "state.json").exists():
            return p
    return None


def load_checkpoint(ckdir: Path, tuned, optimizer, scheduler, rank: int = 0, world: int = 1) -> dict:
    state = json.loads((ckdir / "state.json").read_text())
    if state.get("world", 1) != world:          # the data position and RNG streams are per process
        raise ConfigError(f"{ckdir.parent}: --resume on {world} process(es), but the run was started on "
                          f"{state.get('world', 1)}; resume it with as many as it started with")
    params = dict(tuned.named_parameters())
    with torch.no_grad():
        for k, v in _load_tensors(ckdir / "trainable.safetensors").items():
            params[k].copy_(v)
    flat = _load_tensors(ckdir / "optimizer.safetensors")
    ostate: dict[int, dict] = {}
    for key, v in flat.items():
        i, _, k = key.partition(".")
        ostate.setdefault(int(i), {})[k] = v
    optimizer.load_state_dict({"state": ostate, "param_groups": state["param_groups"]})
    sched = dict(state["scheduler"])
    sched["lr_lambdas"] = [None] * len(optimizer.param_groups)
    scheduler.load_state_dict(sched)
    rng = _load_tensors(ckdir / "rng.safetensors")
    torch.set_rng_state(rng["torch" if rank == 0 else f"torch{rank}"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(rng) if k.startswith("cuda")])
    v, s, g = state["python_random"]
    random.setstate((v, tuple(s), g))
    return state


def make_optimizer(tuned, cfg: TrainConfig, lr: float, total: int):
    """AdamW over the trainable parameters (no weight decay on biases and norms) and the linear
    warmup / linear decay schedule over ``total`` optimizer steps."""
    warmup = int(cfg.warmup_ratio * total)
    params = [p for n, p in tuned.named_parameters() if p.requires_grad]
    flat = [(n, p) for n, p in tuned.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in flat if p.ndim < 2 or "norm" in n.lower() or n.endswith(".bias")]
    decay = [p for n, p in flat if not (p.ndim < 2 or "norm" in n.lower() or n.endswith(".bias"))]
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    # torch's fused AdamW (one pass over each tensor a step) on the devices that have it
    fused = all(p.device.type in ("cpu", "cuda", "mps", "xpu") for p in params) or None
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=fused)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), params


def optimizer_step(accel, objective, optimizer, scheduler, params, batches: list[dict], max_grad_norm: float,
                   autocast: torch.dtype | None = None) -> float:
    """One optimizer step over ``batches`` (the gradient-accumulation group); returns the loss.
    ``autocast``: run the forward under torch autocast to this dtype (bf16); the weights stay fp32."""
    loss_sum = 0.0
    multi = accel.num_processes > 1
    cast = (lambda: torch.autocast(accel.device.type, dtype=autocast)) if autocast is not None else nullcontext
    for j, batch in enumerate(batches):
        sync = j == len(batches) - 1
        with (accel.no_sync(objective) if multi and not sync else nullcontext()), cast():
            loss = objective(**batch) / len(batches)
        accel.backward(loss)
        loss_sum += float(loss.detach())
    if multi:                                   # the step's loss over every process's batches
        loss_sum = float(accel.reduce(torch.tensor(loss_sum, device=accel.device), "mean"))
    if max_grad_norm > 0:
        accel.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


# --------------------------------------------------------------------------- the loop


def _cpu_only() -> bool:
    """No GPU or other accelerator: tell Accelerate so, or a multi-process launch runs N
    unconnected copies (it joins CPU processes with gloo only when ``cpu`` is set)."""
    acc = getattr(torch, "accelerator", None)
    return not (acc.is_available() if acc is not None else torch.cuda.is_available())


def process_state():
    """Accelerate's view of this process (rank, world size, main or not); one per process."""
    from accelerate import PartialState

    return PartialState(cpu=_cpu_only())


def _bf16_ok() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def dev_metric(backbone, tuned, task, examples: list[dict], batch_size: int) -> float:
    """The task metric on ``examples`` through the same path as ``adaptlab eval``."""
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.prompting import make_strategy

    was = tuned.training
    tuned.eval()
    try:
        lm = make_lm(backbone, model=tuned, batch_size=batch_size, truncate=task.truncate)
        res = evaluate(lm, task, make_strategy("zero-shot"), examples)
    finally:
        tuned.train(was)
    return res.score


def train(backbone, tuned, task, train_examples: list[dict], cfg: TrainConfig, out: str | os.PathLike, *,
          dev_examples: list[dict] | None = None, lr: float = 1e-3, resume: bool = False,
          progress: bool = True, on_step: Callable[[int, float], None] | None = None,
          meta: dict | None = None) -> dict:
    """Train ``tuned`` (its ``requires_grad`` parameters) and write the best adapter to ``out``.
    Returns the run summary (also in ``out/adaptlab.json``'s ``stats``)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from tqdm import tqdm

    from adaptlab.tuning.io import save_adapter

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lr = cfg.lr if cfg.lr is not None else lr
    mixed = "bf16" if cfg.bf16 and _bf16_ok() else "no"
    autocast = torch.bfloat16 if mixed == "bf16" else None
    # some trainable weights may get no gradient (an encoder's unused pooler under ``full``):
    # DDP must look for them, or its second step fails. Autocast is ours (optimizer_step), not
    # Accelerate's ``mixed_precision``: that is fixed per process at the first Accelerator, and
    # one process may train several runs (compare, the Python API) with and without bf16
    accel = Accelerator(cpu=_cpu_only(),
                        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main = accel.is_main_process

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    tok = backbone.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    feats = featurize(tuned, tok, task, train_examples, cfg.max_seq_len)
    lengths = [len(f["ids"]) for f in feats]
    world, rank = accel.num_processes, accel.process_index
    micro_per_epoch = len(make_batches(lengths, cfg.batch_size, cfg.seed, 0)) // world
    if micro_per_epoch == 0:
        raise ConfigError(f"{len(feats)} training examples make no batch on {world} processes")
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total = cfg.max_steps if cfg.max_steps else cfg.epochs * steps_per_epoch
    optimizer, scheduler, params = make_optimizer(tuned, cfg, lr, total)
    objective = Objective(tuned)
    # the scheduler is not prepared: Accelerate would step it once per process; ours counts
    # optimizer steps of one process already
    objective, optimizer = accel.prepare(objective, optimizer)
    if world > 1:                               # the same init everywhere (DDP checks), own dropout per rank
        torch.manual_seed(cfg.seed + rank)

    st = {"world": world, "epoch": 0, "micro": 0, "step": 0, "tokens": 0, "seconds": 0.0, "best": None,
          "best_epoch": None, "dev": [], "losses": []}
    log_path = out / "log.jsonl"
    log: list[dict] = []
    ck = find_checkpoint(out)
    if resume and ck is not None:
        st.update(load_checkpoint(ck, tuned, optimizer, scheduler, rank, world))
        if log_path.exists():
            log = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
            log = [r for r in log if r.get("step", 0) <= st["step"]]
    for k in ("param_groups", "scheduler", "python_random"):
        st.pop(k, None)

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
            save_checkpoint(out / "checkpoint", tuned, optimizer, scheduler, st, rng)
        accel.wait_for_everyone()

    def evaluate_and_keep() -> None:
        metric = None
        if dev_examples and cfg.eval:
            metric = dev_metric(backbone, tuned, task, dev_examples, max(16, cfg.batch_size))
        st["dev"].append({"epoch": st["epoch"], "step": st["step"], task.metric: metric})
        write_log({"event": "eval", "epoch": st["epoch"], "step": st["step"], "dev": metric})
        if metric is None or st["best"] is None or metric > st["best"]:
            st["best"], st["best_epoch"] = metric, st["epoch"]
            if main:
                save_adapter(out, tuned, stats=summary(), meta=meta)

    def summary() -> dict:
        from adaptlab.tuning.io import adapter_bytes

        return {"trainable_params": tuned.n_trainable(), "train_examples": len(feats),
                "train_seconds": round(st["seconds"], 2), "tokens_seen": st["tokens"], "steps": st["step"],
                "epochs_done": st["epoch"], "dev_metric": task.metric, "dev_per_epoch": st["dev"],
                "best_dev": st["best"], "best_epoch": st["best_epoch"], "lr": lr, "mixed_precision": mixed,
                "adapter_bytes": adapter_bytes(tuned)}

    tuned.train()
    bar = tqdm(total=total, initial=st["step"], desc=f"tune {tuned.method}", file=sys.stderr,
               disable=None if (progress and main) else True, dynamic_ncols=True)
    done = st["step"] >= total
    while not done:
        batches = make_batches(lengths, cfg.batch_size, cfg.seed, st["epoch"])
        ranks = [batches[r::world][:micro_per_epoch] for r in range(world)]
        mine = ranks[rank]
        while st["micro"] < len(mine):
            # one optimizer step = up to grad_accum micro-batches on each process
            span = slice(st["micro"], st["micro"] + cfg.grad_accum)
            group = mine[span]
            t0 = time.perf_counter()
            batches = [{k: v.to(accel.device) for k, v in collate([feats[i] for i in b], pad).items()} for b in group]
            loss_sum = optimizer_step(accel, objective, optimizer, scheduler, params, batches, cfg.max_grad_norm,
                                      autocast)
            st["tokens"] += sum(lengths[i] for r in ranks for b in r[span] for i in b)   # real tokens, all ranks
            st["micro"] += len(group)
            st["step"] += 1
            st["seconds"] += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.4f}")
            if st["step"] % cfg.log_every == 0 or st["step"] == 1:
                write_log({"event": "train", "epoch": st["epoch"], "step": st["step"], "loss": loss_sum,
                           "lr": scheduler.get_last_lr()[0], "tokens": st["tokens"]})
            st["losses"].append(loss_sum)
            if st["step"] % cfg.save_every == 0:
                checkpoint()
            if on_step is not None:
                on_step(st["step"], loss_sum)
            if st["step"] >= total:
                done = True
                break
        if st["micro"] >= len(mine) or done:
            st["epoch"] += 1
            st["micro"] = 0
            evaluate_and_keep()
            checkpoint()
    bar.close()
    st["losses"] = st["losses"][-1000:]
    result = summary()
    if main:
        if not (out / "adapter_model.safetensors").exists():
            save_adapter(out, tuned, stats=result, meta=meta)
        else:
            from adaptlab.tuning.io import update_stats

            update_stats(out, result)
    accel.wait_for_everyone()
    return result


# --------------------------------------------------------------------------- adaptlab tune


def split_sets(method_cls, sets: dict) -> tuple[dict, dict]:
    """``--set`` values -> (method config values, TrainConfig values); unknown keys are errors."""
    import dataclasses

    mf = {f.name for f in dataclasses.fields(method_cls)}
    tf = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(sets) - mf - tf)
    if unknown:
        raise ConfigError(f"--set: unknown key {unknown[0]!r}; method keys: {', '.join(sorted(mf)) or '-'}; "
                          f"training keys: {', '.join(sorted(tf))}")
    return {k: v for k, v in sets.items() if k in mf}, {k: v for k, v in sets.items() if k not in mf}


def train_subset(examples: list[dict], limit: int | None) -> list[dict]:
    """The first ``limit`` examples after a fixed shuffle (the same subset for every seed)."""
    if limit is None or limit >= len(examples):
        return examples
    idx = list(range(len(examples)))
    random.Random(TRAIN_SUBSET_SEED).shuffle(idx)
    return [examples[i] for i in sorted(idx[:limit])]


def tune(task: str, method: str, model: str | None = None, *, out: str, sets: dict | None = None,
         resume: bool = False, data: str | None = None, progress: bool = True, backbone=None,
         **train_values) -> dict:
    """The Python API behind ``adaptlab tune``: load, apply the method, train, write the adapter.
    ``train_values`` are TrainConfig fields (None: keep the default)."""
    from adaptlab.config import build_config
    from adaptlab.data import load_split
    from adaptlab.errors import DataError
    from adaptlab.models import load_backbone, resolve_name
    from adaptlab.tasks import load_task
    from adaptlab.tuning import apply_method, check_task, get_method

    spec = load_task(task)
    m = get_method(method)
    mvals, tvals = split_sets(m.Config, dict(sets or {}))
    tvals.update({k: v for k, v in train_values.items() if v is not None})
    mcfg = build_config(m.Config, mvals, where=f"--method {method}")
    tcfg = build_config(TrainConfig, tvals, where="training option")
    model_name = backbone.name if backbone is not None else resolve_name(model)
    resolved = {"task": spec.name, "task_spec": spec.to_dict(), "method": method, "model": model_name,
                "method_config": config_dict(mcfg), "train_config": config_dict(tcfg), "data": data}
    outp = Path(out)
    cfg_path = outp / "tune_config.json"
    state = process_state()                      # under a multi-process launch: the main one writes
    if state.is_main_process:
        remove_stale_temp_files(outp)            # a run killed mid-write leaves only these
    state.wait_for_everyone()                    # then every process checks the same folder
    if cfg_path.exists():
        if not resume:
            raise ConfigError(f"{outp}: already holds a tune run; pass --resume to continue it, or another --out")
        prev = json.loads(cfg_path.read_text())
        for k, v in resolved.items():
            if prev.get(k) != v:
                raise ConfigError(f"{outp}: --resume with settings that differ from the run there ({k}: "
                                  f"{json.dumps(prev.get(k))[:80]} vs {json.dumps(v)[:80]})")
    elif outp.exists() and outp.is_dir() and any(outp.iterdir()):
        raise ConfigError(f"{outp}: folder is not empty and holds no tune run; choose another --out")
    train_ex = train_subset(load_split(spec, "train", data), tcfg.train_limit)
    dev_ex = None
    if tcfg.eval:
        try:
            dev_ex = load_split(spec, "dev", data, limit=tcfg.eval_limit)
        except DataError as e:
            if state.is_main_process:
                print(f"note: no dev split, so no per-epoch evaluation; the last weights are kept ({e})",
                      file=sys.stderr)
    if backbone is None:
        backbone = load_backbone(model)
    check_task(backbone, spec)
    torch.manual_seed(tcfg.seed)                      # the method's initialisation is seeded too
    tuned = apply_method(backbone, method, mcfg, spec)
    resolved["lr"] = tcfg.lr if tcfg.lr is not None else m.lr
    state.wait_for_everyone()
    if state.is_main_process:
        outp.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg_path, {**resolved, "base": backbone.identity})
    stats = train(backbone, tuned, spec, train_ex, tcfg, outp, dev_examples=dev_ex, lr=m.lr, resume=resume,
                  progress=progress, meta={"tune_config": "tune_config.json"})
    return {"out": str(outp), "task": spec.name, "method": method, "model": model_name,
            "method_config": config_dict(mcfg), "train_config": config_dict(tcfg), **stats}
