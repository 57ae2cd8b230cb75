"""Merge / unmerge for lora and ia3, `adaptlab merge`, and adapter folders refused with one
clear AdapterError."""

from __future__ import annotations

import json

import pytest
import torch

from adaptlab.errors import AdapterError, ConfigError
from adaptlab.tasks import load_task
from adaptlab.tuning import METHODS, apply_method, merged_model
from adaptlab.tuning.io import load_adapter, save_adapter
from tuning_fixtures import load_tiny, tiny_dirs  # noqa: F401,E402  (fixtures)


def _perturbed(bb, method, **kw):
    tuned = apply_method(bb, method, kw)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return tuned.eval()


IDS = torch.tensor([[5, 17, 42, 99, 7, 150, 3, 8]])


@pytest.mark.parametrize("method", [m for m, v in METHODS.items() if v.mergeable])
def test_merge_unmerge(method, tiny_decoder):
    before = {k: v.clone() for k, v in tiny_decoder.model.state_dict().items()}
    tuned = _perturbed(tiny_decoder, method)
    with torch.no_grad():
        y = tuned(input_ids=IDS).logits
        METHODS[method].module.merge(tuned)
        y_merged = tuned(input_ids=IDS).logits
        METHODS[method].module.unmerge(tuned)
        y_back = tuned(input_ids=IDS).logits
    assert (y - y_merged).abs().max() < 1e-4
    assert torch.equal(y, y_back)
    # merging builds new tensors: the user's weights never change
    assert all(torch.equal(before[k], v) for k, v in tiny_decoder.model.state_dict().items())


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merge_command_writes_plain_model(method, load_tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from adaptlab.cli import main

    bb = load_tiny("decoder")
    tuned = _perturbed(bb, method)
    save_adapter(tmp_path / "a", tuned)
    with torch.no_grad():
        y = tuned(input_ids=IDS).logits
    with pytest.raises(SystemExit) as e:
        main(["merge", "--adapter", str(tmp_path / "a"), "--out", str(tmp_path / "m"), "--json"])
    assert e.value.code == 0
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert not any("lora" in n or "ia3" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        assert (plain(input_ids=IDS).logits - y).abs().max() < 1e-4
    with pytest.raises(SystemExit) as e:   # the out folder exists now: refused, exit 2
        main(["merge", "--adapter", str(tmp_path / "a"), "--out", str(tmp_path / "m")])
    assert e.value.code == 2


def test_merge_refuses_unmergeable(tiny_decoder):
    tuned = apply_method(tiny_decoder, "head", {}, load_task("reviews"))
    with pytest.raises(ConfigError):
        merged_model(tuned)


@pytest.fixture
def saved(load_tiny, tmp_path):
    bb = load_tiny("decoder")
    tuned = _perturbed(bb, "lora")
    save_adapter(tmp_path / "a", tuned)
    return tmp_path / "a"


def _refused(path, match, model=None):
    with pytest.raises(AdapterError, match=match) as e:
        load_adapter(path, model)
    assert "\n" not in str(e.value)


def test_refuses_missing_folder_and_files(saved, tmp_path):
    _refused(tmp_path / "nope", "not found")
    (saved / "adapter_config.json").unlink()
    _refused(saved, "no adapter_config.json")


def test_refuses_pickle(saved):
    (saved / "adapter_model.safetensors").rename(saved / "adapter_model.bin")
    _refused(saved, "pickle")


def test_refuses_wrong_base(saved, tiny_decoder, tmp_path):
    other = tiny_decoder                         # same shapes, other weights
    with torch.no_grad():
        other.model.get_input_embeddings().weight.mul_(1.5)
    other.model.save_pretrained(tmp_path / "other")
    other.tokenizer.save_pretrained(tmp_path / "other")
    _refused(saved, "trained on base", model=str(tmp_path / "other"))


def test_refuses_bad_config_and_shapes(saved):
    meta = json.loads((saved / "adaptlab.json").read_text())
    meta["config"]["r"] = 0
    (saved / "adaptlab.json").write_text(json.dumps(meta))
    _refused(saved, "r=0")
    meta["config"]["r"] = 4                      # tensors were saved with r=8
    (saved / "adaptlab.json").write_text(json.dumps(meta))
    _refused(saved, "shape")


def test_refuses_garbage_weights(saved):
    (saved / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    _refused(saved, "safetensors")


def test_cli_eval_bad_adapter_exits_2(tmp_path, capsys):
    from adaptlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "--task", "reviews", "--adapter", str(tmp_path / "none"), "--limit", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err



def test_peft_config_names_the_hub_id_of_a_default_model(load_tiny):
    """peft and vLLM read base_model_name_or_path as a Hugging Face id; a default model's short
    name is kept in adaptlab.json only (issue 26)."""
    from adaptlab.models import hub_id
    from adaptlab.tuning.io import peft_config

    assert hub_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_id("org/other-model") == "org/other-model"
    tuned = _perturbed(load_tiny("decoder"), "lora")
    assert peft_config(tuned, "smollm2-135m-instruct")["base_model_name_or_path"] == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert peft_config(tuned, "/some/local/model")["base_model_name_or_path"] == "/some/local/model"
