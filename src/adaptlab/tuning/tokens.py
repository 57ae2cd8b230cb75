"""New tokens for a tuned model: trainable embedding rows beside any method, in peft's
trainable-tokens layout (peft >= 0.15, ``LoraConfig(trainable_token_indices=...)``).

The vocabulary grows from V to V' (``adaptlab vocab --extend``); only the rows of the token ids
``idx`` (the added tokens) are new parameters, ``Delta in R^{N x H}``; every other row stays the
frozen base embedding E, which is never copied or resized:

    emb(t) = Delta[j]        if t = idx[j]
             E[t]            otherwise
    logits = [h E^T, 0_{V'-V}] with the columns idx set to h Delta^T     (a decoder whose output
                                                                           layer is tied to E)

The rows start as the mean of each new word's old sub-token embeddings (``vocab.py``). The
parameter is ``<embedding>.token_adapter.trainable_tokens_delta``, so the saved key is peft's
(``base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta``); with LoRA,
``adapter_config.json`` gets ``trainable_token_indices`` and peft loads the adapter onto the base
after ``resize_token_embeddings(len(tokenizer))``. The extended tokenizer is saved in the adapter
folder. ``token_adapter`` is always trained and saved when present (``TunedModel.owns``).
"""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.errors import ConfigError

PART = "token_adapter"


class TokenAdapter(nn.Module):
    def __init__(self, idx: list[int], init: torch.Tensor):
        super().__init__()
        self.idx = list(idx)
        self.trainable_tokens_delta = nn.Parameter(init.clone())             # [N, H]
        slot = torch.full((max(idx) + 1,), -1, dtype=torch.long)
        slot[torch.tensor(idx)] = torch.arange(len(idx))
        self.register_buffer("slot", slot, persistent=False)                  # token id -> row of Delta, or -1


class ExtendedEmbedding(nn.Module):
    def __init__(self, base_layer: nn.Embedding, adapter: TokenAdapter):
        super().__init__()
        self.base_layer = base_layer
        self.token_adapter = adapter
        self.num_embeddings = max(base_layer.num_embeddings, len(adapter.slot))
        self.embedding_dim = base_layer.embedding_dim
        self.padding_idx = base_layer.padding_idx

    @property
    def weight(self):                    # model code reads .weight for its dtype and device
        return self.base_layer.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        a = self.token_adapter
        out = self.base_layer(ids.clamp(max=self.base_layer.num_embeddings - 1))      # [B, L, H]
        j = torch.full_like(ids, -1)
        inside = ids < len(a.slot)
        j[inside] = a.slot[ids[inside]]
        hit = (j >= 0).unsqueeze(-1)                                                   # [B, L, 1]
        return torch.where(hit, a.trainable_tokens_delta[j.clamp(min=0)].to(out.dtype), out)


class ExtendedHead(nn.Module):
    """The tied output layer over V' tokens: the new columns are h Delta^T."""

    def __init__(self, base_layer: nn.Linear, adapter: TokenAdapter, vocab: int):
        super().__init__()
        self.base_layer = base_layer
        self.token_adapter = adapter
        self.vocab = vocab

    @property
    def weight(self):
        return self.base_layer.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.base_layer(h)                                                         # [.., V]
        extra = self.vocab - z.shape[-1]
        if extra > 0:
            z = torch.cat([z, z.new_zeros(*z.shape[:-1], extra)], -1)                 # [.., V']
        new = h @ self.token_adapter.trainable_tokens_delta.to(h.dtype).T               # [.., N]
        idx = torch.tensor(self.token_adapter.idx, device=z.device)
        return z.index_copy(-1, idx, new)


def extend(tuned, ids: list[int], init_pieces: list[list[int]] | None = None) -> None:
    """Give ``tuned`` trainable rows for the token ids ``ids``, each initialised as the mean of its
    base sub-token embeddings (``init_pieces``; zeros when loading saved rows over them)."""
    from adaptlab.tuning import get_method, replace_module

    if get_method(tuned.method).prefix == "":
        raise ConfigError("--vocab: full fine-tuning trains every embedding; resize the model's embeddings "
                          "instead, or extend with a parameter-efficient method")
    model = tuned.model
    emb = model.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise ConfigError("--vocab: this model's input embeddings are not a plain embedding table")
    w = emb.weight
    if init_pieces is not None:
        init = torch.stack([w[torch.tensor(p)].mean(0) for p in init_pieces]).detach()   # [N, H]
    else:
        init = torch.zeros(len(ids), w.shape[1], dtype=w.dtype)
    adapter = TokenAdapter(ids, init.to(w.device))
    emb_name = next(n for n, m in model.named_modules() if m is emb)
    head = model.get_output_embeddings() if tuned.kind == "decoder" else None
    if head is not None and head.weight is not w:
        raise ConfigError("--vocab: this decoder's output layer is not tied to its input embeddings; adaptlab "
                          "extends tied models (the new rows serve both)")
    replace_module(model, emb_name, ExtendedEmbedding(emb, adapter))
    if head is not None:
        head_name = next(n for n, m in model.named_modules() if m is head)
        replace_module(model, head_name, ExtendedHead(head, adapter, max(w.shape[0], max(ids) + 1)))
    tuned.token_ids = list(ids)
