"""``adaptlab experiment held-out-clusters``: FLAN's evaluation of instruction tuning (Wei et al.
2022, "Finetuned Language Models Are Zero-Shot Learners", sec. 2 and 4.1).

Tasks are grouped in clusters (a mixture's ``cluster`` field). For every held-out cluster C, the
model is instruction-tuned on the mixture's other clusters only and evaluated zero-shot on C's
tasks, with each task's own YAML template (never a training template), against the untuned
model on the same prompts and examples:

    gain(C, t) = score(tuned on {clusters} - {C}; t) - score(untuned; t),     t in C

The cluster-count ablation (FLAN fig. 6) holds one cluster A out and trains on the first
n = 1, 2, 4, ..., all-but-one of the other clusters (the mixture's order), one seed:

    held-out score of A  as a function of  n

Each instruction-tuned model is a normal adapter (``adaptlab instruct``) under ``OUT/runs/``; every
finished (kind, cluster, n, seed) is one record in ``OUT/results.jsonl``, so a re-run keeps them.
``OUT/report.md`` and ``report.html`` hold the tables and two plots: one bar group per held-out
cluster (untuned vs tuned, the mean over the cluster's tasks, error bars the std over seeds) and one
line for the ablation. The resolved settings are saved as ``OUT/held_out_config.json``.
"""

from __future__ import annotations

import base64
import io
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.config import atomic_write_bytes, atomic_write_json, atomic_write_text, check, config_dict
from adaptlab.errors import ConfigError

DEFAULT_CLUSTERS = "sentiment,nli,topic,acceptability"


@dataclass
class HeldOutConfig:
    mixture: str = "flan-mini"
    clusters: str = DEFAULT_CLUSTERS     # the held-out clusters, one leave-one-out run each
    ablation: str | None = None          # the ablation's held-out cluster (default: the first); "none": skip
    counts: str = "1,2,4,all"            # training-cluster counts of the ablation ("all" = all but one)
    method: str = "lora"
    seeds: int = 1
    limit: int | None = 80               # test examples per held-out task
    train_limit: int = 400               # mixed training examples
    max_steps: int = 30
    batch_size: int = 8
    max_seq_len: int = 128

    def __post_init__(self):
        check(self.seeds >= 1 and self.max_steps >= 1 and self.batch_size >= 1 and self.train_limit >= 1,
              "seeds, max_steps, batch_size and train_limit must be at least 1")
        check(self.limit is None or self.limit >= 1, "limit: must be at least 1")


def plan(cfg: HeldOutConfig):
    """The mixture, the held-out clusters, the ablation cluster and its training-cluster lists,
    every name checked before anything trains."""
    from adaptlab.tasks.mixture import load_mixture

    mix = load_mixture(cfg.mixture)
    order = list(dict.fromkeys(e.cluster for e in mix.tasks))
    held = [c.strip() for c in cfg.clusters.split(",") if c.strip()]
    bad = [c for c in held if c not in order]
    if not held or bad:
        raise ConfigError(f"held-out-clusters: unknown cluster {bad[0] if bad else '(none given)'!r} "
                          f"(--task C1,C2,...); mixture {mix.name} has: {', '.join(order)}")
    if len(order) < 2:
        raise ConfigError(f"held-out-clusters: mixture {mix.name} has one cluster; leaving it out leaves nothing")
    abl = held[0] if cfg.ablation is None else cfg.ablation
    lists = []
    if abl != "none":
        if abl not in order:
            raise ConfigError(f"held-out-clusters: ablation cluster {abl!r} is not in mixture {mix.name}")
        others = [c for c in order if c != abl]
        for n in cfg.counts.split(","):
            n = n.strip()
            k = len(others) if n == "all" else int(n) if n.isdigit() and int(n) >= 1 else None
            if k is None:
                raise ConfigError(f"held-out-clusters: counts={cfg.counts!r}: positive integers or 'all'")
            if others[:k] not in lists:
                lists.append(others[:k])
    tasks = {c: [e.task for e in mix.tasks if e.cluster == c] for c in dict.fromkeys(held + [abl]) if c != "none"}
    return mix, order, held, abl, lists, tasks


