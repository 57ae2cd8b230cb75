"""Instruction SFT throughput and losses: adaptlab's one loop (``train/sft.py``'s InstructionSFT)
vs trl's ``SFTTrainer`` with completion-only loss, side by side in one run:

    python bench/sft_vs_trl.py [--steps 20] [--batch 4] [--max-len 128] [--n 200] [--rounds 2] [--own-batching]

Same model (SmolLM2-135M-Instruct, the default decoder, two independent copies from the same
cache), the same data (the first --n records of alpaca/train after adaptlab's fixed shuffle, in
the Alpaca template, tokenized once by adaptlab's text path and given to trl pre-tokenized with
its ``completion_mask``), the same batches (adaptlab's length-bucketed epoch-0 batches; trl reads
them in that order through a sequential sampler), the same LoRA (r=8, alpha=16, q_proj/v_proj,
no dropout; trl's peft model starts from adaptlab's initial A and B), the same optimizer (AdamW,
lr 1e-3, no warm-up, linear decay, no weight decay, grad-norm clip 1.0). Prints steps/s, real
(non-pad) tokens/s and the per-step loss difference; appends to bench/results/sft_vs_trl.jsonl.
trl runs fp32 without gradient checkpointing, as adaptlab does (SFTConfig turns both on by default).
``--own-batching`` also times trl as it batches by default (shuffled, padded to the longest row) on
the same records, for real tokens/s tool against tool; ``--rounds`` interleaves the runs (ABC CBA
...) and reports medians, the loss comparison from round 0.
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
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians reported)")
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

    lcfg = get_method("lora").Config(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"])
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch, lr=args.lr, warmup_ratio=0.0, weight_decay=0.0,
                      max_seq_len=args.max_len, eval=False, save_every=10**6, log_every=10**6)
    torch.manual_seed(0)
    init = {n: p.detach().clone() for n, p in apply_method(bb, "lora", lcfg, None).named_parameters() if "lora_" in n}
    sft_kw = dict(per_device_train_batch_size=args.batch, max_steps=args.steps,
                  learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                  max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[], completion_only_loss=True,
                  max_length=args.max_len, dataloader_drop_last=False, optim="adamw_torch", seed=0,
                  use_cpu=True, disable_tqdm=True, dataset_num_proc=None,
                  # trl's SFTConfig defaults differ from TrainingArguments': bf16 autocast and gradient
                  # checkpointing on. adaptlab trains in fp32 without checkpointing: match it.
                  bf16=False, fp16=False, gradient_checkpointing=False)

    def run_ours():
        torch.manual_seed(0)
        tuned = apply_method(bb, "lora", lcfg, None)
        losses: list[float] = []
        t0 = time.perf_counter()
        train(tuned, pairs, obj, AdamW(lr=args.lr, weight_decay=0.0, warmup_ratio=0.0, max_grad_norm=1.0), cfg,
              Hooks(on_step=lambda s, loss: losses.append(float(loss))), out=tempfile.mkdtemp(), progress=False)
        return time.perf_counter() - t0, losses

    def trl_model():
        model = get_peft_model(load_backbone("smollm2-135m-instruct").model, LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        for n, p in model.named_parameters():          # trl's LoRA starts from adaptlab's A and B
            if "lora_" in n:
                key = n.split("base_model.model.", 1)[1].replace(".default", "")
                src = [v for k, v in init.items() if k.endswith(key)]
                assert len(src) == 1, key
                p.data.copy_(src[0])
        return model

    def dataset(idx):
        return Dataset.from_list([{"input_ids": feats[i]["ids"],
                                   "completion_mask": [0] * (len(feats[i]["ids"]) - feats[i]["n_target"])
                                   + [1] * feats[i]["n_target"]} for i in idx])

    class InOrder(SFTTrainer):
        def _get_train_sampler(self, *a, **k):
            return SequentialSampler(self.train_dataset)

    def run_trl(own_batching: bool):
        """trl on our batches in our order, or (own_batching) with its default shuffled sampler and
        padding collator over the same records: real tokens/s as each tool batches by default."""
        cls, ds = (SFTTrainer, dataset(range(len(feats)))) if own_batching else (InOrder, dataset(order))
        trainer = cls(model=trl_model(), args=SFTConfig(output_dir=tempfile.mkdtemp(), **sft_kw), train_dataset=ds,
                      processing_class=bb.tokenizer)
        t0 = time.perf_counter()
        trainer.train()
        t = time.perf_counter() - t0
        hist = trainer.state.log_history
        return t, [h["loss"] for h in hist if "loss" in h], [h["num_tokens"] for h in hist if "num_tokens" in h][-1]

    rounds = []
    for r in range(args.rounds):                       # interleaved, the order reversed every other round
        phases = ["ours", "trl", "own"] if args.own_batching else ["ours", "trl"]
        got = {}
        for ph in (phases if r % 2 == 0 else phases[::-1]):
            got[ph] = run_ours() if ph == "ours" else run_trl(ph == "own")
        rounds.append(got)
        print(f"round {r}: " + ", ".join(f"{k} {v[0]:.1f} s" for k, v in got.items()), flush=True)
    import statistics

    t_ours = statistics.median(g["ours"][0] for g in rounds)
    t_trl = statistics.median(g["trl"][0] for g in rounds)
    ours, theirs = rounds[0]["ours"][1], rounds[0]["trl"][1]
    copied = len(init)
    own = {}
    if args.own_batching:
        t_own = statistics.median(g["own"][0] for g in rounds)
        seen = rounds[0]["own"][2]
        own = {"trl_own_batching_steps_per_s": round(args.steps / t_own, 4),
               "trl_own_batching_real_tokens": int(seen),
               "trl_own_batching_tokens_per_s": round(seen / t_own, 1),
               "tokens_per_s_ratio_own_batching": round((real_tokens / t_ours) / (seen / t_own), 3),
               "per_round_own_s": [round(g["own"][0], 1) for g in rounds]}
    own.update(rounds=args.rounds, per_round_ours_s=[round(g["ours"][0], 1) for g in rounds],
               per_round_trl_s=[round(g["trl"][0], 1) for g in rounds])

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
