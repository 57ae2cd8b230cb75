"""Shared-prefix attention: attend to a prefix every row shares without copying it per row.

Hydragen (Juravsky et al. 2024, "Hydragen: High-Throughput LLM Inference with Shared Prefixes").
When every row of a batch starts with the same P tokens (the demonstrations of few-shot prompting,
or one prompt sampled n times), softmax attention over [prefix ; row] splits exactly into two
attentions whose results are merged by their log-sum-exps:

    O_P, lse_P = attn(q, K_P, V_P)          # K_P, V_P: [1, Hkv, P, d], one copy for all rows
    O_S, lse_S = attn(q, K_S, V_S)          # K_S, V_S: [B, Hkv, S, d], each row's own tokens
    O = (e^{lse_P} O_P + e^{lse_S} O_S) / (e^{lse_P} + e^{lse_S})

and the prefix half stacks the queries of all B rows (and of the g query heads that share a key
head) into one matrix, so K_P and V_P are read once per layer, not B times: one [B*g*q, d] x
[d, P] product instead of B products plus B copies of the prefix. On a CPU, where a decode step
is bound by memory traffic, this is most of what attention costs once the prefix is long.

Used by ``engine.local.LocalLM`` through Hugging Face's attention interface: the cache holds a
``SharedPrefixLayer`` per layer and the forward runs inside ``active(model)``, which selects this
attention for that call only (the model's setting is restored afterwards). Only for model types
whose attention is plain causal softmax (no sliding window, soft-capping or sink logits):
``supported(model)`` says; otherwise the engine copies the prefix per row. Both paths decode
into ``RoomyLayer`` buffers (a KV cache layer with room for the tokens to come).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from adaptlab.families import family

NAME = "adaptlab_shared_prefix"
# torch's fused CPU attention returns the log-sum-exp the merge needs (the public
# scaled_dot_product_attention does not); where it is missing the plain formula below runs
_FUSED = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def supported(model) -> bool:
    inner = getattr(model, "model", None) if not hasattr(model, "_supports_attention_backend") else model
    cfg = getattr(model, "config", None)
    fam = family(getattr(cfg, "model_type", None))      # plain_attention: softmax(q k^T * s + mask) v
    return (fam is not None and fam.plain_attention
            and not getattr(cfg, "sliding_window", None)
            and getattr(cfg, "_attn_implementation", None) in ("sdpa", "eager")
            and bool(getattr(inner, "_supports_attention_backend", False)))


class RoomyLayer(DynamicLayer):
    """A DynamicLayer over a [B, H, T + room, d] buffer; ``keys``/``values`` are views of its first
    ``n`` slots, so appending a token writes one slot instead of re-concatenating the whole cache
    (on a CPU most of a decode step's memory traffic for long prompts). Full: it doubles."""

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None, room: int = 0):
        super().__init__()
        self.room, self.n = room, 0
        self._k = self._v = None
        self.keys = self.values = None
        if keys is not None:
            self.update(keys, values)
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, : self.n], self._v[:, :, : self.n]

    def update(self, key_states, value_states, *args, **kwargs):
        t = key_states.shape[-2]
        if self._k is None:                                           # [B, H, t + room, d]
            shape = key_states.shape[:2] + (t + self.room, key_states.shape[-1])
            self._k, self._v = key_states.new_empty(shape), value_states.new_empty(shape)
        elif self.n + t > self._k.shape[2]:
            extra = self._k.shape[:2] + (max(t, self._k.shape[2]), self._k.shape[-1])
            self._k = torch.cat([self._k, self._k.new_empty(extra)], 2)
            self._v = torch.cat([self._v, self._v.new_empty(extra)], 2)
        self._k[:, :, self.n: self.n + t] = key_states
        self._v[:, :, self.n: self.n + t] = value_states
        self.n += t
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.n

    def crop(self, tokens_to_remove: int) -> None:
        self.n = max(0, self.n - abs(tokens_to_remove))
        if self._k is not None:
            self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._k is not None:
            self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._k is not None:
            self._k, self._v = self._k[indices], self._v[indices]
            self._views()


