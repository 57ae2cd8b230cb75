"""Prompt tuning (Lester et al. 2021): soft tokens prepended to the input embeddings; the three
initializations; encoder and decoder; cached generation sees the prompt."""

from __future__ import annotations

import pytest
import torch

from adaptlab.errors import ConfigError
from adaptlab.tasks import load_task
from adaptlab.tuning import apply_method, make_config

from tuning_fixtures import check_cached_generation, perturb, sharpen


def test_config_range_checks():
    with pytest.raises(ConfigError):
        make_config("prompt-tuning", {"num_virtual_tokens": "0"})
    with pytest.raises(ConfigError):
        make_config("prompt-tuning", {"init_text": "x"})      # only with init=text


def test_vocab_init_uses_real_token_embeddings(tiny_decoder):
    t = apply_method(tiny_decoder, "prompt-tuning", {"num_virtual_tokens": 7})
    P = t.prompt_encoder.prompt_embeddings
    W = tiny_decoder.model.get_input_embeddings().weight
    assert P.shape == (7, W.shape[1]) and P.requires_grad
    assert all(any(torch.equal(row, w) for w in W) for row in P)
    assert P.data_ptr() != W.data_ptr()                                      # a copy: training never touches W


def test_text_init_repeats_the_text(tiny_decoder):
    t = apply_method(tiny_decoder, "prompt-tuning", {"num_virtual_tokens": 5, "init": "text", "init_text": "great"})
    ids = tiny_decoder.tokenizer("great", add_special_tokens=False)["input_ids"]
    W = tiny_decoder.model.get_input_embeddings().weight
    want = W[torch.tensor((ids * 5)[:5])]
    assert torch.equal(t.prompt_encoder.prompt_embeddings.detach(), want)


def test_text_init_defaults_to_the_task_instruction_or_refuses(tiny_decoder):
    task = load_task("reviews")
    if task.instruction:
        t = apply_method(tiny_decoder, "prompt-tuning", {"init": "text"}, task)
        assert t.n_virtual == 20
    with pytest.raises(ConfigError):
        apply_method(tiny_decoder, "prompt-tuning", {"init": "text"})


def test_random_init_matches_the_embedding_scale(tiny_decoder):
    torch.manual_seed(0)
    t = apply_method(tiny_decoder, "prompt-tuning", {"num_virtual_tokens": 200, "init": "random"})
    std = tiny_decoder.model.get_input_embeddings().weight.std().item()
    assert abs(t.prompt_encoder.prompt_embeddings.std().item() / std - 1) < 0.15


def test_only_the_prompt_trains_and_positions_are_stripped(tiny_decoder):
    t = apply_method(tiny_decoder, "prompt-tuning", {"num_virtual_tokens": 4})
    assert t.trainable_names() == ["prompt_encoder.prompt_embeddings"]
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    out = t(input_ids=ids).logits
    assert out.shape == (1, 5, len(tiny_decoder.tokenizer))
    # the soft prompt is exactly "virtual tokens before the input": same as feeding the embeddings
    emb = torch.cat([t.prompt_encoder.prompt_embeddings[None], tiny_decoder.model.get_input_embeddings()(ids)], 1)
    ref = tiny_decoder.model(inputs_embeds=emb).logits[:, 4:]
    assert torch.allclose(out, ref, atol=1e-5)


def test_encoder_with_head(tiny_encoder):
    task = load_task("reviews")
    t = apply_method(tiny_encoder, "prompt-tuning", {"num_virtual_tokens": 3}, task)
    assert t.head is not None
    names = t.trainable_names()
    assert "prompt_encoder.prompt_embeddings" in names and any(n.startswith("head_") for n in names)
    tok = tiny_encoder.tokenizer(["a great movie", "awful"], padding=True, return_tensors="pt")
    t.eval()
    logits = t.classify(tok["input_ids"], tok["attention_mask"])
    assert logits.shape == (2, len(task.labels))
    # padding does not leak: the short row scores the same alone
    one = tiny_encoder.tokenizer(["awful"], return_tensors="pt")
    assert torch.allclose(logits[1], t.classify(one["input_ids"], one["attention_mask"])[0], atol=1e-5)


def test_cached_generation_sees_the_prompt(tiny_decoder):
    bb = sharpen(tiny_decoder)
    t = apply_method(bb, "prompt-tuning", {"num_virtual_tokens": 4, "init": "random"})
    perturb(t)
    check_cached_generation(bb, t)
