"""The report's side of learning from feedback (reward model, DPO, GRPO records), on recorded results."""

import struct

import matplotlib.pyplot as plt
import pytest

from adaptlab.report import PLOT_ALT, figures, main_metric, summarize, verdict, write_report
from test_report import RECORDS, rec

SETTINGS = {"task": "multiarith", "model": "m", "seeds": 2, "limit": 100, "n_labels": 0}


def fb(run, objective, seed, value, metric="accuracy", before=None, curve=(), params=50_000, **extra):
    """A feedback record as compare writes it (see the brief of compare.py)."""
    r = rec(run, run.split(":")[0], "feedback", seed, None, params=params, nbytes=4 * params)
    r.update(task="multiarith", metric=metric, objective=objective, metrics={metric: value, "n": 100, "loss": 0.69},
             curve=[dict(c) for c in curve], train_seconds=12.0, train_calls=0, train_forwards=8, train_steps=3,
             **extra)
    if before is not None:
        r["before"] = {metric: before}
    return r


def grpo_curve(seed):
    return [{"step": s, "loss": 0.01 * s, "reward": 0.1 * s + 0.1 * seed - 0.05, "kl": 1e-4 * s * (1 + 2 * seed) / 3,
             "reward_std": 0.2, "reply_tokens": 12} for s in (1, 2, 3)]


def rm_curve(seed):
    return [{"step": s, "loss": 0.7 - 0.1 * s, "accuracy": 0.5 + 0.1 * s + 0.02 * seed, "margin": 0.1 * s}
            for s in (1, 2, 3)]


def dpo_curve(seed):          # the first step logged no reward_accuracy
    return [{"step": 1, "loss": 0.69}] + [{"step": s, "loss": 0.69 - 0.05 * s, "margin": 0.01 * s,
                                           "reward_accuracy": 0.5 + 0.05 * s + 0.1 * seed} for s in (2, 3)]


RECS = [
    *[rec("zero-shot", "zero-shot", "prompt", s, v) for s, v in ((0, 0.50), (1, 0.52))],
    *[rec("lora", "lora", "tune", s, v, params=100_000, nbytes=400_000) for s, v in ((0, 0.60), (1, 0.62))],
    *[fb("reward-model", "reward", s, v, curve=rm_curve(s)) for s, v in ((0, 0.70), (1, 0.74))],
    *[fb("dpo", "dpo", s, v, params=100_000, curve=dpo_curve(s)) for s, v in ((0, 0.64), (1, 0.66))],
    *[fb("grpo:group_size=4", "grpo", s, v, before=b, params=100_000, curve=grpo_curve(s))
      for s, v, b in ((0, 0.55, 0.025), (1, 0.45, 0.035))],
]
# GRPO against a reward model: scored by the reward model's mean score, not the task's metric
RM_SCORED = [fb("grpo:beta=0.1", "grpo", s, v, metric="reward", before=b, params=777, curve=grpo_curve(s))
             for s, v, b in ((0, 2.4, 1.0), (1, 2.6, 1.2))]


def _page(tmp_path):
    import html as H
    import re

    return H.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", (tmp_path / "report.html").read_text())))


def _section(md):
    return md.split("## Learning from feedback\n")[1].split("\n## ")[0]


def test_summarize_carries_objective_before_and_last_step():
    rows = {r["run"]: r for r in summarize(RECS + RM_SCORED)}
    g = rows["grpo:group_size=4"]
    assert g["kind"] == "feedback" and g["objective"] == "grpo" and g["metric"] == "accuracy"
    assert g["mean"] == pytest.approx(0.50) and g["before_mean"] == pytest.approx(0.03)
    assert g["last_step"]["reward"] == pytest.approx(0.30) and g["last_step"]["kl"] == pytest.approx(2e-4)
    assert "step" not in g["last_step"] and g["train_steps"] == 3
    assert rows["grpo:beta=0.1"]["before_mean"] == pytest.approx(1.1) and rows["grpo:beta=0.1"]["metric"] == "reward"
    assert rows["reward-model"]["objective"] == "reward" and "before_mean" not in rows["reward-model"]
    assert rows["dpo"]["last_step"]["reward_accuracy"] == pytest.approx(0.70)
    assert "objective" not in rows["lora"] and "objective" not in rows["zero-shot"]


