"""peft as the oracle for the prompt-learning methods: prompt-tuning, prefix and p-tuning adapters
adaptlab writes load with ``peft.PeftModel.from_pretrained`` and give the same logits, and
adapters peft writes load into adaptlab with the same logits (max abs diff <= 1e-4)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

peft = pytest.importorskip("peft")

from adaptlab.tuning import apply_method  # noqa: E402
from adaptlab.tuning.io import load_adapter, save_adapter  # noqa: E402
from tuning_fixtures import load_tiny, tiny_dirs  # noqa: F401,E402  (fixtures)

TOL = 1e-4
CASES = [("prompt-tuning", {"num_virtual_tokens": 5}, "PROMPT_TUNING"),
         ("prefix", {"num_virtual_tokens": 5, "encoder_hidden_size": 16}, "PREFIX_TUNING"),
         ("prefix", {"num_virtual_tokens": 4, "prefix_projection": False}, "PREFIX_TUNING"),
         ("p-tuning", {"num_virtual_tokens": 5}, "P_TUNING"),
         ("p-tuning", {"num_virtual_tokens": 3, "encoder_reparameterization_type": "LSTM"}, "P_TUNING")]


def _ids():
    return torch.randint(3, 250, (2, 12), generator=torch.Generator().manual_seed(0))


def _perturb(tuned, scale=0.5):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in tuned.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def _peft_load(path, base_dir):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(base, str(path)).eval()


@pytest.mark.parametrize("method,values,peft_type", CASES)
def test_adaptlab_adapter_loads_in_peft(method, values, peft_type, load_tiny, tiny_dirs, tmp_path):
    bb = load_tiny("decoder")
    tuned = apply_method(bb, method, values)
    _perturb(tuned)
    save_adapter(tmp_path / "a", tuned)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == peft_type and cfg["num_virtual_tokens"] == values["num_virtual_tokens"]
    tuned.eval()
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, :3] = 0                                                  # a left-padded row too
    pm = _peft_load(tmp_path / "a", tiny_dirs["decoder"])
    with torch.no_grad():
        ours = tuned(input_ids=ids, attention_mask=mask).logits
        theirs = pm(input_ids=ids, attention_mask=mask).logits
        plain = bb.model(input_ids=ids, attention_mask=mask).logits
    theirs = theirs[:, theirs.shape[1] - ids.shape[1]:]              # peft keeps the virtual positions
    assert ours.shape == theirs.shape == plain.shape
    sel = mask.bool()
    assert (ours - theirs)[sel].abs().max().item() <= TOL
    assert (ours - plain)[sel].abs().max().item() > 1e-3             # the adapter does something


def _peft_config(method, n):
    kw = dict(task_type="CAUSAL_LM", num_virtual_tokens=n)
    if method == "prompt-tuning":
        return peft.PromptTuningConfig(**kw)
    if method == "prefix":
        return peft.PrefixTuningConfig(**kw, prefix_projection=True, encoder_hidden_size=16)
    return peft.PromptEncoderConfig(**kw, encoder_hidden_size=16)


@pytest.mark.parametrize("method", ["prompt-tuning", "prefix", "p-tuning"])
def test_peft_adapter_loads_in_adaptlab(method, tiny_dirs, tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["decoder"])
    pm = peft.get_peft_model(base, _peft_config(method, 4))
    with torch.no_grad():                                            # peft's init is N(0, 1); make it matter
        for p in pm.prompt_encoder.parameters():
            p.mul_(0.5)
    pm.save_pretrained(str(tmp_path / "p"))
    pm.eval()
    ids = _ids()
    _, tuned = load_adapter(tmp_path / "p", tiny_dirs["decoder"])
    assert tuned.method == method
    with torch.no_grad():
        theirs, ours = pm(input_ids=ids).logits, tuned(input_ids=ids).logits
    theirs = theirs[:, theirs.shape[1] - ids.shape[1]:]
    assert (ours - theirs).abs().max().item() <= TOL


def test_prompt_tuning_text_init_config_loads_in_peft(load_tiny, tiny_dirs, tmp_path):
    bb = load_tiny("decoder")
    tuned = apply_method(bb, "prompt-tuning", {"num_virtual_tokens": 6, "init": "text", "init_text": "great movie"})
    save_adapter(tmp_path / "a", tuned)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["prompt_tuning_init"] == "TEXT" and cfg["prompt_tuning_init_text"] == "great movie"
    pm = _peft_load(tmp_path / "a", tiny_dirs["decoder"])          # peft must not need the tokenizer
    w = pm.prompt_encoder["default"].embedding.weight
    assert torch.allclose(w, tuned.prompt_encoder.prompt_embeddings)


@pytest.mark.parametrize("method", ["prompt-tuning", "prefix", "p-tuning"])
def test_encoder_adapter_loads_in_peft(method, load_tiny, tiny_dirs, tmp_path):
    """On an encoder (peft's FEATURE_EXTRACTION): the same last hidden states, padding included."""
    from transformers import AutoModel

    bb = load_tiny("encoder")
    tuned = apply_method(bb, method, {"num_virtual_tokens": 3})
    _perturb(tuned)
    save_adapter(tmp_path / "a", tuned)
    tuned.eval()
    ids = torch.randint(5, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_dirs["encoder"]), str(tmp_path / "a")).eval()
    with torch.no_grad():
        ours = tuned(input_ids=ids, attention_mask=mask).last_hidden_state
        theirs = pm(input_ids=ids, attention_mask=mask).last_hidden_state
        plain = bb.model(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs = theirs[:, theirs.shape[1] - ids.shape[1]:]
    sel = mask.bool()
    assert (ours - theirs)[sel].abs().max().item() <= TOL
    assert (ours - plain)[sel].abs().max().item() > 1e-3
