"""Adapter state is what a method saves, separate from ``requires_grad``; ``disable_adapters()``
runs the base model through the same tuned object; ``init_from`` starts a run from an adapter."""

from __future__ import annotations

import pytest
import torch

from adaptlab.errors import AdapterError, ConfigError
from adaptlab.tasks import load_task
from adaptlab.tuning import METHODS, apply_method
from adaptlab.tuning.io import init_from, load_adapter, save_adapter

KINDS = ("decoder", "encoder")


def _moved(tuned):
    """Every method parameter pushed away from its initial value, so each changes the output."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in tuned.named_parameters():
            if tuned.owns(n) and "head_" not in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)


def _hidden(model, ids):
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("full", "head")])
def test_disable_adapters_gives_the_base_through_the_same_object(method, kind, tiny_decoder, tiny_encoder):
    bb = tiny_decoder if kind == "decoder" else tiny_encoder
    if kind not in getattr(METHODS[method].module, "KINDS", KINDS):
        pytest.skip(f"{method} supports {METHODS[method].module.KINDS} only (tests/tuning/test_matrix.py checks the refusal)")
    tuned = apply_method(bb, method, {}, load_task("reviews")).eval()
    _moved(tuned)
    ids = torch.tensor([bb.tokenizer("Review: a great movie with a fine cast\nSentiment:")["input_ids"]])
    base = _hidden(bb.model, ids)
    on = _hidden(tuned, ids)
    assert on.shape == base.shape and not torch.allclose(on, base, atol=1e-4)
    n_params = sum(p.numel() for p in tuned.parameters())
    with tuned.disable_adapters():
        off = _hidden(tuned, ids)
        assert sum(p.numel() for p in tuned.parameters()) == n_params          # no second copy
    assert torch.allclose(off, base, atol=1e-5)
    assert torch.equal(_hidden(tuned, ids), on)                                # and back on


def test_disable_adapters_refuses_full_and_merged(tiny_decoder):
    task = load_task("reviews")
    with pytest.raises(ConfigError, match="base weights"):
        with apply_method(tiny_decoder, "full", {}, task).disable_adapters():
            pass
    t = apply_method(tiny_decoder, "lora", {}, task)
    METHODS["lora"].module.merge(t)
    with pytest.raises(ConfigError, match="merged"):
        with t.disable_adapters():
            pass


def test_saved_state_does_not_follow_requires_grad(tiny_decoder, tmp_path):
    """A method's tensors are saved and loaded though no gradient trains them (black-box methods)."""
    task = load_task("reviews")
    t = apply_method(tiny_decoder, "lora", {}, task)
    _moved(t)
    for p in t.parameters():
        p.requires_grad_(False)
    assert t.trainable_state() == {} and len(t.adapter_state()) == 8         # 2 layers x q,v x A,B
    save_adapter(tmp_path / "a", t)
    _, back = load_adapter(tmp_path / "a", backbone=tiny_decoder)
    assert all(torch.equal(back.adapter_state()[k], v) for k, v in t.adapter_state().items())


def test_init_from_starts_from_the_adapter(tiny_decoder, tmp_path):
    task = load_task("reviews")
    t = apply_method(tiny_decoder, "lora", {"r": 4}, task)
    _moved(t)
    save_adapter(tmp_path / "a", t)
    fresh = apply_method(tiny_decoder, "lora", {"r": 4}, task)
    init_from(fresh, tmp_path / "a")
    assert all(torch.equal(fresh.adapter_state()[k], v) for k, v in t.adapter_state().items())
    with pytest.raises(AdapterError, match="same method|method being tuned"):
        init_from(apply_method(tiny_decoder, "ia3", {}, task), tmp_path / "a")
    with pytest.raises(AdapterError, match="has shape"):
        init_from(apply_method(tiny_decoder, "lora", {"r": 2}, task), tmp_path / "a")
