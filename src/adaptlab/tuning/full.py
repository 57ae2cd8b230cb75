"""Full fine-tuning: every weight of the pretrained model is trained.

Howard & Ruder 2018, "Universal Language Model Fine-tuning for Text Classification" (ULMFiT);
Sun et al. 2019, "How to Fine-Tune BERT for Text Classification". Starting from the pretrained
weights theta_0, minimise the task loss over all of theta:

    theta* = argmin_theta  sum_(x,y) L(f_theta(x), y),      theta initialised to theta_0

with a small learning rate (Sun et al.: 2e-5 for BERT) and warmup then linear decay (both are
the training loop's ``TrainConfig``). Classification on an encoder adds the shared linear head.

``apply`` works on a real copy of the backbone's weights (the only method that does): the
user's model is never changed. The "adapter" is the whole trained model:
``adapter_model.safetensors`` holds every parameter under peft-style keys
(``base_model.model.model.layers.0...weight``), with ``peft_type: "ADAPTLAB_FULL"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from adaptlab.config import check


@dataclass
class Config:
    head_dropout: float = 0.1          # dropout before the classification head (encoders)

    def __post_init__(self):
        check(0.0 <= self.head_dropout < 1.0, f"head_dropout={self.head_dropout}: must be in [0, 1)")

    @property
    def head(self):
        from adaptlab.tuning import HeadConfig

        return HeadConfig(head_dropout=self.head_dropout)


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel

    return TunedModel.wrap(backbone, "full", config, task, share_weights=False)


def to_peft_config(cfg: Config, tuned) -> dict:
    return {"peft_type": "ADAPTLAB_FULL", "head_dropout": cfg.head_dropout}


def from_peft_config(d: dict) -> dict:
    return {"head_dropout": d.get("head_dropout", 0.1)}
