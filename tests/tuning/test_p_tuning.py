"""P-tuning (Liu et al. 2021): soft tokens produced by a prompt encoder (MLP or LSTM); the saved
adapter holds the encoder's output and loads without the encoder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from adaptlab.errors import ConfigError
from adaptlab.tuning import apply_method, make_config
from adaptlab.tuning.io import load_adapter, save_adapter
from tuning_fixtures import load_tiny, tiny_dirs  # noqa: F401  (fixtures)
from tuning_fixtures import check_cached_generation, perturb, sharpen


def test_config_range_checks():
    for bad in ({"num_virtual_tokens": "0"}, {"encoder_reparameterization_type": "GRU"},
                {"encoder_num_layers": "0"}, {"encoder_dropout": "1.5"}):
        with pytest.raises(ConfigError):
            make_config("p-tuning", bad)


@pytest.mark.parametrize("kind", ["MLP", "LSTM"])
def test_encoder_produces_the_soft_tokens(tiny_decoder, kind):
    t = apply_method(tiny_decoder, "p-tuning", {"num_virtual_tokens": 5, "encoder_reparameterization_type": kind,
                                                 "encoder_hidden_size": 12})
    enc = t.p_tuning_encoder
    h = enc.tokens()
    assert h.shape == (5, 32) and enc.embeds(3).shape == (3, 5, 32)
    assert hasattr(enc, "lstm_head") == (kind == "LSTM")
    # the tokens depend on the encoder, not only on its inputs
    with torch.no_grad():
        enc.mlp_head[-1].bias.add_(1.0)
    assert torch.allclose(enc.tokens(), h + 1.0, atol=1e-5)
    # the gradient reaches the encoder's inputs and weights
    t(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().backward()
    assert enc.embedding.weight.grad is not None and enc.mlp_head[0].weight.grad.abs().sum() > 0


def test_saved_in_inference_form(load_tiny, tmp_path):
    bb = load_tiny("decoder")
    t = apply_method(bb, "p-tuning", {"num_virtual_tokens": 4, "encoder_reparameterization_type": "LSTM"})
    save_adapter(tmp_path / "a", t)
    tensors = load_file(tmp_path / "a" / "adapter_model.safetensors")
    assert list(tensors) == ["prompt_embeddings"] and tensors["prompt_embeddings"].shape == (4, 32)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "P_TUNING" and cfg["encoder_reparameterization_type"] == "LSTM"
    _, loaded = load_adapter(tmp_path / "a")
    assert loaded.method_config.inference_mode and loaded.trainable_names() == ["p_tuning_encoder.embedding.weight"]
    t.eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(t(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_cached_generation_sees_the_prompt(tiny_decoder):
    bb = sharpen(tiny_decoder)
    t = apply_method(bb, "p-tuning", {"num_virtual_tokens": 4})
    perturb(t)
    check_cached_generation(bb, t)
