"""Training speed: adaptlab's LoRA step vs peft + transformers in a plain PyTorch loop.

    ADAPTLAB_DATA_DIR=bench-data python bench/train_vs_peft.py [--steps 20] [--rounds 2]

Part A, the same batches in the same order: the default decoder (smollm2-135m-instruct, fp32),
LoRA r=8, alpha=16, dropout 0 on q_proj and v_proj, identical initial A (B = 0), AdamW
(lr: the registry's LoRA default, 1e-3; weight decay 0.01, betas 0.9/0.999), linear decay over the steps, grad clipping at
1.0, batches of 8 SST-2 training prompts + label words, right-padded to a fixed 64 tokens, loss
on the label-word tokens only. Baseline: ``peft.get_peft_model`` + ``model(input_ids,
attention_mask, labels).loss.backward()``. adaptlab: the loop's loss module (``train.objectives.LMTarget``)
+ ``train.steppers.AdamW.step`` (the code ``adaptlab tune`` runs per step). Each side runs in its own process (peak RSS is the
process's ``ru_maxrss``); the sides alternate for ``--rounds`` rounds and the median step time
of each side (first 2 steps dropped) is compared.

Part B, real tokens/s: the whole ``adaptlab tune`` (its own length-bucketed batching, batch 8,
same step count) vs the baseline above padding to 64 tokens: non-pad tokens per second of step
time.
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, SEQ, WD = 8, 64, 0.01


def _lora_lr() -> float:
    from adaptlab.tuning import METHODS

    return METHODS["lora"].lr        # the registry's default: the one learning rate both sides use


LR = _lora_lr()


def _threads():
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)


def _model_dir() -> str:
    from adaptlab.models import DEFAULT_DECODER, _dequantize_gguf, default_path

    return str(_dequantize_gguf(default_path(DEFAULT_DECODER)))


def make_batches(path: Path, steps: int) -> None:
    """Fixed-64 batches from SST-2 train, written as safetensors for both children."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from adaptlab.data import load_split
    from adaptlab.tasks import load_task
    from adaptlab.text import encode_lm, prompt
    from adaptlab.train import train_subset

    tok = AutoTokenizer.from_pretrained(_model_dir())
    task = load_task("sst2")
    exs = train_subset(load_split(task, "train"), BATCH * steps)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.full((len(exs), SEQ), pad, dtype=torch.long)
    mask = torch.zeros((len(exs), SEQ), dtype=torch.long)
    labels = torch.full((len(exs), SEQ), -100, dtype=torch.long)
    for i, ex in enumerate(exs):
        row, n = encode_lm(tok, prompt(task, tok, ex), task.target_text(ex), SEQ, task.truncate, add_eos=False)
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, len(row) - n: len(row)] = torch.tensor(row[-n:])
    save_file({"input_ids": ids, "attention_mask": mask, "labels": labels}, str(path))


def _lora_init(named_a: dict) -> None:
    """The same A for both sides: seeded by layer name (peft's and ours normalise alike)."""
    import math
    import zlib

    import torch

    for name, w in sorted(named_a.items()):
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        bound = 1 / math.sqrt(w.shape[1])        # kaiming_uniform(a=sqrt(5)) bound
        with torch.no_grad():
            w.copy_((torch.rand(w.shape, generator=g) * 2 - 1) * bound)


def _key(name: str) -> str:
    i = name.index("layers.")
    return name[i: name.index(".lora_A")]


def _schedule(steps):
    return lambda s: max(0.0, (steps - s) / steps)     # linear decay, no warmup (adaptlab's with warmup 0)


