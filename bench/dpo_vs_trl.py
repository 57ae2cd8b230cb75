"""DPO steps/s and peak RSS: adaptlab's DPO objective vs trl's DPOTrainer, side by side in one run
on the same batches.

Both sides: the same base model, a fresh LoRA (r=8, alpha=16, q_proj/v_proj, no dropout), the
reference = the same model with the adapter off (ours: ``TunedModel.disable_adapters()``; trl: a
peft model and ``ref_model=None``, so trl disables the adapter too — no reference copy on either
side), beta 0.1, sigmoid loss, AdamW, fp32 on CPU. The batches are made once by adaptlab's
featurization of hh_rlhf_harmless train pairs (chosen rows then rejected rows, the layout trl's
collator makes) and both sides step on the very same tensors: ours through the objective's loss +
the AdamW stepper's step, trl through ``DPOTrainer.training_step`` + its optimizer. Each side runs
in its own process (peak RSS = that process's ru_maxrss), after one warm-up step; the sides
alternate ``--rounds`` times and the medians are reported.

    python bench/dpo_vs_trl.py --steps 6 --pairs 2 --max-len 128 --rounds 2
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def batches(backbone, n: int, pairs: int, max_len: int) -> list[dict]:
    from adaptlab.data import load_split
    from adaptlab.tasks import load_task
    from adaptlab.train.dpo import DPO

    task = load_task("hh_rlhf_harmless")
    exs = load_split(task, "train", limit=n * pairs)
    obj = DPO(backbone.tokenizer, task, max_len)
    feats = obj.featurize(exs)
    return [obj.collate(feats[i * pairs:(i + 1) * pairs]) for i in range(n)]


def side(which: str, a) -> dict:
    from adaptlab.models import load_backbone

    torch.manual_seed(0)
    bb = load_backbone(a.model)
    data = batches(bb, a.steps + 1, a.pairs, a.max_len)
    if which == "ours-unshared":             # the control: every row's prompt in its own forward
        import adaptlab.train.dpo as dpo_mod
        from adaptlab.train.preference import sequence_logps

        dpo_mod.pair_logps = lambda model, b: sequence_logps(model, b["input_ids"], b["attention_mask"],
                                                             b["completion_mask"])
        which = "ours"
    if which == "ours":
        from adaptlab.tasks import load_task
        from adaptlab.train.dpo import DPO
        from adaptlab.tuning import apply_method

        task = load_task("hh_rlhf_harmless")
        tuned = apply_method(bb, "lora", {"r": 8, "alpha": 16.0, "dropout": 0.0}, task)
        obj = DPO(bb.tokenizer, task, a.max_len, 0.1)
        opt = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.0)
        tuned.train()

        def step(b):
            loss, _ = obj.loss(tuned, b)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        from datasets import Dataset
        from peft import LoraConfig, get_peft_model
        from trl import DPOConfig, DPOTrainer

        model = get_peft_model(bb.model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                     target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        args = DPOConfig(output_dir="/tmp/adaptlab-dpo-vs-trl", beta=0.1, per_device_train_batch_size=a.pairs,
                         report_to=[], use_cpu=True, bf16=False, learning_rate=5e-4, weight_decay=0.0,
                         max_length=None, logging_steps=10**9, save_strategy="no")
        tiny = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}])
        trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=tiny, processing_class=bb.tokenizer)
        trainer.create_optimizer_and_scheduler(num_training_steps=a.steps + 1)
        trainer.current_gradient_accumulation_steps = 1        # set by Trainer.train; we step by hand
        opt = trainer.optimizer
        model.train()

        def step(b):
            trainer.training_step(trainer.model, dict(b))
            opt.step()
            opt.zero_grad(set_to_none=True)
    step(data[0])                                          # warm-up
    t0 = time.perf_counter()
    for b in data[1:]:
        step(b)
    dt = time.perf_counter() - t0
    return {"side": which, "steps_per_s": a.steps / dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--side", choices=["ours", "ours-unshared", "trl"], default=None)
    p.add_argument("--control", action="store_true",
                   help="also time ours with each row's prompt in its own forward (before preference.pair_logps)")
    p.add_argument("--model", default=None, help="default: smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    if a.side:
        print(json.dumps(side(a.side, a)))
        return
    sides = ("ours", "trl", "ours-unshared") if a.control else ("ours", "trl")
    rows: dict[str, list[dict]] = {s: [] for s in sides}
    for _ in range(a.rounds):
        for s in sides:
            cmd = [sys.executable, __file__, "--side", s, "--steps", str(a.steps), "--pairs", str(a.pairs),
                   "--max-len", str(a.max_len)] + (["--model", a.model] if a.model else [])
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if out.returncode != 0:
                sys.exit(f"{s} side failed:\n{out.stderr[-2000:]}")
            rows[s].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("steps_per_s", "peak_rss_mb")} for s, rs in rows.items()}
    res = {"bench": "dpo_vs_trl", "model": a.model or "smollm2-135m-instruct", "steps": a.steps, "pairs": a.pairs,
           "max_len": a.max_len, "rounds": a.rounds, "threads": os.environ.get("OMP_NUM_THREADS"),
           "ours": med["ours"], "trl": med["trl"], "speed_ratio": med["ours"]["steps_per_s"] / med["trl"]["steps_per_s"],
           "rss_ratio": med["ours"]["peak_rss_mb"] / med["trl"]["peak_rss_mb"], "date": time.strftime("%Y-%m-%d"),
           "per_round_steps_per_s": {s: [round(r["steps_per_s"], 4) for r in rs] for s, rs in rows.items()},
           **({"ours_unshared": med["ours-unshared"],
               "unshared_speed_ratio": med["ours-unshared"]["steps_per_s"] / med["trl"]["steps_per_s"]}
              if a.control else {}),
           "setup": "both: fresh LoRA q/v r8, reference = adapter off (trl: peft model, ref_model=None)"}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    with (ROOT / "bench" / "results" / "dpo_vs_trl.jsonl").open("a") as f:
        f.write(json.dumps(res) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
