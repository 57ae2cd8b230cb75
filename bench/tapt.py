"""Does continued pretraining help the default encoder on SST-2? TAPT and DAPT vs none.

    ADAPTLAB_DATA_DIR=bench-data python bench/tapt.py [--seeds 0,1,2] [--methods head,lora]

Three bodies of the default encoder (minilm-l6): the shipped one; TAPT = masked-LM ``full``
continued pretraining on SST-2's own train split with the labels dropped (``adaptlab pretrain
--task sst2``); DAPT = the same on MR's sentences (another movie-review corpus, ``--text
mr/all.jsonl``). Both pretrainings get the same budget (``--pt-steps`` steps of ``--pt-batch``
texts); ``tapt-warm`` / ``dapt-warm`` first train the new MLM head alone (``pretrain --method head``,
``--warm-steps``) and then run the same full pretraining from that folder. MR holds most of SST-2's validation and test sentences (SST was built from the same
Rotten Tomatoes sentences), so DAPT's corpus is MR with every sentence that matches one of them
(letters and digits, first 30) taken out: no evaluation sentence is seen, even unlabelled. Then every ``--methods`` x body x seed is tuned on SST-2 with one budget (the
tuning-quality bench's: ``--train-limit`` examples, ``--epochs``, batch 16, max_seq_len 64, the
registry's learning rates) and scored on SST-2's validation split (872 sentences). Rows go to
``--results`` (a rerun skips finished rows); the table is printed at the end.
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def _key(s: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]", "", s.lower())[:30]


def _mr_without_sst2_eval(data_dir: Path, work: Path) -> Path:
    """MR's sentences minus those that are SST-2 validation or test sentences, as a .txt file."""
    evals = set()
    for split in ("validation", "test"):
        for line in (data_dir / "sst2" / f"{split}.jsonl").read_text().splitlines():
            if line.strip():
                evals.add(_key(json.loads(line)["text"]))
    mr = [json.loads(x)["text"] for x in (data_dir / "mr" / "all.jsonl").read_text().splitlines() if x.strip()]
    kept = [t for t in mr if _key(t) not in evals]
    work.mkdir(parents=True, exist_ok=True)
    out = work / "mr_minus_sst2_eval.txt"
    out.write_text("\n".join(kept) + "\n")
    print(f"DAPT corpus: {len(kept)} of MR's {len(mr)} sentences ({len(mr) - len(kept)} match SST-2 eval sentences)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="head,lora")
    ap.add_argument("--bodies", default="none,tapt,dapt")
    ap.add_argument("--pt-steps", type=int, default=500)
    ap.add_argument("--pt-batch", type=int, default=32)
    ap.add_argument("--pt-lr", type=float, default=None, help="default: the registry's full lr on an encoder")
    ap.add_argument("--warm-steps", type=int, default=500, help="tapt-warm / dapt-warm: MLM-head-only steps first")
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--work", default="runs/bench-tapt", help="where the pretrained bodies are kept")
    ap.add_argument("--results", default="bench/results/tapt.jsonl")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.models import load_backbone
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task
    from adaptlab.train import tune
    from adaptlab.train.pretrain import pretrain
    from adaptlab.tuning import METHODS
    from adaptlab.tuning.io import load_adapter

    data_dir = Path(os.environ.get("ADAPTLAB_DATA_DIR", "bench-data"))
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()] if results.exists() else []
    budget = {"train_limit": args.train_limit, "epochs": args.epochs, "batch_size": 16, "max_seq_len": 64,
              "pt_steps": args.pt_steps, "pt_batch": args.pt_batch}
    if args.pt_lr is not None:
        budget["pt_lr"] = args.pt_lr
    if any("-warm" in b for b in args.bodies.split(",")) and args.warm_steps != 500:
        budget["warm_steps"] = args.warm_steps
    done = {(r["body"], r["method"], r["seed"]) for r in rows if r.get("budget") == budget}
    task = load_task("sst2")
    sources = {"tapt": {"task": "sst2"}, "dapt": {"text": str(_mr_without_sst2_eval(data_dir, Path(args.work)))}}
    pt_info = {}
    if not args.table_only:
        test = load_split(task, "test")
        for body in args.bodies.split(","):
            model = "minilm-l6"
            if body != "none":
                kind, _, warm = body.partition("-")             # "tapt-warm": the MLM head alone first
                folder = Path(args.work) / f"{body}-{args.pt_steps}x{args.pt_batch}"
                start = "minilm-l6"
                if warm:
                    start = str(Path(args.work) / f"{kind}-head-{args.warm_steps}x{args.pt_batch}")
                    if not (Path(start) / "model.safetensors").exists():
                        res = pretrain(**sources[kind], method="head", model="minilm-l6", out=start,
                                       resume=(Path(start) / "pretrain_config.json").exists(),
                                       sets={"max_seq_len": "64"}, max_steps=args.warm_steps,
                                       batch_size=args.pt_batch)
                        print(f"{body} warm-up (MLM head only): {res['steps']} steps, dev MLM loss "
                              f"{res['dev_per_epoch'][-1]['dev_loss']}")
                if not (folder / "model.safetensors").exists():
                    t0 = time.perf_counter()
                    res = pretrain(**sources[kind], method="full", model=start, out=str(folder),
                                   resume=(folder / "pretrain_config.json").exists(),
                                   sets={"max_seq_len": "64"}, max_steps=args.pt_steps, batch_size=args.pt_batch,
                                   lr=args.pt_lr)
                    print(f"{body}: {res['texts']} texts, {res['steps']} steps, {res['tokens_seen']} tokens, "
                          f"dev MLM loss {res['dev_per_epoch'][-1]['dev_loss']}, {time.perf_counter() - t0:.0f} s")
                pt_info[body] = json.loads((folder / "adaptlab_pretrain.json").read_text())["stats"]
                model = str(folder)
            bb = None
            for seed in [int(s) for s in args.seeds.split(",")]:
                for method in args.methods.split(","):
                    if (body, method, seed) in done:
                        continue
                    bb = bb or load_backbone(model)
                    out = Path(tempfile.mkdtemp(prefix=f"tapt-{body}-{method}-{seed}-")) / "run"
                    st = tune("sst2", method, out=str(out), backbone=bb, epochs=args.epochs,
                              train_limit=args.train_limit, batch_size=16, max_seq_len=64, seed=seed,
                              eval_limit=args.eval_limit, save_every=10_000, progress=True)
                    _, tuned = load_adapter(out, backbone=bb)
                    acc = evaluate(make_lm(bb, model=tuned, batch_size=64, truncate=task.truncate), task,
                                   make_strategy("zero-shot"), test).metrics["accuracy"]
                    row = {"body": body, "method": method, "seed": seed, "budget": budget, "accuracy": acc,
                           "n": len(test), "lr": METHODS[method].default_lr("encoder"),
                           "train_seconds": st["train_seconds"], "pretrain": pt_info.get(body),
                           "date": time.strftime("%Y-%m-%d")}
                    rows.append(row)
                    with results.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(f"{body} {method} seed {seed}: {acc:.4f}")
    print("| method | body | accuracy (mean ± std) | per seed | vs none |")
    print("| --- | --- | --- | --- | --- |")
    base = {}
    for method in args.methods.split(","):
        for body in args.bodies.split(","):
            rs = sorted((r for r in rows if r["method"] == method and r["body"] == body and r.get("budget") == budget),
                        key=lambda r: r["seed"])
            if not rs:
                continue
            accs = [r["accuracy"] for r in rs]
            mean = statistics.fmean(accs)
            if body == "none":
                base[method] = mean
            delta = f"{100 * (mean - base[method]):+.2f} pts" if method in base and body != "none" else "—"
            sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
            print(f"| {method} | {body} | {mean:.4f} ± {sd:.4f} | {', '.join(f'{a:.4f}' for a in accs)} | {delta} |")


if __name__ == "__main__":
    main()
