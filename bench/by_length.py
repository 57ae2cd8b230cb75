"""Accuracy by input length: where two tuned adapters differ on a task's test split.

    ADAPTLAB_DATA_DIR=bench-data python bench/by_length.py --adapter runs/full --adapter runs/ptv2

Each adapter (an `adaptlab tune` output folder) is scored with `adaptlab eval`'s code on the same
examples; the table gives accuracy per bin of the input's word count (the schema's ``text`` field),
so a method that reads short phrases well but long sentences badly shows up (SST-2's train split is
mostly phrases, its validation split whole sentences).
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import os


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", action="append", required=True, help="tune output folder (repeatable)")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--split", default="test")
    ap.add_argument("--bins", default="10,20,30", help="upper word-count edges; the last bin is open")
    ap.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task
    from adaptlab.tuning.io import load_adapter

    task = load_task(args.task)
    test = load_split(task, args.split)
    words = [len(task.fields(ex)["text"].split()) for ex in test]
    edges = [int(x) for x in args.bins.split(",")]

    def bin_of(n: int) -> int:
        return next((i for i, e in enumerate(edges) if n <= e), len(edges))

    names = [f"<= {e}" if i == 0 else f"{edges[i - 1] + 1}-{e}" for i, e in enumerate(edges)] + [f"> {edges[-1]}"]
    counts = [sum(bin_of(n) == b for n in words) for b in range(len(names))]
    rows = []
    for folder in args.adapter:
        backbone, tuned = load_adapter(folder, None)
        lm = make_lm(backbone, model=tuned, batch_size=64, truncate=task.truncate)
        res = evaluate(lm, task, make_strategy("zero-shot"), test)
        right = [0] * len(names)
        for rec in res.records:
            right[bin_of(words[rec["i"]])] += bool(rec["correct"])
        rows.append((folder, res.score, [r / c if c else float("nan") for r, c in zip(right, counts)]))
    print(f"{args.task} {args.split}: {len(test)} examples; words per example: "
          + ", ".join(f"{n} {c}" for n, c in zip(names, counts)))
    print("| adapter | all | " + " | ".join(f"{n} words" for n in names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    for folder, score, accs in rows:
        print(f"| {folder} | {score:.4f} | " + " | ".join(f"{a:.4f}" for a in accs) + " |")


if __name__ == "__main__":
    main()
