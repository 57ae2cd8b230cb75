"""8 samples x 96 new tokens from one 4-shot GSM8K chain-of-thought prompt, three ways, side by
side in one run on the default decoder:

  adaptlab   LocalLM.generate(n=8): one prefill of the prompt, the 8 samples decoded as one batch
             from the copied KV cache
  hf-seq     8 sequential model.generate(do_sample=True) calls
  hf-nrs     one model.generate(num_return_sequences=8) (Hugging Face expands the prompt to 8
             rows before the prefill)

All sample at temperature 0.7 and are made to produce exactly 96 tokens (EOS off), so the work
is the same; the table prints tokens generated as a check.

    ADAPTLAB_DATA_DIR=bench-data python bench/sampling.py [--n 8] [--new 96] [--repeats 1]
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--new", type=int, default=96)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared, oversubscribed CPU more threads spin and run slower)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from adaptlab.data import load_split
    from adaptlab.engine.local import LocalLM
    from adaptlab.models import load_backbone
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task

    data = os.path.join(os.environ.get("ADAPTLAB_DATA_DIR", "bench-data"), "gsm8k")
    task = load_task("gsm8k")
    cot = make_strategy("cot", {"k": args.k})
    cot.prepare(None, task, load_split(task, "train", data))
    prompt = cot.render(task, load_split(task, "test", data, limit=1)[0])
    bb = load_backbone("smollm2-135m-instruct")
    model, tok = bb.model, bb.tokenizer
    lm = LocalLM(bb, batch_size=args.n)
    lm.eos_ids = set()                                   # exactly --new tokens per sample
    ids = torch.tensor([lm.encode(prompt)])
    mask = torch.ones_like(ids)
    kw = dict(do_sample=True, temperature=0.7, top_p=1.0, top_k=0, max_new_tokens=args.new,
              min_new_tokens=args.new, pad_token_id=tok.pad_token_id)

    def ours():
        lm.clear_cache()                                 # no head start from the warm-up's cached prompt
        out = lm.generate([prompt], n=args.n, max_new_tokens=args.new, temperature=0.7, seed=0)
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in out[0]), lm

    def hf_seq():
        torch.manual_seed(0)
        return sum(model.generate(ids, attention_mask=mask, **kw).shape[1] - ids.shape[1] for _ in range(args.n)), None

    def hf_nrs():
        torch.manual_seed(0)
        out = model.generate(ids, attention_mask=mask, num_return_sequences=args.n, **kw)
        return (out.shape[1] - ids.shape[1]) * out.shape[0], None

    times = {"adaptlab": [], "hf-seq": [], "hf-nrs": []}
    tokens = {}
    with torch.no_grad():
        ours()                                           # warm-up (allocator, kernels)
        for _ in range(args.repeats):
            for name, fn in (("adaptlab", ours), ("hf-seq", hf_seq), ("hf-nrs", hf_nrs)):
                lm.cost.generated_tokens = 0
                t0 = time.perf_counter()
                n_tok, _ = fn()
                times[name].append(time.perf_counter() - t0)
                tokens[name] = lm.cost.generated_tokens if name == "adaptlab" else n_tok
    best = {k: min(v) for k, v in times.items()}
    row = {"prompt_tokens": ids.shape[1], "n": args.n, "new_tokens": args.new, "threads": torch.get_num_threads(),
           "seconds": {k: round(v, 2) for k, v in best.items()}, "generated": tokens,
           "ratio_vs_hf_seq": round(best["adaptlab"] / best["hf-seq"], 3),
           "ratio_vs_hf_nrs": round(best["adaptlab"] / best["hf-nrs"], 3)}
    print(f"prompt {row['prompt_tokens']} tokens, {args.n} samples x {args.new} new tokens")
    for k in times:
        print(f"  {k:9} {best[k]:7.2f} s   ({tokens[k]} tokens generated)")
    print(f"adaptlab / hf-seq = {row['ratio_vs_hf_seq']}  (target <= 0.2)")
    print(f"adaptlab / hf-nrs = {row['ratio_vs_hf_nrs']}  (target <= 0.5)")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
