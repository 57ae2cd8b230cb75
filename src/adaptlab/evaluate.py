"""(model or engine) x task x strategy -> Result: metrics (``metrics.py``), per-example records, cost."""

from __future__ import annotations

import math
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Any

from adaptlab.metrics import compute_metrics, is_correct, macro_f1  # noqa: F401 (re-exported)
from adaptlab.tasks import Task

CHUNK = 64  # examples per strategy call (the engine's progress moves the bar within one)


@dataclass
class Result:
    task: str
    model: str
    strategy: str
    split: str
    metric: str
    metrics: dict[str, float]
    cost: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)

    @property
    def score(self) -> float:
        return self.metrics[self.metric]

    def to_dict(self, records: bool = True) -> dict:
        d = asdict(self)
        if not records:
            d.pop("records")
        return d


def evaluate(lm, task: Task, strategy, examples: list[dict], *, model_name: str = "", split: str = "",
             pool: list[dict] | None = None, config: dict | None = None, progress=None) -> Result:
    """Run ``strategy`` over ``examples``; ``pool`` is the demonstration/training pool for
    strategies that ``prepare`` on one (few-shot, APE)."""
    t0 = time.perf_counter()
    if hasattr(strategy, "prepare"):
        strategy.prepare(lm, task, pool or [])
    preds = []
    engine_progress = getattr(lm, "progress", None)
    for s in range(0, len(examples), CHUNK):
        chunk = examples[s: s + CHUNK]
        if not progress:
            preds.extend(strategy.predict(lm, task, chunk))
            continue
        from adaptlab.progress import Rows

        rows = Rows(len(chunk), progress)
        if hasattr(lm, "progress"):
            lm.progress = rows.rows         # per forward: the examples the chunk's rows stand for
        try:
            preds.extend(strategy.predict(lm, task, chunk))
        finally:
            if hasattr(lm, "progress"):
                lm.progress = engine_progress
        rows.finish()
    golds = [task.gold(ex) for ex in examples]
    values = [p.prediction for p in preds]
    metrics = compute_metrics(task, values, golds)
    records = []
    for i, (ex, p, g) in enumerate(zip(examples, preds, golds)):
        rec = {"i": i, "prompt": p.prompt, "gold": g, "prediction": p.prediction,
               "correct": is_correct(task, p.prediction, g)}
        if p.scores is not None:
            if any(math.isnan(s) or s == math.inf for s in p.scores):   # -inf: an impossible option
                from adaptlab.errors import ModelError

                raise ModelError(f"example {i}: the model scores its options {list(p.scores)[:4]} (NaN or "
                                 "Inf): its weights (or the adapter's) are broken")
            rec["scores"] = [round(s, 4) for s in p.scores]
        if p.raw is not None:
            rec["raw"] = p.raw
        if p.extra:
            rec.update(p.extra)
        records.append(rec)
    cost = lm.cost.to_dict()
    cost["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return Result(task=task.name, model=model_name, strategy=getattr(strategy, "name", type(strategy).__name__),
                  split=split, metric=task.metric if task.metric in metrics else "accuracy",
                  metrics=metrics, cost=cost, config=config or {}, records=records)


def run(task: str, model: str | None = None, *, adapter: str | None = None, prompt: str = "zero-shot",
        sets: dict | None = None, data: str | None = None, split: str = "test", limit: int | None = None,
        seed: int = 0, batch_size: int = 16, progress: bool = True) -> Result:
    """The Python API behind ``adaptlab eval``: load everything, evaluate, return a Result."""
    import random

    import torch

    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.models import check_model_ref, load_backbone, resolve_name
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task

    random.seed(seed)
    torch.manual_seed(seed)
    remote = None
    if model and model.startswith("openai:"):       # a model behind an OpenAI-compatible server
        sets = dict(sets or {})
        remote = sets.pop("model", None)            # --set model=<name>: the server's model / adapter
        if adapter:
            from adaptlab.errors import ConfigError

            raise ConfigError("--adapter is local; with --model openai:... pick the server's adapter with --set model=NAME")
    spec = load_task(task)
    strategy = make_strategy(prompt, sets)          # bad --set values fail before any loading
    if adapter:                                     # and a bad model or adapter before reading data
        from adaptlab.tuning.io import read_adapter

        read_adapter(adapter)
    if (model or not adapter) and remote is None and not (model or "").startswith("openai:"):
        check_model_ref(model)
    examples = load_split(spec, split, data, limit)
    pool = None
    if getattr(strategy, "needs_pool", False):
        # a --data folder or hf dataset also holds the train split; a single file does not
        pool = load_split(spec, "train", data if data and (data.startswith("hf:") or Path(data).is_dir()) else None)
    tuned = None
    if model and model.startswith("openai:"):
        from adaptlab.engine.openai_client import OpenAILM

        lm = OpenAILM(model, model=remote, concurrency=min(batch_size, 8))
    else:
        if adapter:
            from adaptlab.tuning.io import load_adapter  # the specialist half

            backbone, tuned = load_adapter(adapter, model)
        else:
            backbone = load_backbone(model)
        lm = make_lm(backbone, model=tuned, batch_size=batch_size, truncate=spec.truncate)
    from adaptlab.progress import bar as progress_bar

    bar = progress_bar(len(examples), f"{spec.name} {prompt}", enabled=progress, leave=False)
    from adaptlab.config import config_dict

    model_name = backbone.name if adapter else resolve_name(model)     # an adapter's own base, when no --model
    config = {"task": spec.name, "model": model_name, "adapter": adapter, "prompt": prompt,
              "strategy": config_dict(strategy), "split": split, "limit": limit, "seed": seed,
              "data": data, "batch_size": batch_size}
    try:
        result = evaluate(lm, spec, strategy, examples, model_name=model_name, split=split, pool=pool,
                          config=config, progress=bar.update)
    finally:
        bar.close()
    return result
