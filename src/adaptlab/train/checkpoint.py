"""Resume checkpoints of the one training loop: everything a resumed run needs to be bitwise the
run that was not interrupted.

    out/checkpoint/
      trainable.safetensors     the state that moves: every requires_grad tensor, plus what the
                                method saves without a gradient (a black-box method's vector)
      stepper.safetensors       the stepper's tensors (AdamW's moments; CMA-ES's mean and covariance)
      rng.safetensors           torch's CPU RNG of every process (by rank), and CUDA's
      state.json                data position (epoch, micro-batch), step, tokens, dev history, the
                                stepper's plain values, Python's RNG

Written into a fresh folder that is then swapped in (the old one is kept until the swap), so a
kill at any moment leaves one complete checkpoint. Only safetensors and JSON: never pickle.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch

from adaptlab.config import atomic_write_bytes, atomic_write_json
from adaptlab.errors import ConfigError

FOLDER = "checkpoint"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(path.read_bytes())


def save_checkpoint(ckdir: Path, moving: dict[str, torch.Tensor], stepper_tensors: dict[str, torch.Tensor],
                    state: dict, rng_states: list[torch.Tensor]) -> None:
    """``moving``: the tensors that change while training (by name); ``rng_states``: torch's CPU
    RNG state of each process, by rank."""
    tmp = ckdir.with_name(ckdir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_tensors(tmp / "trainable.safetensors", moving)
        save_tensors(tmp / "stepper.safetensors", stepper_tensors)
        rng = {"torch" if r == 0 else f"torch{r}": t for r, t in enumerate(rng_states)}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"cuda{i}"] = s
        save_tensors(tmp / "rng.safetensors", rng)
        py_state = random.getstate()
        atomic_write_json(tmp / "state.json", {**state, "python_random": [py_state[0], list(py_state[1]), py_state[2]]})
    except BaseException:                   # a full disk: no half checkpoint is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = ckdir.with_name(ckdir.name + ".old")
    if ckdir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(ckdir, old)
    os.replace(tmp, ckdir)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(out: Path) -> Path | None:
    for name in (FOLDER, FOLDER + ".old"):
        p = out / name
        if (p / "state.json").exists():
            return p
    return None


def load_checkpoint(ckdir: Path, module: torch.nn.Module, rank: int = 0,
                    world: int = 1) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore the moving tensors into ``module`` and the RNGs; returns (state, stepper tensors)."""
    state = json.loads((ckdir / "state.json").read_text())
    if state.get("world", 1) != world:          # the data position and RNG streams are per process
        raise ConfigError(f"{ckdir.parent}: --resume on {world} process(es), but the run was started on "
                          f"{state.get('world', 1)}; resume it with as many as it started with")
    tensors = dict(module.named_parameters())
    tensors.update(dict(module.named_buffers()))
    with torch.no_grad():
        for k, v in load_tensors(ckdir / "trainable.safetensors").items():
            if k not in tensors:
                raise ConfigError(f"{ckdir}: checkpoint tensor {k!r} is not in this model; it was written by "
                                  "another method or config")
            tensors[k].copy_(v)
    stepper = load_tensors(ckdir / "stepper.safetensors")
    rng = load_tensors(ckdir / "rng.safetensors")
    torch.set_rng_state(rng["torch" if rank == 0 else f"torch{rank}"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(rng) if k.startswith("cuda")])
    v, s, g = state.pop("python_random")
    random.setstate((v, tuple(s), g))
    return state, stepper
