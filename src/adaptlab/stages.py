"""Stages before a tuning run of ``adaptlab compare``: ``tapt+lora``, ``dapt+head:pt_text=FILE``,
``vocab+lora:extend=100``, ``tapt+vocab+lora``.

    tapt    continued pretraining on the task's own train split, labels dropped (``adaptlab pretrain --task``)
    dapt    continued pretraining on domain text, ``pt_text=FILE`` (``adaptlab pretrain --text``)
    vocab   a vocabulary trained on the task's train text; its ``extend`` best whole words are added and
            trained with the method (``adaptlab vocab --extend``, ``tune --vocab``)

Options (after the run's colons, beside the method's): ``pt_method`` (default ``full``, as in
Gururangan et al. 2020; ``lora``/``ia3`` are folded into the model; any other method must be the
run's own, which then continues from the pretrained adapter), ``pt_steps``, ``pt_lr``,
``pt_batch_size``, ``pt_max_seq_len``, ``pt_text``; ``vocab_size``, ``extend``. A stage runs once
per distinct options (seed 0) and is kept under ``<compare out>/stages/``, shared by every method
and seed that names it; its seconds are added to each run's ``train_s`` (the whole cost of that
specialist), and the record's ``stages`` field says what ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.config import build_config, check, config_dict
from adaptlab.errors import ConfigError

STAGES = ("tapt", "dapt", "vocab")


@dataclass
class StageConfig:
    pt_method: str = "full"
    pt_steps: int = 500
    pt_lr: float | None = None
    pt_batch_size: int = 32
    pt_max_seq_len: int = 64
    pt_text: str | None = None
    vocab_size: int = 8000
    extend: int = 100

    def __post_init__(self):
        check(self.pt_steps >= 1 and self.pt_batch_size >= 1, "pt_steps and pt_batch_size must be at least 1")
        check(self.pt_lr is None or 0 < self.pt_lr < 1, f"pt_lr={self.pt_lr}: must be in (0, 1)")
        check(8 <= self.pt_max_seq_len <= 8192, "pt_max_seq_len: must be in [8, 8192]")
        check(self.vocab_size >= 100 and self.extend >= 1, "vocab_size must be at least 100 and extend at least 1")


FIELDS = {f.name for f in dataclasses.fields(StageConfig)}


def split_name(name: str) -> tuple[list[str], str]:
    *stages, method = name.split("+")
    return stages, method


def check_run(item: str, stages: list[str], method: str, sets: dict) -> tuple[StageConfig, dict]:
    """Validate a staged run; returns (stage config, the method's and training options)."""
    from adaptlab.tuning import METHODS

    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ConfigError(f"--runs {item!r}: unknown stage {bad[0]!r} before '+'; stages: {', '.join(STAGES)}")
    if len(set(stages)) != len(stages) or ("tapt" in stages and "dapt" in stages):
        raise ConfigError(f"--runs {item!r}: each stage at most once, and tapt or dapt, not both")
    own = {k: v for k, v in sets.items() if k in FIELDS}
    if own and not stages:
        raise ConfigError(f"--runs {item!r}: {sorted(own)[0]} is a stage option; name the stage (tapt+, dapt+, vocab+)")
    scfg = build_config(StageConfig, own, where=f"--runs {item}")
    if "dapt" in stages and not scfg.pt_text:
        raise ConfigError(f"--runs {item!r}: dapt needs its text: pt_text=FILE")
    if ("tapt" in stages or "dapt" in stages):
        if scfg.pt_method not in METHODS or scfg.pt_method == "head":
            raise ConfigError(f"--runs {item!r}: pt_method={scfg.pt_method}: a method that trains the model "
                              f"({', '.join(m for m in METHODS if m != 'head')})")
        pm = METHODS[scfg.pt_method]
        if not (scfg.pt_method == "full" or pm.mergeable) and scfg.pt_method != method:
            raise ConfigError(f"--runs {item!r}: pt_method={scfg.pt_method} gives an adapter, not a model: the run's "
                              f"method must be {scfg.pt_method} too (it continues from it)")
        if scfg.pt_text:
            from adaptlab.data import read_texts

            read_texts(scfg.pt_text)                     # a bad corpus fails before anything runs
    return scfg, {k: v for k, v in sets.items() if k not in FIELDS}


def _key(kind: str, values: dict) -> str:
    return f"{kind}-" + hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


def prepare(stages: list[str], scfg: StageConfig, method: str, task, backbone, workdir: Path, data: str | None,
            loaded: dict) -> dict:
    """Run (or reuse) the stages; returns {backbone, init, vocab, seconds, stages}. ``loaded``:
    backbones already loaded from pretrained folders, by folder."""
    from adaptlab.models import load_backbone
    from adaptlab.tuning import METHODS

    out = {"backbone": backbone, "init": None, "vocab": None, "seconds": 0.0, "stages": []}
    if "tapt" in stages or "dapt" in stages:
        from adaptlab.train.pretrain import pretrain

        kind = "tapt" if "tapt" in stages else "dapt"
        values = {"kind": kind, "method": scfg.pt_method, "steps": scfg.pt_steps, "lr": scfg.pt_lr,
                  "batch": scfg.pt_batch_size, "len": scfg.pt_max_seq_len, "text": scfg.pt_text,
                  "task": task.name if kind == "tapt" else None, "base": backbone.name}
        folder = workdir / _key(kind, values)
        meta = folder / "adaptlab_pretrain.json"
        reused = meta.exists()                  # run by an earlier run or invocation: its seconds are not this one's
        if not reused:
            src = {"task": task.path or task.name, "data": data} if kind == "tapt" else {"text": scfg.pt_text}
            pretrain(**src, method=scfg.pt_method, out=str(folder), backbone=backbone,
                     resume=(folder / "pretrain_config.json").exists(), sets={"max_seq_len": str(scfg.pt_max_seq_len)},
                     max_steps=scfg.pt_steps, batch_size=scfg.pt_batch_size, lr=scfg.pt_lr, seed=0)
        info = json.loads(meta.read_text())
        out["seconds"] += info["stats"]["train_seconds"]
        out["stages"].append({"stage": kind, "folder": str(folder), "result": info["result"],
                              "steps": info["stats"]["steps"], "seconds": info["stats"]["train_seconds"],
                              "reused": reused})
        pm = METHODS[scfg.pt_method]
        if scfg.pt_method == "full" or pm.mergeable:
            if str(folder) not in loaded:
                loaded[str(folder)] = load_backbone(str(folder))
            out["backbone"] = loaded[str(folder)]
        else:
            out["init"] = str(folder)
    if "vocab" in stages:
        from adaptlab import vocab
        from adaptlab.data import load_split, task_texts

        values = {"vocab_size": scfg.vocab_size, "extend": scfg.extend, "task": task.name,
                  "base": out["backbone"].name}
        folder = workdir / _key("vocab", values)
        reused = (folder / vocab.EXTENSION).exists()
        if not reused:
            t0 = time.perf_counter()
            texts = task_texts(task, load_split(task, "train", data))
            tmp = folder.with_name(folder.name + ".tmp")
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            rep = vocab.build(texts, out["backbone"], scfg.vocab_size, scfg.extend, str(tmp))
            rep["seconds"] = round(time.perf_counter() - t0, 2)
            (tmp / "vocab_report.json").write_text(json.dumps(rep))
            tmp.rename(folder)
        rep = json.loads((folder / "vocab_report.json").read_text())
        out["vocab"] = str(folder)
        out["seconds"] += rep.get("seconds", 0.0)
        out["stages"].append({"stage": "vocab", "folder": str(folder), "added": len(rep.get("added", [])),
                              "fertility": rep["fertility"], "seconds": rep.get("seconds", 0.0), "reused": reused})
    out["config"] = config_dict(scfg)
    return out
