"""Generalist measurements at CPU scale (docs/benchmarks.md, "Generalist"): FLAN-style
leave-one-cluster-out instruction tuning vs the untuned model, the cluster-count ablation, MetaICL
vs plain ICL vs instruction-tuned zero-shot, and Alpaca SFT loss before/after.

    python bench/generalist.py loco      [--clusters sentiment,nli,topic,acceptability] [--seeds 0]
    python bench/generalist.py ablation  [--held nli]
    python bench/generalist.py metaicl   [--held nli,topic]
    python bench/generalist.py alpaca
    python bench/generalist.py table     [--model M]   (markdown tables of the recorded rows: mean ± std over seeds)
    (each with [--model gemma3-270m]: the base decoder; default smollm2-135m-instruct)

Scale (printed with every row): the --model, LoRA r=8, mixture
flan-mini with --train-limit examples, --steps optimizer steps of --batch examples,
max_seq_len 128 (384 for MetaICL), --limit test examples per held-out task. Evaluation is
zero-shot with the task's own YAML template (never a training template); ICL/MetaICL use
few-shot:k=4 with the same seeded demonstrations. Raw rows go to bench/results/generalist.jsonl.
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ADAPTLAB_DATA_DIR", "bench-data")
RESULTS = Path(__file__).parent / "results" / "generalist.jsonl"
TASKS = {"sentiment": ["sst2", "mr"], "nli": ["rte", "mrpc"], "topic": ["agnews", "subj"],
         "acceptability": ["cola"], "commonsense": ["commonsenseqa"]}


MODEL = "smollm2-135m-instruct"


def score(adapter: str | None, tasks: list[str], limit: int, prompt: str = "zero-shot", k: int = 4, seed: int = 0):
    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.models import load_backbone
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task
    from adaptlab.tuning.io import load_adapter

    bb = load_backbone(MODEL)
    tuned = None
    if adapter:
        bb, tuned = load_adapter(adapter, backbone=bb)
    out = {}
    for name in tasks:
        t = load_task(name)
        exs = load_split(t, "test", limit=limit)
        strat = make_strategy(prompt, {"k": k, "seed": seed} if prompt == "few-shot" else None)
        kw = {"pool": load_split(t, "train")} if prompt == "few-shot" else {}
        lm = make_lm(bb, model=tuned, batch_size=16, truncate=t.truncate)
        out[name] = round(evaluate(lm, t, strat, exs, **kw).score, 4)
    return out


def train(kind: str, out: str, args, hold_out, clusters=None, seed=0, **extra) -> dict:
    from adaptlab.train.metaicl import metaicl
    from adaptlab.train.sft import instruct

    fn = instruct if kind == "instruct" else metaicl
    sets = {"r": 8, "max_seq_len": extra.pop("max_seq_len", 128), **extra}
    return fn(out=out, mixture="flan-mini", hold_out=hold_out, clusters=clusters, method="lora", sets=sets, model=MODEL,
              max_steps=args.steps, batch_size=args.batch, train_limit=args.train_limit, seed=seed, progress=False)


def emit(row: dict) -> None:
    row["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(row), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    global MODEL
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["loco", "ablation", "metaicl", "alpaca", "table"])
    ap.add_argument("--clusters", default="sentiment,nli,topic,acceptability")
    ap.add_argument("--held", default=None)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--train-limit", type=int, default=400)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--model", default=MODEL, help="smollm2-135m-instruct or gemma3-270m (the base decoder)")
    args = ap.parse_args()
    MODEL = args.model
    if args.mode == "table":
        return table(args.model, args.limit)
    seeds = [int(s) for s in args.seeds.split(",")]
    scale = {"model": MODEL, "steps": args.steps, "batch": args.batch,
             "train_limit": args.train_limit, "test_limit": args.limit, "threads": os.environ.get("OMP_NUM_THREADS")}
    tmp = tempfile.mkdtemp(prefix="gen-")
    if args.mode == "loco":
        for c in args.clusters.split(","):
            base = score(None, TASKS[c], args.limit)
            for s in seeds:
                res = train("instruct", f"{tmp}/loco-{c}-{s}", args, [c], seed=s)
                emit({"bench": "loco", "held_out": c, "seed": s, "untuned": base, "tuned": score(res["out"], TASKS[c], args.limit),
                      "train_clusters": [x for x in ["sentiment", "nli", "topic", "acceptability", "commonsense",
                                                     "arithmetic", "symbolic"] if x != c], **scale})
    elif args.mode == "ablation":
        held = args.held or "nli"
        order = [c for c in ["sentiment", "topic", "acceptability", "commonsense", "arithmetic", "symbolic"] if c != held]
        base = score(None, TASKS[held], args.limit)
        for n in (1, 2, 4, len(order)):
            res = train("instruct", f"{tmp}/abl-{n}", args, [held], order[:n])
            emit({"bench": "ablation", "held_out": held, "n_clusters": n, "clusters": order[:n], "untuned": base,
                  "tuned": score(res["out"], TASKS[held], args.limit), **scale})
    elif args.mode == "metaicl":
        held = (args.held or "nli,topic").split(",")
        tasks = [t for c in held for t in TASKS[c]]
        train_cl = ["sentiment", "acceptability"]
        for s in seeds:
            mi = train("metaicl", f"{tmp}/mi-{s}", args, held, train_cl, seed=s, k=4, max_seq_len=384)
            it = train("instruct", f"{tmp}/it-{s}", args, held, train_cl, seed=s)
            emit({"bench": "metaicl", "held_out": held, "seed": s, "train_clusters": train_cl, "k": 4,
                  "untuned_zero_shot": score(None, tasks, args.limit),
                  "plain_icl": score(None, tasks, args.limit, "few-shot", 4, s),
                  "metaicl": score(mi["out"], tasks, args.limit, "few-shot", 4, s),
                  "instruct_zero_shot": score(it["out"], tasks, args.limit), **scale})
    else:
        alpaca(args, tmp, scale)


def table(model: str, limit: int) -> None:
    """The recorded rows of ``model`` at ``--limit`` test examples, as markdown: per held-out task
    the untuned score and the tuned mean ± std over seeds; the ablation; MetaICL vs ICL."""
    import statistics

    rows = [json.loads(x) for x in RESULTS.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("model") == model and r.get("test_limit") == limit]

    def ms(xs):
        return f"{statistics.fmean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"

    loco = {}
    for r in (r for r in rows if r["bench"] == "loco"):
        loco.setdefault(r["held_out"], {})[r["seed"]] = r          # the latest row of a (cluster, seed)
    print(f"{model}, {limit} test examples\n\n| held-out cluster | task | untuned | tuned (mean ± std) | seeds |")
    print("| --- | --- | --- | --- | --- |")
    for c, by_seed in loco.items():
        runs = list(by_seed.values())
        for t in runs[0]["untuned"]:
            print(f"| {c} | {t} | {runs[0]['untuned'][t]:.4f} | {ms([r['tuned'][t] for r in runs])} | "
                  f"{','.join(str(s) for s in sorted(by_seed))} |")
    abl = [r for r in rows if r["bench"] == "ablation"]
    if abl:
        print("\n| held-out | training clusters | tuned | untuned |\n| --- | --- | --- | --- |")
        for r in abl:
            print(f"| {r['held_out']} | {r['n_clusters']} ({', '.join(r['clusters'])}) | "
                  f"{json.dumps(r['tuned'])} | {json.dumps(r['untuned'])} |")
    mi = {r["seed"]: r for r in rows if r["bench"] == "metaicl"}
    if mi:
        kinds = ["untuned_zero_shot", "plain_icl", "metaicl", "instruct_zero_shot"]
        print("\n| task | " + " | ".join(kinds) + " | seeds |\n| --- |" + " --- |" * (len(kinds) + 1))
        for t in next(iter(mi.values()))["plain_icl"]:
            print(f"| {t} | " + " | ".join(ms([r[k][t] for r in mi.values()]) for k in kinds)
                  + f" | {','.join(str(s) for s in sorted(mi))} |")


def alpaca(args, tmp, scale) -> None:
    import torch

    from adaptlab.data import load_split
    from adaptlab.models import load_backbone
    from adaptlab.tasks import load_task
    from adaptlab.text import chat
    from adaptlab.train.sft import InstructionSFT, instruct, instruction_pairs
    from adaptlab.tuning.io import load_adapter

    t = load_task("alpaca")
    test = load_split(t, "test", limit=args.limit)

    def test_loss(bb, model):
        obj = InstructionSFT(bb.tokenizer, 256)
        feats = obj.featurize(instruction_pairs(t, test, True))
        tot, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(feats), 8):
                b = obj.collate(feats[i:i + 8])
                loss, _ = obj.loss(model, b)
                m = int((b["labels"][:, 1:] != -100).sum())
                tot, n = tot + loss.item() * m, n + m
        return tot / n

    def gens(bb, model):
        from adaptlab.engine import make_lm

        lm = make_lm(bb, model=model, batch_size=5)
        return [c[0] for c in lm.generate([chat(bb.tokenizer, t.render(ex)) for ex in test[:5]], n=1,
                                          max_new_tokens=60, temperature=0.0, stop=[])]

    from adaptlab.tuning import apply_method

    bb = load_backbone(MODEL)
    base = apply_method(bb, "lora", None, None)       # LoRA B = 0: exactly the base model
    before, gb = test_loss(bb, base), gens(bb, base)
    res = instruct(out=f"{tmp}/alpaca", task="alpaca", method="lora", sets={"r": 8, "max_seq_len": 256}, model=MODEL,
                   max_steps=args.steps, batch_size=args.batch, train_limit=args.train_limit, progress=False)
    bb2, tuned = load_adapter(res["out"], backbone=load_backbone(MODEL))
    emit({"bench": "alpaca", "test_loss_before": round(before, 4), "test_loss_after": round(test_loss(bb2, tuned), 4),
          "instructions": [ex["instruction"] + (" | " + ex["input"] if ex["input"] else "") for ex in test[:5]],
          "before": gb, "after": gens(bb2, tuned), **scale})


if __name__ == "__main__":
    sys.exit(main())
