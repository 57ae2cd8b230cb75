"""Prefix tuning: Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation".

A prefix of |P_idx| virtual positions is placed before the input at *every* layer: their
activations are free parameters P_theta instead of being computed by the frozen LM,

    h_i = P_theta[i, :]                     if i in P_idx
    h_i = LM_phi(z_i, h_<i)                 otherwise

and with attention the only thing a layer reads from a past position is its key and value, so
P_theta holds one key and one value vector per layer, head and virtual position (peft's and
P-tuning v2's reading of the paper). Optimizing P_theta directly is unstable, so during training
it is reparameterized by a smaller matrix P'_theta and an MLP (Sec. 4.3):

    P_theta[i, :] = MLP_theta(P'_theta[i, :])      MLP = Linear(D, k) -> tanh -> Linear(k, 2 L D)

after which "only P_theta needs to be saved": the adapter file holds the resulting prefixes
(``prompt_embeddings`` [n, 2 L D]), exactly as peft saves PREFIX_TUNING, and a loaded adapter
has no MLP (``prefix_projection=False``). D = H_kv * d_head (grouped-query attention: the key /
value heads, as peft provisions them), L = layers, n = num_virtual_tokens.

The prefixes reach the model through the seam's ``past_key_values(batch_size)`` hook
(``TunedModel`` seeds the KV cache with them and masks them in), so training, scoring and cached
generation all see them. P-tuning v2 (``p_tuning_v2.py``) reuses ``PrefixEncoder``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from adaptlab.config import check
from adaptlab.errors import ConfigError
from adaptlab.models import cache_arg

MODULE = "prefix_encoder"          # the registered prefix is "prefix_"
FILE_KEY = "prompt_embeddings"     # peft's key for every prompt-learning method


@dataclass
class Config:
    num_virtual_tokens: int = 20            # |P_idx|
    prefix_projection: bool = True          # train P' through the MLP (the paper); saved adapters: False
    encoder_hidden_size: int = 512          # k, the MLP's hidden width
    prefix_dropout: float = 0.0             # dropout on the prefixes while training

    def __post_init__(self):
        check(1 <= self.num_virtual_tokens <= 1024, f"num_virtual_tokens={self.num_virtual_tokens}: must be in [1, 1024]")
        check(1 <= self.encoder_hidden_size <= 65536, f"encoder_hidden_size={self.encoder_hidden_size}: must be in [1, 65536]")
        check(0.0 <= self.prefix_dropout < 1.0, f"prefix_dropout={self.prefix_dropout}: must be in [0, 1)")


def kv_geometry(model_config) -> tuple[int, int, int]:
    """(L layers, H_kv key/value heads, d_head) of a Hugging Face config."""
    L = model_config.num_hidden_layers
    heads = model_config.num_attention_heads
    H_kv = getattr(model_config, "num_key_value_heads", None) or heads
    d = getattr(model_config, "head_dim", None) or model_config.hidden_size // heads
    return L, H_kv, d


class PrefixEncoder(nn.Module):
    """P_theta (``embedding`` [n, 2 L D]) or P'_theta (``embedding`` [n, D]) + ``transform`` (the MLP).
    Names are peft's (``embedding``, ``transform.0``, ``transform.2``)."""

    def __init__(self, n: int, L: int, H_kv: int, d: int, projection: bool, hidden: int, dropout: float,
                 dtype: torch.dtype, device=None, keep_positions: bool = False):
        super().__init__()
        self.n_virtual = n
        self.keep_positions = keep_positions     # encoder: real tokens at 0..L-1 (the seam reads it)
        self.L, self.H_kv, self.d = L, H_kv, d
        D = H_kv * d
        self.projection = projection
        self.dtype = dtype
        if projection:
            self.embedding = nn.Embedding(n, D, device=device)                                   # P'
            self.transform = nn.Sequential(nn.Linear(D, hidden, device=device), nn.Tanh(),
                                           nn.Linear(hidden, 2 * L * D, device=device))          # MLP
        else:
            self.embedding = nn.Embedding(n, 2 * L * D, device=device)                           # P
        self.dropout = nn.Dropout(dropout)

    def prefixes(self) -> torch.Tensor:
        """P_theta: [n, 2 L D] (the tensor peft saves as ``prompt_embeddings``)."""
        w = self.embedding.weight
        return self.transform(w) if self.projection else w

    def embeds(self, batch_size: int):
        return None

    def past_key_values(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        P = self.dropout(self.prefixes()).to(self.dtype)                     # [n, 2L*H_kv*d]
        P = P.view(self.n_virtual, 2 * self.L, self.H_kv, self.d)           # [n, 2L, H_kv, d]
        P = P.permute(1, 2, 0, 3)                                            # [2L, H_kv, n, d]: k0, v0, k1, v1, ...
        B = batch_size
        return [(P[2 * i].unsqueeze(0).expand(B, -1, -1, -1),              # [B, H_kv, n, d]
                 P[2 * i + 1].unsqueeze(0).expand(B, -1, -1, -1)) for i in range(self.L)]


@torch.no_grad()
def activation_prefixes(model, ids: torch.Tensor) -> torch.Tensor:
    """P_theta [n, 2 L D] from the frozen model's own keys and values of the n tokens ``ids``
    (Li & Liang Sec. 7.2: prefixes initialized "with activations of real words")."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    was_training = model.training
    model.eval()
    model(input_ids=ids.unsqueeze(0), **{cache_arg(model): cache}, use_cache=True)   # fills the cache, layer by layer
    model.train(was_training)
    kv = [t for layer in cache.layers for t in (layer.keys, layer.values)]    # 2L x [1, H_kv, n, d]: k0, v0, k1, ...
    P = torch.cat(kv, 0).permute(2, 0, 1, 3)                                   # [n, 2L, H_kv, d]
    return P.reshape(P.shape[0], -1).float()                                   # [n, 2L*H_kv*d]


def make_encoder(model, cfg, keep_positions: bool = False) -> PrefixEncoder:
    L, H_kv, d = kv_geometry(model.config)
    p = next(model.parameters())
    return PrefixEncoder(cfg.num_virtual_tokens, L, H_kv, d, cfg.prefix_projection, cfg.encoder_hidden_size,
                         cfg.prefix_dropout, dtype=p.dtype, device=p.device, keep_positions=keep_positions)


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel

    t = TunedModel.wrap(backbone, "prefix", config, task)
    t.add_prompt(MODULE, make_encoder(t.model, config))
    return t


# --------------------------------------------------------------------------- saved form (peft's)


def folded_state(tuned, module: str) -> dict[str, torch.Tensor]:
    """The trainable state with the encoder replaced by the prefixes it produces."""
    enc = getattr(tuned, module)
    state = {k: v for k, v in tuned.adapter_state().items() if not k.startswith(module + ".")}
    with torch.no_grad():
        state[f"{module}.embedding.weight"] = enc.prefixes().detach()
    return state


def saved_config(cfg: Config) -> Config:
    return dataclasses.replace(cfg, prefix_projection=False)


def saved_state(tuned) -> dict[str, torch.Tensor]:
    return folded_state(tuned, MODULE)


def file_keys(state: dict, module: str) -> dict:
    from adaptlab.tuning.io import one_tensor_file_keys

    return one_tensor_file_keys(state, f"{module}.embedding.weight", FILE_KEY)


def from_file_keys_for(state: dict, module: str) -> dict:
    from adaptlab.tuning.io import one_tensor_from_file_keys

    return one_tensor_from_file_keys(state, f"{module}.embedding.weight", FILE_KEY)


def to_file_keys(state: dict) -> dict:
    return file_keys(state, MODULE)


def from_file_keys(state: dict) -> dict:
    return from_file_keys_for(state, MODULE)


def peft_fields(cfg, tuned) -> dict:
    L, H_kv, d = kv_geometry(tuned.model.config)
    return {"num_virtual_tokens": cfg.num_virtual_tokens, "token_dim": H_kv * d, "num_transformer_submodules": 1,
            "num_attention_heads": H_kv, "num_layers": L, "encoder_hidden_size": cfg.encoder_hidden_size,
            "prefix_projection": cfg.prefix_projection, "init_weights": None, "modules_to_save": None}


def to_peft_config(cfg: Config, tuned) -> dict:
    return {"peft_type": "PREFIX_TUNING", **peft_fields(cfg, tuned)}


def values_from_peft(d: dict, method: str) -> dict:
    if d.get("num_transformer_submodules") not in (None, 1):
        raise ConfigError(f"{method}: num_transformer_submodules={d.get('num_transformer_submodules')} "
                          "(encoder-decoder models) is not supported")
    if not isinstance(d.get("num_virtual_tokens"), int):
        raise ConfigError(f"{method}: adapter_config.json needs an integer num_virtual_tokens")
    # a saved prefix adapter holds P_theta itself, whatever the encoder was during training
    return {"num_virtual_tokens": d["num_virtual_tokens"], "prefix_projection": False,
            "encoder_hidden_size": int(d.get("encoder_hidden_size") or 512)}


def from_peft_config(d: dict) -> dict:
    return values_from_peft(d, "prefix")