def held_out_clusters(cfg: HeldOutConfig, out: str, *, model: str | None = None, progress: bool = True) -> dict:
    from adaptlab.compare import _write_results, load_results
    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.models import kind_of_ref, load_backbone
    from adaptlab.prompting import make_strategy
    from adaptlab.train.sft import instruct
    from adaptlab.tuning.io import load_adapter

    mix, order, held, abl, lists, tasks = plan(cfg)
    if kind_of_ref(model) != "decoder":
        raise ConfigError(f"held-out-clusters: {model} is an encoder; instruction tuning needs a decoder")
    tests = {t.name: load_split(t, "test", None, cfg.limit) for ts in tasks.values() for t in ts}
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone(model)
    settings = {**config_dict(cfg), "model": backbone.name, "mixture_clusters": order}
    atomic_write_json(outp / "held_out_config.json", settings)
    recs = load_results(outp)
    done = {(r["kind"], r["held_out"], tuple(r["train_clusters"]), r["seed"]) for r in recs}

    def scores(cluster: str, tuned=None) -> dict:
        res = {}
        for t in tasks[cluster]:
            lm = make_lm(backbone, model=tuned, truncate=t.truncate)
            res[t.name] = round(evaluate(lm, t, make_strategy("zero-shot"), tests[t.name]).score, 4)
        return res

    def step(kind: str, cluster: str, train: list[str], seed: int) -> None:
        if (kind, cluster, tuple(train), seed) in done:
            return
        t0 = time.perf_counter()
        rec = {"kind": kind, "held_out": cluster, "train_clusters": train, "seed": seed}
        if kind == "untuned":
            rec["scores"] = scores(cluster)
        else:
            rundir = outp / "runs" / f"{kind}-{cluster}-{len(train)}-s{seed}"
            stats = instruct(out=str(rundir), mixture=cfg.mixture, hold_out=[cluster], clusters=train,
                             method=cfg.method, sets={"max_seq_len": cfg.max_seq_len}, backbone=backbone,
                             resume=(rundir / "instruct_config.json").exists(), progress=progress, seed=seed,
                             max_steps=cfg.max_steps, batch_size=cfg.batch_size, train_limit=cfg.train_limit)
            _, tuned = load_adapter(rundir, backbone=backbone)
            rec.update(scores=scores(cluster, tuned), adapter=str(rundir), train_steps=stats["steps"],
                       trainable_params=stats["trainable_params"], adapter_bytes=stats["adapter_bytes"],
                       train_seconds=stats["train_seconds"])
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        recs.append(rec)
        _write_results(outp, recs)
        done.add((kind, cluster, tuple(train), seed))
        if progress:
            print(f"  {kind} held out {cluster}, trained on {len(train)} cluster(s), seed {seed}: "
                  f"{json.dumps(rec['scores'])}", file=sys.stderr)

    for c in held:
        step("untuned", c, [], 0)
        for seed in range(cfg.seeds):
            step("loco", c, [x for x in order if x != c], seed)
    if abl != "none":
        step("untuned", abl, [], 0)
        for train in lists:
            step("ablation", abl, train, 0)
    return report(outp, recs, settings)


