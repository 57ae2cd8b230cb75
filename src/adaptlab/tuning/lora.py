"""LoRA: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models".

A frozen weight W0 in R^{d x k} gets a trainable low-rank update:

    h = W0 x + (alpha / r) * B A x,        A in R^{r x k} (Kaiming-uniform), B in R^{d x r} (zeros)

so training starts from the pretrained function (B A = 0). Only A and B are trained; merging
sets W = W0 + (alpha / r) B A, after which inference costs nothing extra, and unmerging
restores W0. Defaults follow the paper's GPT-3 setting: W_q and W_v adapted, r = 8.

Parameter names are peft's (``q_proj.base_layer``, ``q_proj.lora_A``, ``q_proj.lora_B``), so
the saved keys are peft's (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``)
and peft and vLLM load our adapters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from adaptlab.config import check
from adaptlab.errors import ConfigError
from adaptlab.families import default_targets



@dataclass
class Config:
    r: int = 8                                   # rank of B A
    alpha: float = 16.0                          # scaling alpha / r
    dropout: float = 0.0                         # dropout on x before A
    target_modules: list[str] = field(default_factory=list)   # empty: query/value of the model type
    rslora: bool = False                         # scale alpha / sqrt(r) (Kalajdzievski 2023)

    def __post_init__(self):
        check(1 <= self.r <= 4096, f"r={self.r}: must be between 1 and 4096")
        check(self.alpha > 0, f"alpha={self.alpha}: must be positive")
        check(0.0 <= self.dropout < 1.0, f"dropout={self.dropout}: must be in [0, 1)")
        check(all(isinstance(t, str) and t for t in self.target_modules), "target_modules: names must be non-empty")


class LoRALinear(nn.Module):
    """``base_layer(x) + scaling * lora_B(lora_A(lora_dropout(x)))``; the base layer is frozen."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float, rslora: bool = False):
        super().__init__()
        self.base_layer = base_layer
        self.r = r
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        dev, dt = base_layer.weight.device, base_layer.weight.dtype
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False, device=dev, dtype=dt)    # A: [r, k]
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False, device=dev, dtype=dt)   # B: [d, r]
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.merged = False
        self.adapter_enabled = True                  # False: the base layer alone (TunedModel.disable_adapters)
        self._w0: nn.Parameter | None = None

    @property
    def weight(self):              # some model code reads proj.weight (dtype/device checks)
        return self.base_layer.weight

    def delta(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling     # [d, r] @ [r, k] -> [d, k]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged or not self.adapter_enabled:
            return y
        return y + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def merge(self) -> None:
        if self.merged:
            return
        w0 = self.base_layer.weight
        self._w0 = w0
        # a new tensor: W0's storage is shared with the user's model and must not change
        self.base_layer.weight = nn.Parameter(w0.detach() + self.delta().detach().to(w0.dtype), requires_grad=False)
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            return
        self.base_layer.weight = self._w0
        self._w0 = None
        self.merged = False


def targets_for(model_type: str, cfg: Config) -> list[str]:
    """The given ``target_modules``, else the family's defaults (``families.FAMILIES``)."""
    if cfg.target_modules:
        return list(cfg.target_modules)
    return list(default_targets(model_type, "lora", "lora"))


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel, find_targets, replace_module

    t = TunedModel.wrap(backbone, "lora", config, task)
    targets = targets_for(t.model.config.model_type, config)
    names = find_targets(t.model, targets)
    if not names:
        raise ConfigError(f"lora: target_modules {','.join(targets)} match no linear layer of this model")
    for name in names:
        base = t.model.get_submodule(name)
        replace_module(t.model, name, LoRALinear(base, config.r, config.alpha, config.dropout, config.rslora))
    return t


def _layers(tuned) -> list[LoRALinear]:
    return [m for m in tuned.modules() if isinstance(m, LoRALinear)]


def merge(tuned) -> None:
    for m in _layers(tuned):
        m.merge()


def unmerge(tuned) -> None:
    for m in _layers(tuned):
        m.unmerge()


def to_peft_config(cfg: Config, tuned) -> dict:
    targets = sorted({n.rsplit(".", 1)[-1] for n, m in tuned.model.named_modules() if isinstance(m, LoRALinear)})
    return {"peft_type": "LORA", "r": cfg.r, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
            "target_modules": targets, "use_rslora": cfg.rslora, "bias": "none", "fan_in_fan_out": False,
            "init_lora_weights": True, "use_dora": False, "modules_to_save": None,
            "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}}


def from_peft_config(d: dict) -> dict:
    """adapter_config.json -> Config values; refuses what this implementation does not do."""
    for key, ok in (("use_dora", False), ("bias", "none"), ("fan_in_fan_out", False)):
        if d.get(key, ok) not in (ok, None):
            raise ConfigError(f"lora: {key}={d.get(key)!r} is not supported")
    for key in ("rank_pattern", "alpha_pattern"):
        if d.get(key):
            raise ConfigError(f"lora: {key} is not supported")
    if d.get("layers_to_transform") is not None:
        raise ConfigError("lora: layers_to_transform is not supported")
    tm = d.get("target_modules")
    if isinstance(tm, str):
        raise ConfigError(f"lora: target_modules as a regex ({tm!r}) is not supported; give a list")
    return {"r": d.get("r", 8), "alpha": d.get("lora_alpha", 8), "dropout": d.get("lora_dropout", 0.0),
            "target_modules": list(tm or []), "rslora": bool(d.get("use_rslora", False))}