def child(side: str, batches_path: str, steps: int) -> dict:
    _threads()
    import torch
    from safetensors.torch import load_file

    data = load_file(batches_path)
    batches = [{k: v[i * BATCH:(i + 1) * BATCH] for k, v in data.items()} for i in range(steps)]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu, losses = [], [], []
    if side == "peft":
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(_model_dir(), dtype=torch.float32)
        pm = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                              target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        _lora_init({_key(n): p for n, p in pm.named_parameters() if "lora_A" in n})
        params = [p for p in pm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(steps))
        pm.train()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for b in batches:
            t0, c0 = time.perf_counter(), time.process_time()
            loss = pm(**b).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            losses.append(float(loss))
        n_train = sum(p.numel() for p in params)
    else:
        from accelerate import Accelerator

        from adaptlab.models import load_backbone
        from adaptlab.train.loop import _Loss
        from adaptlab.train.objectives import LMTarget
        from adaptlab.train.steppers import AdamW
        from adaptlab.tuning import apply_method

        bb = load_backbone("smollm2-135m-instruct")
        tuned = apply_method(bb, "lora", {"r": 8, "alpha": 16, "dropout": 0.0})
        _lora_init({_key(n): p for n, p in tuned.named_parameters() if "lora_A" in n})
        stepper = AdamW(lr=LR, weight_decay=WD, warmup_ratio=0.0, max_grad_norm=1.0)   # the loop's stepper
        module = _Loss(tuned, LMTarget(bb.tokenizer, None, SEQ))                      # the loop's loss module
        stepper.setup(module, steps)
        accel = Accelerator()
        module = stepper.prepare(accel, module)
        tuned.train()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for b in batches:
            t0, c0 = time.perf_counter(), time.process_time()
            losses.append(stepper.step(accel, module, [b])[0])
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        n_train = tuned.n_trainable()
    real = int(data["attention_mask"][: steps * BATCH].sum())
    return {"side": side, "times": times, "cpu": cpu, "losses": losses, "trainable": n_train, "real_tokens": real,
            "rss_start_kb": rss0, "rss_loaded_kb": rss1, "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def child_tune(steps: int) -> dict:
    _threads()
    from adaptlab.train import tune

    with tempfile.TemporaryDirectory() as d:
        st = tune("sst2", "lora", out=str(Path(d) / "run"), sets={"r": "8", "alpha": "16"}, max_steps=steps,
                  batch_size=BATCH, train_limit=BATCH * steps, lr=LR, max_seq_len=SEQ, eval=False, progress=False)
        adapter = (Path(d) / "run" / "adapter_model.safetensors").stat().st_size
        folder = sum(f.stat().st_size for f in (Path(d) / "run").iterdir()
                     if f.is_file() and f.name.startswith(("adapter_", "adaptlab")))
    full = sum(f.stat().st_size for f in Path(_model_dir()).glob("*.safetensors"))
    return {"side": "tune", "tokens_seen": st["tokens_seen"], "train_seconds": st["train_seconds"],
            "steps": st["steps"], "adapter_bytes": adapter, "adapter_folder_bytes": folder, "full_model_bytes": full}


def _run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit(f"child {args} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", default=None)
    ap.add_argument("--batches", default=None)
    args = ap.parse_args()
    if args.child == "tune":
        print(json.dumps(child_tune(args.steps)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.batches, args.steps)))
        return
    _model_dir()   # build the GGUF cache once, outside any timing
    with tempfile.TemporaryDirectory() as d:
        bpath = str(Path(d) / "batches.safetensors")
        make_batches(Path(bpath), args.steps)
        runs = {"peft": [], "adaptlab": []}
        for r in range(args.rounds):
            for side in (("peft", "adaptlab") if r % 2 == 0 else ("adaptlab", "peft")):
                res = _run(["--child", side, "--batches", bpath, "--steps", str(args.steps)])
                runs[side].append(res)
                print(f"round {r} {side}: median step {statistics.median(res['times'][2:]):.3f} s, "
                      f"loss@{args.steps} {res['losses'][-1]:.6f}", file=sys.stderr)
        tune_res = _run(["--child", "tune", "--steps", str(args.steps)])

    def med(side, key="times"):
        return statistics.median(t for res in runs[side] for t in res[key][2:])

    p, a = runs["peft"][0], runs["adaptlab"][0]
    mp, ma = med("peft"), med("adaptlab")
    peak_p = max(r["rss_peak_kb"] for r in runs["peft"]) / 1024
    peak_a = max(r["rss_peak_kb"] for r in runs["adaptlab"]) / 1024
    dloss = max(abs(x - y) for x, y in zip(p["losses"], a["losses"]))
    base_tps = p["real_tokens"] / sum(p["times"])
    tune_tps = tune_res["tokens_seen"] / tune_res["train_seconds"]
    print(f"default decoder, LoRA r=8 q,v, fp32, batch {BATCH} x {SEQ} fixed, {args.steps} steps, "
          f"{args.rounds} rounds per side, torch threads 2")
    print(f"trainable params: peft {p['trainable']:,}, adaptlab {a['trainable']:,}")
    print("| measure | peft + transformers | adaptlab | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| median s/step (same batches) | {mp:.3f} | {ma:.3f} | throughput {mp / ma:.2f}x |")
    cp, ca = med("peft", "cpu"), med("adaptlab", "cpu")
    print(f"| median CPU s/step (process time, less sensitive to a loaded machine) | {cp:.3f} | {ca:.3f} | "
          f"throughput {cp / ca:.2f}x |")
    print(f"| peak RSS MiB (process) | {peak_p:.0f} | {peak_a:.0f} | {peak_a / peak_p:.3f}x |")
    print(f"| loss at step {args.steps} | {p['losses'][-1]:.6f} | {a['losses'][-1]:.6f} | "
          f"max abs diff over all steps {dloss:.2e} |")
    print(f"| real tokens/s (peft fixed-64 vs `adaptlab tune` own batching) | {base_tps:.1f} | {tune_tps:.1f} | "
          f"{tune_tps / base_tps:.2f}x |")
    t = tune_res
    print(f"| storage, 100 task models | 100 full copies: {100 * t['full_model_bytes']:,} B | "
          f"100 LoRA adapters: {100 * t['adapter_folder_bytes']:,} B (weights {100 * t['adapter_bytes']:,} B) | "
          f"{t['full_model_bytes'] / t['adapter_folder_bytes']:.0f}x smaller |")
    print(json.dumps({"s_per_step": {"peft": mp, "adaptlab": ma}, "cpu_s_per_step": {"peft": cp, "adaptlab": ca}, "peak_rss_mib": {"peft": peak_p, "adaptlab": peak_a},
                      "loss_last": {"peft": p["losses"][-1], "adaptlab": a["losses"][-1]}, "max_loss_diff": dloss,
                      "real_tokens_per_s": {"peft_fixed64": base_tps, "adaptlab_tune": tune_tps},
                      "tune": tune_res}))


if __name__ == "__main__":
    main()
