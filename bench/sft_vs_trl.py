"""Instruction SFT throughput and losses: adaptlab's one loop (``train/sft.py``'s InstructionSFT)
vs trl's ``SFTTrainer`` with completion-only loss, side by side in one run:

    python bench/sft_vs_trl.py [--steps 20] [--batch 4] [--max-len 128] [--n 200]

Same model (SmolLM2-135M-Instruct, the default decoder, two independent copies from the same
cache), the same data (the first --n records of alpaca/train after adaptlab's fixed shuffle, in
the Alpaca template, tokenized once by adaptlab's text path and given to trl pre-tokenized with
its ``completion_mask``), the same batches (adaptlab's length-bucketed epoch-0 batches; trl reads
them in that order through a sequential sampler), the same LoRA (r=8, alpha=16, q_proj/v_proj,
no dropout; trl's peft model starts from adaptlab's initial A and B), the same optimizer (AdamW,
lr 1e-3, no warm-up, linear decay, no weight decay, grad-norm clip 1.0). Prints steps/s, real
(non-pad) tokens/s and the per-step loss difference; appends to bench/results/sft_vs_trl.jsonl.
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ADAPTLAB_DATA_DIR", "bench-data")
RESULTS = Path(__file__).parent / "results" / "sft_vs_trl.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--own-batching", action="store_true",
                    help="also time trl with its default sampler and collator (real tokens/s as each tool batches)")
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import SequentialSampler
    from trl import SFTConfig, SFTTrainer

    from adaptlab.data import load_split
    from adaptlab.models import load_backbone
    from adaptlab.tasks import load_task
    from adaptlab.train.loop import Hooks, TrainConfig, make_batches, train
    from adaptlab.train.sft import InstructionSFT, instruction_pairs
    from adaptlab.train.steppers import AdamW
    from adaptlab.train.tune import train_subset
    from adaptlab.tuning import apply_method, get_method

    task = load_task("alpaca")
    records = train_subset(load_split(task, "train"), args.n)
    bb = load_backbone("smollm2-135m-instruct")
    obj = InstructionSFT(bb.tokenizer, args.max_len)
    pairs = instruction_pairs(task, records, chat=False)
    feats = obj.featurize(pairs)
    batches = make_batches([len(f["ids"]) for f in feats], args.batch, 0, 0)[: args.steps]
    assert len(batches) == args.steps, "not enough data for --steps batches; raise --n"
    order = [i for b in batches for i in b]
    real_tokens = sum(len(feats[i]["ids"]) for i in order)

    # ---- adaptlab
    torch.manual_seed(0)
    lcfg = get_method("lora").Config(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"])
    tuned = apply_method(bb, "lora", lcfg, None)
    init = {n: p.detach().clone() for n, p in tuned.named_parameters() if "lora_" in n}
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch, lr=args.lr, warmup_ratio=0.0, weight_decay=0.0,
                      max_seq_len=args.max_len, eval=False, save_every=10**6, log_every=10**6)
    ours: list[float] = []
    t0 = time.perf_counter()
    train(tuned, pairs, obj, AdamW(lr=args.lr, weight_decay=0.0, warmup_ratio=0.0, max_grad_norm=1.0), cfg,
          Hooks(on_step=lambda s, loss: ours.append(float(loss))), out=tempfile.mkdtemp(), progress=False)
    t_ours = time.perf_counter() - t0

    # ---- trl
    bb2 = load_backbone("smollm2-135m-instruct")
    model = get_peft_model(bb2.model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    copied = 0
    for n, p in model.named_parameters():
        if "lora_" in n:
            key = n.split("base_model.model.", 1)[1].replace(".default", "")
            src = [v for k, v in init.items() if k.endswith(key)]
            assert len(src) == 1, key
            p.data.copy_(src[0])
            copied += 1
    ds = Dataset.from_list([{"input_ids": feats[i]["ids"],
                             "completion_mask": [0] * (len(feats[i]["ids"]) - feats[i]["n_target"])
                             + [1] * feats[i]["n_target"]} for i in order])

    class InOrder(SFTTrainer):
        def _get_train_sampler(self, *a, **k):
            return SequentialSampler(self.train_dataset)

    out = tempfile.mkdtemp()
    sft_kw = dict(per_device_train_batch_size=args.batch, max_steps=args.steps,
                   learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                   max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[], completion_only_loss=True,
                   max_length=args.max_len, dataloader_drop_last=False, optim="adamw_torch", seed=0,
                   use_cpu=True, disable_tqdm=True, dataset_num_proc=None,
                   # trl's SFTConfig defaults differ from TrainingArguments': bf16 autocast and gradient
                   # checkpointing on. adaptlab trains in fp32 without checkpointing: match it.
                   bf16=False, fp16=False, gradient_checkpointing=False)
    sc = SFTConfig(output_dir=out, **sft_kw)
    trainer = InOrder(model=model, args=sc, train_dataset=ds, processing_class=bb2.tokenizer)
    t0 = time.perf_counter()
    trainer.train()
    t_trl = time.perf_counter() - t0
    theirs = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    # ---- trl with its own batching (its default shuffled sampler and padding collator) over the
    # same records and the same number of steps: real tokens/s as each tool batches by default
    own = {}
    if args.own_batching:
        bb3 = load_backbone("smollm2-135m-instruct")
        model3 = get_peft_model(bb3.model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                      target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        ds_all = Dataset.from_list([{"input_ids": f["ids"], "completion_mask": [0] * (len(f["ids"]) - f["n_target"])
                                     + [1] * f["n_target"]} for f in feats])
        sc3 = SFTConfig(output_dir=tempfile.mkdtemp(), **sft_kw)
        trainer3 = SFTTrainer(model=model3, args=sc3, train_dataset=ds_all, processing_class=bb3.tokenizer)
        t0 = time.perf_counter()
        trainer3.train()
        t_own = time.perf_counter() - t0
        seen = [h["num_tokens"] for h in trainer3.state.log_history if "num_tokens" in h][-1]
        own = {"trl_own_batching_steps_per_s": round(args.steps / t_own, 4),
               "trl_own_batching_real_tokens": int(seen),
               "trl_own_batching_tokens_per_s": round(seen / t_own, 1),
               "tokens_per_s_ratio_own_batching": round((real_tokens / t_ours) / (seen / t_own), 3)}

    diff = max(abs(a - b) for a, b in zip(ours, theirs))
    row = {"bench": "sft_vs_trl", "model": "smollm2-135m-instruct", "steps": args.steps, "batch": args.batch,
           "max_len": args.max_len, "lora_tensors": copied, "real_tokens": real_tokens,
           "adaptlab_steps_per_s": round(args.steps / t_ours, 4), "trl_steps_per_s": round(args.steps / t_trl, 4),
           "adaptlab_tokens_per_s": round(real_tokens / t_ours, 1), "trl_tokens_per_s": round(real_tokens / t_trl, 1),
           "speedup": round(t_trl / t_ours, 3), "max_abs_loss_diff": round(diff, 6),
           "loss_diff_step20": round(abs(ours[-1] - theirs[-1]), 6), "adaptlab_losses": [round(x, 5) for x in ours],
           "trl_losses": [round(x, 5) for x in theirs], "threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d"), **own}
    print(json.dumps(row))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
