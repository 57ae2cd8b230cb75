"""Per-row adapter mixing: rows of one forward pass use different adapters (issue 24).

For the weight-side adapter types -- LoRA, IA3 and bottleneck adapters --, the prompt-type ones
-- prefix tuning, prompt tuning, P-tuning, P-tuning v2 (and SPoT, a soft prompt) -- and the plain
base, one *mixed* model over the one base runs every row with its own adapter (a row has exactly
one). Each module that some weight-side adapter wraps becomes a ``MixedLinear`` holding the
stacked per-adapter tensors; slot 0 is the base (zero delta), slot s > 0 an adapter, and row i
uses slot ``idx[i]``::

    y = W0 (x * l_in[idx]) * l_out[idx]                                   IA3 (ones elsewhere)
      + s[idx] * B[idx] A[idx] x          A: [S, R, k], B: [S, d, R]     LoRA (gather + bmm)
    y <- y + W_up f(W_down y)             for the rows of each bottleneck slot

LoRA ranks are padded to the largest with zeros (the same output); the bottleneck adapters run on
their own rows (``index_select``), each with its own modules (shared with its ``TunedModel``).

Prompt-type adapters act only at the prefill (the seam's ``embeds`` / ``past_key_values`` of
``tuning``, taken once per adapter when the mixed model is built): after it, a row decodes with
the plain KV-cache loop of the base. The mixed prefill (``MixedLM._batch_inputs``) lays out::

    cache     [ 0 .. 0 | row's prefix keys/values (n_kv) ]          K = max n_kv; zeros masked out
    input     [ pad .. pad | row's soft tokens (n_emb) | row's tokens ]   as inputs_embeds
    positions n_kv + cumsum(mask) - 1: soft tokens at 0..n_emb-1, tokens after them

which is what the adapter's own ``TunedModel`` gives (virtual positions 0..n-1, the row's tokens
from n), so each row's output equals its adapter served alone. Rows without a prompt see only
masked-out pads there.

``MixedLM`` is a ``LocalLM`` over that model: the per-row slots follow the rows through the
engine's sort, the n-sample expansion and the dropping of finished rows
(``LocalLM._follow_rows``); ``score`` takes per-context slots too (``score_mixed``).
No shared-prefix KV: a prefix's keys and values differ per adapter.

``Mixer`` (one per scheduler) says which engines mix (``mixable``) and gives the mixed engine for
a group of jobs; an adapter first seen gets a slot and the mixed model is rebuilt over every
live adapter seen so far. What does not mix keeps one group per adapter: a tokenizer with added
tokens, a head (a classifier, P-tuning v2's ``classifier=head``), a merged or disabled adapter,
training-mode dropout, a model not over the shared base weights, the black-box prompt methods
(bbt, bbtv2, bdpl) and full fine-tuning.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from adaptlab.engine import decoding
from adaptlab.engine.local import LocalLM

MIXABLE = ("lora", "ia3", "adapter")
PROMPTS = ("prefix", "prompt-tuning", "p-tuning", "p-tuning-v2", "spot")   # act at the prefill only


class Rows:
    """The slot of every row of the batch now running (shared by the model's mixed modules)."""

    def __init__(self):
        self.idx: torch.Tensor | None = None         # [B] long
        self.present: frozenset = frozenset()
        self.version = 0                              # bumped by set(): the modules' gathers are per version
        self._of: dict[int, torch.Tensor] = {}
        # slot -> (soft tokens [n, H] | None, [(k, v) [H_kv, n, d] per layer] | None): prompt-type adapters
        self.prompts: dict[int, tuple] = {}

    def set(self, idx: torch.Tensor) -> None:
        self.idx = idx
        self.present = frozenset(idx.tolist())
        self.version += 1
        self._of = {}

    def of(self, slot: int) -> torch.Tensor:
        """Row indices using ``slot``."""
        if slot not in self._of:
            self._of[slot] = (self.idx == slot).nonzero()[:, 0]
        return self._of[slot]


DENSE = 512      # up to this many adapter columns (sum of ranks / bottleneck sizes) in a module: dense path


class MixedLinear(nn.Module):
    """A base linear layer with every slot's LoRA / IA3 / bottleneck tensors, applied per row.

    LoRA, up to ``DENSE`` ranks in all: the slots' A stacked as one [sum r, k] matrix and B as one
    [d, sum r], so the delta is two plain GEMMs with the rows' own columns kept by a per-row
    mask (scale inside): ``((x A_cat^T) * mask[idx]) B_cat^T``, exact zeros for other slots'
    columns. More ranks than that: gather + bmm over the slots padded to the largest rank.
    Bottleneck adapters likewise (down projections stacked, activation per slot's columns, up
    projections stacked; per-row up bias), or each slot on its own rows above ``DENSE``."""

    def __init__(self, base_layer: nn.Module, rows: Rows, n_slots: int):
        super().__init__()
        self.base_layer = base_layer
        self.rows = rows
        self.n_slots = n_slots
        self.lora_slots: frozenset = frozenset()
        self.ia3_in_slots: frozenset = frozenset()
        self.ia3_out_slots: frozenset = frozenset()
        self.bottleneck: dict[int, nn.Module] = {}    # slot -> the adapter's AdapterLinear (its modules)
        self.lora_dense = self.bn_dense = False
        self._g: tuple = (-1,)                        # (rows.version, per-row tensors gathered for it)

    @property
    def weight(self):
        return self.base_layer.weight

    def _buf(self, name: str, t: torch.Tensor) -> None:
        self.register_buffer(name, t, persistent=False)

    def fill(self, layers: dict[int, nn.Module]) -> None:
        """Stack the slots' wrapped layers (slot -> LoRALinear | IA3Linear | AdapterLinear)."""
        from adaptlab.tuning.adapter import AdapterLinear
        from adaptlab.tuning.ia3 import IA3Linear
        from adaptlab.tuning.lora import LoRALinear

        w = self.base_layer.weight
        d, k, S = w.shape[0], w.shape[1], self.n_slots
        f = dict(dtype=w.dtype, device=w.device)
        lora = {s: m for s, m in sorted(layers.items()) if isinstance(m, LoRALinear)}
        if lora:
            self.lora_slots = frozenset(lora)
            self.lora_dense = sum(m.r for m in lora.values()) <= DENSE
            if self.lora_dense:
                self._buf("lora_A", torch.cat([m.lora_A.weight.detach() for m in lora.values()]))      # [Rt, k]
                self._buf("lora_B", torch.cat([m.lora_B.weight.detach() for m in lora.values()], 1))   # [d, Rt]
                col = torch.tensor([s for s, m in lora.items() for _ in range(m.r)], device=w.device)
                self._buf("lora_col", col)
                self._buf("lora_colscale", torch.tensor([m.scaling for m in lora.values() for _ in range(m.r)], **f))
            else:
                R = max(m.r for m in lora.values())
                A, B = torch.zeros(S, k, R, **f), torch.zeros(S, R, d, **f)
                sc = torch.zeros(S, **f)
                for s, m in lora.items():
                    A[s, :, :m.r] = m.lora_A.weight.detach().T
                    B[s, :m.r] = m.lora_B.weight.detach().T
                    sc[s] = m.scaling
                self._buf("lora_A", A)                                                          # [S, k, R]
                self._buf("lora_B", B)                                                          # [S, R, d]
                self._buf("lora_s", sc)
        ia3 = {s: m for s, m in layers.items() if isinstance(m, IA3Linear)}
        for ff, size, name in ((True, k, "ia3_in"), (False, d, "ia3_out")):
            part = {s: m for s, m in ia3.items() if m.is_feedforward == ff}
            if part:
                v = torch.ones(S, size, **f)
                for s, m in part.items():
                    v[s] = m.ia3_l.detach().flatten()
                self._buf(name, v)
                setattr(self, name + "_slots", frozenset(part))
        bn = {s: m for s, m in sorted(layers.items()) if isinstance(m, AdapterLinear)}
        self.bottleneck = bn
        self.bn_dense = bool(bn) and sum(m.adapter_down.out_features for m in bn.values()) <= DENSE
        if self.bn_dense:
            self._buf("bn_down", torch.cat([m.adapter_down.weight.detach() for m in bn.values()]))        # [Mt, d]
            self._buf("bn_down_b", torch.cat([m.adapter_down.bias.detach() for m in bn.values()]))        # [Mt]
            self._buf("bn_up", torch.cat([m.adapter_up.weight.detach() for m in bn.values()], 1))         # [d, Mt]
            ub = torch.zeros(S, d, **f)
            for s, m in bn.items():
                ub[s] = m.adapter_up.bias.detach()
            self._buf("bn_up_b", ub)
            self._buf("bn_col", torch.tensor([s for s, m in bn.items() for _ in range(m.adapter_down.out_features)],
                                             device=w.device))
            acts, at = [], 0                            # (start, end, activation) runs of columns
            for m in bn.values():
                e = at + m.adapter_down.out_features
                if acts and type(acts[-1][2]) is type(m.adapter_act):
                    acts[-1] = (acts[-1][0], e, acts[-1][2])
                else:
                    acts.append((at, e, m.adapter_act))
                at = e
            self.bn_acts = acts

    def _gather(self, idx: torch.Tensor, present: frozenset) -> dict:
        """Per-row tensors for the rows' slots (absent where no row's slot has that part here)."""
        g: dict = {}
        if self.ia3_in_slots & present:
            g["l_in"] = self.ia3_in[idx][:, None, :]                                            # [B, 1, k]
        if self.ia3_out_slots & present:
            g["l_out"] = self.ia3_out[idx][:, None, :]                                          # [B, 1, d]
        if self.lora_slots & present:
            if self.lora_dense:
                g["lora_mask"] = ((idx[:, None] == self.lora_col[None]) * self.lora_colscale)[:, None, :]  # [B, 1, Rt]
            else:
                g["lora"] = (self.lora_A[idx], self.lora_B[idx], self.lora_s[idx][:, None, None])
        if self.bottleneck.keys() & present:
            if self.bn_dense:
                g["bn_mask"] = (idx[:, None] == self.bn_col[None]).to(self.bn_up.dtype)[:, None, :]     # [B, 1, Mt]
                g["bn_up_b"] = self.bn_up_b[idx][:, None, :]                                            # [B, 1, d]
            else:
                g["bn_slots"] = sorted(self.bottleneck.keys() & present)
        return g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.rows
        idx = r.idx
        if idx is None or idx.shape[0] != x.shape[0]:
            raise RuntimeError(f"mixed model: {x.shape[0]} rows in the batch, "
                               f"{None if idx is None else idx.shape[0]} row slots set")
        if self._g[0] != r.version:                   # gather once per row layout, not per step
            self._g = (r.version, self._gather(idx, r.present))
        g = self._g[1]
        x3 = x if x.dim() == 3 else x[:, None]                                   # [B, L, k]
        y = self.base_layer(x3 * g["l_in"] if "l_in" in g else x3)               # [B, L, d]
        if "l_out" in g:
            y = y * g["l_out"]
        if "lora_mask" in g:
            y = y + F.linear(F.linear(x3, self.lora_A) * g["lora_mask"], self.lora_B)     # [B, L, Rt] -> [B, L, d]
        elif "lora" in g:
            A, B, sc = g["lora"]
            y = y + torch.bmm(torch.bmm(x3, A), B) * sc                                   # [B, L, R] -> [B, L, d]
        if "bn_mask" in g:
            z = F.linear(y, self.bn_down, self.bn_down_b)                                 # [B, L, Mt]
            if len(self.bn_acts) == 1:
                z = self.bn_acts[0][2](z)
            else:
                z = torch.cat([act(z[..., a:e]) for a, e, act in self.bn_acts], -1)
            y = y + F.linear(z * g["bn_mask"], self.bn_up) + g["bn_up_b"]
        for s in g.get("bn_slots", ()):
            a = self.bottleneck[s]
            sel = r.of(s)
            h = y.index_select(0, sel)
            y = y.index_copy(0, sel, h + a.adapter_up(a.adapter_act(a.adapter_down(h))))
        return y if x.dim() == 3 else y[:, 0]


def adapter_layers(tuned) -> dict[str, nn.Module]:
    """Module name (in the HF model) -> the adapter's wrapped layer."""
    return {n: m for n, m in tuned.model.named_modules() if hasattr(m, "adapter_enabled") and hasattr(m, "base_layer")}


def prompt_parts(tuned) -> tuple:
    """A prompt-type adapter's prefill, through the seam's hooks (``tuning``: ``embeds`` /
    ``past_key_values``): (soft tokens [n, H], None) or (None, [(k, v) [H_kv, n, d] per layer])."""
    p = tuned.prompt
    with torch.no_grad():
        emb = p.embeds(1)
        if emb is not None:
            return emb[0].detach().clone(), None
        return None, [(k[0].detach().clone(), v[0].detach().clone()) for k, v in p.past_key_values(1)]


def build(backbone, slots: dict[int, object]) -> tuple[nn.Module, Rows]:
    """A copy of the base model (same weight storage) whose wrapped modules are ``MixedLinear``
    over ``slots`` (slot -> TunedModel; slot 0, the base, need not be given)."""
    from adaptlab.tuning import _share_copy, replace_module

    model = _share_copy(backbone.model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rows = Rows()
    n_slots = max([0, *slots]) + 1
    by_name: dict[str, dict[int, nn.Module]] = {}
    for s, tuned in slots.items():
        for name, layer in adapter_layers(tuned).items():
            by_name.setdefault(name, {})[s] = layer
    for name, layers in by_name.items():
        mod = MixedLinear(model.get_submodule(name), rows, n_slots)
        mod.fill(layers)
        replace_module(model, name, mod)
    rows.prompts = {s: prompt_parts(t) for s, t in slots.items() if t.prompt is not None}
    return model, rows


class MixedLM(LocalLM):
    """``LocalLM`` over a mixed model; ``slots`` (one per prompt) say which adapter each prompt uses."""

    def __init__(self, backbone, model, rows: Rows, **kw):
        super().__init__(backbone, model=model, share_prefix=False, **kw)
        # a bare HF model (mixed modules inside): the engine's plain fast paths hold for it
        self.plain = True
        self._head = decoding.linear_head(self.model)
        self.rows = rows
        self.slots = torch.zeros(0, dtype=torch.long)     # per prompt of the next generate()

    def _split_prefix(self, seqs, min_rest=1) -> int:
        return 0                                          # a prefix's KV differs per adapter

    def _batch_inputs(self, rows, prefix, room: int = 0):
        """The prefill with each row's prompt (module docstring): soft tokens before the row's
        tokens in ``inputs_embeds``, prefix keys/values in the cache before them."""
        r = self.rows
        if prefix or r.idx is None or not (r.present & r.prompts.keys()):
            return super()._batch_inputs(rows, prefix, room)
        B, dev = len(rows), self.device
        parts = [r.prompts.get(s, (None, None)) for s in r.idx.tolist()]
        n_emb = [0 if e is None else e.shape[0] for e, _ in parts]
        n_kv = [0 if kv is None else kv[0][0].shape[1] for _, kv in parts]
        L, K = max(e + len(x) for e, x in zip(n_emb, rows)), max(n_kv)
        ids, mask = self._left_pad([[0] * e + x for e, x in zip(n_emb, rows)])     # [B, L]: soft slots as 0
        emb_layer = self.model.get_input_embeddings()
        x = emb_layer(ids.to(dev))                                                  # [B, L, H]
        for i, (e, _) in enumerate(parts):
            if e is not None:
                a = L - len(rows[i]) - e.shape[0]
                x[i, a:a + e.shape[0]] = e.to(x.dtype)
        pos = (torch.tensor(n_kv)[:, None] + mask.cumsum(-1) - 1).clamp(min=0)
        kv_mask = torch.zeros((B, K), dtype=torch.long)
        kw = dict(inputs_embeds=x, position_ids=pos.to(dev), use_cache=True)
        if K:
            ref = next(kv for _, kv in parts if kv is not None)
            layers = []
            for li, (k0, v0) in enumerate(ref):
                k = torch.zeros((B, k0.shape[0], K, k0.shape[2]), dtype=k0.dtype, device=dev)
                v = torch.zeros_like(k)
                for i, (_, kv) in enumerate(parts):
                    if kv is not None:
                        k[i, :, K - n_kv[i]:] = kv[li][0]
                        v[i, :, K - n_kv[i]:] = kv[li][1]
                layers.append((k, v))
            for i, n in enumerate(n_kv):
                if n:
                    kv_mask[i, K - n:] = 1
            kw["past_key_values"] = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        kw["attention_mask"] = torch.cat([kv_mask, mask], 1).to(dev)               # [B, K + L]
        self.cost.forwards += 1
        self.cost.prompt_tokens += sum(len(x) for x in rows)
        return kw

    def _follow_rows(self, sel, start: bool = False) -> None:
        src = self.slots if start else self.rows.idx
        sel = torch.as_tensor(sel, dtype=torch.long)
        if start and len(sel) and int(sel.max()) >= len(src):
            raise ValueError("mixed engine: bind() one adapter slot per prompt before generate()")
        self.rows.set(src[sel].to(self.device))

    def bind(self, slots) -> "MixedLM":
        """Set the adapter slot of each prompt of the next ``generate`` call; returns self."""
        self.slots = torch.as_tensor(list(slots), dtype=torch.long)
        return self

    def generate_mixed(self, prompts, slots, **kw):
        if len(slots) != len(prompts):
            raise ValueError("generate_mixed: one slot per prompt")
        return self.bind(slots).generate(prompts, **kw)

    def score_mixed(self, contexts, options, slots):
        if len(slots) != len(contexts):
            raise ValueError("score_mixed: one slot per context")
        return self.bind(slots).score(contexts, options)


class Mixer:
    """Which engines mix, their slots, and the mixed engine over every live adapter seen."""

    def __init__(self):
        self.backbone = None
        self._ok: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # lm -> bool
        self._slot: dict[int, tuple[weakref.ref, int]] = {}                  # id(tuned) -> (ref, slot)
        self.lm: MixedLM | None = None
        self.builds = 0

    def mixable(self, lm) -> bool:
        if lm in self._ok:
            return self._ok[lm]
        ok = self._check(lm)
        self._ok[lm] = ok
        return ok

    def _check(self, lm) -> bool:
        bb = getattr(lm, "backbone", None)
        if type(lm) is not LocalLM or bb is None or bb.kind != "decoder":
            return False
        if self.backbone is None:
            self.backbone, self._len = bb, (lm.max_length, lm.truncate, lm.batch_size)
        if bb is not self.backbone or (lm.max_length, lm.truncate, lm.batch_size) != self._len:
            return False
        m = lm.model
        if m is bb.model:
            return True
        if getattr(m, "kind", None) != "decoder" or m.head is not None or m.token_ids is not None:
            return False
        if getattr(m, "method", None) in PROMPTS:
            return self._prompt_ok(m, bb)
        if m.method not in MIXABLE or m.prompt is not None:
            return False
        layers = adapter_layers(m)
        if not layers:
            return False
        for name, layer in layers.items():
            if getattr(layer, "merged", False) or not layer.adapter_enabled:
                return False
            if any(isinstance(d, nn.Dropout) and d.training for d in layer.modules()):
                return False                             # training-mode dropout: not what the mix runs
            try:
                w0 = bb.model.get_submodule(name).weight
            except AttributeError:
                return False
            if layer.base_layer.weight.data_ptr() != w0.data_ptr():
                return False                             # not over the shared base weights
        return True

    @staticmethod
    def _prompt_ok(m, bb) -> bool:
        """A prompt-type adapter: its prompt alone over the base (no wrapped layer, every weight
        the base's own), in eval mode, with one of the seam's two hooks giving its prefill."""
        p = m.prompt
        if p is None or not m._prompt_enabled or not p.n_virtual or adapter_layers(m):
            return False
        if any(d.training for d in p.modules()) or any(d.training for d in m.model.modules()):
            return False                                 # training-mode dropout on the prompt / model
        mine, base = list(m.model.parameters()), list(bb.model.parameters())
        if len(mine) != len(base) or any(a.data_ptr() != b.data_ptr() or a.shape != b.shape
                                         for a, b in zip(mine, base)):
            return False                                 # not over the shared base weights
        try:
            emb, kv = prompt_parts(m)
        except Exception:
            return False
        if emb is not None:
            return emb.dim() == 2 and emb.shape == (p.n_virtual, bb.model.get_input_embeddings().weight.shape[1])
        from adaptlab.tuning.prefix import kv_geometry

        L, H_kv, d = kv_geometry(bb.model.config)
        return kv is not None and len(kv) == L and all(t.shape == (H_kv, p.n_virtual, d) for kt in kv for t in kt)

    def engine(self, lms: list) -> tuple[MixedLM, list[int]]:
        """The mixed engine and the slot of each engine in ``lms`` (all ``mixable``)."""
        if not all(self.mixable(lm) for lm in lms):
            raise ValueError("Mixer.engine: an engine that does not mix")
        live = {k: (ref, s) for k, (ref, s) in self._slot.items() if ref() is not None}
        new = [lm.model for lm in lms if lm.model is not self.backbone.model
               and (id(lm.model) not in live or live[id(lm.model)][0]() is not lm.model)]
        if new or self.lm is None:
            used = {s for _, s in live.values()}
            nxt = 1
            for tm in dict.fromkeys(new):             # each new adapter once, in order
                while nxt in used:
                    nxt += 1
                live[id(tm)] = (weakref.ref(tm), nxt)
                used.add(nxt)
            self._slot = live
            model, rows = build(self.backbone, {s: ref() for ref, s in live.values()})
            max_length, truncate, batch_size = self._len
            self.lm = MixedLM(self.backbone, model, rows, batch_size=batch_size, max_length=max_length,
                              truncate=truncate)
            self.builds += 1
        slots = [0 if lm.model is self.backbone.model else self._slot[id(lm.model)][1] for lm in lms]
        return self.lm, slots