class SharedPrefixLayer(RoomyLayer):
    """One layer's cache: the shared prefix ``pk, pv`` [1, Hkv, P, d] plus the rows' own tokens
    (``keys``/``values``, in a buffer with room). The attention below adds the prefix."""

    def __init__(self, pk: torch.Tensor, pv: torch.Tensor, room: int = 0):
        super().__init__(room=room)
        self.pk, self.pv, self.P = pk, pv, pk.shape[-2]
        self.dtype, self.device, self.is_initialized = pk.dtype, pk.device, True

    def get_seq_length(self) -> int:
        return self.P + self.n


def _attend(q, k, v, scaling, mask=None):
    """softmax(q k^T * scaling) v and its log-sum-exp; q [..., M, d], k/v [..., N, d],
    mask broadcastable to [..., M, N] (True = attend). A row with nothing to attend (a left-pad
    query, whose output nobody reads) gets output 0 and a finite or -inf lse."""
    if _FUSED is not None and q.dim() == 4 and q.dtype == torch.float32:
        bias = None if mask is None else torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(
            ~mask, float("-inf"))
        o, lse = _FUSED(q, k, v, 0.0, False, attn_mask=bias, scale=scaling)[:2]   # [B, H, M, d], [B, H, M]
        return o, lse.unsqueeze(-1)
    s = torch.matmul(q * scaling, k.transpose(-1, -2)).float()        # [..., M, N]
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    z = e.sum(-1, keepdim=True)
    o = torch.matmul(e.to(v.dtype), v).float() / z.clamp(min=1e-30)  # [..., M, d]
    return o, m + torch.log(z)                                        # lse: -inf where z == 0


def _own_tokens(query, key, value, attention_mask, scaling):
    """Attention of each row over its own tokens: [B, Hkv, g, q, d] and its lse [B, Hkv, g, q, 1]."""
    B, Hq, q, d = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    g = Hq // Hkv
    qs = query.reshape(B, Hkv, g * q, d)                              # the g heads of a key head fold into the query axis
    if attention_mask is not None:
        m = attention_mask[..., -S:].to(torch.bool)                   # [B|1, 1, q, S]
        m = m.unsqueeze(2).expand(m.shape[0], 1, g, q, S).reshape(m.shape[0], 1, g * q, S)
    elif q > 1:                                                       # causal: key j <= S - q + i
        i = torch.arange(q, device=query.device).view(q, 1)
        m = (torch.arange(S, device=query.device).view(1, S) <= S - q + i).repeat(g, 1)
    else:
        m = None
    o, lse = _attend(qs, key, value, scaling, m)
    return o.view(B, Hkv, g, q, d), lse.view(B, Hkv, g, q, 1)


@dataclass
class Packed:
    """Rows packed end to end into one sequence of T tokens (no padding for the model's linear
    layers), and the left-padded [B, L] layout their attention over their own tokens uses."""

    idx: torch.Tensor        # [T]: each packed token's slot in the flattened [B * L] layout
    B: int
    L: int
    mask: torch.Tensor       # [B, 1, L, L]: causal over each row's own tokens, pads excluded

    @classmethod
    def of(cls, lengths: list[int], device=None) -> "Packed":
        B, L = len(lengths), max(lengths)
        idx = torch.cat([b * L + torch.arange(L - n, L) for b, n in enumerate(lengths)])
        real = torch.arange(L).view(1, L) >= (L - torch.tensor(lengths)).view(B, 1)      # [B, L]
        mask = real[:, None, None, :] & torch.ones(L, L, dtype=torch.bool).tril()     # [B, 1, L, L]
        return cls(idx.to(device), B, L, mask.to(device))


