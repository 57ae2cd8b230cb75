"""IA3: Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning" ((IA)^3: Infused Adapter by Inhibiting and Amplifying Inner Activations).

Three learned vectors per layer rescale the keys, the values and the feed-forward activations:

    softmax( Q (l_k ⊙ K)^T / sqrt(d_k) ) (l_v ⊙ V)           attention
    (l_ff ⊙ γ(W_1 x)) W_2                                     feed-forward

l_k, l_v, l_ff start at ones (the pretrained function) and are the only trained parameters.
As in peft, l_k and l_v scale the *outputs* of the key / value projections (``ia3_l`` of shape
[out, 1]), and l_ff scales the *input* of the FFN's second projection (``down_proj`` /
BERT's ``output.dense``; ``ia3_l`` of shape [1, in]), i.e. γ(W_1 x) after the nonlinearity.
Merging folds the vectors into the weights: rows of W_k, W_v (and their biases) or columns of
W_2. Names and saved keys are peft's (``...self_attn.k_proj.ia3_l``), so peft loads our files.
peft's BERT defaults match ``output.dense`` as a suffix, so BERT's attention output projection
is rescaled too; we keep those defaults for compatibility.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from adaptlab.config import check
from adaptlab.errors import ConfigError
from adaptlab.families import default_targets



@dataclass
class Config:
    target_modules: list[str] = field(default_factory=list)        # empty: k, v and FFN of the model type
    feedforward_modules: list[str] = field(default_factory=list)   # subset of targets scaled on the input

    def __post_init__(self):
        check(all(isinstance(t, str) and t for t in self.target_modules), "target_modules: names must be non-empty")
        check(not self.feedforward_modules or not self.target_modules
              or set(self.feedforward_modules) <= set(self.target_modules),
              "feedforward_modules must be a subset of target_modules")


class IA3Linear(nn.Module):
    """``base_layer(x) * l`` (attention: l = l_k or l_v) or ``base_layer(x * l)`` (l = l_ff)."""

    def __init__(self, base_layer: nn.Linear, is_feedforward: bool):
        super().__init__()
        self.base_layer = base_layer
        self.is_feedforward = is_feedforward
        w = base_layer.weight
        shape = (1, base_layer.in_features) if is_feedforward else (base_layer.out_features, 1)
        self.ia3_l = nn.Parameter(torch.ones(shape, device=w.device, dtype=w.dtype))
        self.merged = False
        self.adapter_enabled = True                     # False: the base layer alone (disable_adapters)
        self._orig: tuple | None = None

    @property
    def weight(self):
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged or not self.adapter_enabled:
            return self.base_layer(x)
        l = self.ia3_l.flatten()
        if self.is_feedforward:
            return self.base_layer(x * l)               # [.., in] * [in]
        return self.base_layer(x) * l                   # [.., out] * [out]

    def merge(self) -> None:
        if self.merged:
            return
        b = self.base_layer
        self._orig = (b.weight, b.bias)
        l = self.ia3_l.detach()
        # new tensors: the base storage is shared with the user's model
        b.weight = nn.Parameter(b.weight.detach() * l, requires_grad=False)   # [out,in]*[1,in] or *[out,1]
        if b.bias is not None and not self.is_feedforward:
            b.bias = nn.Parameter(b.bias.detach() * l.flatten(), requires_grad=False)
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            return
        self.base_layer.weight, bias = self._orig
        if bias is not None:
            self.base_layer.bias = bias
        self._orig = None
        self.merged = False


def targets_for(model_type: str, cfg: Config) -> tuple[list[str], list[str]]:
    if cfg.target_modules:
        return list(cfg.target_modules), list(cfg.feedforward_modules)
    t = default_targets(model_type, "ia3", "ia3")               # the family's defaults (families.py)
    ff = cfg.feedforward_modules or default_targets(model_type, "ia3_ff", "ia3")
    return list(t), list(ff)


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel, find_targets, replace_module

    t = TunedModel.wrap(backbone, "ia3", config, task)
    targets, ff = targets_for(t.model.config.model_type, config)
    names = find_targets(t.model, targets)
    if not names:
        raise ConfigError(f"ia3: target_modules {','.join(targets)} match no linear layer of this model")
    for name in names:
        is_ff = any(name.endswith(f) for f in ff)         # peft's rule: a suffix match
        replace_module(t.model, name, IA3Linear(t.model.get_submodule(name), is_ff))
    return t


def _layers(tuned) -> list[IA3Linear]:
    return [m for m in tuned.modules() if isinstance(m, IA3Linear)]


def merge(tuned) -> None:
    for m in _layers(tuned):
        m.merge()


def unmerge(tuned) -> None:
    for m in _layers(tuned):
        m.unmerge()


def to_peft_config(cfg: Config, tuned) -> dict:
    targets, ff = targets_for(tuned.model.config.model_type, cfg)
    return {"peft_type": "IA3", "target_modules": targets, "feedforward_modules": ff,
            "fan_in_fan_out": False, "init_ia3_weights": True, "modules_to_save": None}


def from_peft_config(d: dict) -> dict:
    if d.get("fan_in_fan_out"):
        raise ConfigError("ia3: fan_in_fan_out is not supported")
    tm, ff = d.get("target_modules"), d.get("feedforward_modules")
    if isinstance(tm, str) or isinstance(ff, str):
        raise ConfigError("ia3: target_modules / feedforward_modules as a regex are not supported; give lists")
    return {"target_modules": list(tm or []), "feedforward_modules": list(ff or [])}
