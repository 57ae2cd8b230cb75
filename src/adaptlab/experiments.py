"""``adaptlab experiment NAME``: presets that reproduce the seeds' claims in one command each.

* ``icl-demos`` — what in the demonstrations matters (Min et al. 2022, "Rethinking the Role of
  Demonstrations"): no demos / gold labels / random labels / out-of-distribution inputs / no labels.
* ``icl-flipped`` — accuracy as a growing fraction of demo labels is flipped (Wei et al. 2023,
  "Larger language models do in-context learning differently").
* ``specialist-vs-generalist`` — the default comparison: prompting strategies and tuning methods
  side by side.
* ``storage`` — one base model + N LoRA adapters vs N fully tuned copies, bytes on disk; the
  adapters are really written and read back (and checked equal), the base really written once.

The first three are ``compare`` run lists; ``storage`` writes its own small report.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from adaptlab.compare import DEFAULT_RUNS, CompareConfig, compare
from adaptlab.config import atomic_write_json, atomic_write_text
from adaptlab.errors import ConfigError

K = 8
PRESETS = {
    "icl-demos": ",".join([
        "zero-shot",
        f"few-shot:k={K}",
        f"few-shot:k={K}:labels=random",
        f"few-shot:k={K}:labels=random:inputs=ood",
        f"few-shot:k={K}:labels=none",
    ]),
    "icl-flipped": ",".join([f"few-shot:k={K}"] + [f"few-shot:k={K}:labels=flipped:p={p}"
                                                    for p in ("0.25", "0.5", "0.75", "1.0")]),
    "specialist-vs-generalist": DEFAULT_RUNS,
    "storage": None,
}


def run_experiment(name: str, *, task: str | None = None, model: str | None = None, out: str | None = None,
                   seeds: int = 1, limit: int | None = None, data: str | None = None, n_adapters: int = 100,
                   train_limit: int = 500, epochs: int = 1, max_steps: int | None = None) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(PRESETS)}")
    task = task or ("sst2" if name.startswith("icl") else "reviews")
    out = out or f"runs/experiment-{name}-{Path(task).stem}"
    if name == "storage":
        return storage(model, task, out, n=n_adapters)
    cfg = CompareConfig(task=task, model=model, runs=PRESETS[name], seeds=seeds, limit=limit, data=data,
                        train_limit=train_limit, epochs=epochs, max_steps=max_steps)
    recs = compare(cfg, out)
    return {"out": out, "records": recs}


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def storage(model: str | None, task: str, out: str, n: int = 100, r: int = 8) -> dict:
    """Write the base once and ``n`` LoRA adapters (r, on q,v; each a different random B so that
    no two files are alike), read every adapter back and check its tensors, and compare the bytes
    with ``n`` full copies (one is written and measured; n of them would be n times that)."""
    import torch
    from safetensors.torch import load_file

    from adaptlab.models import load_backbone
    from adaptlab.tasks import load_task
    from adaptlab.tuning import apply_method
    from adaptlab.tuning.io import WEIGHTS, load_adapter, save_adapter

    if n < 1:
        raise ConfigError("storage: the number of adapters must be at least 1")
    outp = Path(out)
    if outp.exists() and any(outp.iterdir()):
        raise ConfigError(f"{outp}: folder is not empty; choose another --out")
    spec = load_task(task)
    backbone = load_backbone(model)
    t0 = time.perf_counter()
    base_dir = outp / "base"
    backbone.model.save_pretrained(base_dir)          # one full copy, as a tuned model would be saved
    backbone.tokenizer.save_pretrained(base_dir)
    full_copy = _folder_bytes(base_dir)
    written = {}
    for i in range(n):
        torch.manual_seed(i)
        tuned = apply_method(backbone, "lora", {"r": r}, spec)
        with torch.no_grad():
            for name, p in tuned.named_parameters():
                if p.requires_grad and "lora_B" in name:
                    p.normal_(0, 0.01)
        d = save_adapter(outp / "adapters" / f"{i:03d}", tuned)
        written[i] = {k: v.clone() for k, v in load_file(d / WEIGHTS).items()}
        if (i + 1) % 10 == 0:
            print(f"  wrote {i + 1}/{n} adapters", file=sys.stderr)
    # read back: every file's tensors equal what was written; a sample also loads into a model
    mismatched = 0
    for i in range(n):
        got = load_file(outp / "adapters" / f"{i:03d}" / WEIGHTS)
        mismatched += any(not torch.equal(got[k], written[i][k]) for k in written[i])
    loaded = 0
    for i in sorted({0, n // 2, n - 1}):
        _, tuned = load_adapter(outp / "adapters" / f"{i:03d}", backbone=backbone)
        loaded += 1
    adapters = _folder_bytes(outp / "adapters")
    result = {
        "model": backbone.name, "task": spec.name, "n": n, "lora_r": r,
        "base_bytes": full_copy, "adapters_bytes": adapters, "adapter_bytes_each": adapters // n,
        "base_plus_adapters_bytes": full_copy + adapters, "full_copies_bytes": n * full_copy,
        "ratio": (n * full_copy) / (full_copy + adapters), "adapters_checked": n, "mismatched": mismatched,
        "loaded_into_model": loaded, "seconds": round(time.perf_counter() - t0, 1),
        "note": f"one full copy written and measured; {n} copies = {n} x that (not written)",
    }
    atomic_write_json(outp / "results.json", result)
    gb = 1024 ** 3
    md = (f"# adaptlab experiment storage: {backbone.name}\n\n"
          f"| layout | bytes | GiB |\n| --- | --- | --- |\n"
          f"| one base + {n} LoRA adapters (r={r}, q,v) | {full_copy + adapters:,} | {(full_copy + adapters) / gb:.3f} |\n"
          f"| {n} fully tuned copies | {n * full_copy:,} | {n * full_copy / gb:.3f} |\n\n"
          f"Each adapter folder: {adapters // n:,} bytes. Ratio: {result['ratio']:.1f}x less on disk. "
          f"All {n} adapters were written and read back ({mismatched} mismatched); {loaded} loaded into the "
          f"model. {result['note']}.\n")
    atomic_write_text(outp / "report.md", md)
    atomic_write_text(outp / "report.html", "<!doctype html><meta charset='utf-8'><title>storage</title><pre>"
                      + md.replace("&", "&amp;").replace("<", "&lt;") + "</pre>")
    print(json.dumps(result, indent=2))
    return result
