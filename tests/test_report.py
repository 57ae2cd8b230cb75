"""Report rendering on recorded results (no model runs)."""

from adaptlab.report import summarize
from adaptlab.report import format_table, write_report


def rec(run, name, kind, seed, acc, params=0, nbytes=0, cfg=None, status="ok", error=None):
    r = {"run": run, "name": name, "kind": kind, "seed": seed, "task": "reviews", "model": "m",
         "metric": "accuracy", "status": status}
    if status == "ok":
        r.update(metrics={"accuracy": acc, "n": 100}, trainable_params=params, adapter_bytes=nbytes,
                 train_seconds=10.0 if kind == "tune" else 0.0, config=cfg or {},
                 cost={"calls": 100, "prompt_tokens": 1000, "generated_tokens": 0, "wall_seconds": 3.0})
    else:
        r["error"] = error
    return r


RECORDS = [
    rec("zero-shot", "zero-shot", "prompt", 0, 0.6),
    rec("few-shot:k=2", "few-shot", "prompt", 0, 0.65, cfg={"k": 2, "labels": "gold"}),
    rec("few-shot:k=8", "few-shot", "prompt", 0, 0.7, cfg={"k": 8, "labels": "gold"}),
    rec("few-shot:labels=flipped:p=0.5", "few-shot", "prompt", 0, 0.55, cfg={"k": 8, "labels": "flipped", "p": 0.5}),
    rec("lora", "lora", "tune", 0, 0.9, params=100_000, nbytes=400_000),
    rec("lora", "lora", "tune", 1, 0.92, params=100_000, nbytes=400_000),
    rec("prefix", "prefix", "tune", 0, None, status="failed", error="RuntimeError: boom"),
]


def test_summary_mean_std_and_failed():
    rows = {r["run"]: r for r in summarize(RECORDS)}
    assert abs(rows["lora"]["mean"] - 0.91) < 1e-9 and rows["lora"]["seeds"] == 2 and rows["lora"]["std"] > 0
    assert rows["prefix"]["status"] == "failed" and rows["prefix"]["error"] == "RuntimeError: boom"


def test_write_report(tmp_path):
    info = write_report(tmp_path, RECORDS, {"task": "reviews", "model": "m", "seeds": 2, "limit": 100})
    assert set(info["plots"]) == {"metric_vs_params", "metric_vs_bytes", "cost", "accuracy_vs_k",
                                  "accuracy_vs_flipped"}
    md = (tmp_path / "report.md").read_text()
    assert "| lora | tune | accuracy | 0.9100 |" in md and "RuntimeError: boom" in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("<img") == 5 and 'class="failed"' in html and "<script" not in html
    for p in info["plots"]:
        assert (tmp_path / f"{p}.png").read_bytes()[:4] == b"\x89PNG"


def test_format_table_aligns():
    t = format_table([{"a": "x", "b": 1.5}, {"a": "longer", "b": 10}])
    lines = t.splitlines()
    assert len({len(line) for line in lines[1:]}) == 1  # separator and numeric rows


def test_verdict_says_which_half_wins_and_what_it_costs():
    from adaptlab.report import verdict

    tuned_wins = " ".join(verdict(summarize(RECORDS)))
    assert "Best: **lora** (accuracy 0.9100)" in tuned_wins
    assert "21.0 points above the best prompt (**few-shot:k=8**, 0.7000)" in tuned_wins
    assert "100,000 trained parameters" in tuned_wins and "One seed per run" in tuned_wins   # zero-shot: 1 seed
    two = [r for r in RECORDS if r["run"] == "lora"] + [rec("zero-shot", "zero-shot", "prompt", s, 0.6) for s in (0, 1)]
    assert "Largest seed-to-seed std: 0.0141" in " ".join(verdict(summarize(two)))
    prompt_wins = " ".join(verdict(summarize([rec("zero-shot", "zero-shot", "prompt", 0, 0.8),
                                              rec("head", "head", "tune", 0, 0.7, params=10, nbytes=40)])))
    assert "Prompting is enough here: **zero-shot** (0.8000)" in prompt_wins
    assert "One seed per run" in prompt_wins
    assert verdict(summarize([rec("prefix", "prefix", "tune", 0, None, status="failed", error="x")])) == []
    close = " ".join(verdict(summarize([rec("lora", "lora", "tune", 0, 0.9, params=100, nbytes=4000),
                                        rec("ia3", "ia3", "tune", 0, 0.895, params=10, nbytes=40),
                                        rec("zero-shot", "zero-shot", "prompt", 0, 0.5)])))
    assert "the smallest on disk is **ia3** (40 B)" in close


def test_html_report_carries_the_verdict(tmp_path):
    write_report(tmp_path, RECORDS, {"task": "reviews", "model": "m", "seeds": 2, "limit": 100})
    html = (tmp_path / "report.html").read_text()
    assert '<p id="verdict">Best: <b>lora</b>' in html


def test_report_shows_the_thread_policy(tmp_path, monkeypatch):
    from adaptlab import threads

    monkeypatch.setattr(threads, "_CHOICE", {"threads": 1, "source": "auto", "cpus": 2, "processes": 1,
                                             "busy": 1.3, "wait": "PASSIVE"})
    write_report(tmp_path, RECORDS, {"task": "reviews", "model": "m", "seeds": 2, "limit": 100})
    assert "CPU threads: 1 (auto: 2 cpus, 1.3 busy; OpenMP wait passive)." in (tmp_path / "report.md").read_text()
    assert 'id="threads">CPU threads: 1 (auto' in (tmp_path / "report.html").read_text()


def test_one_seed_shows_no_std():
    """A std over one seed was never measured: the table shows a dash, not 0.0000 (issue 26)."""
    from adaptlab.report import _display_rows
    one = {"run": "lora", "kind": "tune", "metric": "accuracy", "mean": 0.9, "std": 0.0, "seeds": 1,
           "trainable_params": 1, "adapter_bytes": 10, "train_s": 1.0, "eval_s": 1.0,
           "calls": 1, "tokens": 1, "train_calls": 0, "train_forwards": 0}
    two = dict(one, std=0.01, seeds=2)
    assert _display_rows([one])[0]["std"] == "–"
    assert _display_rows([two])[0]["std"] == "0.0100"
