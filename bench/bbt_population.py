"""BBT's population in one batched forward vs scoring the candidates one at a time.

The same P candidate z's (CMA-ES's first generation) and the same k-shot rows are scored three
ways, interleaved in every round so that the machine's load hits all three alike:
  batched      the whole population, P x B rows, in one forward (``max_rows`` = P*B)   [adaptlab]
  candidate    one candidate at a time: P forwards of its B rows
  row          one (candidate, example) at a time, one forward each, as a per-call API is used
               (timed on ``--row-candidates`` candidates and scaled: the rate is per candidate)
Prints candidates/s for each and the ratios; checks that the losses agree (max abs diff).

    ADAPTLAB_DATA_DIR=bench-data python bench/bbt_population.py --threads 2
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--shots", type=int, default=16, help="per class: B = shots x classes rows")
    ap.add_argument("--popsize", type=int, default=20)
    ap.add_argument("--n", type=int, default=5, help="prompt tokens")
    ap.add_argument("--d", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--row-candidates", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import cma

    from adaptlab.data import load_split
    from adaptlab.models import load_backbone
    from adaptlab.tasks import load_task
    from adaptlab.train.objectives import Verbalizer
    from adaptlab.train.tune import kshot
    from adaptlab.tuning import apply_method

    task = load_task(args.task)
    bb = load_backbone(None)
    exs = kshot(load_split(task, "train"), task, args.shots, 0)
    tuned = apply_method(bb, "bbt", {"d": args.d, "num_virtual_tokens": args.n, "popsize": args.popsize}, task)
    tuned.eval()
    obj = Verbalizer(bb.tokenizer, task, 128)
    feats = obj.featurize(exs)
    batch = obj.collate(feats)
    B, P = len(feats), args.popsize
    X = np.stack(cma.CMAEvolutionStrategy(np.zeros(args.d), 1.0, {"seed": 1, "popsize": P, "verbose": -9}).ask())
    p = tuned.prompt
    rows_one = [{k: v[i:i + 1] for k, v in batch.items()} for i in range(B)]

    def batched():
        p.max_rows = P * B
        p.set_population(0, X)
        out = obj.loss(tuned, batch)[0]
        p.set_population(0, None)
        return out, P

    def candidate():
        out = []
        for x in X:
            p.set_population(0, x[None])
            out.append(obj.loss(tuned, batch)[0][0])
            p.set_population(0, None)
        return torch.stack(out), P

    def row():
        out = []
        for x in X[: args.row_candidates]:
            p.set_population(0, x[None])
            out.append(torch.stack([obj.loss(tuned, r)[0][0] for r in rows_one]).mean())
            p.set_population(0, None)
        return torch.stack(out), args.row_candidates

    secs = {"batched": [], "candidate": [], "row": []}
    losses = {}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, fn in (("batched", batched), ("candidate", candidate), ("row", row)):
                t0 = time.perf_counter()
                loss, n = fn()
                secs[name].append((time.perf_counter() - t0) / n)
                losses[name] = loss
    rate = {k: 1.0 / min(v) for k, v in secs.items()}                    # candidates/s, best round
    diff = max(float((losses["batched"] - losses["candidate"]).abs().max()),
               float((losses["batched"][: args.row_candidates] - losses["row"]).abs().max()))
    res = {"task": args.task, "rows_per_candidate": B, "popsize": P, "n": args.n, "d": args.d,
           "threads": args.threads, "rounds": args.rounds,
           "candidates_per_s": {k: round(v, 4) for k, v in rate.items()},
           "batched_vs_candidate": round(rate["batched"] / rate["candidate"], 2),
           "batched_vs_row": round(rate["batched"] / rate["row"], 2),
           "max_abs_loss_diff": diff, "seconds_per_candidate": {k: [round(s, 3) for s in v] for k, v in secs.items()}}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