def _mean(cluster_scores: dict) -> float:
    return statistics.fmean(cluster_scores.values())


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def tables(recs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(per held-out task: untuned, tuned mean/std over seeds, gain; ablation rows by n)."""
    base = {r["held_out"]: r["scores"] for r in recs if r["kind"] == "untuned"}
    loco, rows = {}, []
    for r in recs:
        if r["kind"] == "loco":
            loco.setdefault(r["held_out"], []).append(r["scores"])
    for c, runs in loco.items():
        for t in runs[0]:
            m, s = _mean_std([x[t] for x in runs])
            b = base.get(c, {}).get(t)
            rows.append({"held_out": c, "task": t, "untuned": b, "tuned": round(m, 4), "std": round(s, 4),
                         "seeds": len(runs), "gain": None if b is None else round(m - b, 4)})
    abl = sorted((r for r in recs if r["kind"] == "ablation"), key=lambda r: len(r["train_clusters"]))
    arows = [{"held_out": r["held_out"], "n_clusters": len(r["train_clusters"]), "clusters": r["train_clusters"],
              "score": round(_mean(r["scores"]), 4), "untuned": round(_mean(base[r["held_out"]]), 4)
              if r["held_out"] in base else None} for r in abl]
    return rows, arows


def _plots(recs: list[dict], rows: list[dict], arows: list[dict]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    clusters = list(dict.fromkeys(r["held_out"] for r in rows))
    if clusters:
        base = {r["held_out"]: _mean(r["scores"]) for r in recs if r["kind"] == "untuned"}
        per_seed = {c: [_mean(r["scores"]) for r in recs if r["kind"] == "loco" and r["held_out"] == c] for c in clusters}
        fig, ax = plt.subplots(figsize=(1.6 * len(clusters) + 2.5, 3.6))
        xs = range(len(clusters))
        ax.bar([x - 0.2 for x in xs], [base.get(c, float("nan")) for c in clusters], 0.4, label="untuned")
        ms = [_mean_std(per_seed[c]) for c in clusters]
        ax.bar([x + 0.2 for x in xs], [m for m, _ in ms], 0.4, yerr=[s for _, s in ms], capsize=3,
               label=f"instruction-tuned on the other clusters ({max(len(v) for v in per_seed.values())} seed(s))")
        ax.set_xticks(list(xs), clusters)
        ax.set_ylabel("held-out score (mean over the cluster's tasks)")
        ax.set_title("Zero-shot on a held-out cluster")
        ax.legend(fontsize=8, loc="lower right")
        out["held_out.png"] = fig
    if arows:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot([a["n_clusters"] for a in arows], [a["score"] for a in arows], "o-", label="instruction-tuned")
        if arows[0]["untuned"] is not None:
            ax.axhline(arows[0]["untuned"], ls="--", color="gray", label="untuned")
        ax.set_xticks([a["n_clusters"] for a in arows])
        ax.set_xlabel("training clusters")
        ax.set_ylabel(f"score on held-out {arows[0]['held_out']}")
        ax.set_title("More clusters in training (FLAN fig. 6)")
        ax.legend(fontsize=8)
        out["ablation.png"] = fig
    pngs = {}
    for name, fig in out.items():
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        pngs[name] = buf.getvalue()
    return pngs


def report(outp: Path, recs: list[dict], settings: dict) -> dict:
    rows, arows = tables(recs)
    def fmt(v, sign=""):
        return "—" if v is None else f"{v:{sign}.4f}"

    md = [f"# adaptlab experiment held-out-clusters\n\nSettings: {json.dumps(settings)}\n",
          "Zero-shot with each task's own template, untuned vs instruction-tuned on every other cluster:\n",
          "| held-out cluster | task | untuned | tuned (mean ± std over seeds) | gain |", "| --- | --- | --- | --- | --- |"]
    md += [f"| {r['held_out']} | {r['task']} | {fmt(r['untuned'])} | {r['tuned']:.4f} ± {r['std']:.4f} ({r['seeds']}) "
           f"| {fmt(r['gain'], '+')} |" for r in rows]
    if arows:
        md += ["", f"Cluster-count ablation, {arows[0]['held_out']} held out (mean over its tasks; untuned "
               f"{fmt(arows[0]['untuned'])}):\n", "| training clusters | which | score |", "| --- | --- | --- |"]
        md += [f"| {a['n_clusters']} | {', '.join(a['clusters'])} | {a['score']:.4f} |" for a in arows]
    try:
        pngs = _plots(recs, rows, arows)
    except ImportError:
        pngs = {}
    md += [""] + [f"![{n}]({n})" for n in pngs]
    text = "\n".join(md) + "\n"
    for name, png in pngs.items():
        atomic_write_bytes(outp / name, png)
    atomic_write_text(outp / "report.md", text)
    imgs = "".join(f"<img alt='{n}' src='data:image/png;base64,{base64.b64encode(p).decode()}'>" for n, p in pngs.items())
    atomic_write_text(outp / "report.html", "<!doctype html><meta charset='utf-8'><title>held-out-clusters</title><pre>"
                      + text.replace("&", "&amp;").replace("<", "&lt;") + "</pre>" + imgs)
    return {"out": str(outp), "rows": rows, "ablation": arows, "settings": settings}
