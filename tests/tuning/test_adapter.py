"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): h + W_up f(W_down h) after the
attention and feed-forward output projections, near-identity at initialization."""

from __future__ import annotations

import pytest
import torch

from adaptlab.errors import ConfigError
from adaptlab.tuning import apply_method, make_config, merged_model
from adaptlab.tuning.adapter import AdapterLinear

from tuning_fixtures import check_cached_generation, perturb, sharpen


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
    bb = sharpen(tiny_decoder)
    t = apply_method(bb, "adapter", {})
    perturb(t)
    check_cached_generation(bb, t)
