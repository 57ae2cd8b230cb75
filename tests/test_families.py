"""Every claim of the ONE family table (``adaptlab.families``) checked on a tiny random model of
that family: default targets match layers, a ``linear_head`` family's logits are h W^T, a
``plain_attention`` family scores the same through the shared-prefix path as without it."""

from __future__ import annotations

import pytest
import torch

from adaptlab.families import FAMILIES, ENCODER_TYPES
from conftest import _bpe_tokenizer

SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, max_position_embeddings=256)
DISTIL = dict(dim=32, hidden_dim=64, n_layers=2, n_heads=4, max_position_embeddings=256)
TOK = _bpe_tokenizer()


def _tiny(model_type: str):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from adaptlab.models import Backbone

    kind = FAMILIES[model_type].kind
    sizes = DISTIL if model_type == "distilbert" else SIZES
    if model_type == "modernbert":
        sizes = {**SIZES, "global_attn_every_n_layers": 1}
    cfg = AutoConfig.for_model(model_type, vocab_size=len(TOK), pad_token_id=TOK.pad_token_id, **sizes)
    if kind == "decoder":
        cfg.eos_token_id = cfg.bos_token_id = TOK.eos_token_id
        cfg.tie_word_embeddings = True
        if "sliding_attention" not in (getattr(cfg, "layer_types", None) or []):
            cfg.sliding_window = None               # gemma3 keeps its window: its layers need one
    torch.manual_seed(0)
    model = (AutoModelForCausalLM if kind == "decoder" else AutoModel).from_config(cfg).eval()
    return Backbone(model=model, tokenizer=TOK, kind=kind, name=f"tiny-{model_type}", source="test")


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_family_row_holds(model_type):
    from adaptlab.tasks import load_task
    from adaptlab.tuning import apply_method, find_targets
    from adaptlab.tuning.adapter import sublayer_names

    fam = FAMILIES[model_type]
    bb = _tiny(model_type)
    assert (model_type in ENCODER_TYPES) == (fam.kind == "encoder")
    task = load_task("reviews")
    if fam.lora:
        assert find_targets(bb.model, fam.lora), "lora defaults match no linear layer"
        apply_method(bb, "lora", {}, task)
    if fam.ia3:
        names = find_targets(bb.model, fam.ia3)
        assert names and set(fam.ia3_ff) <= set(fam.ia3)
        assert any(n.endswith(f) for n in names for f in fam.ia3_ff), "no feed-forward target"
        apply_method(bb, "ia3", {}, task)
    if fam.sublayers:
        houlsby, ffn = sublayer_names(bb.model, "houlsby"), sublayer_names(bb.model, "ffn")
        assert len(houlsby) == 2 * len(ffn) == 2 * 2, (houlsby, ffn)         # 2 layers
        apply_method(bb, "adapter", {}, task)


DECODERS = sorted(k for k, f in FAMILIES.items() if f.kind == "decoder")


@pytest.mark.parametrize("model_type", DECODERS)
def test_linear_head_and_plain_attention_claims(model_type):
    from adaptlab.engine import decoding, shared_prefix
    from adaptlab.engine.local import LocalLM

    fam = FAMILIES[model_type]
    bb = _tiny(model_type)
    ids = torch.tensor([TOK("Review: a great movie with a fine cast\nSentiment:")["input_ids"]])
    with torch.no_grad():
        out = bb.model(input_ids=ids, output_hidden_states=True)
    w = decoding.linear_head(bb.model)
    assert (w is not None) == fam.linear_head
    if w is not None:
        z = decoding.project(w, out.hidden_states[-1][:, -1, :])
        assert torch.allclose(z, out.logits[:, -1, :], atol=1e-5)
    assert shared_prefix.supported(bb.model) == fam.plain_attention
    if fam.plain_attention:
        demos = "Review: a great movie\nSentiment: positive\n\nReview: an awful boring film\nSentiment: negative\n\n"
        ctxs = [demos + f"Review: {t}\nSentiment:" for t in ("a fine cast", "boring", "great price")]
        opts = [[" positive", " negative"]] * 3
        a = LocalLM(bb, share_prefix=True).score(ctxs, opts)
        b = LocalLM(bb, share_prefix=False).score(ctxs, opts)
        for ra, rb in zip(a, b):
            for x, y in zip(ra, rb):
                assert abs(x.logprob - y.logprob) < 1e-4
