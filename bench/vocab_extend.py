"""A vocabulary for SST-2's text, and LoRA with and without 100 added whole-word tokens.

    ADAPTLAB_DATA_DIR=bench-data python bench/vocab_extend.py [--seeds 0,1,2] [--model minilm-l6]

1. ``adaptlab vocab --task sst2 --vocab-size 8000 --extend 100`` on the model's tokenizer: tokens
   per word on SST-2's train text under the base tokenizer, the new 8,000-token vocabulary, and the
   base + 100 added words; the most fragmented words.
2. ``lora`` on SST-2 with and without ``--vocab`` (the 100 rows trained beside LoRA, initialised
   as the mean of their old pieces), the tuning-quality budget (``--train-limit`` examples,
   ``--epochs``, batch 16, max_seq_len 64, the registry's learning rate), ``--seeds``; accuracy on
   SST-2's validation split (872). Rows go to ``--results``; a rerun skips finished rows.
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--extend", type=int, default=100)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--work", default="runs/bench-vocab")
    ap.add_argument("--results", default="bench/results/vocab_extend.jsonl")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from adaptlab import vocab
    from adaptlab.data import load_split, task_texts
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.models import load_backbone
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task
    from adaptlab.train import tune
    from adaptlab.tuning.io import load_adapter

    task = load_task("sst2")
    bb = load_backbone(args.model)
    ext = Path(args.work) / f"{args.model}-v{args.vocab_size}-x{args.extend}"
    if not (ext / vocab.EXTENSION).exists():
        rep = vocab.build(task_texts(task, load_split(task, "train")), bb, args.vocab_size, args.extend, str(ext))
    rep = json.loads((ext / "vocab_report.json").read_text())
    print(f"tokens per word on SST-2 train text: {rep['fertility']}")
    print("most fragmented:", ", ".join(f"{r['word']} ({len(r['base_pieces'])}->{len(r['new_pieces'])})"
                                        for r in rep["most_fragmented"][:10]))
    print("added (first 20):", ", ".join(rep["added"][:20]))
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()] if results.exists() else []
    budget = {"model": args.model, "method": args.method, "train_limit": args.train_limit, "epochs": args.epochs,
              "extend": args.extend, "vocab_size": args.vocab_size}
    done = {(r["vocab"], r["seed"]) for r in rows if r.get("budget") == budget}
    test = load_split(task, "test")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for with_vocab in (False, True):
            if (with_vocab, seed) in done:
                continue
            out = Path(tempfile.mkdtemp(prefix=f"vocab-{with_vocab}-{seed}-")) / "run"
            st = tune("sst2", args.method, out=str(out), backbone=bb, epochs=args.epochs, train_limit=args.train_limit,
                      batch_size=16, max_seq_len=64, seed=seed, eval_limit=args.eval_limit, save_every=10_000,
                      vocab=str(ext) if with_vocab else None, progress=True)
            body, tuned = load_adapter(out, backbone=bb)
            res = evaluate(make_lm(body, model=tuned, batch_size=64, truncate=task.truncate), task,
                           make_strategy("zero-shot"), test)
            row = {"vocab": with_vocab, "seed": seed, "budget": budget, "accuracy": res.metrics["accuracy"],
                   "n": res.metrics["n"], "trainable_params": st["trainable_params"],
                   "adapter_bytes": st["adapter_bytes"], "tokens_seen": st["tokens_seen"],
                   "train_seconds": st["train_seconds"], "fertility": rep["fertility"], "date": time.strftime("%Y-%m-%d")}
            rows.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"vocab={with_vocab} seed {seed}: {row['accuracy']:.4f}")
    print("| run | accuracy (mean ± std) | per seed | trainable params | adapter bytes | tokens seen |")
    print("| --- | --- | --- | --- | --- | --- |")
    for with_vocab in (False, True):
        rs = sorted((r for r in rows if r["vocab"] == with_vocab and r.get("budget") == budget), key=lambda r: r["seed"])
        if not rs:
            continue
        accs = [r["accuracy"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        name = f"{args.method} + {args.extend} tokens" if with_vocab else args.method
        print(f"| {name} | {statistics.fmean(accs):.4f} ± {sd:.4f} | {', '.join(f'{a:.4f}' for a in accs)} | "
              f"{rs[0]['trainable_params']:,} | {rs[0]['adapter_bytes']:,} | {rs[0]['tokens_seen']:,} |")


if __name__ == "__main__":
    main()
