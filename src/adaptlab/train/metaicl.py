"""MetaICL (Min et al. 2022, "MetaICL: Learning to Learn In Context"): meta-train on many tasks in
the in-context format so that the model learns to learn from demonstrations, then evaluate
few-shot on tasks never trained on. One meta-training example of task T is

    x = d(x_1, y_1) sep ... sep d(x_k, y_k) sep template(x_{k+1})        L = -log P(y_{k+1} | x)

with (x_1, y_1) ... (x_k, y_k) drawn from T's train split (never the example itself), d the
few-shot demonstration format of ``prompting/few_shot.py`` (the task's template, then its target)
and sep the task's demonstration separator -- exactly what ``adaptlab eval --prompt few-shot:k=K``
sends -- and the loss on y_{k+1}'s tokens only (the completion-only loss of ``train/sft.py``).
Demonstrations are drawn with the run's seed. Nothing is truncated: an example whose k
demonstrations and input do not fit ``max_seq_len`` (default 512 here, where the other trainers
take 128: k demonstrations need the room) is an error that says how many tokens it needs (lower k,
or raise max_seq_len), raised before anything is written.

Training tasks come from a mixture minus held-out clusters (``tasks.mixture.select``); the mixture's
cap and mixing rule choose the queries. ``metaicl(...)`` is the API behind ``adaptlab metaicl``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from adaptlab import text as text_path
from adaptlab.errors import ConfigError
from adaptlab.train.objectives import Objective, target_collate, target_loss


@dataclass
class MetaICLConfig:
    k: int = 4                      # demonstrations per meta-training example (paper: 16; 4 fits a CPU context)

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k={self.k}: must be at least 1")


def meta_examples(entries, pools: dict[str, list[dict]], queries: list, k: int, seed: int) -> list[dict]:
    """One in-context example per query (a ``MixExample``): k demonstrations from its task's pool."""
    from adaptlab.prompting.common import demo_text, join_demos

    tasks = {e.task.name: e.task for e in entries}
    rng = random.Random(seed)
    out = []
    for q in queries:
        task, pool = tasks[q.task], pools[q.task]
        others = [ex for ex in pool if ex is not q.source]
        if len(others) < k:
            raise ConfigError(f"metaicl: task {task.name} has {len(others)} other train examples, fewer than k={k}")
        demos = [demo_text(task, d) for d in rng.sample(others, k)]
        out.append({"prompt": join_demos(task, demos, task.render(q.source)), "target": task.target_text(q.source),
                    "task": task.name, "cluster": q.cluster})
    return out


class MetaICL(Objective):
    name = "metaicl"

    def __init__(self, tokenizer, max_len: int, k: int):
        super().__init__()
        self.tok, self.max_len, self.k = tokenizer, max_len, k

    def featurize(self, examples: list[dict]) -> list[dict]:
        feats = []
        for ex in examples:
            ctx, cont = text_path.encode_pair(self.tok, ex["prompt"], ex["target"])
            need = len(ctx) + len(cont)
            if need > self.max_len:
                raise ConfigError(f"metaicl: k={self.k} demonstrations + input of task {ex['task']} need {need} tokens, "
                                  f"more than max_seq_len={self.max_len}; lower k or raise max_seq_len")
            feats.append({"ids": ctx + cont, "n_target": len(cont)})
        return feats

    def collate(self, feats):
        return target_collate(feats, self.tok)

    def loss(self, model, batch):
        return target_loss(model, batch)


MAX_SEQ_LEN = 512


def metaicl(*, out: str, mixture: str, hold_out: list[str] | None = None, clusters: list[str] | None = None,
            method: str = "lora", model: str | None = None, sets: dict | None = None, resume: bool = False,
            progress: bool = True, backbone=None, **train_values) -> dict:
    """Meta-train in the in-context format on a mixture minus held-out clusters; writes an adapter."""
    from adaptlab.config import config_dict
    from adaptlab.data import load_split
    from adaptlab.models import load_backbone, resolve_name
    from adaptlab.tasks.mixture import build, load_mixture, select
    from adaptlab.train.sft import run_generalist
    from adaptlab.train.tune import build_configs, prepare_out, train_subset

    sets = {"max_seq_len": MAX_SEQ_LEN, **(sets or {})}          # k demonstrations + the input need the room
    m, mcfg, kcfg, tcfg = build_configs(method, sets, train_values, MetaICLConfig, "--set")
    mix = load_mixture(mixture)
    entries = select(mix, list(hold_out or []), list(clusters or []) or None)
    model_name = backbone.name if backbone is not None else resolve_name(model)
    resolved = {"method": method, "model": model_name, "method_config": config_dict(mcfg),
                "train_config": config_dict(tcfg), "metaicl_config": config_dict(kcfg), "mixture": mix.to_dict(),
                "hold_out": list(hold_out or []),
                "train_clusters": list(dict.fromkeys(e.cluster for e in entries))}
    outp = Path(out)
    prepare_out(outp, resolved, resume, "metaicl_config.json", "metaicl")
    pools = {e.task.name: load_split(e.task, "train", None) for e in entries}
    queries = train_subset(build(mix, entries, pools, tcfg.seed), tcfg.train_limit)
    examples = meta_examples(entries, pools, queries, kcfg.k, tcfg.seed)
    if backbone is None:
        backbone = load_backbone(model)
    if backbone.kind != "decoder":
        raise ConfigError(f"metaicl: {model_name} is an encoder; MetaICL needs a decoder")
    obj = MetaICL(backbone.tokenizer, tcfg.max_seq_len, kcfg.k)
    obj.featurize(examples)                     # k demonstrations that do not fit fail here, before any write
    return run_generalist("metaicl", backbone, method, mcfg, tcfg, examples, obj, resolved, outp, resume, progress)
