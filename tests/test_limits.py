"""Inputs longer than the model's context are cut from the side the task says, never silently:
the result's cost counts the truncated inputs."""

import pytest

from adaptlab.engine.local import LocalLM
from adaptlab.evaluate import evaluate
from adaptlab.prompting import make_strategy
from adaptlab.tasks import load_task


@pytest.mark.parametrize("side", ["left", "right"])
def test_long_inputs_are_truncated_and_counted(tiny_decoder, side):
    task = load_task("reviews")
    task.truncate = side
    long = {"text": "The price is great. " * 40 + "I'm keeping it.", "label": "positive"}
    short = {"text": "I'm keeping it.", "label": "positive"}
    lm = LocalLM(tiny_decoder, max_length=24, truncate=side)
    res = evaluate(lm, task, make_strategy("zero-shot"), [long, short, long])
    assert res.cost["truncated"] == 2

    # what was scored is the prompt cut on that side, the option kept whole
    prompt = task.render(long)
    ctx, cont = lm._encode_pair(prompt, " positive")
    room = 24 - len(cont)
    kept = ctx[-room:] if side == "left" else ctx[:room]
    ref = LocalLM(tiny_decoder, max_length=4096)
    text = tiny_decoder.tokenizer.decode(kept)
    want = ref.score([text], [[" positive"]])[0][0].logprob
    got = lm.score([prompt], [[" positive"]])[0][0].logprob
    assert got == pytest.approx(want, abs=1e-4)


def test_short_inputs_not_counted(tiny_decoder):
    task = load_task("reviews")
    res = evaluate(LocalLM(tiny_decoder), task, make_strategy("zero-shot"), [{"text": "fine", "label": "positive"}])
    assert res.cost["truncated"] == 0
