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


@pytest.mark.parametrize("keep", [False, True])
def test_encoder_positions_with_deep_prompts(tiny_encoder, keep):
    """keep_positions=True: the real tokens keep positions 0..L-1 (BERT's absolute positions count
    the cache); False: they start after the n prefixes, as with a plain cache in Hugging Face."""
    from transformers import DynamicCache

    task = load_task("reviews")
    t = apply_method(tiny_encoder, "p-tuning-v2", {"num_virtual_tokens": 5, "keep_positions": str(keep).lower()}, task)
    perturb(t)
    t.eval()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = t.body(input_ids=ids, attention_mask=mask)
        cache = DynamicCache(ddp_cache_data=list(t.deep_prompt_encoder.past_key_values(2)), config=t.model.config)
        kw = {"position_ids": torch.arange(4).expand(2, -1)} if keep else {}
        ref = t.model(input_ids=ids, attention_mask=torch.ones(2, 9, dtype=torch.long), **{t.cache_arg: cache}, **kw)
        cache = DynamicCache(ddp_cache_data=list(t.deep_prompt_encoder.past_key_values(2)), config=t.model.config)
        shifted = t.model(input_ids=ids, attention_mask=torch.ones(2, 9, dtype=torch.long), **{t.cache_arg: cache})
    assert torch.allclose(ours, ref.last_hidden_state, atol=1e-6)
    assert keep == (not torch.allclose(ours, shifted.last_hidden_state, atol=1e-4))


def test_keep_positions_is_saved(load_tiny, tmp_path):
    task = load_task("reviews")
    bb = load_tiny("encoder")
    t = apply_method(bb, "p-tuning-v2", {"num_virtual_tokens": 3, "keep_positions": "true"}, task)
    save_adapter(tmp_path / "a", t)
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["keep_positions"] is True
    _, loaded = load_adapter(tmp_path / "a")
    assert loaded.deep_prompt_encoder.keep_positions is True


def test_init_from_real_tokens_activations(tiny_decoder):
    """init=text: the prompts are the frozen model's own keys/values of the text's tokens, so the
    tuned model reads the input exactly as the plain model reads text + input."""
    text_ids = [11, 12, 13, 14]
    text = tiny_decoder.tokenizer.decode(text_ids)
    n = 6                                                        # the text repeated to n tokens
    t = apply_method(tiny_decoder, "p-tuning-v2", {"num_virtual_tokens": n, "init": "text", "init_text": text,
                                                    "prefix_dropout": "0"}).eval()
    ids_text = torch.tensor([tiny_decoder.tokenizer(text, add_special_tokens=False)["input_ids"]])
    full_text = (ids_text[0].tolist() * n)[:n]
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        ours = t(input_ids=ids).logits
        plain = tiny_decoder.model(input_ids=torch.tensor([full_text + [5, 6, 7]])).logits[:, n:]
    assert torch.allclose(ours, plain, atol=1e-5)
    rnd = apply_method(tiny_decoder, "p-tuning-v2", {"num_virtual_tokens": n, "prefix_dropout": "0"}).eval()
    with torch.no_grad():
        assert not torch.allclose(rnd(input_ids=ids).logits, plain, atol=1e-3)


def test_init_options_checked_and_not_saved(tiny_encoder, load_tiny, tmp_path):
    with pytest.raises(ConfigError):
        make_config("p-tuning-v2", {"init": "text", "prefix_projection": "true"})
    with pytest.raises(ConfigError):
        make_config("p-tuning-v2", {"init_text": "hello"})                   # init_text without init=text
    with pytest.raises(ConfigError):
        apply_method(tiny_encoder, "p-tuning-v2", {"init": "text"})           # no text, no task instruction
    task = load_task("reviews")
    bb = load_tiny("encoder")
    t = apply_method(bb, "p-tuning-v2", {"num_virtual_tokens": 3, "init": "vocab"}, task)
    save_adapter(tmp_path / "a", t)
    _, loaded = load_adapter(tmp_path / "a")                                  # loads the trained prompts as they are
    assert torch.equal(loaded.deep_prompt_encoder.embedding.weight, t.deep_prompt_encoder.embedding.weight)


def test_pooling_reaches_the_head_and_is_saved(load_tiny, tmp_path):
    task = load_task("reviews")
    bb = load_tiny("encoder")
    assert apply_method(bb, "p-tuning-v2", {}, task).head.pooling == "mean"
    t = apply_method(bb, "p-tuning-v2", {"num_virtual_tokens": 3, "pooling": "cls"}, task)
    assert t.head.pooling == "cls"
    save_adapter(tmp_path / "a", t)
    _, loaded = load_adapter(tmp_path / "a")
    assert loaded.head.pooling == "cls"
    with pytest.raises(ConfigError):
        make_config("p-tuning-v2", {"pooling": "max"})


def test_hidden_dropout_sets_the_copy_not_the_users_model(tiny_encoder, load_tiny, tmp_path):
    task = load_task("reviews")
    ps = [m.p for m in tiny_encoder.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert ps and all(p == 0.1 for p in ps)                                   # BERT's own: hidden and attention
    t = apply_method(tiny_encoder, "p-tuning-v2", {"num_virtual_tokens": 3, "prefix_dropout": "0",
                                                    "head_dropout": "0", "hidden_dropout": "0"}, task)
    assert all(m.p == 0.0 for m in t.model.modules() if isinstance(m, torch.nn.Dropout))
    assert [m.p for m in tiny_encoder.model.modules() if isinstance(m, torch.nn.Dropout)] == ps
    ids = torch.tensor([[5, 6, 7, 8]])
    t.train()                                        # nothing left to drop: training mode is deterministic
    with torch.no_grad():
        assert torch.equal(t.classify(ids, torch.ones_like(ids)), t.classify(ids, torch.ones_like(ids)))
    own = apply_method(tiny_encoder, "p-tuning-v2", {"num_virtual_tokens": 3, "prefix_dropout": "0",
                                                      "head_dropout": "0"}, task).train()
    torch.manual_seed(0)
    with torch.no_grad():
        assert not torch.equal(own.classify(ids, torch.ones_like(ids)), own.classify(ids, torch.ones_like(ids)))
    bb = load_tiny("encoder")
    save_adapter(tmp_path / "a", apply_method(bb, "p-tuning-v2", {"num_virtual_tokens": 3, "hidden_dropout": "0"}, task))
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["hidden_dropout"] == 0.0
    _, loaded = load_adapter(tmp_path / "a")
    assert loaded.method_config.hidden_dropout == 0.0
    with pytest.raises(ConfigError):
        make_config("p-tuning-v2", {"hidden_dropout": "1.5"})
