"""P-tuning v2 (Liu et al. 2022): deep prompts at every layer, no reparameterization by default,
a linear head for classification."""

from __future__ import annotations

import json

import pytest
import torch

from adaptlab.errors import ConfigError
from adaptlab.tasks import load_task
from adaptlab.tuning import apply_method, make_config
from adaptlab.tuning.io import load_adapter, save_adapter
from tuning_fixtures import load_tiny, tiny_dirs  # noqa: F401  (fixtures)
from tuning_fixtures import check_cached_generation, perturb, sharpen


def test_config_range_checks():
    for bad in ({"num_virtual_tokens": "0"}, {"prefix_dropout": "-0.1"}, {"classifier": "svm"}):
        with pytest.raises(ConfigError):
            make_config("p-tuning-v2", bad)


def test_deep_prompts_without_reparameterization(tiny_decoder):
    t = apply_method(tiny_decoder, "p-tuning-v2", {"num_virtual_tokens": 6})
    assert t.trainable_names() == ["deep_prompt_encoder.embedding.weight"]
    assert t.deep_prompt_encoder.embedding.weight.shape == (6, 2 * 2 * 16)   # [n, 2 L H_kv d]
    assert t.head is None                                                     # decoder: the verbalizer
    t2 = apply_method(tiny_decoder, "p-tuning-v2", {"num_virtual_tokens": 6, "prefix_projection": True})
    assert hasattr(t2.deep_prompt_encoder, "transform")


def test_heads(tiny_decoder, tiny_encoder):
    task = load_task("reviews")
    enc = apply_method(tiny_encoder, "p-tuning-v2", {}, task)
    assert enc.head is not None
    dec = apply_method(tiny_decoder, "p-tuning-v2", {"classifier": "head"}, task)
    assert dec.head is not None and dec.head.pooling == "last"
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    assert dec.eval().classify(ids, torch.ones_like(ids)).shape == (2, len(task.labels))
    with pytest.raises(ConfigError):
        apply_method(tiny_encoder, "p-tuning-v2", {"classifier": "verbalizer"}, task)


def test_prefix_dropout_only_while_training(tiny_decoder):
    t = apply_method(tiny_decoder, "p-tuning-v2", {"num_virtual_tokens": 4, "prefix_dropout": 0.5})
    ids = torch.tensor([[5, 6, 7]])
    t.eval()
    with torch.no_grad():
        assert torch.equal(t(input_ids=ids).logits, t(input_ids=ids).logits)
    t.train()
    torch.manual_seed(0)
    with torch.no_grad():
        a = t(input_ids=ids).logits
        b = t(input_ids=ids).logits
    assert not torch.equal(a, b)


def test_saved_with_own_peft_type_and_head(load_tiny, tmp_path):
    task = load_task("reviews")
    bb = load_tiny("encoder")
    t = apply_method(bb, "p-tuning-v2", {"num_virtual_tokens": 4, "prefix_projection": True,
                                         "encoder_hidden_size": 8}, task)
    save_adapter(tmp_path / "a", t)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "ADAPTLAB_P_TUNING_V2" and cfg["prefix_projection"] is False
    _, loaded = load_adapter(tmp_path / "a")
    assert sorted(loaded.trainable_names()) == ["deep_prompt_encoder.embedding.weight", "head_classifier.linear.bias",
                                                "head_classifier.linear.weight"]
    t.eval()
    ids = torch.tensor([bb.tokenizer("a great movie")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(t.classify(ids, torch.ones_like(ids)), loaded.classify(ids, torch.ones_like(ids)))


def test_cached_generation_sees_the_deep_prompts(tiny_decoder):
    bb = sharpen(tiny_decoder)
    t = apply_method(bb, "p-tuning-v2", {"num_virtual_tokens": 4})
    perturb(t)
    check_cached_generation(bb, t)
