"""Fixtures for tests/tuning (import them: `from tuning_fixtures import load_tiny, tiny_dirs`): tiny
backbones saved to folders, so adapters can name (and reload) their base by path."""

from __future__ import annotations

import pytest


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