def _own_tokens_packed(packed: Packed, query, key, value, scaling):
    """``_own_tokens`` for packed rows: query [1, Hq, T, d] and key/value [1, Hkv, T, d] are laid
    out as [B, H, L, d] padded rows, attended, and gathered back to [1, Hkv, g, T, d]."""
    _, Hq, T, d = query.shape
    Hkv = key.shape[1]
    g, B, L = Hq // Hkv, packed.B, packed.L

    def rows(x):                                                      # [1, H, T, d] -> [B, H, L, d]
        out = x.new_zeros(B * L, x.shape[1], d)
        out[packed.idx] = x[0].transpose(0, 1)
        return out.view(B, L, x.shape[1], d).transpose(1, 2)

    o, lse = _own_tokens(rows(query), rows(key), rows(value), packed.mask, scaling)  # [B, Hkv, g, L, .]

    def back(x):                                                      # [B, Hkv, g, L, e] -> [1, Hkv, g, T, e]
        x = x.permute(0, 3, 1, 2, 4).reshape(B * L, Hkv, g, x.shape[-1])[packed.idx]
        return x.permute(1, 2, 0, 3).unsqueeze(0)

    return back(o), back(lse)


def shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                            shared_prefix=None, **kwargs):
    """Attention over [shared prefix ; row tokens]. query [B, Hq, q, d]; key/value: the rows'
    own tokens [B, Hkv, S, d] (what ``SharedPrefixLayer.update`` returned); attention_mask: the
    boolean [B, 1, q, P + S] mask (or None: causal, no padding). With ``shared_prefix.packed``
    the batch is one sequence of packed rows (``Packed``) and the mask is not read.
    Returns [B, q, Hq, d]."""
    layer = shared_prefix.layers[module.layer_idx]
    pk, pv = layer.pk, layer.pv                                       # [1, Hkv, P, d]
    B, Hq, q, d = query.shape
    Hkv = key.shape[1]
    g = Hq // Hkv
    scaling = d ** -0.5 if scaling is None else scaling
    # prefix: all rows' queries against the one prefix
    # [B, Hkv*g, q, d] -> [Hkv, B, g, q, d] -> [1, Hkv, B*g*q, d]
    qp = query.view(B, Hkv, g, q, d).transpose(0, 1).reshape(1, Hkv, B * g * q, d)
    o_p, lse_p = _attend(qp, pk, pv, scaling)
    o_p = o_p.view(Hkv, B, g, q, d).transpose(0, 1)                   # [B, Hkv, g, q, d]
    lse_p = lse_p.view(Hkv, B, g, q, 1).transpose(0, 1)
    if getattr(shared_prefix, "packed", None) is not None:
        o_s, lse_s = _own_tokens_packed(shared_prefix.packed, query, key, value, scaling)
    else:
        o_s, lse_s = _own_tokens(query, key, value, attention_mask, scaling)
    lse = torch.logaddexp(lse_p, lse_s)
    out = torch.exp(lse_p - lse) * o_p + torch.exp(lse_s - lse) * o_s  # [B, Hkv, g, q, d]
    out = out.reshape(B, Hq, q, d).transpose(1, 2).contiguous()       # [B, q, Hq, d]
    return out.to(query.dtype), None


AttentionInterface.register(NAME, shared_prefix_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def make_cache(prefix_kv, model, room: int = 0):
    """A cache whose every layer shares ``prefix_kv`` ([(k, v)] of [1, Hkv, P, d] per layer)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    cache.layers = [SharedPrefixLayer(k, v, room) for k, v in prefix_kv]
    cache.packed = None                   # or a Packed layout, when the batch is packed rows
    return cache


@contextmanager
def active(model):
    """Run ``model``'s forwards in this block with shared-prefix attention; restores its setting."""
    cfg = model.config
    old = cfg._attn_implementation
    cfg._attn_implementation = NAME
    try:
        yield
    finally:
        cfg._attn_implementation = old
