"""Bottleneck adapters: Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP";
Pfeiffer et al. 2021, "AdapterFusion: Non-Destructive Task Composition for Transfer Learning".

A small bottleneck module is inserted after a sublayer's output projection, before the residual
connection adds the sublayer's input back:

    h <- h + W_up f(W_down h),        W_down in R^{m x d}, W_up in R^{d x m},  m << d

with f a nonlinearity. Houlsby et al. place one adapter after the multi-head attention's output
projection and one after the feed-forward's (``placement=houlsby``, 2 per layer); Pfeiffer et
al. found one after the feed-forward nearly as good at half the cost (``placement=ffn``).
Both projections start near zero (normal, std ``init_std``; biases zero), so the adapter starts
as a near-identity and training starts from the pretrained function. Only the adapters are
trained (Houlsby et al. also train the layer norms; like AdapterHub's configs we do not).

Parameter names ``adapter_down`` / ``adapter_up`` beside the wrapped ``base_layer`` (as
``lora.LoRALinear``), so saved keys read
``base_model.model.model.layers.0.self_attn.o_proj.adapter_down.weight``; the file uses peft's
layout with our own ``peft_type: "ADAPTLAB_BOTTLENECK"``. The adapter is nonlinear: no merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from adaptlab.config import check
from adaptlab.errors import ConfigError
from adaptlab.families import FAMILIES, family

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "swish": nn.SiLU}


@dataclass
class Config:
    m: int = 64                                           # bottleneck size
    placement: Literal["houlsby", "ffn"] = "houlsby"      # ffn = Pfeiffer (after the feed-forward only)
    non_linearity: Literal["relu", "gelu", "tanh", "swish"] = "relu"
    init_std: float = 1e-2                                # near-identity initialization
    dropout: float = 0.0                                  # dropout inside the bottleneck

    def __post_init__(self):
        check(1 <= self.m <= 65536, f"m={self.m}: must be in [1, 65536]")
        check(0.0 < self.init_std <= 1.0, f"init_std={self.init_std}: must be in (0, 1]")
        check(0.0 <= self.dropout < 1.0, f"dropout={self.dropout}: must be in [0, 1)")


class AdapterLinear(nn.Module):
    """``y = base_layer(x); y + adapter_up(f(adapter_down(y)))``: a sublayer output projection
    followed by its bottleneck adapter (the residual add of the block comes after)."""

    def __init__(self, base_layer: nn.Module, d: int, cfg: Config):
        super().__init__()
        self.base_layer = base_layer
        w = base_layer.weight
        self.adapter_down = nn.Linear(d, cfg.m, device=w.device, dtype=w.dtype)     # W_down: [m, d]
        self.adapter_up = nn.Linear(cfg.m, d, device=w.device, dtype=w.dtype)       # W_up: [d, m]
        self.adapter_act = ACTIVATIONS[cfg.non_linearity]()
        self.adapter_dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        for lin in (self.adapter_down, self.adapter_up):
            nn.init.normal_(lin.weight, std=cfg.init_std)
            nn.init.zeros_(lin.bias)
        self.adapter_enabled = True                  # False: the base layer alone (disable_adapters)

    @property
    def weight(self):
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)                                               # [.., d]
        if not self.adapter_enabled:
            return h
        return h + self.adapter_up(self.adapter_dropout(self.adapter_act(self.adapter_down(h))))


def sublayer_names(model: nn.Module, placement: str) -> list[str]:
    mt = model.config.model_type
    fam = family(mt)
    if fam is None or fam.sublayers is None:
        known = ", ".join(k for k, f in FAMILIES.items() if f.sublayers)
        raise ConfigError(f"adapter: no sublayer names for model type {mt!r} (known: {known}); add the family "
                          "to adaptlab/families.py")
    attn, ffn = fam.sublayers
    out = []
    for name, mod in model.named_modules():
        if not hasattr(mod, "weight") or isinstance(mod, (nn.Embedding, nn.LayerNorm)):
            continue
        is_attn = name.endswith("." + attn)
        is_ffn = name.endswith("." + ffn) and not is_attn            # BERT: output.dense vs attention.output.dense
        if is_ffn or (is_attn and placement == "houlsby"):
            out.append(name)
    return out


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel, replace_module

    t = TunedModel.wrap(backbone, "adapter", config, task)
    names = sublayer_names(t.model, config.placement)
    if not names:
        raise ConfigError("adapter: found no attention / feed-forward output projection in this model")
    d = t.model.config.hidden_size
    for name in names:
        replace_module(t.model, name, AdapterLinear(t.model.get_submodule(name), d, config))
    return t


def to_peft_config(cfg: Config, tuned) -> dict:
    names = sorted({n for n, mod in tuned.model.named_modules() if isinstance(mod, AdapterLinear)})
    return {"peft_type": "ADAPTLAB_BOTTLENECK", "m": cfg.m, "placement": cfg.placement,
            "non_linearity": cfg.non_linearity, "init_std": cfg.init_std, "dropout": cfg.dropout,
            "target_modules": names, "modules_to_save": None}


def from_peft_config(d: dict) -> dict:
    return {k: d[k] for k in ("m", "placement", "non_linearity", "init_std", "dropout") if k in d}
