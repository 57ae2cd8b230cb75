"""SPoT: Vu et al. 2022, "SPoT: Better Frozen Model Adaptation through Soft Prompt Transfer" (ACL 2022).

Prompt tuning (Lester et al. 2021, ``tuning/prompt_tuning.py``) whose prompt does not start at
random but from a prompt trained on another (source) task:

    1. source prompts   P_s = argmax_P  log Pr(Y_s | [P ; X_s])           for every source task s
    2. target init      P_t^0 = P_s*       (generic: one given source prompt; targeted: retrieval)
    3. target training  P_t = argmax_P  log Pr(Y_t | [P ; X_t])  from P_t^0

Targeted retrieval (Sec. 4): the target's *task embedding* is its prompt after a short prompt
tuning run from the usual init (``probe_steps`` steps); the source picked is the one whose prompt
is most similar, by cosine of the average prompt tokens ("Cos. Avg."),

    s* = argmax_s  cos( 1/n sum_i P_s[i],  1/n sum_i P_t^probe[i] )

or, ``similarity=token``, the mean of the token-wise cosines.

Here: ``adaptlab tune --method spot --init <source adapter>`` (generic), or ``--init best-source``
(targeted: the library's prompts, the target's own task excluded). The library is a folder of
prompt-tuning adapters, one per task (``library/<task>/``; default ``$ADAPTLAB_CACHE/spot/<model>``),
built by ``adaptlab experiment spot-library`` (``build_library``); ``adaptlab experiment
spot-transfer`` trains every source -> target pair and draws the transfer matrix. The adapter is
prompt tuning's file layout exactly (peft's PROMPT_TUNING, ``prompt_embeddings``), so peft loads it;
an init adapter may be ``prompt-tuning`` or ``spot``, of the same base model and prompt length.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from adaptlab.config import check
from adaptlab.errors import ConfigError
from adaptlab.tuning import prompt_tuning as _pt

MODULE = _pt.MODULE
init_methods = ("prompt-tuning", "spot")       # what --init may start from (the same tensors)


@dataclass
class Config:
    num_virtual_tokens: int = 20
    init: Literal["random", "vocab", "text"] = "vocab"     # the init of a run without --init (and the probe)
    init_text: str = ""
    library: str = ""                                      # source prompts ("": $ADAPTLAB_CACHE/spot/<model>)
    probe_steps: int = 10                                  # best-source: steps of the target's probe run
    similarity: Literal["avg", "token"] = "avg"

    def __post_init__(self):
        check(1 <= self.num_virtual_tokens <= 1024, f"num_virtual_tokens={self.num_virtual_tokens}: must be in [1, 1024]")
        check(self.init == "text" or not self.init_text, "init_text is only used with init=text")
        check(self.probe_steps >= 1, "probe_steps: must be at least 1")


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel

    t = TunedModel.wrap(backbone, "spot", config, task)
    pcfg = _pt.Config(num_virtual_tokens=config.num_virtual_tokens, init=config.init, init_text=config.init_text)
    t.add_prompt(MODULE, _pt.SoftPrompt(_pt.initial_prompt(t.model.get_input_embeddings(), backbone.tokenizer,
                                                           pcfg, task)))
    return t


# --------------------------------------------------------------------------- the library


def default_library(model_name: str) -> Path:
    from adaptlab.models import cache_dir

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    return cache_dir() / "spot" / safe


def library_dir(cfg: Config, model_name: str) -> Path:
    return Path(cfg.library).expanduser() if cfg.library else default_library(model_name)


def source_prompt(folder: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))["prompt_embeddings"].float()     # [n, D]


def library_entries(lib: Path) -> dict[str, Path]:
    """task name -> adapter folder, for every finished source prompt in ``lib``."""
    if not lib.is_dir():
        return {}
    out = {}
    for d in sorted(lib.iterdir()):
        meta = d / "adaptlab.json"
        if (d / "adapter_model.safetensors").exists() and meta.exists():
            m = json.loads(meta.read_text())
            if m.get("method") in init_methods:
                out[(m.get("task") or {}).get("name", d.name)] = d
    return out


def similarity(a: torch.Tensor, b: torch.Tensor, kind: str) -> float:
    if kind == "token":
        return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())
    return float(torch.nn.functional.cosine_similarity(a.mean(0), b.mean(0), dim=0))


def rank_sources(target_prompt: torch.Tensor, lib: Path, exclude: str, kind: str = "avg") -> list[dict]:
    """Library sources by similarity to the target's probe prompt, best first."""
    rows = []
    for name, d in library_entries(lib).items():
        if name == exclude:
            continue
        P = source_prompt(d)
        if P.shape != target_prompt.shape:
            continue
        rows.append({"source": name, "adapter": str(d), "similarity": round(similarity(P, target_prompt.float(), kind), 6)})
    return sorted(rows, key=lambda r: -r["similarity"])


