"""Prefix tuning (Li & Liang 2021): key/value prefixes at every layer, an MLP over P' while
training, the resulting prefixes in the saved adapter (as peft saves them)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from adaptlab.errors import ConfigError
from adaptlab.tuning import apply_method, make_config
from adaptlab.tuning.io import adapter_bytes, load_adapter, save_adapter
from adaptlab.tuning.prefix import kv_geometry
from tuning_fixtures import load_tiny, tiny_dirs  # noqa: F401  (fixtures)
from tuning_fixtures import check_cached_generation, perturb, sharpen


def test_config_range_checks():
    for bad in ({"num_virtual_tokens": "0"}, {"encoder_hidden_size": "0"}, {"prefix_dropout": "1"}):
        with pytest.raises(ConfigError):
            make_config("prefix", bad)


def test_prefix_shapes_follow_the_kv_heads(tiny_decoder):
    t = apply_method(tiny_decoder, "prefix", {"num_virtual_tokens": 3, "encoder_hidden_size": 8})
    L, H_kv, d = kv_geometry(tiny_decoder.model.config)
    assert (L, H_kv, d) == (2, 2, 8)                                         # grouped-query: 2 kv heads of 4
    enc = t.prefix_encoder
    assert enc.embedding.weight.shape == (3, H_kv * d)                       # P'
    assert enc.prefixes().shape == (3, 2 * L * H_kv * d)                     # P = MLP(P')
    kv = enc.past_key_values(5)
    assert len(kv) == L and all(k.shape == v.shape == (5, H_kv, 3, d) for k, v in kv)
    # layout: per virtual token [k_0, v_0, k_1, v_1] (peft's), each [H_kv, d]
    P = enc.prefixes().view(3, 2 * L, H_kv, d)
    assert torch.equal(kv[1][0][0], P[:, 2].transpose(0, 1)) and torch.equal(kv[1][1][0], P[:, 3].transpose(0, 1))
    assert set(t.trainable_names()) == {"prefix_encoder.embedding.weight", "prefix_encoder.transform.0.weight",
                                        "prefix_encoder.transform.0.bias", "prefix_encoder.transform.2.weight",
                                        "prefix_encoder.transform.2.bias"}


def test_saved_adapter_holds_the_resulting_prefixes(load_tiny, tmp_path):
    bb = load_tiny("decoder")
    t = apply_method(bb, "prefix", {"num_virtual_tokens": 4, "encoder_hidden_size": 16})
    perturb(t, scale=0.3)
    save_adapter(tmp_path / "a", t)
    tensors = load_file(tmp_path / "a" / "adapter_model.safetensors")
    assert list(tensors) == ["prompt_embeddings"]
    assert torch.equal(tensors["prompt_embeddings"], t.prefix_encoder.prefixes().detach())
    # the file's size (the prompts, not the MLP that made them)
    assert adapter_bytes(t) == (tmp_path / "a" / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes(t) < tensors["prompt_embeddings"].numel() * 4 + 200
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    meta = json.loads((tmp_path / "a" / "adaptlab.json").read_text())
    assert cfg["peft_type"] == "PREFIX_TUNING" and cfg["prefix_projection"] is False
    assert cfg["num_layers"] == 2 and cfg["num_attention_heads"] == 2 and cfg["token_dim"] == 16
    assert meta["config"]["prefix_projection"] is False
    _, loaded = load_adapter(tmp_path / "a")
    assert not hasattr(loaded.prefix_encoder, "transform")
    t.eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(t(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_padding_and_batching_do_not_change_a_row(tiny_decoder):
    t = apply_method(tiny_decoder, "prefix", {"num_virtual_tokens": 3}).eval()
    perturb(t, scale=0.3)
    ids = torch.tensor([[0, 0, 11, 12, 13], [21, 22, 23, 24, 25]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        both = t(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        one = t(input_ids=ids[:1, 2:]).logits
    assert torch.allclose(both[0, 2:], one[0], atol=1e-5)


def test_encoder_prefix_respects_padding(tiny_encoder):
    from adaptlab.tasks import load_task

    t = apply_method(tiny_encoder, "prefix", {"num_virtual_tokens": 3}, load_task("reviews")).eval()
    perturb(t, scale=0.3)
    tok = tiny_encoder.tokenizer(["a great movie with a fine cast", "awful"], padding=True, return_tensors="pt")
    one = tiny_encoder.tokenizer(["awful"], return_tensors="pt")
    with torch.no_grad():
        both = t.classify(tok["input_ids"], tok["attention_mask"])
        alone = t.classify(one["input_ids"], one["attention_mask"])
        plain = apply_method(tiny_encoder, "head", {}, load_task("reviews")).eval()
        plain.head_classifier.load_state_dict(t.head_classifier.state_dict())
        base = plain.classify(one["input_ids"], one["attention_mask"])
    assert torch.allclose(both[1], alone[0], atol=1e-5)
    assert (alone - base).abs().max() > 1e-4                                  # the prefixes act on the encoder


def test_cached_generation_sees_the_prefix(tiny_decoder):
    bb = sharpen(tiny_decoder)
    t = apply_method(bb, "prefix", {"num_virtual_tokens": 4})
    perturb(t)
    check_cached_generation(bb, t)


@pytest.mark.real
@pytest.mark.parametrize("method", ["prefix", "prompt-tuning", "p-tuning", "p-tuning-v2", "adapter"])
def test_real_decoder_cached_generation(method):
    """The default decoder (grouped-query attention, 3 key/value heads of 64): each method's
    freshly initialized adapter changes greedy decoding, and the engine's cached decoding equals
    the no-cache recompute."""
    from adaptlab.models import load_backbone

    bb = load_backbone("smollm2-135m-instruct")
    torch.manual_seed(0)
    t = apply_method(bb, method, {"num_virtual_tokens": 8} if method != "adapter" else {})
    if method == "adapter":
        perturb(t, scale=0.05)
    check_cached_generation(bb, t, prompt="Review: a great movie\nSentiment:", steps=5)
