"""Generalist runs in ``adaptlab compare``: ``instruct`` and ``metaicl`` trained on a tiny mixture
with the compared task's cluster held out, scored on the task, reported, resumed."""

import pytest

from adaptlab.compare import CompareConfig, compare, load_results, parse_runs
from adaptlab.errors import ConfigError
from conftest import toy_mixture

TEMPLATES = {"toy_a": ["{text} is {options}?", "Say: {text}"], "toy_b": ["{text} ({options})"], "toy_c": ["Q {text} A"]}


@pytest.fixture
def mix(tmp_path, monkeypatch):
    """Tasks toy_a (cluster one), toy_b (two), toy_c (three) with train and test data; toy_d is in
    no cluster. Returns (mixture path, {task name: task YAML path})."""
    return toy_mixture(tmp_path, monkeypatch, {"toy_a": ("one", "negative", "positive"), "toy_b": ("two", "nope", "yeah"),
                                               "toy_c": ("three", "bad", "good"), "toy_d": (None, "low", "high")},
                       templates=TEMPLATES)


def cfg(model, task, runs, **kw):
    base = dict(task=task, model=model, runs=runs, limit=4, train_limit=8, batch_size=4, eval_limit=4)
    base.update(kw)
    return CompareConfig(**base)


def test_compare_instruct_and_metaicl_hold_out_the_task_cluster_report_and_resume(tmp_path, tiny_folder, mix,
                                                                                 capsys):
    m, tasks = mix
    runs = f"zero-shot,instruct:mixture={m}:max_steps=2,metaicl:k=2:mixture={m}:max_steps=2"
    out = tmp_path / "cmp"
    recs = compare(cfg(tiny_folder, tasks["toy_c"], runs), str(out))
    assert [r["status"] for r in recs] == ["ok"] * 3, [r.get("error") for r in recs]
    ins, meta = recs[1], recs[2]
    for r in (ins, meta):
        assert r["kind"] == "generalist" and r["held_out"] == ["three"]
        assert "three" not in r["train_clusters"] and r["train_clusters"] == ["one", "two"]
        assert r["config"]["hold_out"] == ["three"] and r["config"]["train_clusters"] == ["one", "two"]
        assert r["trainable_params"] > 0 and r["adapter_bytes"] > 0 and r["train_steps"] == 2
        assert r["train_seconds"] > 0 and r["metrics"]["n"] == 4 and (out / "runs").is_dir()
        assert r["config"]["train_config"]["seed"] == 0 and r["config"]["train_config"]["train_limit"] == 8
    assert ins["eval_config"]["strategy"] == "zero-shot" and "sft_config" in ins["config"]
    assert meta["eval_config"]["strategy"] == "few-shot" and meta["eval_config"]["k"] == 2
    assert meta["config"]["metaicl_config"]["k"] == 2
    md = (out / "report.md").read_text()
    assert "## Generalist runs" in md and "held out: three" in md
    for r in recs:
        assert f"| {r['run']} | {r['kind']} |" in md
    assert "Generalist runs" in (out / "report.html").read_text()
    before = (out / "results.jsonl").read_text()
    capsys.readouterr()
    again = compare(cfg(tiny_folder, tasks["toy_c"], runs), str(out))
    assert "3 finished run(s) kept, 0 to do" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text() == before and len(again) == 3


def test_a_task_not_in_the_mixture_trains_on_all_of_it(mix):
    from adaptlab.compare import held_out_of
    from adaptlab.tasks import load_task
    from adaptlab.tasks.mixture import load_mixture

    m, tasks = mix
    assert held_out_of(load_mixture(m), load_task(tasks["toy_d"])) == ([], ["one", "two", "three"])
    assert held_out_of(load_mixture(m), load_task(tasks["toy_b"])) == (["two"], ["one", "three"])


def test_interrupted_generalist_run_continues(tmp_path, tiny_folder, mix, monkeypatch):
    import adaptlab.train.loop as L

    m, tasks = mix
    real = L.save_checkpoint

    def save_then_die(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    c = cfg(tiny_folder, tasks["toy_c"], f"instruct:mixture={m}:save_every=2", epochs=2)   # 2 steps an epoch
    monkeypatch.setattr(L, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        compare(c, str(tmp_path / "r"))
    assert load_results(tmp_path / "r") == []
    monkeypatch.setattr(L, "save_checkpoint", real)
    rec = compare(c, str(tmp_path / "r"))[0]
    assert rec["status"] == "ok", rec.get("error")
    assert rec["train_steps"] == 4 and rec["resumed_from_step"] == 2


@pytest.mark.parametrize("runs, words", [
    ("instruct:nope=1", "instruct:nope=1: unknown key 'nope'"),
    ("metaicl:mixture=no-such-mixture", "unknown mixture"),
    ("instruct:method=magic", "unknown method 'magic'"),
    ("metaicl:k=0", "k=0: must be at least 1"),
    ("instruct:r=0", "r=0"),
    ("instruct:chat=maybe", "chat")])
def test_bad_generalist_runs(runs, words):
    with pytest.raises(ConfigError, match=words):
        parse_runs(runs)


def test_generalist_refuses_an_encoder_and_a_mixture_left_empty(tmp_path, mix, tiny_encoder_folder, tiny_folder):
    m, tasks = mix
    with pytest.raises(ConfigError, match="encoder"):
        parse_runs("zero-shot,metaicl:k=2", model_kind=lambda: "encoder")
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="encoder"):
        compare(cfg(tiny_encoder_folder, tasks["toy_c"], f"zero-shot,instruct:mixture={m}"), str(out))
    assert not out.exists()
    one = tmp_path / "one.yaml"
    one.write_text("name: one\ntasks:\n  - {task: toy_c.yaml, cluster: three, templates: ['Q {text} A']}\n")
    with pytest.raises(ConfigError, match="no training cluster is left"):
        compare(cfg(tiny_folder, tasks["toy_c"], f"zero-shot,instruct:mixture={one}"), str(out))
    assert not out.exists()


def test_cli_bad_generalist_option_is_one_line_exit_2(tmp_path, tiny_folder, capsys):
    from conftest import run_cli

    out = tmp_path / "never"
    args = ["compare", "--model", tiny_folder, "--runs", "zero-shot,metaicl:k=2:nope=1", "--out", str(out)]
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert "metaicl:k=2:nope=1: unknown key 'nope'" in err and len(err.splitlines()) == 1 and not out.exists()
