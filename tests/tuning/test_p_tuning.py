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
    bb = _sharpen(tiny_decoder)
    t = apply_method(bb, "p-tuning", {"num_virtual_tokens": 4})
    _perturb(t)
    _check_cached_generation(bb, t)
