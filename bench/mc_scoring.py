"""Multiple-choice scoring: each question's prompt runs once and only its options after it
(issue 28, item 7), against the old path (every option re-runs the whole prompt), side by side in
one run on the same model, examples and prompts.

Target: prompt tokens for N questions x K options ~ N x prompt + N x K x option (not
N x K x (prompt + option)); the same accuracy; seconds recorded.

    ADAPTLAB_DATA_DIR=bench-data python bench/mc_scoring.py [--task commonsenseqa] [--limit 50] [--prompt zero-shot]
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import time


def main() -> None:
    from adaptlab.data import load_split
    from adaptlab.engine.local import LocalLM
    from adaptlab.evaluate import evaluate
    from adaptlab.models import load_backbone
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task

    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="commonsenseqa")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--prompt", default="zero-shot")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    task = load_task(args.task)
    examples = load_split(task, args.split, None, args.limit)
    pool = load_split(task, "train") if args.prompt == "few-shot" else None
    bb = load_backbone(None)
    sets = dict(s.split("=", 1) for s in args.sets)
    rows = {}
    for r in range(args.rounds):
        for grouped in ((True, False) if r % 2 == 0 else (False, True)):
            lm = LocalLM(bb, group_options=grouped)
            seen = []
            score = lm.score
            lm.score = lambda ctxs, opts, _s=score, _seen=seen: (_seen.extend(zip(ctxs, opts)), _s(ctxs, opts))[1]
            t = time.perf_counter()
            res = evaluate(lm, task, make_strategy(args.prompt, sets), examples, model_name=bb.name,
                           split=args.split, pool=pool, config={})
            sec = time.perf_counter() - t
            key = "once per question" if grouped else "once per option (old)"
            prev = rows.get(key)
            rows[key] = {"path": key, "accuracy": res.metrics[task.metric], "n": res.metrics["n"],
                         "prompt_tokens": lm.cost.prompt_tokens, "forwards": lm.cost.forwards,
                         "seconds": round(min(sec, prev["seconds"]) if prev else sec, 2)}
            pairs = [[lm._encode_pair(c, o) for o in opts] for c, opts in seen]
            rows[key]["N_x_prompt"] = sum(len(p[0][0]) for p in pairs)
            rows[key]["N_x_K_x_option"] = sum(len(cont) for p in pairs for _, cont in p)
            print(json.dumps(rows[key]), flush=True)
    # the formula's terms, from the engine's own tokenization of this run's prompts and options
    new, old = rows["once per question"], rows["once per option (old)"]
    print(f"\n{args.task} {args.prompt}, {new['n']} questions: prompt tokens {old['prompt_tokens']:,} -> "
          f"{new['prompt_tokens']:,} ({old['prompt_tokens'] / new['prompt_tokens']:.2f}x fewer); "
          f"seconds {old['seconds']} -> {new['seconds']} ({old['seconds'] / new['seconds']:.2f}x); "
          f"accuracy {old['accuracy']:.4f} vs {new['accuracy']:.4f}; "
          f"N x prompt + N x K x option = {new['N_x_prompt']:,} + {new['N_x_K_x_option']:,} = "
          f"{new['N_x_prompt'] + new['N_x_K_x_option']:,}")


if __name__ == "__main__":
    main()
