"""P-tuning: Liu et al. 2021, "GPT Understands, Too".

The prompt's continuous tokens are not free parameters but the output of a small *prompt
encoder* over trainable inputs h_0..h_m, so that they depend on each other (Sec. 3.2):

    h_i = MLP( [ LSTM(h_0:i) ; LSTM(h_i:m) ] )      (bidirectional LSTM, then a 2-layer ReLU MLP)

or, as peft's default and the authors' later code, an MLP alone: h_i = MLP(e_i). The template
T = {[P_0:i], x, [P_i+1:m], y} of the paper interleaves prompt tokens with the input; here, as
in peft, all m virtual tokens are placed before the input (the seam's ``embeds`` hook), which is
the template [P_0:m] x -> y. Only the encoder and its inputs are trained; the LM is frozen.

After training the encoder is no longer needed: the adapter file holds its outputs
(``prompt_embeddings`` [m, e]) and peft's P_TUNING config fields, as peft saves it, and a loaded
adapter (``inference_mode=True``, peft's flag) is just those embeddings. Parameter names follow
peft (``embedding``, ``mlp_head``, ``lstm_head``) under ``p_tuning_encoder``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from adaptlab.config import check
from adaptlab.tuning.prompt_tuning import FILE_KEY, check_peft_fields, lm_fields

MODULE = "p_tuning_encoder"        # the registered prefix is "p_tuning_"


@dataclass
class Config:
    num_virtual_tokens: int = 20                           # m
    encoder_reparameterization_type: Literal["MLP", "LSTM"] = "MLP"
    encoder_hidden_size: int = 0                           # 0: the model's embedding width (peft's default)
    encoder_num_layers: int = 2                            # LSTM layers
    encoder_dropout: float = 0.0                           # LSTM dropout
    inference_mode: bool = False                           # True: only the encoder's outputs (a saved adapter)

    def __post_init__(self):
        check(1 <= self.num_virtual_tokens <= 1024, f"num_virtual_tokens={self.num_virtual_tokens}: must be in [1, 1024]")
        check(0 <= self.encoder_hidden_size <= 65536, f"encoder_hidden_size={self.encoder_hidden_size}: must be in [0, 65536]")
        check(1 <= self.encoder_num_layers <= 8, f"encoder_num_layers={self.encoder_num_layers}: must be in [1, 8]")
        check(0.0 <= self.encoder_dropout < 1.0, f"encoder_dropout={self.encoder_dropout}: must be in [0, 1)")


class PromptEncoder(nn.Module):
    """embedding [m, e] -> (LSTM ->) MLP -> soft tokens [m, e]; in inference mode ``embedding``
    holds the soft tokens themselves."""

    def __init__(self, m: int, e: int, cfg: Config, device=None):
        super().__init__()
        self.n_virtual = m
        self.kind = cfg.encoder_reparameterization_type
        self.inference = cfg.inference_mode
        hidden = cfg.encoder_hidden_size or e
        self.embedding = nn.Embedding(m, e, device=device)
        if self.inference:
            return
        if self.kind == "LSTM":
            self.lstm_head = nn.LSTM(input_size=e, hidden_size=hidden, num_layers=cfg.encoder_num_layers,
                                     dropout=cfg.encoder_dropout if cfg.encoder_num_layers > 1 else 0.0,
                                     bidirectional=True, batch_first=True, device=device)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden, device=device), nn.ReLU(),
                                          nn.Linear(2 * hidden, e, device=device))
        else:
            self.mlp_head = nn.Sequential(nn.Linear(e, hidden, device=device), nn.ReLU(),
                                          nn.Linear(hidden, hidden, device=device), nn.ReLU(),
                                          nn.Linear(hidden, e, device=device))

    def tokens(self) -> torch.Tensor:
        """The soft tokens h_0..h_m: [m, e]."""
        x = self.embedding.weight                                            # [m, e]
        if self.inference:
            return x
        if self.kind == "LSTM":
            x = self.lstm_head(x.unsqueeze(0))[0].squeeze(0)                 # [1, m, e] -> [m, 2*hidden]
        return self.mlp_head(x)                                              # [m, e]

    def embeds(self, batch_size: int) -> torch.Tensor:
        return self.tokens().unsqueeze(0).expand(batch_size, -1, -1)         # [B, m, e]

    def past_key_values(self, batch_size: int):
        return None


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel

    t = TunedModel.wrap(backbone, "p-tuning", config, task)
    emb = t.model.get_input_embeddings()
    t.add_prompt(MODULE, PromptEncoder(config.num_virtual_tokens, emb.weight.shape[1], config,
                                       device=emb.weight.device))
    return t


def saved_config(cfg: Config) -> Config:
    return dataclasses.replace(cfg, inference_mode=True)


def saved_state(tuned) -> dict[str, torch.Tensor]:
    enc = getattr(tuned, MODULE)
    state = {k: v for k, v in tuned.adapter_state().items() if not k.startswith(MODULE + ".")}
    with torch.no_grad():
        state[f"{MODULE}.embedding.weight"] = enc.tokens().detach()
    return state


def to_file_keys(state: dict) -> dict:
    from adaptlab.tuning.io import one_tensor_file_keys

    return one_tensor_file_keys(state, f"{MODULE}.embedding.weight", FILE_KEY)


def from_file_keys(state: dict) -> dict:
    from adaptlab.tuning.io import one_tensor_from_file_keys

    return one_tensor_from_file_keys(state, f"{MODULE}.embedding.weight", FILE_KEY)


def to_peft_config(cfg: Config, tuned) -> dict:
    return {"peft_type": "P_TUNING", **lm_fields(cfg, tuned),
            "encoder_reparameterization_type": cfg.encoder_reparameterization_type,
            "encoder_hidden_size": cfg.encoder_hidden_size or tuned.model.config.hidden_size,
            "encoder_num_layers": cfg.encoder_num_layers, "encoder_dropout": cfg.encoder_dropout}


def from_peft_config(d: dict) -> dict:
    check_peft_fields(d, "p-tuning")
    kind = str(d.get("encoder_reparameterization_type", "MLP")).upper()
    return {"num_virtual_tokens": d["num_virtual_tokens"], "inference_mode": True,
            "encoder_reparameterization_type": kind if kind in ("MLP", "LSTM") else "MLP",
            "encoder_hidden_size": int(d.get("encoder_hidden_size") or 0),
            "encoder_num_layers": int(d.get("encoder_num_layers") or 2),
            "encoder_dropout": float(d.get("encoder_dropout") or 0.0)}
