"""HeadLM: a tuned classifier behind the LM interface."""

from __future__ import annotations

import math

import pytest
import torch

from adaptlab.engine import make_lm
from adaptlab.engine.head import HeadLM
from adaptlab.engine.embedding import EmbeddingLM
from adaptlab.engine.local import LocalLM
from adaptlab.errors import ModelError
from adaptlab.tasks import load_task
from adaptlab.tuning import apply_method

CTX = ["Review: a great movie\nSentiment:", "Review: an awful boring film with a fine cast\nSentiment:"]


@pytest.fixture(params=["encoder", "decoder"])
def tuned_head(request, tiny_encoder, tiny_decoder):
    bb = tiny_encoder if request.param == "encoder" else tiny_decoder
    tuned = apply_method(bb, "head" if request.param == "decoder" else "lora", {}, load_task("reviews"))
    with torch.no_grad():
        tuned.head_classifier.linear.weight.normal_(0, 1.0)
    return bb, tuned.eval()


def test_make_lm_routes_heads(tuned_head, tiny_decoder, tiny_encoder):
    bb, tuned = tuned_head
    assert isinstance(make_lm(bb, model=tuned), HeadLM)
    assert isinstance(make_lm(tiny_decoder, model=apply_method(tiny_decoder, "lora", {})), LocalLM)
    assert isinstance(make_lm(tiny_encoder), EmbeddingLM)


def test_score_is_head_log_softmax_in_option_order(tuned_head):
    bb, tuned = tuned_head
    lm = HeadLM(bb, tuned, batch_size=1)
    got = lm.score(CTX, [[" negative", " positive"], [" positive", " negative"]])
    for row in got:
        assert abs(sum(math.exp(s.logprob) for s in row) - 1) < 1e-5
    assert got[1][0].logprob != got[1][1].logprob
    ids = bb.tokenizer(CTX[0])["input_ids"] if tuned.kind == "encoder" else lm._encode(CTX[0])
    with torch.no_grad():
        ref = torch.log_softmax(tuned.classify(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)), -1)[0]
    assert abs(got[0][0].logprob - float(ref[0])) < 1e-5 and abs(got[0][1].logprob - float(ref[1])) < 1e-5
    # batching with padding gives the same numbers as one at a time
    batched = HeadLM(bb, tuned, batch_size=8).score(CTX, [[" negative", " positive"]] * 2)
    assert abs(batched[1][1].logprob - got[1][0].logprob) < 1e-5
    assert lm.cost.calls == 2 and lm.cost.forwards == 2


def test_unknown_option_and_generate_refused(tuned_head):
    bb, tuned = tuned_head
    lm = HeadLM(bb, tuned)
    with pytest.raises(ModelError, match="not a label"):
        lm.score(CTX[:1], [[" neutral", " positive"]])
    with pytest.raises(ModelError, match="cannot generate"):
        lm.generate(["hi"])
