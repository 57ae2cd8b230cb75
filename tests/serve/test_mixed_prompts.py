"""Prompt-type adapters in the mixed batch (serve.mixed): prefix / P-tuning v2 rows (per-layer
keys and values before the row's tokens) and prompt tuning / P-tuning rows (soft tokens before
them) share one forward with LoRA, IA3, bottleneck and base rows, and every row equals its adapter
served alone."""

from __future__ import annotations

import pytest

from adaptlab.engine import make_lm
from adaptlab.serve.mixed import Mixer
from adaptlab.tuning import apply_method, make_config
from tests.conftest import make_tiny_decoder
from tests.serve.harness import engines

# different numbers of virtual tokens per prompt-type adapter, both kinds (soft tokens / prefix KV) twice
SPECS = [("lora", {"r": 4}), ("ia3", {}), ("adapter", {"m": 8}),
         ("prompt-tuning", {"num_virtual_tokens": 3, "init": "random"}), ("prefix", {"num_virtual_tokens": 5}),
         ("p-tuning", {"num_virtual_tokens": 2}), ("p-tuning-v2", {"num_virtual_tokens": 4}),
         ("prefix", {"num_virtual_tokens": 1, "prefix_projection": False})]
PROMPTS = ["the cat sat on", "Review: a great movie, really the best one", "0 1 2 3", "The battery is",
           "Question: Tom has five apples and", "a dog", "Let's think step by step about", "Sentiment: positive",
           "x", "one two three four five six seven"]


@pytest.fixture(scope="module")
def setup():
    bb = make_tiny_decoder()
    tuned, lms = engines(bb, SPECS)
    return bb, tuned, lms


def _rows(lms, n):
    return [lms[(i * 2) % len(lms)] for i in range(n)]    # every engine, in no particular order


def test_prompt_type_adapters_mix(setup):
    bb, tuned, lms = setup
    mixer = Mixer()
    assert all(mixer.mixable(lm) for lm in lms)
    mlm, slots = mixer.engine(_rows(lms, len(PROMPTS)))
    assert mixer.builds == 1 and len(set(slots)) == len(lms)
    assert len(mlm.rows.prompts) == 5


@pytest.mark.parametrize("n,stop", [(1, []), (2, ["e"])])
def test_mixed_prompt_rows_generate_as_alone(setup, n, stop):
    bb, tuned, lms = setup
    row_lms = _rows(lms, len(PROMPTS))
    mlm, slots = Mixer().engine(row_lms)
    got = mlm.generate_mixed(PROMPTS, slots, n=n, max_new_tokens=8, temperature=0.0, stop=stop)
    reasons = mlm.finish_reasons
    for i, (p, lm) in enumerate(zip(PROMPTS, row_lms)):
        want = lm.generate([p], n=n, max_new_tokens=8, temperature=0.0, stop=stop)
        assert got[i] == want[0], (i, lm.model is bb.model or lm.model.method, got[i], want[0])
        assert reasons[i] == lm.finish_reasons[0]
    # the prompts do change the output: a prompt row differs from the base on the same prompt
    base = lms[0].generate(PROMPTS, n=n, max_new_tokens=8, temperature=0.0, stop=stop)
    assert any(got[i] != base[i] for i, lm in enumerate(row_lms) if getattr(lm.model, "prompt", None) is not None)


def test_mixed_prompt_rows_score_as_alone(setup):
    bb, tuned, lms = setup
    row_lms = _rows(lms, len(PROMPTS))
    options = [[" yes", " no", " the end of it"] for _ in PROMPTS]
    mlm, slots = Mixer().engine(row_lms)
    got = mlm.score_mixed(PROMPTS, options, slots)
    worst = 0.0
    for i, (p, lm) in enumerate(zip(PROMPTS, row_lms)):
        want = lm.score([p], [options[i]])[0]
        for g, w in zip(got[i], want):
            worst = max(worst, abs(g.logprob - w.logprob))
            assert len(g.token_logprobs) == len(w.token_logprobs)
    assert worst < 1e-4


def test_what_still_does_not_mix():
    bb = make_tiny_decoder()
    mixer = Mixer()
    pre = apply_method(bb, "prefix", make_config("prefix", {"num_virtual_tokens": 2}))
    assert not mixer.mixable(make_lm(bb, model=pre.train()))          # training-mode: prefix dropout
    pre2 = apply_method(bb, "prefix", make_config("prefix", {"num_virtual_tokens": 2})).eval()
    assert mixer.mixable(make_lm(bb, model=pre2))
    pt = apply_method(bb, "prompt-tuning", make_config("prompt-tuning", {"num_virtual_tokens": 2})).eval()
    pt.token_ids = [1]                                                # a tokenizer with added tokens
    assert not mixer.mixable(make_lm(bb, model=pt))


@pytest.mark.parametrize("continuous", [True, False])
def test_server_groups_prompt_and_weight_adapters_into_one_mix(setup, tmp_path, continuous):
    """Saved and loaded (the registry's path), every adapter's requests join one mixed group and
    each gets what it gets alone (continuous: they join the running decode loop in a few prefills;
else: a few groups)."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    import time
    from concurrent.futures import ThreadPoolExecutor

    from tests.serve.harness import hold_worker, running_server, saved_adapters_app

    bb, tuned, _ = setup
    app, reg, models = saved_adapters_app(bb, tuned, tmp_path, max_batch=32, continuous=continuous)
    bodies = [{"model": models[i % len(models)], "prompt": p, "max_tokens": 6, "temperature": 0}
              for i, p in enumerate(PROMPTS * 2)]
    with running_server(app) as base:
        url = f"{base}/v1/completions"
        sched = app.state.scheduler
        assert all(sched.mixer.mixable(reg.get(reg.resolve(n))) for n in models)
        groups = []
        with httpx.Client(timeout=60) as c:
            alone = [c.post(url, json=b).json()["choices"][0]["text"] for b in bodies]
            gate, release = hold_worker(sched, groups)
            with ThreadPoolExecutor(len(bodies)) as pool:
                futs = [pool.submit(c.post, url, json=b) for b in bodies]
                time.sleep(1.0)
                gate.set()
                together = [f.result().json()["choices"][0]["text"] for f in futs]
            release()
        assert together == alone
        # the worker may take the first arrivals before the rest are queued: at most a few groups,
        # not one per prompt-type adapter
        assert sum(groups) == len(bodies) and len(groups) <= 3, groups
