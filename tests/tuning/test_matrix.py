"""One row per tuning method x backbone kind: apply -> one training step -> save -> load ->
identical outputs. Adding a method to the registry adds its rows here. A method that declares the
backbone kinds it supports (``KINDS``, e.g. the black-box methods read an LM head: decoders only)
must refuse the others with one clear error. "Something changed" is checked on what the method
saves (``adapter_state``), so a gradient-free method's searched vector counts too."""

from __future__ import annotations

import pytest
import torch

from adaptlab.tasks import load_task
from adaptlab.train import TrainConfig, train_on_task
from adaptlab.tuning import METHODS, apply_method
from adaptlab.tuning.io import adapter_bytes, load_adapter
from tuning_fixtures import load_tiny, tiny_dirs  # noqa: F401,E402  (fixtures)

KINDS = ("decoder", "encoder")


def _outputs(tuned, ids):
    mask = torch.ones_like(ids)
    with torch.no_grad():
        if tuned.head is not None:
            return tuned.classify(ids, mask)
        return tuned(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", list(METHODS))
def test_apply_step_save_load(method, kind, load_tiny, tmp_path):
    from adaptlab.data import load_split

    from adaptlab.errors import ConfigError

    task = load_task("reviews")
    bb = load_tiny(kind)
    base_state = {k: v.clone() for k, v in bb.model.state_dict().items()}
    if kind not in getattr(METHODS[method].module, "KINDS", KINDS):
        with pytest.raises(ConfigError, match=method):
            apply_method(bb, method, {}, task)
        return
    tuned = apply_method(bb, method, {}, task)
    before = {k: v.clone() for k, v in tuned.adapter_state().items()}
    assert before and tuned.n_trainable() > 0, "no trainable parameters"
    examples = load_split(task, "train", limit=8)
    stats = train_on_task(bb, tuned, task, examples, TrainConfig(max_steps=1, batch_size=4, eval=False, lr=1e-2),
                  tmp_path / "run", progress=False)
    assert stats["steps"] == 1 and stats["trainable_params"] == tuned.n_trainable()
    after = tuned.adapter_state()
    assert any(not torch.equal(before[k], after[k]) for k in before), "one step changed nothing"
    # the user's backbone is untouched (composition, not patching)
    assert all(torch.equal(base_state[k], v) for k, v in bb.model.state_dict().items())
    assert all(p.requires_grad for p in bb.model.parameters())
    bb2, loaded = load_adapter(tmp_path / "run")
    # the saved form (prefix / P-tuning save their encoder's output, as peft does) loads back whole
    assert loaded.method == method and adapter_bytes(loaded) == adapter_bytes(tuned)
    # one definition of adapter_bytes: the weights file's size, in the run's stats as on disk
    on_disk = (tmp_path / "run" / "adapter_model.safetensors").stat().st_size
    assert stats["adapter_bytes"] == adapter_bytes(tuned) == on_disk
    tuned.eval()
    ids = torch.tensor([bb.tokenizer("Review: a great movie\nSentiment:")["input_ids"]])
    assert torch.equal(_outputs(tuned, ids), _outputs(loaded, ids))


def test_registry_equals_cli_choices():
    from adaptlab.cli import tune_cmd

    opt = next(p for p in tune_cmd.params if p.name == "method")
    assert list(opt.type.choices) == list(METHODS)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_has_its_parts(method):
    m = METHODS[method]
    for attr in ("Config", "apply", "to_peft_config", "from_peft_config"):
        assert hasattr(m.module, attr), f"tuning/{m.module.__name__}: missing {attr}"
    assert m.module.__doc__ and len(m.module.__doc__) > 200, "open the module with the paper and the formula"
