"""Tuning quality on SST-2: every method with the same train subset and budget, mean of seeds.

    ADAPTLAB_DATA_DIR=bench-data python bench/tuning_quality.py --methods full,head,lora,ia3

Each (method, seed) run is `adaptlab.train.tune` (the code behind `adaptlab tune`) on the first
``--train-limit`` SST-2 train examples after the loop's fixed shuffle (the same subset for every
method and seed), then `adaptlab eval --adapter` on the validation split (872). Rows are
appended to ``--results`` (JSONL) as they finish; finished (method, seed) rows are skipped on a
rerun, so the other methods' rows can be added later with their own ``--methods``. Prints the
table: mean accuracy over seeds (and each seed), trainable parameters, adapter bytes, and the
majority-class baseline. A method run with another ``--lr`` or ``--set`` is its own row (a
hyperparameter search lands next to the defaults, each with its mean dev metric to choose by).
``--threads 1`` lets two runs share a 2-core machine. ``--also SPLIT`` scores each tuned adapter on
another split as well (e.g. ``test[:]``, SST-2's labelled test file, which no choice ever looked at);
its accuracy is kept in the row and printed as another column.
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="full,head,lora,ia3")
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--eval-limit", type=int, default=200, help="dev examples per epoch (best-epoch keeping)")
    ap.add_argument("--test-limit", type=int, default=None, help="validation examples scored (default: all)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="method:key=value (repeatable)")
    ap.add_argument("--lr", dest="lrs", action="append", default=[], help="method=value: another learning rate (repeatable)")
    ap.add_argument("--results", default="bench/results/tuning_quality.jsonl")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--also", action="append", default=[],
                    help="another split spec to score each adapter on too, e.g. test[:] (repeatable)")
    ap.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                    help="torch threads (1 lets two runs share 2 cores)")
    args = ap.parse_args()
    from adaptlab.models import DEFAULTS, resolve_name
    from adaptlab.tuning import METHODS

    # every learning rate from the method registry (the model's kind picks encoder_lr where set)
    kind = DEFAULTS.get(resolve_name(args.model), {}).get("kind", "encoder")
    LR = {m: METHODS[m].default_lr(kind) for m in METHODS}

    import torch

    torch.set_num_threads(args.threads)
    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.models import load_backbone
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task
    from adaptlab.train import tune
    from adaptlab.tuning.io import load_adapter

    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()] if results.exists() else []
    budget = {"model": args.model, "task": args.task, "train_limit": args.train_limit, "epochs": args.epochs,
              "batch_size": args.batch_size, "max_seq_len": args.max_seq_len}
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    extra: dict[str, dict] = {}
    for s in args.sets:
        m, _, kv = s.partition(":")
        k, _, v = kv.partition("=")
        extra.setdefault(m, {})[k] = v
    for s in args.lrs:
        m, _, v = s.partition("=")
        LR[m] = float(v)

    def setting(r: dict) -> tuple:         # a method's runs with another lr or --set are another row
        return r["method"], r["lr"], tuple(sorted(r["sets"].items()))

    done = {setting(r) + (r["seed"],) for r in rows if r.get("budget") == budget}
    task = load_task(args.task)
    test = load_split(task, "test", limit=args.test_limit)
    if not args.table_only:
        also = {spec: load_split(task, spec) for spec in args.also}
        backbone = load_backbone(args.model)
        for seed in seeds:                      # every method's seed 0 first, then seed 1, ...
            for method in methods:
                if setting({"method": method, "lr": LR.get(method), "sets": extra.get(method, {})}) + (seed,) in done:
                    continue
                out = Path(tempfile.mkdtemp(prefix=f"tq-{method}-{seed}-")) / "run"
                t0 = time.perf_counter()
                stats = tune(args.task, method, out=str(out), backbone=backbone, sets=dict(extra.get(method, {})),
                             epochs=args.epochs, train_limit=args.train_limit, batch_size=args.batch_size,
                             lr=LR.get(method), seed=seed, max_seq_len=args.max_seq_len,
                             eval_limit=args.eval_limit, save_every=10_000, progress=True)
                wall = time.perf_counter() - t0
                _, tuned = load_adapter(out, None)
                lm = make_lm(backbone, model=tuned, batch_size=64, truncate=task.truncate)
                res = evaluate(lm, task, make_strategy("zero-shot"), test)
                scored = {spec: evaluate(lm, task, make_strategy("zero-shot"), exs).metrics
                          for spec, exs in also.items()}
                row = {"method": method, "seed": seed, "budget": budget, "lr": LR.get(method),
                       "sets": extra.get(method, {}), "accuracy": res.metrics["accuracy"], "n": res.metrics["n"],
                       "trainable_params": stats["trainable_params"],
                       "adapter_bytes": (out / "adapter_model.safetensors").stat().st_size,
                       "train_seconds": stats["train_seconds"], "wall_seconds": round(wall, 1),
                       "tokens_seen": stats["tokens_seen"], "dev_per_epoch": stats["dev_per_epoch"],
                       "dev_n": args.eval_limit,
                       "also": {spec: {"accuracy": m["accuracy"], "n": m["n"]} for spec, m in scored.items()},
                       "date": time.strftime("%Y-%m-%d")}
                rows.append(row)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{method} seed {seed}: accuracy {row['accuracy']:.4f}"
                      + "".join(f", {k} {v['accuracy']:.4f}" for k, v in row["also"].items())
                      + f" ({wall:.0f} s)", file=sys.stderr)
                shutil.rmtree(out.parent, ignore_errors=True)
    golds = [task.gold(ex) for ex in test]
    majority = max(golds.count(lab) for lab in task.labels) / len(golds)
    print(f"{args.task} validation n={len(test)}, model {args.model}; budget: {args.train_limit} train examples, "
          f"{args.epochs} epochs, batch {args.batch_size}, max_seq_len {args.max_seq_len}; seeds {args.seeds}")
    print(f"majority-class baseline: {majority:.4f}\n")
    cols = "".join(f" {spec} (mean) | {spec} per seed |" for spec in args.also)
    print("| method | accuracy (mean) | per seed | trainable params | adapter bytes | lr | train s (mean) | dev (mean) |"
          + cols)
    print("| --- | --- | --- | --- | --- | --- | --- | --- |" + " --- | --- |" * len(args.also))
    found = {setting(r) for r in rows if r.get("budget") == budget}
    rank = {m: i for i, m in enumerate(methods)}
    for key in sorted(found, key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1], k[2])):
        rs = sorted((r for r in rows if setting(r) == key and r.get("budget") == budget and r["seed"] in seeds),
                    key=lambda r: r["seed"])
        if not rs:
            continue
        name = key[0] + "".join(f" {k}={v}" for k, v in key[2])
        print(f"| {name} |{_cells([r['accuracy'] for r in rs])} "
              f"{rs[0]['trainable_params']:,} | {rs[0]['adapter_bytes']:,} | {rs[0]['lr']} | "
              f"{statistics.mean(r['train_seconds'] for r in rs):.0f} | "
              f"{statistics.mean(r['dev_per_epoch'][-1][task.metric] for r in rs):.4f} |"
              + "".join(_cells([r.get("also", {}).get(spec, {}).get("accuracy") for r in rs]) for spec in args.also))


def _cells(accs: list) -> str:
    """The mean and per-seed cells of one accuracy column ("—" where a row was run without it)."""
    if any(a is None for a in accs):
        return " — | — |"
    return f" {statistics.mean(accs):.4f} | {', '.join(f'{a:.4f}' for a in accs)} |"


if __name__ == "__main__":
    main()
