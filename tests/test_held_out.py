"""``adaptlab experiment held-out-clusters`` (FLAN's leave-one-cluster-out evaluation and the
cluster-count ablation) on a tiny decoder and a tiny four-cluster mixture."""

import json

import pytest

from conftest import run_cli, toy_mixture

CLUSTERS = {"toy_a": "one", "toy_b": "two", "toy_c": "three", "toy_d": "four"}


@pytest.fixture
def mix(tmp_path, monkeypatch):
    return toy_mixture(tmp_path, monkeypatch, {name: (c, *(("nope", "yeah") if i % 2 else ("bad", "good")))
                                               for i, (name, c) in enumerate(CLUSTERS.items())})[0]


def test_loco_and_ablation_records_tables_and_plots(tiny_folder, mix, tmp_path):
    out = tmp_path / "exp"
    args = ["experiment", "held-out-clusters", "--task", "one,three", "--model", tiny_folder, "--out", str(out),
            "--seeds", "2", "--limit", "4", "--set", f"mixture={mix}", "--set", "max_steps=2", "--set", "batch_size=4",
            "--set", "counts=1,2,all", "--set", "max_seq_len=32"]
    assert run_cli(args) == 0
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    loco = [r for r in recs if r["kind"] == "loco"]
    assert sorted((r["held_out"], r["seed"]) for r in loco) == [("one", 0), ("one", 1), ("three", 0), ("three", 1)]
    for r in loco:                                  # never trained on the held-out cluster, always on the rest
        assert r["held_out"] not in r["train_clusters"] and len(r["train_clusters"]) == 3
        cfg = json.loads((tmp_path / r["adapter"] / "instruct_config.json").read_text())
        assert cfg["hold_out"] == [r["held_out"]] and r["held_out"] not in cfg["train_clusters"]
    abl = [r for r in recs if r["kind"] == "ablation"]
    assert [r["train_clusters"] for r in abl] == [["two"], ["two", "three"], ["two", "three", "four"]]
    assert {r["held_out"] for r in recs if r["kind"] == "untuned"} == {"one", "three"}
    md = (out / "report.md").read_text()
    assert "| one | toy_a |" in md and "| three | toy_c |" in md and "Cluster-count ablation, one held out" in md
    assert (out / "held_out.png").stat().st_size > 1000 and (out / "ablation.png").stat().st_size > 1000
    # a re-run keeps every finished record and trains nothing
    before = (out / "results.jsonl").read_text()
    assert run_cli(args) == 0
    assert (out / "results.jsonl").read_text() == before


@pytest.mark.parametrize("extra, words", [
    (["--task", "five"], "unknown cluster 'five'"),
    (["--task", "one", "--set", "ablation=nine"], "ablation cluster 'nine'"),
    (["--task", "one", "--set", "counts=0"], "counts='0'"),
    (["--task", "one", "--set", "bogus=1"], "unknown key 'bogus'"),
    (["--task", "one", "--data", "x/"], "--data names one task's files"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_folder, mix, tmp_path, capsys, extra, words):
    out = tmp_path / "exp"
    code = run_cli(["experiment", "held-out-clusters", "--model", tiny_folder, "--out", str(out),
                    "--set", f"mixture={mix}", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_other_experiments_refuse_set(tmp_path, capsys):
    assert run_cli(["experiment", "storage", "--set", "mixture=x", "--out", str(tmp_path / "s")]) == 2
    assert "only the held-out-clusters experiment" in capsys.readouterr().err
