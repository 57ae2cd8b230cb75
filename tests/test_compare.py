import json

import pytest

from adaptlab.compare import CompareConfig, compare, load_results, parse_runs
from adaptlab.report import summarize
from adaptlab.errors import ConfigError



def cfg(model, runs="zero-shot,few-shot:k=2,lora:r=2", **kw):
    base = dict(task="reviews", model=model, runs=runs, limit=6, train_limit=8, max_steps=2, batch_size=4,
                eval_limit=4)
    base.update(kw)
    return CompareConfig(**base)


def test_parse_runs():
    specs = parse_runs("zero-shot,few-shot:k=8:selection=balanced,lora:r=8")
    assert [(s.name, s.kind, s.sets) for s in specs] == [
        ("zero-shot", "prompt", {}), ("few-shot", "prompt", {"k": "8", "selection": "balanced"}),
        ("lora", "tune", {"r": "8"})]


@pytest.mark.parametrize("runs, words", [
    ("zero-shot,,lora", "empty run"), ("magic", "unknown run 'magic'"), ("lora:r", "key=value"),
    ("lora:r=0", "r"), ("few-shot:k=-1", "k"), ("lora:nope=1", "unknown key"), ("lora,lora", "twice")])
def test_bad_runs(runs, words):
    with pytest.raises(ConfigError, match=words):
        parse_runs(runs)


def test_compare_writes_results_and_report_and_resumes(tmp_path, tiny_folder, capsys):
    out = tmp_path / "cmp"
    recs = compare(cfg(tiny_folder), str(out))
    assert [r["run"] for r in recs] == ["zero-shot", "few-shot:k=2", "lora:r=2"]
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    lora = recs[2]
    assert lora["trainable_params"] > 0 and lora["adapter_bytes"] > 0 and recs[0]["trainable_params"] == 0
    assert (out / "report.md").exists() and (out / "report.html").exists()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "http" not in html.replace("http-equiv", "")
    before = (out / "results.jsonl").read_text()
    capsys.readouterr()
    again = compare(cfg(tiny_folder), str(out))
    assert "3 finished run(s) kept, 0 to do" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text() == before and len(again) == 3


def test_interrupted_compare_resumes_to_the_same_results(tmp_path, tiny_folder, monkeypatch):
    import adaptlab.compare as C

    full = compare(cfg(tiny_folder), str(tmp_path / "a"))
    real = C._run_tune
    calls = {"n": 0}

    def killed(*a, **k):
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(C, "_run_tune", killed)
    with pytest.raises(KeyboardInterrupt):
        compare(cfg(tiny_folder), str(tmp_path / "b"))
    kept = load_results(tmp_path / "b")
    assert [r["run"] for r in kept] == ["zero-shot", "few-shot:k=2"]
    monkeypatch.setattr(C, "_run_tune", real)
    resumed = compare(cfg(tiny_folder), str(tmp_path / "b"))

    def key(rs):
        return [(r["run"], r["seed"], r["metrics"]) for r in rs]

    assert key(resumed) == key(full)


def test_failed_run_is_a_row_and_others_finish(tmp_path, tiny_folder, monkeypatch):
    import adaptlab.compare as C

    def boom(*a, **k):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(C, "_run_tune", boom)
    recs = compare(cfg(tiny_folder, runs="zero-shot,lora"), str(tmp_path / "c"))
    assert [r["status"] for r in recs] == ["ok", "failed"]
    rows = summarize(recs)
    assert rows[1]["status"] == "failed" and "out of memory" in rows[1]["error"]
    assert "out of memory" in (tmp_path / "c" / "report.md").read_text()


def test_other_settings_in_same_out_refused(tmp_path, tiny_folder):
    out = tmp_path / "d"
    compare(cfg(tiny_folder, runs="zero-shot"), str(out))
    with pytest.raises(ConfigError, match="other settings"):
        compare(cfg(tiny_folder, runs="zero-shot", limit=5), str(out))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        compare(cfg(tiny_folder, runs="zero-shot"), str(tmp_path / "e"))


def test_results_jsonl_has_resolved_config(tmp_path, tiny_folder):
    recs = compare(cfg(tiny_folder, runs="few-shot:k=2"), str(tmp_path / "f"))
    line = json.loads((tmp_path / "f" / "results.jsonl").read_text().splitlines()[0])
    assert line["config"]["k"] == 2 and line == recs[0]


def test_compare_loads_the_base_once(tmp_path, tiny_folder, monkeypatch):
    """A tuning run is evaluated on the model just trained: the base is not read from disk again."""
    import adaptlab.models as M

    calls = []
    real = M.load_backbone
    monkeypatch.setattr(M, "load_backbone", lambda *a, **k: calls.append(a) or real(*a, **k))
    recs = compare(cfg(tiny_folder, runs="zero-shot,lora:r=2,head"), str(tmp_path / "c"))
    assert all(r["status"] == "ok" for r in recs) and len(calls) == 1


