"""Fixtures for tests/tuning (import them: `from tuning_fixtures import load_tiny, tiny_dirs`): tiny
backbones saved to folders, so adapters can name (and reload) their base by path."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def tiny_dirs(tiny_decoder, tiny_encoder, tmp_path):
    out = {}
    for kind, bb in (("decoder", tiny_decoder), ("encoder", tiny_encoder)):
        d = tmp_path / "tiny_models" / kind
        bb.model.save_pretrained(d)
        bb.tokenizer.save_pretrained(d)
        out[kind] = str(d)
    return out


@pytest.fixture
def load_tiny(tiny_dirs):
    from adaptlab.models import load_backbone

    return lambda kind: load_backbone(tiny_dirs[kind])


# shared checks of the prompt-type and adapter tests

def sharpen(bb):
    """The tiny fixture's projections at std 1/sqrt(fan_in) (not 0.02), so attention depends on
    content and a prompt visibly changes greedy decoding."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in bb.model.named_parameters():
            if n.endswith("proj.weight"):
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return bb


def perturb(tuned, scale=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in tuned.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def greedy_no_cache(tuned, ids, steps):
    """Reference: recompute the whole sequence at every step, no KV cache."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(tuned(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1].argmax()))
    return seq[len(ids):]


def check_cached_generation(bb, tuned, prompt="Review: a great movie\nSentiment:", steps=8):
    """Generation through the engine (KV cache on) sees the adapter: it equals a no-cache greedy
    recompute with the adapter and differs from the base model's."""
    from adaptlab.engine.local import LocalLM

    tuned.eval()
    lm = LocalLM(bb, model=tuned)
    ref = greedy_no_cache(tuned, lm.encode(prompt), steps)
    ref = ref[: next((i for i, t in enumerate(ref) if t in lm.eos_ids), len(ref))]   # the engine stops at EOS
    out = lm.generate([prompt], max_new_tokens=steps, stop=[])[0][0]
    assert out == bb.tokenizer.decode(ref, skip_special_tokens=True)
    assert out != LocalLM(bb).generate([prompt], max_new_tokens=steps, stop=[])[0][0]
