"""Real-data prompting runs with the default decoder (smollm2-135m-instruct), for
docs/benchmarks.md "## Prompting (issue 4)". Honest numbers, on a --limit subset of each test
split so that they fit in CPU time (the limits are printed with every row).

Groups (run in this order, cheapest first; each result is saved as soon as it is done, and a
rerun skips the runs already in the results file):
  sst2       zero-shot vs instruction vs few-shot k in {0,1,2,4,8,16}
  min        Min et al. 2022 table on sst2 and agnews: no demos / gold / random labels /
             OOD inputs (+ random labels, as in the paper) / no labels; k=8, balanced demos
  wei        Wei et al. 2023 flipped-label curve on sst2 and agnews: p in 0, .25, .5, .75, 1
  reasoning  coin_flip, last_letters, multiarith x direct, cot, zero-shot-cot,
             self-consistency (n=8), least-to-most, calculator
  ape        APE on sst2, with the model calls its search spent

    ADAPTLAB_DATA_DIR=bench-data python bench/prompting_runs.py [--groups sst2,min,...]
    python bench/prompting_runs.py --table          # print the Markdown tables of what is done
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import os
import sys
import time
from pathlib import Path

OUT = Path("bench/results/prompting.json")
REASONING = ("coin_flip", "last_letters", "multiarith")


def plan(groups: list[str], limit_cls: int, limit_reason: int, limit_sc: int) -> list[dict]:
    runs = []
    add = lambda group, task, prompt, sets=None, limit=limit_cls: runs.append(  # noqa: E731
        {"group": group, "task": task, "prompt": prompt, "sets": sets or {}, "limit": limit})
    if "sst2" in groups:
        add("sst2", "sst2", "zero-shot")
        add("sst2", "sst2", "instruction")
        for k in (0, 1, 2, 4, 8, 16):
            add("sst2", "sst2", "few-shot", {"k": k})
    for task, ood in (("sst2", "agnews"), ("agnews", "sst2")):
        base = {"k": 8, "selection": "balanced"}
        if "min" in groups:
            add("min", task, "few-shot", {"k": 0})
            add("min", task, "few-shot", base)
            add("min", task, "few-shot", {**base, "labels": "random"})
            add("min", task, "few-shot", {**base, "inputs": "ood", "ood_task": ood, "labels": "random"})
            add("min", task, "few-shot", {**base, "labels": "none"})
        if "wei" in groups:
            for p in (0.0, 0.25, 0.5, 0.75, 1.0):
                add("wei", task, "few-shot", {**base, "labels": "flipped", "p": p})
    if "reasoning" in groups:
        for task in REASONING:
            add("reasoning", task, "direct", {}, limit_reason)
            add("reasoning", task, "cot", {"max_new_tokens": 96}, limit_reason)
            add("reasoning", task, "zero-shot-cot", {"reasoning_tokens": 96}, limit_reason)
            add("reasoning", task, "least-to-most", {"answer_tokens": 48}, limit_reason)
            add("reasoning", task, "calculator", {"max_new_tokens": 96}, limit_reason)
            add("reasoning", task, "self-consistency", {"n": 8, "max_new_tokens": 96}, limit_sc)
    if "ape" in groups:
        add("ape", "sst2", "ape")
    return runs


def key(r: dict) -> str:
    return f"{r['task']}|{r['prompt']}|{json.dumps(r['sets'], sort_keys=True)}|{r['limit']}"


def execute(runs: list[dict], batch_size: int) -> None:
    from adaptlab.config import atomic_write_json, config_dict
    from adaptlab.data import load_split
    from adaptlab.engine.local import LocalLM
    from adaptlab.evaluate import evaluate
    from adaptlab.models import load_backbone
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task

    done = json.loads(OUT.read_text()) if OUT.exists() else {}
    bb = load_backbone("smollm2-135m-instruct")
    cache: dict = {}
    for r in runs:
        if key(r) in done:
            continue
        task = load_task(r["task"])
        if r["task"] not in cache:
            pool = load_split(task, "train")
            cache[r["task"]] = (load_split(task, "test"), pool)
        test, pool = cache[r["task"]]
        strategy = make_strategy(r["prompt"], {k: str(v) for k, v in r["sets"].items()})
        lm = LocalLM(bb, batch_size=batch_size)
        t0 = time.perf_counter()
        res = evaluate(lm, task, strategy, test[: r["limit"]], pool=pool if getattr(strategy, "needs_pool", False) else None)
        row = {**r, "metric": res.metric, "score": round(res.score, 4), "n": res.metrics["n"],
               "unparsed": res.metrics["unparsed"], "seconds": round(time.perf_counter() - t0, 1),
               "calls": res.cost["calls"], "forwards": res.cost["forwards"],
               "prompt_tokens": res.cost["prompt_tokens"], "generated_tokens": res.cost["generated_tokens"],
               "strategy": config_dict(strategy)}
        if r["prompt"] == "ape":
            row["ape"] = {"best": strategy.best, "search_cost": strategy.search_cost,
                          "candidates": strategy.candidates[:8]}
        if task.schema == "qa":
            row["examples"] = [{k: rec.get(k) for k in ("gold", "prediction", "raw")} for rec in res.records[:2]]
        done[key(r)] = row
        # merge with what other processes of this script wrote meanwhile, then write atomically
        latest = json.loads(OUT.read_text()) if OUT.exists() else {}
        done = {**latest, **done}
        atomic_write_json(OUT, done)
        print(f"{r['group']:9} {r['task']:12} {r['prompt']:16} {json.dumps(r['sets']):70} "
              f"n={row['n']:3d} {res.metric}={row['score']:.3f} unparsed={row['unparsed']:3d} "
              f"{row['seconds']:6.1f}s calls={row['calls']}", flush=True)


def table() -> None:
    done = json.loads(OUT.read_text()) if OUT.exists() else {}
    print("| group | task | strategy | options | n | score | unparsed | seconds | model calls |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in done.values():
        opts = ", ".join(f"{k}={v}" for k, v in r["sets"].items()) or "-"
        print(f"| {r['group']} | {r['task']} | {r['prompt']} | {opts} | {r['n']} | {r['score']:.3f} | "
              f"{r['unparsed']} | {r['seconds']} | {r['calls']} |")
    for r in done.values():
        if "ape" in r:
            print(f"\nAPE best instruction: {r['ape']['best']!r}; search cost: {json.dumps(r['ape']['search_cost'])}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", default="sst2,min,wei,ape,reasoning")
    ap.add_argument("--limit", type=int, default=200, help="test examples per classification run")
    ap.add_argument("--limit-reasoning", type=int, default=100)
    ap.add_argument("--limit-sc", type=int, default=50, help="test examples per self-consistency run")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared, oversubscribed CPU more threads spin and run slower)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.table:
        return table()
    if not os.environ.get("ADAPTLAB_DATA_DIR"):
        sys.exit("set ADAPTLAB_DATA_DIR to the benchmark data folder (e.g. bench-data)")
    execute(plan(args.groups.split(","), args.limit, args.limit_reasoning, args.limit_sc), args.batch_size)


if __name__ == "__main__":
    main()
