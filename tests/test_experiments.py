import json

import pytest

from adaptlab.compare import parse_runs
from adaptlab.errors import ConfigError
from adaptlab.experiments import PRESETS, run_experiment


def test_presets_are_valid_run_lists():
    for name, runs in PRESETS.items():
        if runs is not None:
            assert parse_runs(runs), name
    assert "few-shot:k=8:labels=random" in PRESETS["icl-demos"]
    assert "labels=flipped:p=1.0" in PRESETS["icl-flipped"]


def test_unknown_experiment():
    with pytest.raises(ConfigError, match="unknown experiment"):
        run_experiment("nope")


def test_storage_writes_and_reads_back(tmp_path, tiny_decoder):
    d = tmp_path / "tiny"
    tiny_decoder.model.save_pretrained(d)
    tiny_decoder.tokenizer.save_pretrained(d)
    res = run_experiment("storage", model=str(d), out=str(tmp_path / "st"), n_adapters=3)
    assert res["n"] == 3 and res["mismatched"] == 0 and res["loaded_into_model"] == 3
    assert len(list((tmp_path / "st" / "adapters").iterdir())) == 3
    assert res["full_copies_bytes"] == 3 * res["base_bytes"]
    assert res["base_plus_adapters_bytes"] == res["base_bytes"] + res["adapters_bytes"]
    assert json.loads((tmp_path / "st" / "results.json").read_text()) == res
    assert "fully tuned copies" in (tmp_path / "st" / "report.md").read_text()