def test_feedback_section_says_objective_metric_and_before_after(tmp_path):
    write_report(tmp_path, RECS + RM_SCORED, SETTINGS)
    md = (tmp_path / "report.md").read_text()
    lines = [line for line in _section(md).splitlines() if line.startswith("- ")]
    assert lines == [
        "- **reward-model**: reward model (Bradley–Terry); accuracy 0.7200 ± 0.0283 over 2 seeds (pairwise accuracy "
        "on the test pairs, chance 0.5)",
        "- **dpo**: DPO; accuracy 0.6500 ± 0.0141 over 2 seeds (implicit reward accuracy on the test pairs, "
        "chance 0.5)",
        "- **grpo:group_size=4**: GRPO; accuracy before → after training: 0.0300 → 0.5000 ± 0.0707 over 2 seeds "
        "(the task's accuracy after GRPO); at the last logged step: training reward 0.3000, KL to the reference "
        "0.0002 (mean over seeds)",
        "- **grpo:beta=0.1**: GRPO; reward before → after training: 1.1000 → 2.5000 ± 0.1414 over 2 seeds (mean "
        "reward-model score of its greedy replies to the test prompts); at the last logged step: training reward "
        "0.3000, KL to the reference 0.0002 (mean over seeds)",
    ]
    page = _page(tmp_path)
    assert "Learning from feedback" in page
    for line in lines:
        assert line[2:].replace("**", "") in page, line


def test_html_carries_every_fact_of_the_markdown(tmp_path):
    write_report(tmp_path, RECS + RM_SCORED, SETTINGS)
    md = (tmp_path / "report.md").read_text()
    page = _page(tmp_path)
    prose = [line.strip("- ").replace("**", "") for line in md.splitlines()
             if line and not line.startswith(("#", "|", "!["))]
    assert any("before → after" in p for p in prose)
    for p in prose:
        assert p in page, p


def test_feedback_runs_count_on_the_tuning_side():
    said = " ".join(verdict(summarize(RECS)))
    assert "Best: **reward-model** (accuracy 0.7200)" in said
    assert "Tuning beats prompting here: **reward-model** is 21.0 points above the best prompt (**zero-shot**, " \
           "0.5100) for 50,000 trained parameters" in said
    fig = figures(summarize(RECS), RECS)["metric_vs_params"]
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert "learning from feedback" in legend and "tuning" in legend and len(fig.axes) == 2
    log = next(ax for ax in fig.axes if ax.get_xscale() == "log")
    assert sorted(round(c.lines[0].get_ydata()[0], 4) for c in log.containers) == [0.5, 0.61, 0.65, 0.72]
    plt.close("all")


def test_a_run_scored_by_a_reward_model_stays_out_of_the_verdict_and_quality_plots():
    recs = RM_SCORED + RECS                         # first in the records: still not the task's metric
    rows = summarize(recs)
    assert main_metric(rows) == "accuracy"
    said = " ".join(verdict(rows))
    assert "Best: **reward-model** (accuracy 0.7200)" in said and "grpo:beta=0.1" not in said
    assert "Largest seed-to-seed std: 0.0707" in said            # grpo's 0.1414 on "reward" is not counted
    figs = figures(rows, recs)
    for name in ("metric_vs_params", "metric_vs_bytes"):
        xs = [x for ax in figs[name].axes for c in ax.containers for x in c.lines[0].get_xdata()]
        ys = [y for ax in figs[name].axes for c in ax.containers for y in c.lines[0].get_ydata()]
        assert 777 not in xs and 4 * 777 not in xs and max(ys) == pytest.approx(0.72), name
        assert "grpo:beta=0.1" not in [t.get_text() for ax in figs[name].axes for t in ax.texts], name
    cost_runs = [t.get_text() for t in figs["cost"].axes[0].get_yticklabels()]
    assert "grpo:beta=0.1" in cost_runs                           # what it cost is still shown
    plt.close("all")


