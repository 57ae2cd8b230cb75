"""Head: a frozen pretrained body plus a new linear classifier.

Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training" (GPT-1):
the final transformer activation h_l^m of the last ("extract") token feeds a linear layer,

    P(y | x^1..x^m) = softmax(h_l^m W_y)

and Devlin et al. 2019 (BERT) do the same on the [CLS] token. Here only W_y (and its bias) is
trained; the body is frozen (the "feature-based" baseline of both papers). For pair tasks the
task's template joins the two texts with its own delimiter text, as GPT-1 does.

Pooling: ``last`` non-pad token for a decoder (GPT-1), ``mean`` for an encoder by default
(all-MiniLM-L6-v2, the default encoder, was trained with mean pooling; ``cls`` is available).
The head is saved as ``head_classifier.linear.{weight,bias}`` with ``peft_type: "ADAPTLAB_HEAD"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adaptlab.config import check


@dataclass
class Config:
    pooling: Literal["auto", "cls", "mean", "last"] = "auto"   # auto: encoder mean, decoder last
    head_dropout: float = 0.1

    def __post_init__(self):
        check(0.0 <= self.head_dropout < 1.0, f"head_dropout={self.head_dropout}: must be in [0, 1)")

    @property
    def head(self):
        from adaptlab.tuning import HeadConfig

        return HeadConfig(pooling=self.pooling, head_dropout=self.head_dropout)


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel, make_head

    t = TunedModel.wrap(backbone, "head", config, task)
    make_head(t, task, config.head)
    return t


def to_peft_config(cfg: Config, tuned) -> dict:
    return {"peft_type": "ADAPTLAB_HEAD", "pooling": cfg.pooling, "head_dropout": cfg.head_dropout}


def from_peft_config(d: dict) -> dict:
    return {"pooling": d.get("pooling", "auto"), "head_dropout": d.get("head_dropout", 0.1)}
