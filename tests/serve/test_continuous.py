"""Continuous batching (serve.continuous): requests join the running decode loop between steps and
leave it as they finish; every request still gets what its adapter gives it alone."""

from __future__ import annotations

import copy
import threading
import time

import pytest

from adaptlab.serve import continuous
from adaptlab.serve.scheduler import Job, Scheduler
from tests.conftest import make_tiny_decoder
from tests.serve.harness import engines

SPECS = [("lora", {"r": 4}), ("ia3", {}), ("adapter", {"m": 8}), ("prompt-tuning", {"num_virtual_tokens": 3, "init": "random"}),
         ("prefix", {"num_virtual_tokens": 5}), ("p-tuning", {"num_virtual_tokens": 2}),
         ("p-tuning-v2", {"num_virtual_tokens": 4})]
PROMPTS = ["the cat sat on", "Review: a great movie, really the best one", "0 1 2 3", "The battery is",
           "Question: Tom has five apples and", "a dog", "Let's think step by step about", "x"]


@pytest.fixture(scope="module")
def setup():
    bb = make_tiny_decoder()
    tuned, lms = engines(bb, SPECS)
    for lm in lms:                 # no EOS: a long request really runs for its max_tokens
        lm.eos_ids = set()
    return bb, lms


@pytest.fixture()
def sched():
    s = Scheduler(max_queue=64, max_batch=32)
    yield s
    s.close()


def _job(lm, prompts, n=1, max_tokens=8, temperature=0.0, stop=(), seed=None, on_token=None):
    j = Job("generate", lm, list(prompts), (n, max_tokens, temperature, 1.0, tuple(stop), seed))
    j.on_token = on_token
    return j


def _alone(lm, prompts, n=1, max_tokens=8, temperature=0.0, stop=(), seed=None):
    texts = lm.generate(prompts, n=n, max_new_tokens=max_tokens, temperature=temperature, stop=list(stop), seed=seed)
    return [list(zip(t, r)) for t, r in zip(texts, lm.finish_reasons)]


def test_requests_of_every_adapter_type_join_a_running_decode_and_equal_alone(setup, sched):
    bb, lms = setup
    long_tokens, seen_rows, joined = [], [], []
    jobs = [_job(lm, [PROMPTS[i % len(PROMPTS)]], max_tokens=5, stop=["e"] if i % 2 else ())
            for i, lm in enumerate(lms)]

    def on_long(row, sample, t):
        long_tokens.append(t)
        seen_rows.append(len(sched.batch))
        if len(long_tokens) == 3:                 # mid-decode: every adapter's request arrives
            for j in jobs:
                sched.submit(j)

    for j in jobs:
        j.future.add_done_callback(lambda f: joined.append(len(long_tokens)))
    long = _job(lms[0], ["one two three"], max_tokens=30, on_token=on_long)
    sched.submit(long)
    got_long = long.future.result(timeout=60)
    got = [j.future.result(timeout=60) for j in jobs]
    assert got_long == _alone(lms[0], ["one two three"], max_tokens=30)
    assert got_long[0][0][1] == "length"
    for i, (j, lm) in enumerate(zip(jobs, lms)):
        want = _alone(lm, j.rows, max_tokens=5, stop=j.params[4])
        assert got[i] == want, (i, getattr(lm.model, "method", "base"), got[i], want)
    # they ran beside the long request and left before it finished
    assert max(seen_rows) == 1 + len(jobs)
    assert len(joined) == len(jobs) and max(joined) < 30
    assert sched.mixer.builds >= 1


def test_seeded_samples_do_not_depend_on_the_batch(setup, sched):
    bb, lms = setup
    lora = lms[1]
    sampled = _job(lora, ["a dog"], n=3, max_tokens=6, temperature=1.0, seed=7)

    def on_long(row, sample, t):
        if not sampled.future.running() and not sampled.future.done() and row == 0:
            sched.submit(sampled)

    long = _job(lms[0], ["the cat sat on"], max_tokens=20, on_token=on_long)
    sched.submit(long)
    long.future.result(timeout=60)
    assert sampled.future.result(timeout=60) == _alone(lora, ["a dog"], n=3, max_tokens=6, temperature=1.0, seed=7)