def test_feedback_curves_plot_has_a_panel_per_quantity_with_data(tmp_path):
    info = write_report(tmp_path, RECS + RM_SCORED, SETTINGS)
    assert "feedback_curves" in info["plots"]
    png = (tmp_path / "feedback_curves.png").read_bytes()
    assert png[:4] == b"\x89PNG" and 560 <= struct.unpack(">II", png[16:24])[0] <= 800
    assert f"![{PLOT_ALT['feedback_curves']}](feedback_curves.png)" in (tmp_path / "report.md").read_text()
    assert f'alt="{PLOT_ALT["feedback_curves"]}"' in (tmp_path / "report.html").read_text().replace("&#x27;", "'")

    fig = figures(summarize(RECS), RECS)["feedback_curves"]
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert list(axes) == ["reward (GRPO)", "KL to the reference (GRPO)", "training accuracy (reward model, DPO)",
                          "loss"]
    assert all(ax.get_xlabel() == "step" and ax.get_ylabel() for ax in fig.axes)
    assert "mean over seeds" in fig._suptitle.get_text()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["grpo:group_size=4", "reward-model", "dpo"]
    reward = axes["reward (GRPO)"].lines
    assert len(reward) == 1 and list(reward[0].get_ydata()) == pytest.approx([0.1, 0.2, 0.3])   # mean of 2 seeds
    acc = {tuple(line.get_xdata()): list(line.get_ydata())
           for line in axes["training accuracy (reward model, DPO)"].lines}
    assert acc[(1.0, 2.0, 3.0)] == pytest.approx([0.61, 0.71, 0.81])                  # reward model's accuracy
    assert acc[(2.0, 3.0)] == pytest.approx([0.65, 0.70])                             # dpo: step 1 logged none
    assert len(axes["loss"].lines) == 3
    plt.close("all")


def test_feedback_curves_draw_only_panels_with_data():
    recs = [r for r in RECS if r["run"] in ("zero-shot", "reward-model")]
    fig = figures(summarize(recs), recs)["feedback_curves"]
    assert [ax.get_title() for ax in fig.axes] == ["training accuracy (reward model, DPO)", "loss"]
    plt.close("all")
    bare = [dict(r, curve=[]) if r["kind"] == "feedback" else r for r in recs]
    figs = figures(summarize(bare), bare)
    assert "feedback_curves" not in figs and "metric_vs_params" in figs
    plt.close("all")


def test_failed_feedback_record_is_listed_under_failed_runs(tmp_path):
    failed = {"run": "dpo:beta=0.5", "name": "dpo", "kind": "feedback", "seed": 0, "task": "multiarith", "model": "m",
              "metric": "accuracy", "status": "failed", "error": "ConfigError: dpo needs a preference task"}
    write_report(tmp_path, RECS + [failed], SETTINGS)
    md = (tmp_path / "report.md").read_text()
    assert "- **dpo:beta=0.5**: ConfigError: dpo needs a preference task" in md.split("## Failed runs")[1]
    assert "dpo:beta=0.5" not in _section(md)
    html = (tmp_path / "report.html").read_text()
    assert "<li><b>dpo:beta=0.5</b>: ConfigError: dpo needs a preference task</li>" in html


def test_no_feedback_rows_no_section_and_no_curves(tmp_path):
    info = write_report(tmp_path, RECORDS, {"task": "reviews", "model": "m", "seeds": 2, "limit": 100})
    assert "feedback_curves" not in info["plots"] and not (tmp_path / "feedback_curves.png").exists()
    assert "Learning from feedback" not in (tmp_path / "report.md").read_text()
    assert "Learning from feedback" not in (tmp_path / "report.html").read_text()
