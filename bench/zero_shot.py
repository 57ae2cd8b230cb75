"""Zero-shot SST-2 with both default models' natural setups.

decoder (smollm2-135m-instruct): verbalizer log-likelihood, template "Review: {text}\\nSentiment:",
options " negative"/" positive" (the lm-eval hf-backend setup that gives 0.79 on the first 200).
encoder (minilm-l6): embedding similarity between the rendered input and each label word
(sentence-transformers style), since the encoder has no LM head to score words with.

    ADAPTLAB_DATA_DIR=bench-data python bench/zero_shot.py [--limit N]
"""

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import time

from adaptlab.evaluate import run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    for model in ("smollm2-135m-instruct", "minilm-l6"):
        for limit in ([200, args.limit] if args.limit is None else [args.limit]):
            t = time.perf_counter()
            res = run(args.task, model, split=args.split, limit=limit, progress=False)
            print(f"{model:24s} {args.task} {args.split} n={res.metrics['n']:4d} accuracy={res.metrics['accuracy']:.4f} "
                  f"macro_f1={res.metrics['macro_f1']:.4f} eval_seconds={res.cost['wall_seconds']:.1f} "
                  f"total_seconds={time.perf_counter() - t:.1f}")


if __name__ == "__main__":
    main()
