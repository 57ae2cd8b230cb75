"""Shared-prefix attention: the split-and-merge equals attention over the concatenation, and the
engine gives the same scores and generations with it as with per-row prefix copies."""

import pytest
import torch
import torch.nn.functional as F

from adaptlab.engine import shared_prefix
from adaptlab.engine.local import LocalLM
from adaptlab.tuning import apply_method

DEMOS = ("Review: a great movie with a fine cast\nSentiment: positive\n\n"
         "Review: an awful boring film\nSentiment: negative\n\n")


class _Layer:
    def __init__(self, pk, pv):
        self.pk, self.pv = pk, pv


class _Cache:
    def __init__(self, pk, pv):
        self.layers = [_Layer(pk, pv)]


class _Module:
    layer_idx = 0


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("q_len,padded", [(1, False), (5, False), (5, True)])
def test_split_attention_equals_attention_over_the_concatenation(q_len, padded, fused, monkeypatch):
    if not fused:                                   # the plain-formula path (no fused CPU kernel)
        monkeypatch.setattr(shared_prefix, "_FUSED", None)
    g = torch.Generator().manual_seed(0)
    B, Hq, Hkv, P, S, d = 3, 6, 2, 11, 7, 8
    q = torch.randn(B, Hq, q_len, d, generator=g)
    pk, pv = torch.randn(1, Hkv, P, d, generator=g), torch.randn(1, Hkv, P, d, generator=g)
    k, v = torch.randn(B, Hkv, S, d, generator=g), torch.randn(B, Hkv, S, d, generator=g)
    # reference: each row attends to [prefix ; own tokens], causal over its own tokens
    allowed = torch.ones(B, 1, q_len, P + S, dtype=torch.bool)
    i = torch.arange(q_len).view(q_len, 1)
    allowed[..., P:] = torch.arange(S).view(1, S) <= S - q_len + i
    if padded:
        allowed[1, ..., P:P + 3] = False            # row 1's first 3 own tokens are left padding
    full_k = torch.cat([pk.expand(B, -1, -1, -1), k], 2).repeat_interleave(Hq // Hkv, 1)
    full_v = torch.cat([pv.expand(B, -1, -1, -1), v], 2).repeat_interleave(Hq // Hkv, 1)
    ref = F.scaled_dot_product_attention(q, full_k, full_v, attn_mask=allowed).transpose(1, 2)
    got, _ = shared_prefix.shared_prefix_attention(_Module(), q, k, v, allowed if padded or q_len > 1 else None,
                                                   scaling=d ** -0.5, shared_prefix=_Cache(pk, pv))
    assert got.shape == (B, q_len, Hq, d)
    rows = [0, 2] if padded else [0, 1, 2]          # a padded query row attends to nothing useful
    assert torch.allclose(got[rows], ref[rows], atol=1e-5)
    assert torch.isfinite(got).all()


def test_mask_none_means_causal_over_own_tokens():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 3, 8, generator=g)
    pk, pv = torch.randn(1, 2, 5, 8, generator=g), torch.randn(1, 2, 5, 8, generator=g)
    k, v = torch.randn(2, 2, 3, 8, generator=g), torch.randn(2, 2, 3, 8, generator=g)
    causal = torch.ones(2, 1, 3, 8, dtype=torch.bool)
    causal[..., 5:] = torch.ones(3, 3, dtype=torch.bool).tril()
    a, _ = shared_prefix.shared_prefix_attention(_Module(), q, k, v, None, shared_prefix=_Cache(pk, pv))
    b, _ = shared_prefix.shared_prefix_attention(_Module(), q, k, v, causal, shared_prefix=_Cache(pk, pv))
    assert torch.allclose(a, b, atol=1e-6)


def test_supported_only_for_plain_causal_attention(tiny_decoder, tiny_encoder):
    from transformers import MistralConfig, MistralForCausalLM

    assert shared_prefix.supported(tiny_decoder.model)
    assert not shared_prefix.supported(tiny_encoder.model)
    windowed = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2,
                                                num_key_value_heads=1, sliding_window=8))
    assert not shared_prefix.supported(windowed)
    assert not LocalLM(tiny_decoder, share_prefix=False).share_prefix


def _tuned(bb, method):
    t = apply_method(bb, method)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in t.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return t.eval()


@pytest.mark.parametrize("method", [None, "lora", "ia3", "prefix", "prompt-tuning"])
def test_engine_same_with_and_without_shared_prefix(tiny_decoder, method):
    model = _tuned(tiny_decoder, method) if method else None
    on = LocalLM(tiny_decoder, model=model, batch_size=2)
    off = LocalLM(tiny_decoder, model=model, batch_size=2, share_prefix=False)
    assert on.share_prefix and not off.share_prefix
    ctxs = [DEMOS + "Review: great fine cast\nSentiment:", DEMOS + "Review: boring\nSentiment:",
            DEMOS + "Review: The price is terrible. I'm returning it.\nSentiment:"]
    opts = [[" positive", " negative"], [" positive", " negative"], [" good value", " terrible price"]]
    small = LocalLM(tiny_decoder, model=model, pack_tokens=4)    # a pack per row, rows longer than a pack
    ref = off.score(ctxs, opts)
    for got in (on.score(ctxs, opts), small.score(ctxs, opts)):
        for a, b in zip(got, ref):
            for x, y in zip(a, b):
                assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-4)
    # demos shared by several prompts; one prompt sampled n times (its own prefix)
    assert on.generate(ctxs, n=2, max_new_tokens=6) == off.generate(ctxs, n=2, max_new_tokens=6)
    assert on.generate([ctxs[2]], n=3, max_new_tokens=6) == off.generate([ctxs[2]], n=3, max_new_tokens=6)
    assert (tiny_decoder.model.config._attn_implementation
            == off.model.config._attn_implementation != shared_prefix.NAME)   # restored after each call


def test_n_samples_keep_one_copy_of_the_prompt(tiny_decoder, monkeypatch):
    seen = []
    make = shared_prefix.make_cache

    def spy(kv, model, room=0):
        cache = make(kv, model, room)
        seen.append(cache)
        return cache

    monkeypatch.setattr(shared_prefix, "make_cache", spy)
    lm = LocalLM(tiny_decoder)
    prompt = DEMOS + "Review: a fine cast\nSentiment:"
    out = lm.generate([prompt], n=4, max_new_tokens=5, temperature=1.0, seed=0)
    assert len(out[0]) == 4
    layer = seen[-1].layers[0]
    assert layer.pk.shape[0] == 1 and layer.P == len(lm.encode(prompt)) - 1   # one prompt copy
    assert layer.keys.shape[0] <= 4                                            # rows hold only their tokens


def test_packed_layout():
    p = shared_prefix.Packed.of([2, 3, 1])
    assert (p.B, p.L) == (3, 3)
    assert p.idx.tolist() == [1, 2, 3, 4, 5, 8]          # left-padded slots of the 6 packed tokens
    assert p.mask[0, 0].tolist() == [[False, False, False], [False, True, False], [False, True, True]]
    assert p.mask[2, 0, 2].tolist() == [False, False, True]

