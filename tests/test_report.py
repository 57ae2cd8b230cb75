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


# --------------------------------------------------------------------------- plots (issue 26)

def _figs(recs, n_labels=2):
    from adaptlab.report import figures

    return figures(summarize(recs), recs, n_labels)


def _title(fig, ax):
    return ax.get_title() or (fig._suptitle.get_text() if fig._suptitle else "")


def test_every_plot_has_a_title_axis_labels_and_a_legend_where_marks_differ():
    import matplotlib.pyplot as plt

    figs = _figs(RECORDS)
    assert set(figs) == {"metric_vs_params", "metric_vs_bytes", "cost", "accuracy_vs_k", "accuracy_vs_flipped"}
    for name, fig in figs.items():
        axes = fig.axes
        assert all(_title(fig, ax) for ax in axes), name
        assert all(ax.get_xlabel() or ax.get_xticklabels() for ax in axes), name
        assert any(ax.get_ylabel() for ax in axes) and any(ax.get_xlabel() for ax in axes), name
        if name != "cost":          # several kinds of mark: prompting/tuning/chance, or the curve and chance
            assert fig.legends or any(ax.get_legend() for ax in axes), name
        plt.close(fig)
    assert figs["cost"].axes[0].get_legend() is not None            # train and eval


def test_accuracy_vs_k_spans_chance_to_one_and_names_n():
    """0.637 vs 0.643 (2 of 300 examples) must not fill the y axis like a steep rise."""
    recs = [rec("zero-shot", "zero-shot", "prompt", 0, 0.637),
            rec("few-shot:k=4", "few-shot", "prompt", 0, 0.643, cfg={"k": 4, "labels": "gold"})]
    for r in recs:
        r["metrics"]["n"] = 300
    ax = _figs(recs)["accuracy_vs_k"].axes[0]
    lo, hi = ax.get_ylim()
    assert lo <= 0.5 + 1e-9 and lo > 0.45 and hi >= 1.0
    assert "300 test examples" in ax.get_title()
    errs = [c for c in ax.containers if hasattr(c, "has_yerr") and c.has_yerr]
    assert errs, "one seed: the error bars show the binomial standard error over n"


def test_prompting_runs_sit_in_their_own_strip_not_at_one_on_the_log_axis():
    for name in ("metric_vs_params", "metric_vs_bytes"):
        fig = _figs(RECORDS)[name]
        logs = [ax for ax in fig.axes if ax.get_xscale() == "log"]
        strips = [ax for ax in fig.axes if ax.get_xscale() != "log"]
        assert len(logs) == 1 and len(strips) == 1, name
        xs = [x for c in logs[0].containers for x in c.lines[0].get_xdata()]      # the points, not the chance line
        assert xs and min(xs) > 1, name                              # only the tuned run, at its real size
        assert [t.get_text() for t in strips[0].get_xticklabels()] == ["0 (prompting)"]
        legend = " ".join(t.get_text() for lg in fig.legends for t in lg.get_texts())
        assert "prompting" in legend and "tuning" in legend


def test_point_labels_do_not_overlap():
    import itertools

    recs = [rec(f"few-shot:k={k}", "few-shot", "prompt", 0, 0.60 + 0.001 * k, cfg={"k": k, "labels": "gold"})
            for k in (1, 2, 4, 8)]
    recs += [rec(m, m, "tune", 0, 0.8 + 0.001 * i, params=1000 * (i + 1), nbytes=4000 * (i + 1))
             for i, m in enumerate(("lora", "ia3", "bitfit"))]
    from matplotlib.text import Text

    fig = _figs(recs)["metric_vs_params"]
    fig.canvas.draw()
    boxes = [Text.get_window_extent(t) for ax in fig.axes for t in ax.texts]      # the text, not its leader line
    assert len(boxes) == 7
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)