def pick_source(backbone, cfg: Config, task, train_examples: list[dict], tcfg, model_name: str) -> tuple[str, list[dict]]:
    """Targeted retrieval: a probe run of ``probe_steps`` steps from the usual init, then the most
    similar library prompt. Returns (its adapter folder, the ranking). Writes nothing but a temp dir."""
    import tempfile

    from adaptlab.train.tune import train_on_task
    from adaptlab.tuning import apply_method

    lib = library_dir(cfg, model_name)
    if not any(n != task.name for n in library_entries(lib)):
        raise ConfigError(f"--init best-source: no source prompt in the library {lib} (other than {task.name}'s); "
                          "build it with 'adaptlab experiment spot-library' or give library=DIR")
    torch.manual_seed(tcfg.seed)
    probe = apply_method(backbone, "spot", cfg, task)
    pcfg = dataclasses.replace(tcfg, max_steps=cfg.probe_steps, eval=False, eval_every=None)
    with tempfile.TemporaryDirectory(prefix="adaptlab-spot-probe-") as tmp:
        train_on_task(backbone, probe, task, train_examples, pcfg, tmp, lr=3e-2 if tcfg.lr is None else tcfg.lr,
                      progress=False)
    ranking = rank_sources(probe.prompt.prompt_embeddings.detach().cpu(), lib, task.name, cfg.similarity)
    if not ranking:
        raise ConfigError(f"--init best-source: no library prompt in {lib} has this run's shape "
                          f"(num_virtual_tokens={cfg.num_virtual_tokens}, the same base model)")
    return ranking[0]["adapter"], ranking


def build_library(tasks: list[str], model: str | None = None, library: str | None = None, *, train_limit: int = 200,
                  max_steps: int = 30, batch_size: int = 8, num_virtual_tokens: int = 20, seed: int = 0,
                  data: str | None = None, backbone=None) -> dict[str, Path]:
    """Train (or keep) one prompt-tuning source prompt per task in ``library``; returns task -> folder."""
    from adaptlab.models import load_backbone, resolve_name
    from adaptlab.train.tune import tune

    name = backbone.name if backbone is not None else resolve_name(model)
    lib = Path(library).expanduser() if library else default_library(name)
    have = library_entries(lib)
    backbone = backbone or load_backbone(model)
    for t in tasks:
        if t in have:
            continue
        out = lib / t
        if out.exists() and not (out / "adaptlab.json").exists():
            import shutil

            shutil.rmtree(out)                  # an unfinished entry: train it again
        tune(t, "prompt-tuning", out=str(out), sets={"num_virtual_tokens": num_virtual_tokens}, data=data,
             backbone=backbone, train_limit=train_limit, max_steps=max_steps, batch_size=batch_size, seed=seed,
             eval=False, progress=False)
    os.makedirs(lib, exist_ok=True)
    return library_entries(lib)


# --------------------------------------------------------------------------- files (prompt tuning's)

to_file_keys = _pt.to_file_keys
from_file_keys = _pt.from_file_keys


def to_peft_config(cfg: Config, tuned) -> dict:
    pcfg = _pt.Config(num_virtual_tokens=cfg.num_virtual_tokens, init=cfg.init, init_text=cfg.init_text)
    return _pt.to_peft_config(pcfg, tuned)


def from_peft_config(d: dict) -> dict:
    return _pt.from_peft_config(d)