def test_staged_runs_pretrain_and_extend_once_and_report(tmp_path, tiny_folder):
    """tapt+ / dapt+ / vocab+ runs: each stage runs once for all its runs and seeds; its seconds count."""
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(["the battery is excellent", "an awful boring film", "a great movie"] * 40))
    runs = (f"tapt+lora:r=2:pt_steps=2:pt_batch_size=8,tapt+head:pt_steps=2:pt_batch_size=8,"
            f"dapt+lora:pt_text={text}:pt_steps=2,vocab+lora:extend=3:vocab_size=400")
    out = tmp_path / "c"
    recs = compare(cfg(tiny_folder, runs=runs, seeds=2), str(out))
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    by = {(r["run"], r["seed"]): r for r in recs}
    t = by[("tapt+lora:r=2:pt_steps=2:pt_batch_size=8", 0)]
    assert [s["stage"] for s in t["stages"]] == ["tapt"] and t["stages"][0]["result"] == "model folder"
    assert t["train_seconds"] >= t["stages"][0]["seconds"]
    folders = {s["folder"] for r in recs for s in r.get("stages", [])}
    assert len(folders) == 3                       # one tapt (lora and head share it), one dapt, one vocab
    assert sorted(p.name.split("-")[0] for p in (out / "stages").iterdir()) == ["dapt", "tapt", "vocab"]
    v = by[("vocab+lora:extend=3:vocab_size=400", 1)]
    assert v["stages"][0]["added"] == 3
    md = (out / "report.md").read_text()
    assert "tapt+lora" in md and "## Stages before tuning" in md and "whole-word tokens added" in md


@pytest.mark.parametrize("runs, words", [
    ("tapt+dapt+lora", "not both"), ("magic+lora", "unknown stage"), ("dapt+lora", "pt_text"),
    ("lora:pt_steps=3", "stage option"), ("tapt+lora:pt_method=adapter", "must be adapter"),
    ("tapt+lora:pt_method=head", "pt_method"), ("vocab+lora:extend=0", "extend")])
def test_bad_staged_runs(runs, words):
    with pytest.raises(ConfigError, match=words):
        parse_runs(runs)


def test_max_steps_is_a_cap_not_an_override(tmp_path, tiny_folder):
    """--max-steps caps epochs x steps per epoch: 8 train examples in batches of 4 = 2 steps an epoch,
    so 1 epoch with --max-steps 5 runs 2 steps (one dev check), and 2 epochs with a cap of 3 run 3."""
    out = tmp_path / "cap"
    recs = compare(cfg(tiny_folder, runs="lora:r=2", epochs=1, max_steps=5), str(out))
    assert recs[0]["status"] == "ok", recs[0].get("error")
    assert recs[0]["train_steps"] == 2
    tc = json.loads((out / "runs" / "lora_r_2-seed0" / "tune_config.json").read_text())["train_config"]
    assert tc["max_steps"] is None and tc["step_cap"] == 5
    md = (out / "report.md").read_text()
    assert "1 epoch(s) or at most 5 steps, whichever is fewer" in md and "steps run: lora:r=2 2" in md
    capped = compare(cfg(tiny_folder, runs="lora:r=2", epochs=2, max_steps=3), str(tmp_path / "cap2"))
    assert capped[0]["train_steps"] == 3


def test_resumed_tuning_run_counts_seconds_like_train_seconds(tmp_path, tiny_folder, monkeypatch):
    """Issue 28: a resumed run's train_seconds counted the interrupted invocation's training, its
    seconds did not. Both count it now (seconds = wall_seconds + seconds_before)."""
    import adaptlab.train.loop as L

    real = L.save_checkpoint

    def save_then_die(folder, moving, tensors, values, rng):
        values = dict(values, seconds=values["seconds"] + 1000.0)   # an earlier invocation that trained long
        real(folder, moving, tensors, values, rng)
        raise KeyboardInterrupt

    out = tmp_path / "r"
    c = cfg(tiny_folder, runs="lora:r=2", epochs=2, max_steps=None)        # 2 steps an epoch, 4 in all
    monkeypatch.setattr(L, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        compare(c, str(out))
    monkeypatch.setattr(L, "save_checkpoint", real)
    rec = compare(c, str(out))[0]
    assert rec["status"] == "ok", rec.get("error")
    assert rec["train_steps"] == 4 and rec["resumed_from_step"] == 2
    assert rec["train_seconds"] >= 1000 and rec["seconds_before"] >= 1000
    assert rec["seconds"] >= rec["train_seconds"] and rec["wall_seconds"] < 1000
    assert rec["seconds"] == round(rec["wall_seconds"] + rec["seconds_before"], 2)


def test_compare_progress_says_runs_done_time_left_and_names_the_dev_eval(tmp_path, tiny_folder, capsys,
                                                                          monkeypatch):
    import adaptlab.compare as C
    import adaptlab.progress

    monkeypatch.setenv("ADAPTLAB_PROGRESS", "lines")
    monkeypatch.setattr(adaptlab.progress, "QUIET_SECONDS", 0.0)   # a tiny run is over before the quiet 5 s
    t = {"now": 0.0}

    def clock():                          # every reading 10 s after the last
        t["now"] += 10.0
        return t["now"]

    monkeypatch.setattr(C, "_clock", clock)
    capsys.readouterr()
    compare(cfg(tiny_folder), str(tmp_path / "cmp"))
    err = capsys.readouterr().err.splitlines()
    heads = [line for line in err if line.startswith(("[", "compare:"))]
    assert heads == ["[1/3] zero-shot seed=0",
                     # 10 s a run, 2 to go; the tuning run timed by the prompting runs so far
                     "[2/3] few-shot:k=2 seed=0 (1 done in 40 s, ~20 s left or more)",
                     "[3/3] lora:r=2 seed=0 (2 done in 70 s, ~10 s left or more)",
                     "compare: 3 run(s) in 100 s"], err
    assert any(line.startswith("dev eval lora: 4/4 (100%)") for line in err), err
    assert any(line.startswith("test eval lora:r=2 seed=0: 6/6") for line in err), err