def test_dead_cache_columns_are_cut(setup, sched, monkeypatch):
    """A long prompt that leaves early must not keep the running cache wide."""
    bb, lms = setup
    monkeypatch.setattr(continuous, "TRIM", 4)
    long_prompt = " ".join(["word"] * 60)
    widths = []
    wide = _job(lms[1], [long_prompt], max_tokens=3)

    def on_short(row, sample, t):
        widths.append(sched.batch.mask.shape[1])
        if len(widths) == 2:
            sched.submit(wide)

    short = _job(lms[0], ["x"], max_tokens=40, on_token=on_short)
    sched.submit(short)
    assert short.future.result(timeout=60) == _alone(lms[0], ["x"], max_tokens=40)
    assert wide.future.result(timeout=60) == _alone(lms[1], [long_prompt], max_tokens=3)
    n_long, n_short = len(lms[0].encode(long_prompt)), len(lms[0].encode("x"))
    assert max(widths) >= n_long                            # the long prompt was in the cache
    assert widths[-1] <= n_short + 40 + continuous.TRIM      # and its columns left with it


def test_a_client_that_leaves_frees_its_rows(setup, sched):
    bb, lms = setup
    gone = _job(lms[2], ["the cat sat on"], n=2, max_tokens=30)
    gone.on_token = lambda row, sample, t: gone.gone.set()
    stay = _job(lms[0], ["a dog"], max_tokens=12)
    sched.submit(gone)
    sched.submit(stay)
    assert stay.future.result(timeout=60) == _alone(lms[0], ["a dog"], max_tokens=12)
    with pytest.raises(Exception):
        gone.future.result(timeout=60)
    for _ in range(200):                     # bounded wait: the worker empties the batch
        if not len(sched.batch):
            break
        time.sleep(0.02)
    assert not len(sched.batch)


def test_a_failing_step_fails_its_requests_and_the_worker_lives_on(setup, sched, monkeypatch):
    bb, lms = setup
    real = continuous.Batch.step
    calls = threading.Event()

    def broken(self):
        if not calls.is_set():
            calls.set()
            raise RuntimeError("boom")
        return real(self)

    monkeypatch.setattr(continuous.Batch, "step", broken)
    bad = sched.submit(_job(lms[0], ["a dog"], max_tokens=4))
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(timeout=60)
    ok = sched.submit(_job(lms[0], ["a dog"], max_tokens=4))
    assert ok.result(timeout=60) == _alone(lms[0], ["a dog"], max_tokens=4)


def test_only_plain_global_attention_joins(setup):
    bb, lms = setup
    assert continuous.supported(lms[0])
    lm = copy.copy(lms[0])
    lm.model = copy.copy(bb.model)
    lm.model.config = copy.deepcopy(bb.model.config)
    lm.model.config.sliding_window = 4                   # a sliding window: rows may not be left-padded
    assert not continuous.supported(lm)
    s = Scheduler(max_queue=8, max_batch=8, continuous=False)
    try:
        assert not s._joinable(_job(lms[0], ["x"]))
    finally:
        s.close()


def test_a_shared_prompt_prefix_is_computed_once(setup, sched):
    bb, lms = setup
    lm = lms[1]                                    # one weight-side adapter: its own engine
    system = "You are a careful assistant. Answer in one short line, please. "
    prompts = [system + q for q in ["the cat sat on", "a dog", "0 1 2 3", "Question: Tom has five apples and"]]
    lm.clear_cache()
    before = lm.cost.prompt_tokens
    got = sched.submit(_job(lm, prompts, max_tokens=6)).result(timeout=60)
    spent = lm.cost.prompt_tokens - before
    n_system = len(lm.encode(system)) - 1
    assert lm._prefix is not None and len(lm._prefix[0]) >= n_system   # the prefix was cached
    assert spent <= sum(len(lm.encode(p)) for p in prompts) - 3 * n_system
    assert got == _alone(lm, prompts, max_tokens=6)
