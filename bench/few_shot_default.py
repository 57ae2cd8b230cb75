"""Few-shot's default demonstration selection, old (``random``) vs new (``balanced``), side by side
on the built-in classification tasks with the default decoder (smollm2-135m-instruct), issue 28.

Every (task, seed) runs both selections back to back on the same test examples (the first --limit
of the test split) with the same k and seed; only ``selection`` differs. Each row records the
accuracy, macro-F1, the labels of the k demonstrations, and the share of the most-predicted label
(1.0: the model predicts one label for every input, the collapse the issue reports). Rows are
appended to bench/results/few_shot_default.jsonl as they finish; a rerun skips the rows already
there (so it can be stopped and resumed, or given more seeds).

    ADAPTLAB_DATA_DIR=bench-data python bench/few_shot_default.py \
        [--tasks sst2,mr,...] [--k 4] [--limit 100] [--seeds 3] [--threads 1]
    python bench/few_shot_default.py --table        # print the table of what is done
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

OUT = Path("bench/results/few_shot_default.jsonl")
TASKS = "sst2,mr,subj,cola,agnews,sst5,rte,mrpc"
SELECTIONS = ("random", "balanced")     # old default, new default


def done_rows() -> list[dict]:
    if not OUT.exists():
        return []
    return [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]


def key(r: dict) -> tuple:
    return (r["task"], r["selection"], r["seed"], r["k"], r["limit"])


def run_one(lm, task, test, pool, selection: str, k: int, seed: int) -> dict:
    from adaptlab.evaluate import evaluate
    from adaptlab.prompting import make_strategy

    strategy = make_strategy("few-shot", {"k": str(k), "selection": selection, "seed": str(seed)})
    t = time.perf_counter()
    res = evaluate(lm, task, strategy, test, split="test", pool=pool)
    demos = strategy._fixed or []
    # a demo ends with its target: " " + the label's word (the longest word that fits wins)
    words = sorted(task.labels, key=lambda lab: -len(task.word(lab)))
    demo_labels = collections.Counter(next((lab for lab in words if d.rstrip().endswith(task.word(lab))), "?")
                                      for d in demos)
    preds = collections.Counter(str(r["prediction"]) for r in res.records)
    golds = collections.Counter(str(r["gold"]) for r in res.records)
    return {"task": task.name, "selection": selection, "seed": seed, "k": k, "limit": len(test),
            "accuracy": round(res.metrics["accuracy"], 4), "macro_f1": round(res.metrics.get("macro_f1", 0.0), 4),
            "demo_labels": dict(demo_labels), "demo_label_kinds": len(demo_labels),
            "top_prediction_share": round(max(preds.values()) / len(test), 4),
            "majority_baseline": round(max(golds.values()) / len(test), 4),
            "seconds": round(time.perf_counter() - t, 1)}


def table(rows: list[dict]) -> str:
    by = collections.defaultdict(list)
    for r in rows:
        by[(r["task"], r["selection"])].append(r)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    out = ["| task | n | majority | random: accuracy (seeds) | random: seeds predicting one label (≥95%) | "
           "balanced: accuracy (seeds) | balanced: seeds predicting one label (≥95%) | balanced − random (points) |",
           "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: |"]
    means = {}
    for t in tasks:
        cells, m = [], {}
        for sel in SELECTIONS:
            rs = sorted(by[(t, sel)], key=lambda r: r["seed"])
            if not rs:
                cells += ["-", "-"]
                continue
            acc = [r["accuracy"] for r in rs]
            m[sel] = statistics.fmean(acc)
            sd = f" ± {statistics.stdev(acc):.3f}" if len(acc) > 1 else ""
            cells.append(f"{m[sel]:.3f}{sd} ({', '.join(f'{a:.2f}' for a in acc)})")
            cells.append(f"{sum(r['top_prediction_share'] >= 0.95 for r in rs)} of {len(rs)}")
        diff = f"{100 * (m['balanced'] - m['random']):+.1f}" if len(m) == 2 else "-"
        any_r = (by[(t, "random")] or by[(t, "balanced")])[0]
        out.append(f"| {t} | {any_r['limit']} | {any_r['majority_baseline']:.2f} | " + " | ".join(cells) + f" | {diff} |")
        means[t] = m
    both = [m for m in means.values() if len(m) == 2]
    if both:
        r_mean = statistics.fmean(m["random"] for m in both)
        b_mean = statistics.fmean(m["balanced"] for m in both)
        out.append(f"| **mean of {len(both)} tasks** | | | {r_mean:.3f} | | {b_mean:.3f} | | "
                   f"{100 * (b_mean - r_mean):+.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--k", type=int, default=None, help="demonstrations (default: few-shot's default k)")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", default=None)
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.table:
        print(table(done_rows()))
        return
    from adaptlab import threads

    print(threads.summary(threads.apply(args.threads)), file=sys.stderr)
    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.models import load_backbone
    from adaptlab.prompting.few_shot import FewShot
    from adaptlab.tasks import load_task

    k = args.k if args.k is not None else FewShot.k
    have = {key(r) for r in done_rows()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone(None)
    t_all = time.perf_counter()
    for seed in range(args.seeds):                   # seed-major: a stopped run still has whole pairs
        for name in args.tasks.split(","):
            task = load_task(name)
            test = load_split(task, "test", None, args.limit)
            pool = None
            for sel in SELECTIONS:
                if (task.name, sel, seed, k, len(test)) in have:
                    continue
                if pool is None:
                    pool = load_split(task, "train", None)
                lm = make_lm(backbone, truncate=task.truncate)
                row = run_one(lm, task, test, pool, sel, k, seed)
                with OUT.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{row['task']:8s} seed={seed} {sel:9s} k={k} n={row['limit']} acc={row['accuracy']:.3f} "
                      f"f1={row['macro_f1']:.3f} demos={row['demo_labels']} "
                      f"top_pred_share={row['top_prediction_share']:.2f} {row['seconds']:.0f}s", flush=True)
    print(f"total {time.perf_counter() - t_all:.0f} s", file=sys.stderr)
    print(table(done_rows()))


if __name__ == "__main__":
    main()
