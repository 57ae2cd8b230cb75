"""``adaptlab experiment NAME``: presets that reproduce the seeds' claims in one command each.

* ``icl-demos`` — what in the demonstrations matters (Min et al. 2022, "Rethinking the Role of
  Demonstrations"): no demos / gold labels / random labels / out-of-distribution inputs / no labels.
* ``icl-flipped`` — accuracy as a growing fraction of demo labels is flipped (Wei et al. 2023,
  "Larger language models do in-context learning differently").
* ``specialist-vs-generalist`` — the default comparison: prompting strategies and tuning methods
  side by side.
* ``storage`` — one base model + N LoRA adapters vs N fully tuned copies, bytes on disk; the
  adapters are really written and read back (and checked equal), the base really written once.

* ``black-box`` — the gradient-free specialists against prompt tuning and prompting on a k-shot
  set (16 per class): bbt, bbtv2, bdpl, prompt-tuning, few-shot:k=4, zero-shot, at small budgets
  (``BLACK_BOX`` below; docs/benchmarks.md says what was run).
* ``spot-library`` — one prompt-tuning source prompt per task (``tuning/spot.py``'s library).
* ``spot-transfer`` — SPoT's source -> target transfer matrix: every target trained from every
  other task's source prompt and from the usual init at the same budget; the relative gain
  (acc_{s->t} - acc_{init->t}) / acc_{init->t} as a heat-map, and the targeted pick's hit rate
  (is the most similar source prompt the one that transfers best?).
* ``held-out-clusters`` — FLAN's evaluation: instruction-tune on all clusters of a mixture but one,
  zero-shot on the held-out cluster's tasks against the untuned model, and the cluster-count
  ablation (``held_out.py``; ``--task C1,C2,...`` names the held-out clusters).

The first three and ``black-box`` are ``compare`` run lists; the others write their own report.
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
    "spot-library": None,
    "spot-transfer": None,
    "held-out-clusters": None,
}
KSHOT = "shots_per_class=16:eval_limit=16:dev_every=0"
BB = f"num_virtual_tokens=5:rows_per_generation=8:budget=320:{KSHOT}"
PRESETS["black-box"] = ",".join([f"bbt:{BB}", f"bbtv2:{BB}",
                                 f"bdpl:prompt_length=5:samples=4:batch_size=8:budget=320:{KSHOT}",
                                 "prompt-tuning:num_virtual_tokens=5:max_steps=10:batch_size=8:shots_per_class=16:eval=false",
                                 "few-shot:k=4", "zero-shot"])
SPOT_TASKS = ("sst2", "mr", "subj", "agnews", "rte", "cola")


def run_experiment(name: str, *, task: str | None = None, model: str | None = None, out: str | None = None,
                   seeds: int = 1, limit: int | None = None, data: str | None = None, n_adapters: int = 100,
                   train_limit: int = 500, epochs: int = 1, max_steps: int | None = None,
                   sets: dict | None = None) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(PRESETS)}")
    if sets and name != "held-out-clusters":
        raise ConfigError(f"--set: only the held-out-clusters experiment takes options ({name} does not)")
    if name in ("spot-library", "spot-transfer"):
        tasks = task.split(",") if task else list(SPOT_TASKS)
        out = out or f"runs/experiment-{name}"
        if name == "spot-library":
            from adaptlab.tuning.spot import build_library

            lib = build_library(tasks, model, str(Path(out) / "library"), data=data, max_steps=max_steps or 8)
            return {"out": out, "library": {k: str(v) for k, v in lib.items()}}
        return spot_transfer(model, tasks, out, data=data, limit=limit or 24, source_steps=max_steps or 8)
    if name == "held-out-clusters":
        from adaptlab.held_out import DEFAULT_CLUSTERS, HeldOutConfig, held_out_clusters

        if data:
            raise ConfigError("held-out-clusters reads each mixture task's own data ($ADAPTLAB_DATA_DIR or its "
                              "source); --data names one task's files, so it is not taken here")
        from adaptlab.config import build_config

        values = {"clusters": task or DEFAULT_CLUSTERS, "seeds": seeds, "limit": limit or 80,
                  **({"max_steps": max_steps} if max_steps else {}), **(sets or {})}
        cfg = build_config(HeldOutConfig, values, where="experiment held-out-clusters --set")
        return held_out_clusters(cfg, out or "runs/experiment-held-out-clusters", model=model)
    task = task or ("sst2" if name.startswith("icl") or name == "black-box" else "reviews")
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
    sample = sorted({0, n // 2, n - 1})              # first, middle, last: loaded onto the base as serve does
    for i in sample:
        load_adapter(outp / "adapters" / f"{i:03d}", backbone=backbone)
    adapters = _folder_bytes(outp / "adapters")
    weights = (outp / "adapters" / "000" / WEIGHTS).stat().st_size
    result = {
        "model": backbone.name, "task": spec.name, "n": n, "lora_r": r,
        "base_bytes": full_copy, "adapters_bytes": adapters, "adapter_bytes": weights,
        "adapter_folder_bytes_each": adapters // n,
        "base_plus_adapters_bytes": full_copy + adapters, "full_copies_bytes": n * full_copy,
        "ratio": (n * full_copy) / (full_copy + adapters), "adapters_checked": n, "mismatched": mismatched,
        "loaded_into_model": len(sample), "loaded": [f"{i:03d}" for i in sample],
        "seconds": round(time.perf_counter() - t0, 1),
        "note": f"one full copy written and measured; {n} copies = {n} x that (not written)",
    }
    atomic_write_json(outp / "results.json", result)
    md = storage_report(result)
    atomic_write_text(outp / "report.md", md)
    atomic_write_text(outp / "report.html", "<!doctype html><meta charset='utf-8'><title>storage</title><pre>"
                      + md.replace("&", "&amp;").replace("<", "&lt;") + "</pre>")
    print(md.split("\n", 2)[2].rstrip() + f"\n\nreport: {outp}/report.html (and report.md, results.json)")
    return result


def storage_report(res: dict) -> str:
    """The storage experiment as a table, every byte figure with what it counts."""
    gb, n, r = 1024 ** 3, res["n"], res["lora_r"]
    rows = [(f"one base + {n} LoRA adapters (r={r}, q,v)", res["base_plus_adapters_bytes"]),
            (f"{n} fully tuned copies", res["full_copies_bytes"]),
            ("the base (model folder)", res["base_bytes"]),
            ("one adapter: adapter_model.safetensors (adapter_bytes)", res["adapter_bytes"]),
            ("one adapter folder (that file + adapter_config.json + adaptlab.json)", res["adapter_folder_bytes_each"])]
    table = "| layout | bytes | GiB |\n| --- | ---: | ---: |\n" + "".join(
        f"| {what} | {b:,} | {b / gb:.4f} |\n" for what, b in rows)
    return (f"# adaptlab experiment storage: {res['model']}\n\n{table}\n"
            f"Ratio: {res['ratio']:.1f}x less on disk. All {n} adapter files were read back and their tensors "
            f"compared with what was written ({res['mismatched']} mismatched); {res['loaded_into_model']} of them "
            f"(numbers {', '.join(res['loaded'])}: first, middle, last) were also loaded onto the base model with "
            f"load_adapter, as `adaptlab serve` loads them. {res['note']}. adapter_bytes is the weights file, "
            f"the size `tune` and `compare` report.\n")


def spot_transfer(model: str | None, tasks: list[str], out: str, *, data: str | None = None, limit: int = 24,
                  source_steps: int = 8, target_steps: int = 3, batch_size: int = 4, train_limit: int = 200,
                  n: int = 5, seed: int = 0) -> dict:
    """Train the library (or keep it), then every target from every other source and from the usual
    init at the same budget; score each on the target's first ``limit`` test examples. Resumable:
    finished pairs in ``results.jsonl`` are kept."""
    import shutil

    from adaptlab.compare import load_results
    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.models import load_backbone
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task
    from adaptlab.train import TrainConfig, train_subset, tune
    from adaptlab.tuning import make_config
    from adaptlab.tuning.io import load_adapter
    from adaptlab.tuning.spot import build_library, pick_source

    if len(tasks) < 2:
        raise ConfigError("spot-transfer: needs at least two tasks (--task a,b,...)")
    specs = {t: load_task(t) for t in tasks}
    tests = {t: load_split(specs[t], "test", data, limit) for t in tasks}    # bad data fails before any training
    outp = Path(out)
    backbone = load_backbone(model)
    t0 = time.perf_counter()
    lib = build_library(tasks, library=str(outp / "library"), backbone=backbone, data=data, train_limit=train_limit,
                        max_steps=source_steps, batch_size=batch_size, num_virtual_tokens=n, seed=seed)
    recs = load_results(outp)
    done = {(r["target"], r["source"]) for r in recs}

    def run_one(target: str, source: str | None) -> float:
        rundir = outp / "runs" / f"{target}-from-{source or 'init'}"
        shutil.rmtree(rundir, ignore_errors=True)
        tune(target, "spot", out=str(rundir), sets={"num_virtual_tokens": n, "library": str(outp / "library")},
             data=data, backbone=backbone, init=str(lib[source]) if source else None, train_limit=train_limit,
             max_steps=target_steps, batch_size=batch_size, seed=seed, eval=False, progress=False)
        _, tuned = load_adapter(rundir, backbone=backbone)
        lm = make_lm(backbone, model=tuned, truncate=specs[target].truncate)
        return evaluate(lm, specs[target], make_strategy("zero-shot"), tests[target]).score

    from adaptlab.compare import _write_results

    for target in tasks:
        for source in [None] + [s for s in tasks if s != target]:
            if (target, source or "init") in done:
                continue
            s0 = time.perf_counter()
            score = run_one(target, source)
            recs.append({"target": target, "source": source or "init", "score": score,
                         "seconds": round(time.perf_counter() - s0, 1)})
            _write_results(outp, recs)
            print(f"  {target} <- {source or 'init'}: {score:.4f}", file=sys.stderr)
        if (target, "pick") not in done:       # the targeted retrieval, from a probe of target_steps steps
            cfg = make_config("spot", {"num_virtual_tokens": n, "library": str(outp / "library"),
                                       "probe_steps": target_steps})
            train = train_subset(load_split(specs[target], "train", data), train_limit)
            tcfg = TrainConfig(batch_size=batch_size, seed=seed, eval=False)
            _, ranking = pick_source(backbone, cfg, specs[target], train, tcfg, backbone.name)
            recs.append({"target": target, "source": "pick", "picked": ranking[0]["source"], "ranking": ranking})
            _write_results(outp, recs)
    result = transfer_report(outp, recs, tasks, {"model": backbone.name, "limit": limit, "source_steps": source_steps,
                                                 "target_steps": target_steps, "batch_size": batch_size,
                                                 "train_limit": train_limit, "num_virtual_tokens": n, "seed": seed,
                                                 "seconds": round(time.perf_counter() - t0, 1)})
    print(json.dumps({k: v for k, v in result.items() if k != "gain"}, indent=2))
    return result


def transfer_report(outp: Path, recs: list[dict], tasks: list[str], settings: dict) -> dict:
    """The relative-gain matrix (rows: sources, columns: targets), the hit rate, report.md/html + heat-map."""
    import base64
    import io

    score = {(r["target"], r["source"]): r["score"] for r in recs if "score" in r}
    picked = {r["target"]: r["picked"] for r in recs if r.get("source") == "pick"}
    gain: dict[str, dict[str, float | None]] = {}
    for s in tasks:
        gain[s] = {}
        for t in tasks:
            base, v = score.get((t, "init")), score.get((t, s))
            gain[s][t] = None if s == t or base is None or v is None else (v - base) / base if base else None
    best = {t: max((s for s in tasks if gain[s][t] is not None), key=lambda s: gain[s][t], default=None) for t in tasks}
    hits = [t for t in tasks if t in picked and picked[t] == best[t]]
    hit_rate = len(hits) / max(1, sum(t in picked for t in tasks))
    head = "| source \\ target | " + " | ".join(tasks) + " |\n| --- |" + " --- |" * len(tasks) + "\n"
    body = "".join(f"| {s} | " + " | ".join("—" if gain[s][t] is None else f"{gain[s][t]:+.3f}" for t in tasks)
                   + " |\n" for s in tasks)
    base_row = "| (usual init, score) | " + " | ".join(f"{score.get((t, 'init'), float('nan')):.4f}" for t in tasks) + " |\n"
    picks = "".join(f"| {t} | {picked.get(t, '-')} | {best[t]} | {'yes' if t in hits else 'no'} |\n" for t in tasks)
    md = (f"# adaptlab experiment spot-transfer\n\nSettings: {json.dumps(settings)}\n\n"
          f"Relative gain over the usual init at the same budget, (acc_s->t - acc_init->t) / acc_init->t:\n\n"
          f"{head}{base_row}{body}\n![transfer](transfer.png)\n\n"
          f"Targeted pick (most similar source prompt by cosine of average prompt tokens, after a probe run):"
          f" hit rate {len(hits)}/{sum(t in picked for t in tasks)} = {hit_rate:.2f}\n\n"
          f"| target | picked | best transfer | hit |\n| --- | --- | --- | --- |\n{picks}")
    png = b""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        M = [[float("nan") if gain[s][t] is None else gain[s][t] for t in tasks] for s in tasks]
        fig, ax = plt.subplots(figsize=(1.1 * len(tasks) + 2, 1.0 * len(tasks) + 1.5))
        lim = max([abs(v) for row in M for v in row if v == v] or [1.0])
        im = ax.imshow(M, cmap="RdBu", vmin=-lim, vmax=lim)
        ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
        ax.set_yticks(range(len(tasks)), tasks)
        ax.set_xlabel("target")
        ax.set_ylabel("source prompt")
        for i, row in enumerate(M):
            for j, v in enumerate(row):
                if v == v:
                    ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=8)
        fig.colorbar(im, ax=ax, label="relative gain over the usual init")
        ax.set_title("SPoT transfer")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        png = buf.getvalue()
    except ImportError:
        pass
    from adaptlab.config import atomic_write_bytes

    if png:
        atomic_write_bytes(outp / "transfer.png", png)
    atomic_write_text(outp / "report.md", md)
    img = f"<img alt='transfer' src='data:image/png;base64,{base64.b64encode(png).decode()}'>" if png else ""
    atomic_write_text(outp / "report.html", "<!doctype html><meta charset='utf-8'><title>spot-transfer</title><pre>"
                      + md.replace("&", "&amp;").replace("<", "&lt;") + "</pre>" + img)
    result = {"out": str(outp), "gain": gain, "picked": picked, "best": best, "hit_rate": hit_rate,
              "hits": hits, "settings": settings}
    atomic_write_json(outp / "results.json", result)
    return result
