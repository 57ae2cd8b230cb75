"""BBTv2: Sun et al. 2022, "BBTv2: Towards a Gradient-Free Future with Large Language Models"
(EMNLP 2022).

Deep black-box prompts: a prompt at *every* layer, each the image of its own low-dimensional
vector through its own fixed random projection, searched without gradients layer by layer
(divide and conquer):

    p_l = A_l z_l + p_{0,l},      z_l in R^d,  A_l in R^{(n 2D) x d},  l = 1..L
    for round = 1, 2, ...:  for l = 1..L:  z_l <- one CMA-ES generation on L(z_1..z_L), the other z fixed

A_l is BBTv2's normal projection scaled to the model's hidden-state statistics: (A_l)_ij ~ N(0,
sigma_l^2), sigma_l = s_l / (sqrt(d) sigma), s_l the std of layer l's own keys and values on real
tokens, so A_l z_l (z_l ~ N(0, sigma^2 I)) has the scale of the layer's activations.

Here a layer's prompt is what P-tuning v2 trains at that layer: n key/value pairs that every
real token also attends to (``tuning/prefix.py``'s layout, p_l in R^{n x 2D}, D = H_kv d_head,
the keys after rotary embedding). p_0: ``vocab`` (the frozen model's own keys/values of n tokens
drawn from the first 5,000 ids with ``projection_seed``, Li & Liang's init) or ``zero``. Every
A_l and p_0 is regenerated from ``projection_seed`` (A_l from (seed, l), one layer at a time, so
only one [n 2D, d] matrix is ever held), never stored.

Loop mapping as BBT's (``tuning/bbt.py``): one step = one generation of one layer's CMA-ES
(``gens_per_layer`` generations per layer before moving to the next), P candidates x B rows in
one batched forward = P*B model calls; max_steps = budget // (P * B). Decoders only.

Saved: the materialised prompts in the PREFIX_TUNING layout (``prompt_embeddings`` [n, 2 L D],
bit-compatible with peft's prefix tuning) under our ``peft_type: "ADAPTLAB_BBTV2"``, plus
``bbtv2_z`` [L, d]; ``adaptlab.json`` records d, the projection and its seed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from adaptlab.config import check
from adaptlab.errors import ConfigError
from adaptlab.tuning import bbt as _bbt
from adaptlab.tuning import prefix as _prefix

MODULE = "bbtv2_prompt"            # the registered prefix is "bbtv2_"
gradient = False
KINDS = ("decoder",)
REQUIRES = {"cma": "bbt"}                   # CMA-ES (optional extra)


@dataclass
class Config:
    d: int = 500
    num_virtual_tokens: int = 50                   # n, at every layer
    popsize: int = 20
    sigma: float = 1.0
    bound: float = 0.0
    budget: int = 8000
    projection_seed: int = 0
    init: Literal["zero", "vocab"] = "vocab"
    loss: Literal["ce", "hinge"] = "ce"
    gens_per_layer: int = 1                        # generations on one layer before the next
    rows_per_generation: int = 0
    dev_every: int = 1000
    max_rows: int = 1024

    def __post_init__(self):
        _bbt.check_search(self)
        check(self.gens_per_layer >= 1, "gens_per_layer: must be at least 1")


class DeepPrompt(nn.Module):
    """``z`` [L, d] -> per-layer key/value prompts [n, 2 L D] (the prefix layout)."""

    def __init__(self, p0: torch.Tensor, scales: list[float], geometry, d: int, seed: int, max_rows: int,
                 gens_per_block: int, dtype):
        super().__init__()
        self.L, self.H_kv, self.dh = geometry
        self.n_virtual = p0.shape[0]
        self.D2 = 2 * self.H_kv * self.dh                                         # 2D: one layer's k and v
        self.blocks, self.gens_per_block = self.L, gens_per_block
        self.z = nn.Parameter(torch.zeros(self.L, d), requires_grad=False)
        self._p0, self._scales, self._seed, self.d = p0, scales, seed, d
        self._A: tuple[int, torch.Tensor] | None = None                          # (layer, A_l) of the last use
        self._P = p0.clone()                                                      # materialised [n, 2LD]
        self._z_seen = torch.zeros(self.L, d)                                     # the z that _P was made from
        self.max_rows, self.dtype = max_rows, dtype
        self.population: torch.Tensor | None = None                               # [P, n, 2D] for one layer
        self.population_layer: int | None = None
        self.row_candidates: torch.Tensor | None = None

    def A(self, layer: int) -> torch.Tensor:
        if self._A is None or self._A[0] != layer:
            gen = torch.Generator().manual_seed(self._seed * 100_003 + layer + 1)
            self._A = (layer, torch.randn(self.n_virtual * self.D2, self.d, generator=gen) * self._scales[layer])
        return self._A[1]

    def layer_prompt(self, layer: int, Z: torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., n, 2D]: A_l z + p_{0,l}."""
        p0 = self._p0[:, layer * self.D2:(layer + 1) * self.D2]
        return (Z.float() @ self.A(layer).T).view(*Z.shape[:-1], self.n_virtual, self.D2) + p0

    def _write(self, layer: int) -> None:
        z = self.z[layer].detach().cpu().float()
        self._P[:, layer * self.D2:(layer + 1) * self.D2] = self.layer_prompt(layer, z)
        self._z_seen[layer] = z

    def prefixes(self) -> torch.Tensor:
        """[n, 2LD], re-materialised for every layer whose z changed (a load, a resume)."""
        changed = (self.z.detach().cpu().float() != self._z_seen).any(1)
        for layer in torch.nonzero(changed).flatten().tolist():
            self._write(layer)
        return self._P

    @property
    def population_size(self) -> int:
        return 1 if self.population is None else self.population.shape[0]

    def embeds(self, batch_size: int):
        return None

    def past_key_values(self, batch_size: int):
        B, n = batch_size, self.n_virtual
        P = self.prefixes().to(self.dtype).view(n, 2 * self.L, self.H_kv, self.dh).permute(1, 2, 0, 3)   # [2L, H_kv, n, dh]
        kv = [[P[2 * i].unsqueeze(0).expand(B, -1, -1, -1), P[2 * i + 1].unsqueeze(0).expand(B, -1, -1, -1)]
              for i in range(self.L)]                                            # [B, H_kv, n, dh] each
        if self.population is not None:
            rc = self.row_candidates
            if rc is None:
                rc = torch.arange(self.population_size).repeat_interleave(B // self.population_size)
            rows = self.population[rc].to(self.dtype).view(B, n, 2, self.H_kv, self.dh)         # [B, n, 2, H_kv, dh]
            rows = rows.permute(2, 0, 3, 1, 4)                                                   # [2, B, H_kv, n, dh]
            kv[self.population_layer] = [rows[0], rows[1]]
        return [tuple(x) for x in kv]

    # the CMA-ES stepper's view: L blocks, z_l
    def get(self, block: int) -> np.ndarray:
        return self.z[block].detach().double().numpy().copy()

    def set(self, block: int, x) -> None:
        with torch.no_grad():
            self.z[block] = torch.as_tensor(np.asarray(x), dtype=self.z.dtype)
        self._write(block)

    def set_population(self, block: int, X) -> None:
        if X is None:
            self.population = self.population_layer = None
            return
        self.population = self.layer_prompt(block, torch.as_tensor(X, dtype=torch.float32))
        self.population_layer = block

    def forwards_for(self, rows: int) -> int:
        return math.ceil(rows / self.max_rows)


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel
    from adaptlab.tuning.prompt_tuning import VOCAB_TOP

    _bbt.check_decoder(backbone, "bbtv2")
    t = TunedModel.wrap(backbone, "bbtv2", config, task)
    L, H_kv, dh = _prefix.kv_geometry(t.model.config)
    n = config.num_virtual_tokens
    if config.d > n * 2 * H_kv * dh:
        raise ConfigError(f"bbtv2: d={config.d} is larger than a layer's prompt, n x 2D = {n} x {2 * H_kv * dh} = "
                          f"{n * 2 * H_kv * dh}")
    V = t.model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(config.projection_seed)
    ids = torch.randint(0, min(VOCAB_TOP, V), (n,), generator=gen)
    real = _prefix.activation_prefixes(t.model, ids.to(next(t.model.parameters()).device)).cpu()   # [n, 2LD]
    D2 = 2 * H_kv * dh
    scales = [float(real[:, i * D2:(i + 1) * D2].std()) / (math.sqrt(config.d) * config.sigma) for i in range(L)]
    p0 = real if config.init == "vocab" else torch.zeros_like(real)
    dtype = next(t.model.parameters()).dtype
    t.add_prompt(MODULE, DeepPrompt(p0, scales, (L, H_kv, dh), config.d, config.projection_seed, config.max_rows,
                                    config.gens_per_layer, dtype))
    return t


def train_config(cfg, tcfg, n_train: int):
    return _bbt.train_config(cfg, tcfg, n_train)


def objective(tuned, backbone, task, tcfg):
    return _bbt.objective(tuned, backbone, task, tcfg)


def stepper(cfg, tcfg, lr):
    return _bbt.stepper(cfg, tcfg, lr)


def saved_state(tuned) -> dict:
    p = tuned.prompt
    return {f"{MODULE}.prompt_embeddings": p.prefixes().clone(), f"{MODULE}.z": p.z.detach()}


def saved_meta(tuned) -> dict:
    c = tuned.method_config
    return {"d": c.d, "layers": tuned.prompt.L, "projection": "normal (per-layer hidden-state std)",
            "projection_seed": c.projection_seed, "init": c.init, "z": "bbtv2_z in adapter_model.safetensors"}


def to_file_keys(state: dict) -> dict:
    return {"prompt_embeddings": state[f"{MODULE}.prompt_embeddings"], "bbtv2_z": state[f"{MODULE}.z"]}


def from_file_keys(state: dict) -> dict:
    return {f"{MODULE}.z": state["bbtv2_z"]} if "bbtv2_z" in state else {}


def to_peft_config(cfg: Config, tuned) -> dict:
    pcfg = dataclasses.replace(_prefix.Config(), num_virtual_tokens=cfg.num_virtual_tokens, prefix_projection=False)
    return {**_prefix.to_peft_config(pcfg, tuned), "peft_type": "ADAPTLAB_BBTV2", "d": cfg.d,
            "projection_seed": cfg.projection_seed}


def from_peft_config(d: dict) -> dict:
    return {"num_virtual_tokens": d["num_virtual_tokens"], "d": int(d.get("d", 500)),
            "projection_seed": int(d.get("projection_seed", 0))}