def test_equal_model_calls_are_one_sentence_not_identical_bars(tmp_path):
    assert len(_figs(RECORDS)["cost"].axes) == 1                     # every run: 100 calls
    write_report(tmp_path, RECORDS, {"task": "reviews", "model": "m", "seeds": 2, "limit": 100})
    assert "Every run made the same 100 model calls at evaluation." in (tmp_path / "report.md").read_text()
    assert "Every run made the same 100 model calls at evaluation." in (tmp_path / "report.html").read_text()
    differ = RECORDS[:1] + [dict(RECORDS[1], cost=dict(RECORDS[1]["cost"], calls=400))]
    axes = _figs(differ)["cost"].axes
    assert len(axes) == 2 and axes[1].get_title() == "model calls at evaluation"


def test_plots_are_rendered_at_the_size_the_html_shows_them(tmp_path):
    import re
    import struct

    from adaptlab.report import DPI, FONT

    info = write_report(tmp_path, RECORDS, {"task": "reviews", "model": "m", "seeds": 2, "limit": 100})
    html = (tmp_path / "report.html").read_text()
    assert "max-width: 640px" not in html and "max-width: 100%" in html
    shown = [int(w) for w in re.findall(r'<img [^>]*width="(\d+)"', html)]
    for p, w in zip(info["plots"], shown):
        natural = struct.unpack(">II", (tmp_path / f"{p}.png").read_bytes()[16:24])[0]
        assert natural == w and 560 <= natural <= 800, (p, natural)
    assert FONT * DPI / 72 >= 10                                     # text of at least 10 px at 1:1


def test_html_carries_every_fact_of_the_markdown(tmp_path):
    import html as H
    import re

    staged = [dict(r, stages=[{"folder": "tapt-1", "stage": "tapt", "steps": 7, "seconds": 3.0,
                               "result": "task-adapted backbone"}]) if r["run"] == "lora" else r for r in RECORDS]
    for r in staged:
        if r.get("status") == "ok":
            r["train_steps"] = 5 if r["kind"] == "tune" else 0
    write_report(tmp_path, staged, {"task": "reviews", "model": "m", "seeds": 2, "limit": 100, "train_limit": 64,
                                    "epochs": 1, "max_steps": 5, "threads": "1 (fixed)"})
    md = (tmp_path / "report.md").read_text()
    page = H.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", (tmp_path / "report.html").read_text())))
    prose = [line.strip("- ").replace("**", "") for line in md.splitlines()
             if line and not line.startswith(("#", "|", "!["))]
    assert any("1 epoch(s) or at most 5 steps" in p for p in prose) and any("tapt" in p for p in prose)
    for p in prose:
        assert p in page, p
    assert "counted once" in md and "tokens" in md.split("| status |")[1]      # the column explained under it


def test_generalist_rows_count_on_the_tuning_side():
    """instruct / metaicl runs train an adapter: the verdict and the log-axis plots treat them as tuned
    (own marker and legend entry), and the report says what each trained on and held out."""
    import matplotlib.pyplot as plt

    from adaptlab.report import markdown_report, verdict

    g = rec("metaicl:k=2", "metaicl", "generalist", 0, 0.95, params=50_000, nbytes=200_000)
    g.update(held_out=["sentiment"], train_clusters=["nli", "topic"], config={"mixture": {"name": "flan-mini"}},
             eval_config={"strategy": "few-shot", "k": 2})
    recs = RECORDS[:2] + [g]
    rows = summarize(recs)
    said = " ".join(verdict(rows))
    assert "**metaicl:k=2** is 30.0 points above the best prompt" in said and "50,000 trained parameters" in said
    fig = _figs(recs)["metric_vs_params"]
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any(lab.startswith("generalist") for lab in labels) and len(fig.axes) == 2   # the strip + the log axis
    plt.close("all")
    md = markdown_report(rows, {"task": "sst2", "model": "m", "seeds": 1}, [])
    assert "| metaicl:k=2 | generalist |" in md and "## Generalist runs" in md
    assert ("**metaicl:k=2**: trained on mixture flan-mini (clusters: nli, topic), held out: sentiment; "
            "scored few-shot k=2") in md
