"""peft as the oracle: adapters adaptlab writes load in peft with the same logits, and adapters
peft writes load in adaptlab with the same logits (max abs diff <= 1e-4)."""

from __future__ import annotations

import warnings

import pytest
import torch

peft = pytest.importorskip("peft")

from adaptlab.tuning import apply_method  # noqa: E402
from adaptlab.tuning.io import load_adapter, save_adapter  # noqa: E402
from tuning_fixtures import load_tiny, tiny_dirs  # noqa: F401,E402  (fixtures)

TOL = 1e-4


def _perturb(model, names=("lora_", "ia3_")):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if any(part.startswith(names) for part in n.split(".")):
                p.add_(torch.randn(p.shape, generator=g) * 0.2)


def _ids(vocab=200):
    return torch.randint(3, vocab, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_adaptlab_adapter_loads_in_peft(method, load_tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    bb = load_tiny("decoder")
    tuned = apply_method(bb, method, {})
    _perturb(tuned)
    save_adapter(tmp_path / "a", tuned)
    tuned.eval()
    ids = _ids()
    ours = tuned(input_ids=ids).logits
    base = AutoModelForCausalLM.from_pretrained(bb.source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.PeftModel.from_pretrained(base, str(tmp_path / "a")).eval()
    with torch.no_grad():
        theirs = pm(input_ids=ids).logits
        plain = bb.model(input_ids=ids).logits
    assert (ours - theirs).abs().max().item() <= TOL
    assert (ours - plain).abs().max().item() > 1e-3          # the adapter does something


def _peft_config(method, kind):
    if method == "lora":
        targets = ["q_proj", "v_proj"] if kind == "decoder" else ["query", "value"]
        return peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0,
                               task_type="CAUSAL_LM" if kind == "decoder" else "FEATURE_EXTRACTION")
    targets, ff = (["k_proj", "v_proj", "down_proj"], ["down_proj"]) if kind == "decoder" else \
        (["key", "value", "output.dense"], ["output.dense"])
    return peft.IA3Config(target_modules=targets, feedforward_modules=ff,
                          task_type="CAUSAL_LM" if kind == "decoder" else "FEATURE_EXTRACTION")


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_peft_adapter_loads_in_adaptlab(method, kind, load_tiny, tiny_dirs, tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM

    cls = AutoModelForCausalLM if kind == "decoder" else AutoModel
    base = cls.from_pretrained(tiny_dirs[kind])
    pm = peft.get_peft_model(base, _peft_config(method, kind))
    _perturb(pm)
    pm.save_pretrained(str(tmp_path / "p"))
    pm.eval()
    ids = _ids()
    _, tuned = load_adapter(tmp_path / "p", tiny_dirs[kind])
    assert tuned.method == method
    with torch.no_grad():
        if kind == "decoder":
            theirs, ours = pm(input_ids=ids).logits, tuned(input_ids=ids).logits
        else:
            theirs, ours = pm(input_ids=ids).last_hidden_state, tuned(input_ids=ids).last_hidden_state
    assert (ours - theirs).abs().max().item() <= TOL


# vLLM is not installable here (CUDA builds); its LoRA loader's documented rules, checked on our files:
# PEFTHelper needs r, lora_alpha, target_modules and refuses modules_to_save, DoRA and a bias; the
# scaling is lora_alpha / r (/ sqrt(r) with rsLoRA); each tensor is base_model.model.<module>.lora_A|B.weight
# with <module>'s last part one of the model's LoRA-capable linears (for Llama: these).
VLLM_LLAMA_LORA_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                           "embed_tokens", "lm_head"}


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_adapter_follows_vllms_loading_rules(rslora, load_tiny, tmp_path):
    import json
    import math

    from safetensors.torch import load_file

    bb = load_tiny("decoder")
    targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    tuned = apply_method(bb, "lora", {"r": 4, "alpha": 8, "target_modules": targets, "rslora": str(rslora).lower()})
    save_adapter(tmp_path / "a", tuned)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert {"r", "lora_alpha", "target_modules"} <= cfg.keys()
    assert not cfg.get("modules_to_save") and not cfg.get("use_dora") and cfg.get("bias", "none") == "none"
    scale = cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])
    layer = next(m for m in tuned.modules() if hasattr(m, "lora_A"))
    assert cfg["use_rslora"] is rslora and scale == pytest.approx(float(layer.scaling))
    tensors = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    modules = {}
    for key, t in tensors.items():
        assert key.startswith("base_model.model.") and key.endswith((".lora_A.weight", ".lora_B.weight")), key
        module, ab = key[len("base_model.model."):].rsplit(".", 2)[:2]
        assert module.split(".")[-1] in VLLM_LLAMA_LORA_MODULES, key
        assert bb.model.get_submodule(module) is not None                # names the base's own module
        modules.setdefault(module, {})[ab] = t.shape
    lin = {n: m for n, m in bb.model.named_modules() if n.split(".")[-1] in targets.split(",")}
    assert modules.keys() == lin.keys()                                   # every targeted linear, once
    for name, shapes in modules.items():
        out_f, in_f = lin[name].weight.shape
        assert shapes == {"lora_A": (cfg["r"], in_f), "lora_B": (out_f, cfg["r"])}, name
