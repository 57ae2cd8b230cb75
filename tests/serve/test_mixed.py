"""Per-row adapter mixing (serve.mixed): rows of one forward pass use different adapters, and the
result of every row equals its adapter's own model."""

from __future__ import annotations

import copy
import time

import pytest
import torch

from adaptlab.engine import make_lm
from adaptlab.serve import mixed
from adaptlab.serve.mixed import MixedLinear, Mixer
from adaptlab.tuning import apply_method, make_config
from tests.conftest import make_tiny_decoder
from tests.serve.harness import engines, running_server

# three LoRA ranks (one rsLoRA, one on more modules), IA3, a bottleneck adapter; and the base
SPECS = [("lora", {"r": 2}), ("lora", {"r": 4, "rslora": True}),
         ("lora", {"r": 8, "target_modules": ["q_proj", "v_proj", "o_proj", "down_proj"]}),
         ("ia3", {}), ("adapter", {"m": 8}), ("adapter", {"m": 4, "non_linearity": "gelu", "placement": "ffn"})]
PROMPTS = ["the cat sat on", "Review: a great movie", "0 1 2 3", "The battery is",
           "Question: Tom has", "a dog ran to the", "Let's think step", "Sentiment: positive"]


@pytest.fixture(scope="module")
def setup():
    bb = make_tiny_decoder()
    tuned, lms = engines(bb, SPECS)
    return bb, tuned, lms


def _row_engines(lms, n):
    return [lms[i % len(lms)] for i in range(n)]


@pytest.mark.parametrize("dense", [True, False])
def test_mixed_forward_logits_equal_each_adapters_own(setup, dense, monkeypatch):
    """dense: stacked GEMMs with per-row masks; else gather + bmm (LoRA) and per-slot rows (bottleneck)."""
    bb, tuned, lms = setup
    if not dense:
        monkeypatch.setattr(mixed, "DENSE", 0)
    mixer = Mixer()
    assert all(mixer.mixable(lm) for lm in lms)
    row_lms = _row_engines(lms, len(PROMPTS))
    mlm, slots = mixer.engine(row_lms)
    mods = [m for m in mlm.model.modules() if isinstance(m, MixedLinear)]
    assert mods and all(m.lora_dense == dense for m in mods if m.lora_slots)
    assert any(len(m.bottleneck) == 2 and m.bn_dense == dense for m in mods)
    ids, mask = mlm._left_pad([mlm.encode(p) for p in PROMPTS])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    mlm.rows.set(torch.tensor(slots))
    with torch.no_grad():
        got = mlm.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        for i, lm in enumerate(row_lms):
            want = lm.model(input_ids=ids[i:i + 1], attention_mask=mask[i:i + 1], position_ids=pos[i:i + 1]).logits
            keep = mask[i].bool()
            assert (got[i, keep] - want[0, keep]).abs().max().item() < 1e-5, i
            if lm.model is not bb.model:   # the adapter does change this row
                base = bb.model(input_ids=ids[i:i + 1], attention_mask=mask[i:i + 1], position_ids=pos[i:i + 1]).logits
                assert (base[0, keep] - want[0, keep]).abs().max().item() > 1e-3, i


@pytest.mark.parametrize("n,stop", [(1, []), (2, ["e"])])
def test_mixed_greedy_generation_equals_per_adapter(setup, n, stop):
    """n > 1 expands each row's adapter with its samples; stop strings drop rows at different steps."""
    bb, tuned, lms = setup
    mixer = Mixer()
    row_lms = _row_engines(lms, len(PROMPTS))
    mlm, slots = mixer.engine(row_lms)
    got = mlm.generate_mixed(PROMPTS, slots, n=n, max_new_tokens=8, temperature=0.0, stop=stop)
    reasons = mlm.finish_reasons
    for i, (p, lm) in enumerate(zip(PROMPTS, row_lms)):
        want = lm.generate([p], n=n, max_new_tokens=8, temperature=0.0, stop=stop)
        assert got[i] == want[0], (i, got[i], want[0])
        assert reasons[i] == lm.finish_reasons[0]
    if stop:
        flat = [r for rs in reasons for r in rs]
        assert "e" in flat and "length" in flat      # some rows finished early, some ran to the end


