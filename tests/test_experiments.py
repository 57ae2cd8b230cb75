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


def test_storage_writes_and_reads_back(tmp_path, tiny_decoder, capsys):
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
    # one definition of adapter_bytes (the weights file), the folder counted apart; a table, not JSON
    assert res["adapter_bytes"] == (tmp_path / "st" / "adapters" / "001" / "adapter_model.safetensors").stat().st_size
    assert res["adapter_folder_bytes_each"] > res["adapter_bytes"] and res["loaded"] == ["000", "001", "002"]
    out = capsys.readouterr().out
    assert out.startswith("| layout | bytes | GiB |") and "adapter_model.safetensors (adapter_bytes)" in out
    assert "first, middle, last" in out and "{" not in out


def test_black_box_preset_parses():
    from adaptlab.compare import parse_runs
    from adaptlab.experiments import PRESETS

    names = [r.name for r in parse_runs(PRESETS["black-box"])]
    assert names == ["bbt", "bbtv2", "bdpl", "prompt-tuning", "few-shot", "zero-shot"]


def test_spot_transfer_report_gain_and_hit_rate(tmp_path):
    from adaptlab.experiments import transfer_report

    recs = [{"target": "a", "source": "init", "score": 0.5}, {"target": "a", "source": "b", "score": 0.6},
            {"target": "a", "source": "c", "score": 0.4}, {"target": "b", "source": "init", "score": 0.8},
            {"target": "b", "source": "a", "score": 0.6}, {"target": "b", "source": "c", "score": 0.9},
            {"target": "a", "source": "pick", "picked": "b"}, {"target": "b", "source": "pick", "picked": "a"}]
    res = transfer_report(tmp_path, recs, ["a", "b", "c"], {"model": "m"})
    assert abs(res["gain"]["b"]["a"] - 0.2) < 1e-9 and abs(res["gain"]["c"]["b"] - 0.125) < 1e-9
    assert res["gain"]["a"]["a"] is None and res["gain"]["a"]["c"] is None     # diagonal; target c never run
    assert res["best"] == {"a": "b", "b": "c", "c": None} and res["hits"] == ["a"] and res["hit_rate"] == 0.5
    md = (tmp_path / "report.md").read_text()
    assert "+0.200" in md and "hit rate 1/2" in md and (tmp_path / "transfer.png").stat().st_size > 1000
