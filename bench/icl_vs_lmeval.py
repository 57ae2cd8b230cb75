"""8-shot SST-2 in lm-evaluation-harness 0.4 and in adaptlab, side by side in one run.

Same model (the default decoder's dequantized safetensors folder), same data (SST-2 validation,
first N), same 8 demonstrations (the first 8 of train; lm-eval's ``first_n`` sampler), same
template ("Review: {text}\\nSentiment:" + " " + label word, demos joined by a blank line).
Batch sizes are each tool's own (adaptlab rows hold one input after the cached demos, lm-eval
rows hold demos + input, so adaptlab packs more rows per forward for a similar token count). Timed: the evaluation only (both models are loaded before the clock starts).

    pip install "lm-eval>=0.4,<0.5"        # bench-only; not an adaptlab dependency
    ADAPTLAB_DATA_DIR=bench-data python bench/icl_vs_lmeval.py [--limit 200] [--k 8] [--batch-size 8,16] [--repeats 2]
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

TASK_YAML = """task: adaptlab_sst2_icl
dataset_path: json
dataset_kwargs:
  data_files:
    train: {train}
    validation: {validation}
output_type: multiple_choice
training_split: train
validation_split: validation
fewshot_split: train
doc_to_text: "Review: {{{{text}}}}\\nSentiment:"
doc_to_target: "{{{{['negative', 'positive'].index(label)}}}}"
doc_to_choice: ["negative", "positive"]
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
fewshot_config:
  sampler: first_n
metric_list:
  - metric: acc
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--batch-size", default="16", help="adaptlab rows per forward where rows are padded (a comma list times each); rows after shared demonstrations are packed, --pack-tokens a forward")
    ap.add_argument("--pack-tokens", type=int, default=512, help="adaptlab real tokens per forward for packed rows")
    ap.add_argument("--repeats", type=int, default=1, help="alternate the two sides this many times; best time counts")
    ap.add_argument("--lmeval-batch-size", type=int, default=16, help="lm-eval requests per forward (demos + input)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared, oversubscribed CPU more threads spin and run slower)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        sys.exit('lm-eval is not installed: pip install "lm-eval>=0.4,<0.5"  (bench-only dependency)')

    from adaptlab.data import load_split
    from adaptlab.engine.local import LocalLM
    from adaptlab.evaluate import evaluate
    from adaptlab.models import _dequantize_gguf, default_path, load_backbone
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task

    data = Path(os.environ.get("ADAPTLAB_DATA_DIR", "bench-data")) / "sst2"
    folder = _dequantize_gguf(default_path("smollm2-135m-instruct"))

    # ---------------------------------------------------------------- adaptlab
    backbone = load_backbone("smollm2-135m-instruct")
    task = load_task("sst2")
    examples = load_split(task, "validation", str(data))[: args.limit]
    pool = load_split(task, "train", str(data))
    strategy = make_strategy("few-shot", {"k": args.k, "selection": "first", "order": "fixed"})
    sizes = [int(b) for b in str(args.batch_size).split(",")]

    def ours(bs):
        lm = LocalLM(backbone, batch_size=bs, pack_tokens=args.pack_tokens)   # a fresh engine: the demonstrations are computed in the timing
        t0 = time.perf_counter()
        res = evaluate(lm, task, strategy, examples, pool=pool)
        return time.perf_counter() - t0, res

    # ---------------------------------------------------------------- lm-eval
    tmp = tempfile.TemporaryDirectory()
    Path(tmp.name, "adaptlab_sst2_icl.yaml").write_text(
        TASK_YAML.format(train=data / "train.jsonl", validation=data / "validation.jsonl"))
    hf = HFLM(pretrained=str(folder), dtype="float32", batch_size=args.lmeval_batch_size, device="cpu")
    tm = TaskManager(include_path=tmp.name)

    def theirs():
        t0 = time.perf_counter()
        out = lm_eval.simple_evaluate(model=hf, tasks=["adaptlab_sst2_icl"], num_fewshot=args.k,
                                      limit=args.limit, task_manager=tm, log_samples=True, bootstrap_iters=0)
        return time.perf_counter() - t0, out

    # alternate the two sides, --repeats times; each side's best time counts (the machine is shared)
    ours_s: dict[int, list[float]] = {b: [] for b in sizes}
    theirs_s: list[float] = []
    for _ in range(args.repeats):
        for b in sizes:
            t, res = ours(b)
            ours_s[b].append(t)
        t, out = theirs()
        theirs_s.append(t)
    tmp.cleanup()
    ours_acc = res.metrics["accuracy"]
    theirs_acc = out["results"]["adaptlab_sst2_icl"]["acc,none"]
    sample = out["samples"]["adaptlab_sst2_icl"][0]
    same_prompt = sample["arguments"][0][0] == res.records[0]["prompt"] if "arguments" in sample else None
    best_theirs = min(theirs_s)
    row = {"n": len(examples), "k": args.k, "lmeval_batch_size": args.lmeval_batch_size, "threads": args.threads,
           "repeats": args.repeats, "adaptlab_acc": round(ours_acc, 4), "lmeval_acc": round(theirs_acc, 4),
           "acc_diff_points": round(100 * (ours_acc - theirs_acc), 2),
           "adaptlab_s": {b: [round(t, 2) for t in v] for b, v in ours_s.items()},
           "lmeval_s": [round(t, 2) for t in theirs_s],
           "speedup": {b: round(best_theirs / min(v), 2) for b, v in ours_s.items()},
           "same_first_prompt": same_prompt, "lmeval_version": lm_eval.__version__}
    print(f"{'':18} {'accuracy':>9} {'best s':>8}  all s")
    for b, v in ours_s.items():
        print(f"{'adaptlab batch ' + str(b):18} {ours_acc:9.4f} {min(v):8.2f}  {row['adaptlab_s'][b]}")
    print(f"{'lm-eval':18} {theirs_acc:9.4f} {best_theirs:8.2f}  {row['lmeval_s']}")
    for b in sizes:
        print(f"speed-up at batch {b}: {row['speedup'][b]}x")
    print(f"accuracy difference {row['acc_diff_points']} points, identical first prompt: {same_prompt}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