def test_merged_adapter_does_not_mix():
    """(Prompt-type adapters now mix: tests/serve/test_mixed_prompts.py.)"""
    bb = make_tiny_decoder()
    mixer = Mixer()
    t = apply_method(bb, "lora", make_config("lora", {"r": 2})).eval()
    for m in mixed.adapter_layers(t).values():
        m.merged = True
    assert not mixer.mixable(make_lm(bb, model=t))
    assert mixer.mixable(make_lm(bb))


def test_new_adapter_gets_a_slot_and_old_slots_stay(setup):
    bb, tuned, lms = setup
    mixer = Mixer()
    _, s1 = mixer.engine(lms[:3])
    _, s2 = mixer.engine(lms)
    assert s2[:3] == s1 and len(set(s2)) == len(lms) and s2[0] == 0
    mixer.engine(lms[2:])
    assert mixer.builds == 2


def test_lora_rows_equal_peft_adapter_names(setup, tmp_path):
    """Oracle: peft's mixed-batch inference (``adapter_names``) over the same LoRA adapters."""
    peft = pytest.importorskip("peft")
    from adaptlab.tuning.io import save_adapter

    bb, tuned, lms = setup
    loras = [i for i, (m, _) in enumerate(SPECS) if m == "lora"]
    for i in loras:
        save_adapter(tmp_path / f"a{i}", tuned[i])
    pm = peft.PeftModel.from_pretrained(copy.deepcopy(bb.model), str(tmp_path / f"a{loras[0]}"), adapter_name=f"a{loras[0]}")
    for i in loras[1:]:
        pm.load_adapter(str(tmp_path / f"a{i}"), adapter_name=f"a{i}")
    pm.eval()
    names = ["__base__"] + [f"a{i}" for i in loras]
    row_lms = [lms[0]] + [lms[i + 1] for i in loras]
    k = len(row_lms)
    row_lms, names = row_lms * 2, names * 2
    prompts = PROMPTS[:len(names)]
    mlm, slots = Mixer().engine(row_lms)
    ids, mask = mlm._left_pad([mlm.encode(p) for p in prompts])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    mlm.rows.set(torch.tensor(slots))
    with torch.no_grad():
        got = mlm.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        want = pm(input_ids=ids, attention_mask=mask, position_ids=pos, adapter_names=names).logits
    assert k == 4
    keep = mask.bool()
    assert (got[keep] - want[keep]).abs().max().item() < 1e-5


# ---------------------------------------------------------------------- through the server
@pytest.mark.parametrize("continuous", [True, False])
def test_server_mixed_batch_equals_separate_requests(setup, tmp_path, continuous):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")

    from tests.serve.harness import hold_worker, saved_adapters_app

    bb, tuned, _ = setup
    app, reg, models = saved_adapters_app(bb, tuned, tmp_path, max_batch=16, continuous=continuous)
    bodies = [{"model": models[i % len(models)], "prompt": p, "max_tokens": 6, "temperature": 0}
              for i, p in enumerate(PROMPTS * 2)]
    with running_server(app) as base:
        url = f"{base}/v1/completions"
        sched = app.state.scheduler
        with httpx.Client(timeout=60) as c:
            alone = [c.post(url, json=b).json()["choices"][0]["text"] for b in bodies]   # one at a time
            assert sched.mixer.builds == 0
            # hold the worker so that every request is queued, then all run as one mixed group
            gate, release = hold_worker(sched)
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(len(bodies)) as pool:
                futs = [pool.submit(c.post, url, json=b) for b in bodies]
                time.sleep(1.0)
                release()
                gate.set()
                together = [f.result().json()["choices"][0]["text"] for f in futs]
        assert together == alone
        assert sched.mixer.builds >= 1
