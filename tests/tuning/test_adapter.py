"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): h + W_up f(W_down h) after the
attention and feed-forward output projections, near-identity at initialization."""

from __future__ import annotations

import pytest
import torch

from adaptlab.errors import ConfigError
from adaptlab.tuning import apply_method, make_config, merged_model
from adaptlab.tuning.adapter import AdapterLinear


def _sharpen(bb):
    """The tiny fixture's projections at std 1/sqrt(fan_in) (not 0.02), so attention depends on
    content and a prompt visibly changes greedy decoding."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in bb.model.named_parameters():
            if n.endswith("proj.weight"):
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return bb


def _perturb(tuned, scale=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in tuned.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def _greedy_no_cache(tuned, ids, steps):
    """Reference: recompute the whole sequence at every step, no KV cache."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(tuned(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1].argmax()))
    return seq[len(ids):]


def _check_cached_generation(bb, tuned, prompt="Review: a great movie\nSentiment:", steps=8):
    """Generation through the engine (KV cache on) sees the adapter: it equals a no-cache greedy
    recompute with the adapter and differs from the base model's."""
    from adaptlab.engine.local import LocalLM

    tuned.eval()
    lm = LocalLM(bb, model=tuned)
    ref = _greedy_no_cache(tuned, lm.encode(prompt), steps)
    ref = ref[: next((i for i, t in enumerate(ref) if t in lm.eos_ids), len(ref))]   # the engine stops at EOS
    out = lm.generate([prompt], max_new_tokens=steps, stop=[])[0][0]
    assert out == bb.tokenizer.decode(ref, skip_special_tokens=True)
    assert out != LocalLM(bb).generate([prompt], max_new_tokens=steps, stop=[])[0][0]


def _adapted(t):
    return sorted(n for n, m in t.model.named_modules() if isinstance(m, AdapterLinear))


def test_config_range_checks():
    for bad in ({"m": "0"}, {"placement": "everywhere"}, {"init_std": "0"}, {"non_linearity": "softmax"}):
        with pytest.raises(ConfigError):
            make_config("adapter", bad)


def test_placement_houlsby_and_pfeiffer(tiny_decoder, tiny_encoder):
    h = _adapted(apply_method(tiny_decoder, "adapter", {}))
    assert h == ["model.layers.0.mlp.down_proj", "model.layers.0.self_attn.o_proj",
                 "model.layers.1.mlp.down_proj", "model.layers.1.self_attn.o_proj"]
    assert _adapted(apply_method(tiny_decoder, "adapter", {"placement": "ffn"})) == \
        ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    # BERT: attention.output.dense (attention) vs output.dense (feed-forward) are told apart
    assert _adapted(apply_method(tiny_encoder, "adapter", {"placement": "ffn"})) == \
        ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    assert len(_adapted(apply_method(tiny_encoder, "adapter", {}))) == 4


def test_near_identity_init_and_parameter_count(tiny_decoder):
    t = apply_method(tiny_decoder, "adapter", {"m": 8}).eval()
    d = 32
    assert t.n_trainable() == 4 * (d * 8 + 8 + 8 * d + d)                     # 4 adapters: W_down, b, W_up, b
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        a, b = t(input_ids=ids).logits, tiny_decoder.model(input_ids=ids).logits
    assert (a - b).abs().max() < 1e-2 * b.abs().max()


def test_formula(tiny_decoder):
    t = apply_method(tiny_decoder, "adapter", {"m": 4, "non_linearity": "tanh"})
    layer = t.model.model.layers[0].self_attn.o_proj
    x = torch.randn(3, 32)
    h = layer.base_layer(x)
    want = h + torch.tanh(h @ layer.adapter_down.weight.T + layer.adapter_down.bias) @ layer.adapter_up.weight.T \
        + layer.adapter_up.bias
    assert torch.allclose(layer(x), want, atol=1e-6)


def test_not_mergeable(tiny_decoder):
    with pytest.raises(ConfigError):
        merged_model(apply_method(tiny_decoder, "adapter", {}))


def test_cached_generation(tiny_decoder):
    bb = _sharpen(tiny_decoder)
    t = apply_method(bb, "adapter", {})
    _perturb(t)
    _check_cached_generation(bb, t)
