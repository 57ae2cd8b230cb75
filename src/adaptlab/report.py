"""Readable output: plain-text tables for the terminal, and the compare report: report.md with
PNG plots beside it and a self-contained report.html carrying the same facts (plots inline).

Every plot has a title, axis labels and a legend where it shows more than one kind of mark;
quality axes run from chance (1/labels for classification, else 0) to 1, with error bars (the std
over seeds, or with one seed the binomial standard error over the n test examples) and n in the
title, so that 2 examples of 300 do not look like a steep rise. Prompting runs train and store
nothing: the quality-vs-cost plots put them in a strip of their own at 0, never at 1 on a log axis.
Learning-from-feedback runs (reward model, DPO, GRPO) count on the tuning side, with training curves
of their own; one scored by a reward model instead of the task's metric stays out of the verdict and
the quality plots."""

from __future__ import annotations

import math
import statistics


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """An aligned text table; ``columns`` picks and orders keys (default: first row's)."""
    if not rows:
        return "(nothing)"
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(vals):
        return "  ".join(v.ljust(w) if i == 0 or not _numeric(v) else v.rjust(w)
                         for i, (v, w) in enumerate(zip(vals, widths))).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _numeric(s: str) -> bool:
    return s.replace(",", "").replace(".", "", 1).replace("-", "", 1).isdigit()


# --------------------------------------------------------------------------- compare reports

# Row kinds that train an adapter (the tuning side of the verdict and plots): a tuning method on
# the task, a generalist (instruct / metaicl) trained on a mixture with the task's cluster held out, and
# learning from feedback (a reward model, DPO, GRPO).
TRAINED = ("tune", "generalist", "feedback")

COLUMNS = ["run", "kind", "metric", "mean", "std", "seeds", "trainable_params", "adapter_bytes", "train_s",
           "train_calls", "train_forwards", "eval_s", "calls", "tokens", "status"]


def summarize(recs: list[dict]) -> list[dict]:
    """One row per run: metric mean ± std over seeds and the mean costs."""
    rows, by_run = [], {}
    for r in recs:
        by_run.setdefault(r["run"], []).append(r)
    for run, rs in by_run.items():
        ok = [r for r in rs if r.get("status") == "ok"]
        row = {"run": run, "kind": rs[0]["kind"], "seeds": len(ok), "status": "ok" if len(ok) == len(rs) else "failed"}
        if ok and ok[0].get("stages"):
            row["stages"] = ok[0]["stages"]
        if ok and rs[0]["kind"] == "generalist":
            ev = ok[0].get("eval_config") or {}
            row.update(mixture=(ok[0].get("config") or {}).get("mixture", {}).get("name"),
                       held_out=ok[0].get("held_out", []), train_clusters=ok[0].get("train_clusters", []),
                       scored=ev.get("strategy", "zero-shot") + (f" k={ev['k']}" if ev.get("k") else ""))
        if ok and rs[0]["kind"] == "feedback":
            row.update(_feedback_fields(ok))
        if ok:
            metric = ok[0]["metric"]
            vals = [r["metrics"][metric] for r in ok]
            row.update({
                "metric": metric, "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "trainable_params": ok[0]["trainable_params"], "adapter_bytes": ok[0]["adapter_bytes"],
                "train_s": statistics.fmean(r["train_seconds"] for r in ok),
                "eval_s": statistics.fmean(r["cost"]["wall_seconds"] for r in ok),
                "calls": ok[0]["cost"]["calls"],
                # training cost in the same units for every method: model calls (rows scored; a black-box
                # method's candidate x example) and forward passes (a gradient step's forward+backward is one)
                "train_calls": round(statistics.fmean(r.get("train_calls", 0) for r in ok)),
                "train_forwards": round(statistics.fmean(r.get("train_forwards", 0) for r in ok)),
                "train_steps": round(statistics.fmean(r.get("train_steps", 0) for r in ok)),
                "tokens": ok[0]["cost"]["prompt_tokens"] + ok[0]["cost"]["generated_tokens"],
            })
        if len(ok) < len(rs):
            row["error"] = next(r.get("error", "") for r in rs if r.get("status") != "ok")
        rows.append(row)
    return rows


def _feedback_fields(ok: list[dict]) -> dict:
    """A feedback run's objective; before_mean: its metric before training (GRPO records carry it),
    the mean over seeds; last_step: each quantity of the last logged training step, the mean over seeds."""
    metric = ok[0]["metric"]
    out = {"objective": ok[0].get("objective")}
    before = [r["before"][metric] for r in ok if metric in (r.get("before") or {})]
    if before:
        out["before_mean"] = statistics.fmean(before)
    last: dict[str, list[float]] = {}
    for r in ok:
        for k, v in (r["curve"][-1] if r.get("curve") else {}).items():
            if k != "step" and _finite(v):
                last.setdefault(k, []).append(v)
    if last:
        out["last_step"] = {k: statistics.fmean(v) for k, v in last.items()}
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def main_metric(rows: list[dict]) -> str | None:
    """The task's metric, which the verdict and the quality plots compare on: the first scored run's
    that is a task metric (a GRPO run scored by its reward model reports "reward", which is not)."""
    from adaptlab.tasks import METRICS

    ok = [r for r in rows if "mean" in r]
    return next((r["metric"] for r in ok if r["metric"] in METRICS), ok[0]["metric"] if ok else None)


def _comparable(rows: list[dict]) -> list[dict]:
    """The scored rows on the task's metric (what the verdict and the quality plots compare)."""
    metric = main_metric(rows)
    return [r for r in rows if "mean" in r and r["metric"] == metric]


def _human_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _display_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        d = dict(r)
        if "mean" in d:
            d["mean"] = f"{d['mean']:.4f}"
            d["std"] = f"{d['std']:.4f}" if d.get("seeds", 0) > 1 else "–"   # one seed: not measured
            d["adapter_bytes"] = _human_bytes(d["adapter_bytes"])
            d["train_s"] = f"{d['train_s']:.1f}"
            d["eval_s"] = f"{d['eval_s']:.1f}"
            for k in ("trainable_params", "calls", "tokens", "train_calls", "train_forwards"):
                d[k] = f"{d[k]:,}"
        out.append(d)
    return out


def _curve(recs: list[dict], pick) -> list[tuple[float, float, float, int]]:
    """(x, mean, std, records) points from the ok records that ``pick(rec) -> x | None`` accepts."""
    pts: dict[float, list[float]] = {}
    for r in recs:
        if r.get("status") != "ok":
            continue
        x = pick(r)
        if x is not None:
            pts.setdefault(float(x), []).append(r["metrics"][r["metric"]])
    return [(x, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
            for x, v in sorted(pts.items())]


def _k_of(r):
    cfg = r.get("config") or {}
    if r["name"] == "zero-shot":
        return 0
    if r["name"] == "few-shot" and cfg.get("labels", "gold") == "gold" and cfg.get("inputs", "gold") == "gold":
        return cfg.get("k")
    return None


def _flip_of(r):
    cfg = r.get("config") or {}
    if r["name"] != "few-shot" or cfg.get("inputs", "gold") != "gold":
        return None
    if cfg.get("labels") == "gold":
        return 0.0
    if cfg.get("labels") == "flipped":
        return 100.0 * cfg.get("p", 1.0)
    return None


# Figures are drawn at the size report.html shows them: DPI px per figure inch, so a 6.4 in figure
# is a 640 px image shown 1:1 (no downscaling that would shrink its text); FONT points is ~14 px.
DPI = 100
FONT = 10

PLOT_ALT = {
    "metric_vs_params": "Quality (mean metric over seeds) of each run against its trainable parameters on a log "
                        "scale; prompting runs train nothing and sit in a separate strip at 0 on the left.",
    "metric_vs_bytes": "Quality (mean metric over seeds) of each run against the bytes it stores per task on a log "
                       "scale; prompting runs store nothing and sit in a separate strip at 0 on the left.",
    "cost": "Seconds per run, training and evaluation stacked, and where they differ the model calls each run "
            "made at evaluation.",
    "accuracy_vs_k": "Quality of few-shot prompting against the number of demonstrations k (k = 0 is zero-shot), "
                     "from chance to 1, with error bars.",
    "accuracy_vs_flipped": "Quality of few-shot prompting against the share of demonstration labels flipped, "
                           "from 0 to 1, with error bars.",
    "feedback_curves": "Training curves of the learning-from-feedback runs against the step (mean over seeds at "
                       "each logged step), one panel per quantity logged: GRPO's mean reward of its sampled replies "
                       "and its KL to the reference model, the training pairwise accuracy of a reward model or DPO, "
                       "and every run's loss.",
}

PROMPT_STYLE = {"fmt": "s", "color": "tab:orange", "label": "prompting (nothing trained or stored)"}
TUNE_STYLE = {"fmt": "o", "color": "tab:blue", "label": "tuning"}
GENERALIST_STYLE = {"fmt": "D", "color": "tab:green", "label": "generalist (mixture-trained, task held out)"}
FEEDBACK_STYLE = {"fmt": "^", "color": "tab:purple", "label": "learning from feedback"}
STYLES = {"tune": TUNE_STYLE, "generalist": GENERALIST_STYLE, "feedback": FEEDBACK_STYLE}   # the TRAINED kinds


def _style(r: dict) -> dict:
    return STYLES.get(r["kind"], PROMPT_STYLE)


def _n_by_run(recs: list[dict]) -> dict[str, int]:
    """Test examples each run was scored on (``metrics.n`` of its ok records)."""
    return {r["run"]: r["metrics"].get("n") for r in recs if r.get("status") == "ok" and r.get("metrics")}


def _n_text(ns) -> str:
    ns = sorted({n for n in ns if n})
    if not ns:
        return ""
    return (f"{ns[0]:,}" if len(ns) == 1 else f"{ns[0]:,}-{ns[-1]:,}") + " test examples"


def _err(mean: float, std: float, seeds: int, n) -> float:
    """Error bar: the std over seeds; with one seed, the binomial standard error of a rate over n
    examples (what one seed cannot show: 2 examples of 300 move accuracy by 0.0067)."""
    if seeds > 1:
        return std
    return math.sqrt(max(mean * (1 - mean), 0.0) / n) if n and 0 <= mean <= 1 else 0.0


def _err_label(seeds, n) -> str:
    """What the error bars are, for the seed counts ``seeds`` (an int or the runs' counts)."""
    seeds = sorted({seeds} if isinstance(seeds, int) else set(seeds))
    se = f"bars ±1 standard error over {n:,} examples" if n else "no error bars (n unknown)"
    if seeds[0] > 1:
        return f"mean ± std over {seeds[0]} seeds" if len(seeds) == 1 else "mean ± std over the seeds"
    return f"one seed; {se}" if len(seeds) == 1 else f"bars: ± std over seeds; with one seed, {se}"


def _ylim(ax, lows: list[float], highs: list[float], chance: float) -> None:
    """From chance (lower when a point or its error bar is below it) to 1: the whole scale a rate
    can move on (past 1 only for a metric that goes there)."""
    lo = chance if all(v >= chance for v in lows) else max(0.0, min(lows) - 0.03)
    hi = max(1.0, max(highs, default=0.0))
    ax.set_ylim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))


def _place_labels(ax, pts: list[tuple[float, float, str]], fontsize: float = 9.0) -> list:
    """Label each point beside it, pushed apart vertically so no two labels overlap (sorted by y,
    each at least a line from the next; a thin line joins a moved label to its point). Labels go
    right of their point, left of it near the right edge of the axes. Call after the layout."""
    if not pts:
        return []
    fig = ax.figure
    h = ax.get_position().height * fig.get_figheight() * 72          # axes height in points
    (y0, y1), (x0, x1) = ax.get_ylim(), ax.get_xlim()
    logx = ax.get_xscale() == "log"
    gap = fontsize * 1.4
    order = sorted(pts, key=lambda p: p[1])
    want = [(p[1] - y0) / (y1 - y0) * h for p in order]
    clusters: list[tuple[float, list[int]]] = []     # (first label's height, members): a gap apart inside,
    for i, w in enumerate(want):                      # each cluster centred on its points
        clusters.append((w, [i]))
        while len(clusters) > 1 and clusters[-2][0] + len(clusters[-2][1]) * gap > clusters[-1][0]:
            members = clusters[-2][1] + clusters[-1][1]
            centre = sum(want[j] for j in members) / len(members)
            clusters[-2:] = [(centre - (len(members) - 1) * gap / 2, members)]
    at = [start + k * gap for start, members in clusters for k in range(len(members))]
    for i in range(len(at)):                                            # upward: above the bottom, a gap apart
        at[i] = max(at[i], gap / 2 if i == 0 else at[i - 1] + gap)
    top = h - gap / 2
    for i in range(len(at) - 1, -1, -1):                               # downward: keep under the top
        at[i] = min(at[i], top if i == len(at) - 1 else at[i + 1] - gap)
    out = []
    for (x, y, text), w, a in zip(order, want, at):
        fx = ((math.log10(x) - math.log10(x0)) / (math.log10(x1) - math.log10(x0)) if logx
              else (x - x0) / (x1 - x0))
        left = fx > 0.85
        moved = abs(a - w) > 1.5
        out.append(ax.annotate(text, (x, y), textcoords="offset points", xytext=(-8 if left else 8, a - w),
                               ha="right" if left else "left", va="center", fontsize=fontsize,
                               annotation_clip=False, zorder=5,
                               bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
                               arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if moved else None))
    return out


def figures(rows: list[dict], recs: list[dict], n_labels: int = 0) -> dict:
    """The report's matplotlib figures (Agg): name -> Figure. ``n_labels``: a classification
    task's label count (chance = 1/n_labels); 0 when there is no fixed label set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    ok = _comparable(rows)
    if not ok:
        return {}
    metric = ok[0]["metric"]
    chance = 1.0 / n_labels if n_labels and metric in ("accuracy", "macro_f1") else 0.0
    n_of = {run: n for run, n in _n_by_run(recs).items() if run in {r["run"] for r in ok}}
    ntext = _n_text(n_of.get(r["run"]) for r in ok)
    figs: dict = {}
    with plt.rc_context({"font.size": FONT, "axes.titlesize": FONT + 1, "legend.fontsize": FONT - 1}):
        for key, xlabel, name, what in (
                ("trainable_params", "trainable parameters (log scale)", "metric_vs_params", "trainable parameters"),
                ("adapter_bytes", "bytes stored per task (log scale)", "metric_vs_bytes", "storage per task")):
            figs[name] = _quality_vs(plt, Line2D, ok, n_of, key, xlabel, f"{metric} vs {what}"
                                     + (f" ({ntext})" if ntext else ""), metric, chance)
        figs["cost"] = _cost_figure(plt, [r for r in rows if "mean" in r])
        for pick, xlabel, name, what in ((_k_of, "number of demonstrations k (0 = zero-shot)", "accuracy_vs_k",
                                          "number of demonstrations"),
                                         (_flip_of, "% of demonstration labels flipped", "accuracy_vs_flipped",
                                          "flipped demonstration labels")):
            pts = _curve(recs, pick)
            if len(pts) < 2:
                continue
            ns = [r["metrics"].get("n") for r in recs if r.get("status") == "ok" and pick(r) is not None]
            n = min((x for x in ns if x), default=None)
            seeds = [p[3] for p in pts]
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            errs = [_err(p[1], p[2], p[3], n) for p in pts]
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=errs, marker="o", capsize=3,
                        label=f"{metric} ({_err_label(seeds, n)})")
            if chance:
                ax.axhline(chance, ls=":", color="0.4", label=f"chance (1/{n_labels} labels)")
            _ylim(ax, [p[1] - e for p, e in zip(pts, errs)], [p[1] + e for p, e in zip(pts, errs)],
                  chance if name == "accuracy_vs_k" else 0.0)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(metric)
            ax.set_title(f"{metric} vs {what}" + (f"\n({_n_text(ns)})" if _n_text(ns) else ""))
            ax.grid(alpha=0.3)
            if name == "accuracy_vs_k":
                ax.set_xticks([p[0] for p in pts])
            ax.legend(loc="best")
            fig.tight_layout()
            figs[name] = fig
        series = _feedback_series(recs)
        if series:
            figs["feedback_curves"] = _feedback_figure(plt, Line2D, series)
    return figs


# The panels of the feedback_curves plot: title, y label, and per objective the key of its training log
# ("curve") that the panel draws.
FEEDBACK_PANELS = (
    ("reward (GRPO)", "mean reward of the sampled replies", {"grpo": "reward"}),
    ("KL to the reference (GRPO)", "KL to the reference", {"grpo": "kl"}),
    ("training accuracy (reward model, DPO)", "pairwise accuracy (train pairs)",
     {"reward": "accuracy", "dpo": "reward_accuracy"}),
    ("loss", "training loss", {"reward": "loss", "dpo": "loss", "grpo": "loss"}),
)


def _feedback_series(recs: list[dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Panel title -> run -> (step, mean over seeds) from the ok feedback records' training logs;
    only panels and runs with data."""
    acc: dict[str, dict[str, dict[float, list[float]]]] = {}
    for r in recs:
        if r.get("kind") != "feedback" or r.get("status") != "ok":
            continue
        for title, _, keys in FEEDBACK_PANELS:
            key = keys.get(r.get("objective"))
            for step in r.get("curve") or []:
                if key and _finite(step.get(key)):
                    acc.setdefault(title, {}).setdefault(r["run"], {}).setdefault(step["step"], []).append(step[key])
    return {title: {run: sorted((s, statistics.fmean(v)) for s, v in steps.items()) for run, steps in runs.items()}
            for title, runs in acc.items()}


def _feedback_figure(plt, Line2D, series: dict):
    """One panel per quantity in ``series`` (at most 2 x 2), a line per run in the same colour in every
    panel, one legend below them."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    panels = [p for p in FEEDBACK_PANELS if p[0] in series]
    runs = list(dict.fromkeys(run for title, _, _ in panels for run in series[title]))
    colour = {run: f"C{i % 10}" for i, run in enumerate(runs)}
    cols = 1 if len(panels) == 1 else 2
    grid_rows = math.ceil(len(panels) / cols)
    legend_rows = math.ceil(len(runs) / 3)
    height = 3.0 * grid_rows + 1.0 + 0.25 * legend_rows
    fig, axes = plt.subplots(grid_rows, cols, figsize=(6.4 if cols == 1 else 7.6, height), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.remove()
    for ax, (title, ylabel, _) in zip(axes.flat, panels):
        for run, pts in series[title].items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour[run],
                    marker="o" if len(pts) <= 20 else None, ms=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))   # no offset text over the title
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle("learning from feedback: training curves\n(mean over seeds at each logged step)", fontsize=FONT + 1)
    fig.legend(handles=[Line2D([], [], color=colour[run], marker="o", ms=3, label=_short(run)) for run in runs],
               loc="lower center", ncol=min(3, len(runs)), frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, (0.15 + 0.25 * legend_rows) / height, 1, 1))
    return fig


def _quality_vs(plt, Line2D, ok, n_of, key, xlabel, title, metric, chance):
    """Quality against a cost on a log axis for the tuning runs, with the prompting runs (0 of
    that cost, which a log axis cannot show) in a shaded strip of their own on the left."""
    prompt = [r for r in ok if r["kind"] not in TRAINED]
    tune = [r for r in ok if r["kind"] in TRAINED and (r[key] or 0) > 0]
    prompt += [r for r in ok if r["kind"] in TRAINED and not (r[key] or 0) > 0]     # 0 of it: the strip too
    from matplotlib.ticker import NullFormatter

    fig = plt.figure(figsize=(6.4, 4.6))
    if prompt and tune:
        chars = max(len(_short(r["run"])) for r in prompt)       # the strip fits its labels (~5.4 pt a char)
        strip = min(0.5, max(0.22, (14 + 5.4 * chars) / 72 / 0.8 / (6.4 * 0.86)))
        gs = fig.add_gridspec(1, 2, width_ratios=[strip, 1 - strip])
        ap = fig.add_subplot(gs[0])
        at = fig.add_subplot(gs[1], sharey=ap)
        at.tick_params(labelleft=False)
    else:
        ap = at = fig.add_subplot(1, 1, 1)
        if not tune:
            at = None
        else:
            ap = None
    errs = [_err(r["mean"], r["std"], r["seeds"], n_of.get(r["run"])) for r in ok]
    for ax in (a for a in (ap, at) if a is not None):
        _ylim(ax, [r["mean"] - e for r, e in zip(ok, errs)], [r["mean"] + e for r, e in zip(ok, errs)], chance)
        ax.grid(alpha=0.3)
        if chance:
            ax.axhline(chance, ls=":", color="0.4")
    if ap is not None:
        ap.set_facecolor("#f3f3f3")
        for r in prompt:
            style = _style(r)
            ap.errorbar([0], [r["mean"]], yerr=[_err(r["mean"], r["std"], r["seeds"], n_of.get(r["run"]))],
                        fmt=style["fmt"], color=style["color"], capsize=3)
        ap.set_xlim(-0.2, 1.0)
        ap.set_xticks([0])
        ap.set_xticklabels(["0 (prompting)"])
        ap.set_ylabel(metric)
    if at is not None:
        for r in tune:
            at.errorbar([r[key]], [r["mean"]], yerr=[_err(r["mean"], r["std"], r["seeds"], n_of.get(r["run"]))],
                        fmt=_style(r)["fmt"], color=_style(r)["color"], capsize=3)
        at.set_xscale("log")
        xs = [r[key] for r in tune]                  # whole decades: a major tick at both ends, no minor labels
        at.set_xlim(10 ** math.floor(math.log10(min(xs) / 3)), 10 ** math.ceil(math.log10(max(xs) * 3)))
        at.xaxis.set_minor_formatter(NullFormatter())
        at.set_xlabel(xlabel)
        if ap is None:
            at.set_ylabel(metric)
    seeds = [r["seeds"] for r in ok]
    ns = [n for n in n_of.values() if n]
    handles = [Line2D([], [], marker=s["fmt"], color=s["color"], ls="", label=s["label"])
               for s, rs in ((PROMPT_STYLE, [r for r in prompt if r["kind"] not in TRAINED]),
                             (TUNE_STYLE, [r for r in tune if r["kind"] == "tune"]),
                             (GENERALIST_STYLE, [r for r in tune if r["kind"] == "generalist"]),
                             (FEEDBACK_STYLE, [r for r in tune if r["kind"] == "feedback"])) if rs]
    if chance:
        handles.append(Line2D([], [], ls=":", color="0.4", label=f"chance ({chance:.2g})"))
    fig.suptitle(title + "\n" + _err_label(seeds, min(ns) if ns else None), fontsize=FONT + 1)
    fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.subplots_adjust(left=0.11, right=0.97, top=0.86, bottom=0.21, wspace=0.04)
    if ap is not None:
        ap.set_zorder(2)                                  # its labels above the tuning axes
        _place_labels(ap, [(0, r["mean"], _short(r["run"])) for r in prompt])
    if at is not None:
        _place_labels(at, [(r[key], r["mean"], r["run"]) for r in tune])
    return fig


def _short(label: str, most: int = 30) -> str:
    return label if len(label) <= most else label[:most - 1] + "…"


def calls_sentence(rows: list[dict]) -> str | None:
    """When every run made the same model calls at evaluation, one sentence says so (the report
    draws no panel of identical bars)."""
    calls = {r["calls"] for r in rows if "mean" in r}
    if len(calls) != 1:
        return None
    n = calls.pop()
    return f"Every run made the same {n:,} model calls at evaluation."


def _cost_figure(plt, ok):
    names = [r["run"] for r in ok]
    same = len({r["calls"] for r in ok}) == 1
    height = 0.4 * max(3, len(ok)) + 1.9
    if same:
        fig, a1 = plt.subplots(figsize=(6.4, height))
        a2 = None
    else:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.6, height), sharey=True)
    a1.barh(names, [r["train_s"] for r in ok], color="tab:blue", label="train")
    a1.barh(names, [r["eval_s"] for r in ok], left=[r["train_s"] for r in ok], color="tab:orange", label="eval")
    a1.set_xlabel("seconds (mean over seeds)")
    a1.set_ylabel("run")
    a1.set_title("seconds per run" + (f"\n(every run: {ok[0]['calls']:,} model calls at evaluation)" if same else ""))
    a1.legend(loc="lower right")
    a1.invert_yaxis()
    a1.grid(axis="x", alpha=0.3)
    if a2 is not None:
        a2.barh(names, [r["calls"] for r in ok], color="tab:green")
        a2.set_xlabel("model calls")
        a2.set_title("model calls at evaluation")
        a2.tick_params(labelleft=False)
        a2.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _png_size(png: bytes) -> tuple[int, int]:
    import struct

    return struct.unpack(">II", png[16:24])


def make_plots(rows: list[dict], recs: list[dict], n_labels: int = 0) -> dict[str, bytes]:
    """PNG plots (matplotlib, Agg), rendered at the size the HTML shows them: name -> bytes."""
    import io

    import matplotlib.pyplot as plt

    plots: dict[str, bytes] = {}
    for name, fig in figures(rows, recs, n_labels).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        plt.close(fig)
        plots[name] = buf.getvalue()
    return plots


def verdict(rows: list[dict]) -> list[str]:
    """Which way to adapt, in a few sentences from the table: the best run, the best of each half,
    what the gain of tuning costs, and the cheapest tuned run close to the best; on the task's metric only."""
    ok = _comparable(rows)
    if not ok:
        return []
    metric = ok[0]["metric"]
    best = max(ok, key=lambda r: r["mean"])
    prompt = max((r for r in ok if r["kind"] == "prompt"), key=lambda r: r["mean"], default=None)
    tune = max((r for r in ok if r["kind"] in TRAINED), key=lambda r: r["mean"], default=None)
    out = [f"Best: **{best['run']}** ({metric} {best['mean']:.4f})."]
    if prompt and tune:
        gap = 100 * (tune["mean"] - prompt["mean"])
        if gap > 0:
            out.append(f"Tuning beats prompting here: **{tune['run']}** is {gap:.1f} points above the best prompt "
                       f"(**{prompt['run']}**, {prompt['mean']:.4f}) for {tune['trainable_params']:,} trained "
                       f"parameters, {_human_bytes(tune['adapter_bytes'])} on disk per task and "
                       f"{tune['train_s']:.0f} s of training.")
        else:
            out.append(f"Prompting is enough here: **{prompt['run']}** ({prompt['mean']:.4f}) matches or beats the "
                       f"best tuned run (**{tune['run']}**, {tune['mean']:.4f}) with no training and nothing to store.")
        near = [r for r in ok if r["kind"] in TRAINED and r["mean"] >= best["mean"] - 0.01]
        cheap = min(near, key=lambda r: r["adapter_bytes"], default=None)
        if cheap and cheap["run"] != best["run"]:
            out.append(f"Within 1 point of the best, the smallest on disk is **{cheap['run']}** "
                       f"({_human_bytes(cheap['adapter_bytes'])}).")
    spread = max((r["std"] for r in ok), default=0.0)
    seeds = min(r["seeds"] for r in ok)
    if seeds < 2:
        out.append("One seed per run: differences of a few points may be noise (use --seeds 3).")
    elif spread:
        out.append(f"Largest seed-to-seed std: {spread:.4f}.")
    return out


def stage_lines(rows: list[dict]) -> list[str]:
    """One line per distinct stage (tapt, dapt, vocab) the runs used."""
    seen, out = set(), []
    for r in rows:
        for st in r.get("stages") or []:
            if st["folder"] in seen:
                continue
            seen.add(st["folder"])
            if st["stage"] == "vocab":
                f = st.get("fertility", {})
                out.append(f"- **vocab** ({r['run']}): {st['added']} whole-word tokens added; tokens per word "
                           f"{f.get('base')} -> {f.get('extended')} (a new vocabulary of its own: {f.get('new')})")
            else:
                out.append(f"- **{st['stage']}** ({r['run']}): {st['steps']} steps of continued pretraining, "
                           f"{st['seconds']:.0f} s; gives a {st['result']}")
    return out


def _steps_run(rows: list[dict]) -> str:
    """What the tuning runs did: " (steps run: lora:r=8 20, head 13)" (the mean over seeds)."""
    tuned = [r for r in rows if r.get("kind") in TRAINED and "train_steps" in r]
    return (" (steps run: " + ", ".join(f"{r['run']} {r['train_steps']}" for r in tuned) + ")") if tuned else ""


def generalist_lines(rows: list[dict]) -> list[str]:
    """One line per generalist run: what it trained on, what it held out, how it was scored."""
    out = []
    for r in rows:
        if r.get("kind") == "generalist" and "mixture" in r:
            held = ", ".join(r["held_out"]) or "nothing (the task is not in the mixture)"
            out.append(f"- **{r['run']}**: trained on mixture {r['mixture']} (clusters: "
                       f"{', '.join(r['train_clusters'])}), held out: {held}; scored {r['scored']} with the "
                       "task's own template")
    return out


GENERALIST_NOTE = ("Trained on a task mixture without the compared task's cluster (FLAN's held-out evaluation: "
                   "the task is never trained on); their trainable_params, adapter_bytes and train_s count on the "
                   "tuning side.")


# objective -> (in words, what its held-out metric is); GRPO's depends on the metric (see feedback_lines)
OBJECTIVES = {
    "reward": ("reward model (Bradley–Terry)", "pairwise accuracy on the test pairs, chance 0.5"),
    "dpo": ("DPO", "implicit reward accuracy on the test pairs, chance 0.5"),
    "grpo": ("GRPO", "the task's {metric} after GRPO"),
}
GRPO_REWARD = "mean reward-model score of its greedy replies to the test prompts"


def _mean_std(r: dict) -> str:
    return (f"{r['mean']:.4f} ± {r['std']:.4f} over {r['seeds']} seeds" if r["seeds"] > 1
            else f"{r['mean']:.4f} on one seed")


def feedback_lines(rows: list[dict]) -> list[str]:
    """One line per scored feedback run: its objective, its held-out metric and what that is; for GRPO
    the metric before -> after training and the training reward and KL at the last logged step."""
    out = []
    for r in rows:
        if r.get("kind") != "feedback" or "mean" not in r:
            continue
        words, what = OBJECTIVES.get(r.get("objective"), (r.get("objective"), "its held-out metric"))
        what = GRPO_REWARD if r.get("objective") == "grpo" and r["metric"] == "reward" else what.format(**r)
        score = (f"{r['metric']} before → after training: {r['before_mean']:.4f} → {_mean_std(r)}"
                 if "before_mean" in r else f"{r['metric']} {_mean_std(r)}")
        last, trained = r.get("last_step") or {}, ""
        if r.get("objective") == "grpo" and {"reward", "kl"} <= set(last):
            trained = (f"; at the last logged step: training reward {last['reward']:.4f}, KL to the reference "
                       f"{last['kl']:.4g} (mean over seeds)")
        out.append(f"- **{r['run']}**: {words}; {score} ({what}){trained}")
    return out


FEEDBACK_NOTE = ("Trained from preference pairs or a reward instead of gold answers; their trainable_params, "
                 "adapter_bytes and train_s count on the tuning side. A run scored by a reward model rather than "
                 "on the task's metric stays out of the verdict and the quality plots.")


TOKENS_NOTE = ("**tokens**: the prompt tokens the model actually ran, plus any it generated. A prefix that a "
               "batch's prompts share (the instruction and few-shot demonstrations used for every example) is "
               "computed once, kept in the KV cache and counted once, not once per example, so such a few-shot "
               "run shows about as many tokens as zero-shot: the column measures compute, not prompt length "
               "(demonstrations chosen per example, selection=similar or per_input=true, count for each example; a "
               "remote server's figures are what it reports). **calls**: model calls at evaluation; "
               "**train_calls** / **train_forwards**: rows scored and forward passes in training; "
               "**std**: over seeds, – with one seed (not measured).")


def settings_line(rows: list[dict], settings: dict) -> str:
    """What was run: test examples, seeds and the tuning budget (epochs, step cap, steps run)."""
    return (f"Test examples: {settings.get('limit') or 'all'}; seeds: {settings.get('seeds')}; "
            f"tuning: {settings.get('train_limit') or 'all'} train examples, {settings.get('epochs')} epoch(s)"
            + (f" or at most {settings['max_steps']} steps, whichever is fewer" if settings.get("max_steps")
               else "") + _steps_run(rows) + ".")


STAGES_NOTE = "Run once and shared by every run and seed that names them; their seconds are in those runs' train_s."


def markdown_report(rows: list[dict], settings: dict, plots: list[str]) -> str:
    lines = [f"# adaptlab compare: {settings.get('task')} on {settings.get('model')}", ""]
    lines.append(settings_line(rows, settings))
    if settings.get("threads"):
        lines.append(f"CPU threads: {settings['threads']}.")
    lines.append("")
    advice = verdict(rows)
    if advice:
        lines += ["## Which way to adapt", ""] + [" ".join(advice), ""]
    cols = [c for c in COLUMNS]
    disp = _display_rows(rows)
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("| " + " | ".join("---" for _ in cols) + " |")
    for r in disp:
        lines.append("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")
    lines += ["", TOKENS_NOTE]
    staged = stage_lines(rows)
    if staged:
        lines += ["", "## Stages before tuning", "", STAGES_NOTE, ""] + staged
    general = generalist_lines(rows)
    if general:
        lines += ["", "## Generalist runs", "", GENERALIST_NOTE, ""] + general
    feedback = feedback_lines(rows)
    if feedback:
        lines += ["", "## Learning from feedback", "", FEEDBACK_NOTE, ""] + feedback
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- **{r['run']}**: {r['error']}" for r in failed]
    if plots:
        lines += ["", "## Plots", ""]
        calls = calls_sentence(rows)
        if calls:
            lines += [calls, ""]
        lines += [f"![{PLOT_ALT.get(p, p)}]({p}.png)" for p in plots]
    return "\n".join(lines) + "\n"


def _inline(md: str) -> str:
    """A line of the Markdown report as HTML: escaped, **bold** as <b>."""
    import html
    import re

    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(md))


def html_report(rows: list[dict], settings: dict, plots: dict[str, bytes]) -> str:
    """The same facts as ``markdown_report``, self-contained: the plots inline as data: URIs, shown
    at their natural size (at most the page's width); the table scrolls inside its own box."""
    import base64
    import html

    disp = _display_rows(rows)
    head = "".join(f"<th>{html.escape(c).replace('_', '_<wbr>')}</th>" for c in COLUMNS)   # headers may wrap
    body = ""
    for r in disp:
        cls = ' class="failed"' if r.get("status") != "ok" else ""
        body += f"<tr{cls}>" + "".join(f"<td>{html.escape(str(r.get(c, '-')))}</td>" for c in COLUMNS) + "</tr>\n"
    errors = "".join("<li>" + _inline(f"**{r['run']}**: {r['error']}") + "</li>" for r in rows if r.get("error"))
    staged = "".join(f"<li>{_inline(line[2:])}</li>" for line in stage_lines(rows))
    general = "".join(f"<li>{_inline(line[2:])}</li>" for line in generalist_lines(rows))
    feedback = "".join(f"<li>{_inline(line[2:])}</li>" for line in feedback_lines(rows))
    imgs = ""
    for name, png in plots.items():
        w, h = _png_size(png)
        alt = html.escape(PLOT_ALT.get(name, name.replace("_", " ")), quote=True)
        imgs += (f'<figure><img alt="{alt}" title="{alt}" width="{w}" height="{h}" '
                 f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                 f"<figcaption>{html.escape(name.replace('_', ' '))}</figcaption></figure>\n")
    calls = calls_sentence(rows)
    title = f"adaptlab compare: {settings.get('task')} on {settings.get('model')}"
    advice = _inline(" ".join(verdict(rows)))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; line-height: 1.4; }}
p, li, h1 {{ overflow-wrap: anywhere; }}
.table-scroll {{ overflow-x: auto; max-width: 100%; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 6px; text-align: right; white-space: nowrap; }}
th {{ white-space: normal; vertical-align: bottom; }}
th:first-child, td:first-child, td:nth-child(2) {{ text-align: left; }}
tr.failed td {{ background: #fde8e8; }}
p.note {{ font-size: 14px; color: #444; max-width: 60em; }}
figure {{ display: inline-block; vertical-align: top; margin: 0.5em 1em 1em 0; max-width: 100%; }}
figcaption {{ font-size: 14px; color: #555; }}
img {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p id="settings">{_inline(settings_line(rows, settings))}</p>
{('<p id="threads">CPU threads: ' + html.escape(str(settings['threads'])) + '.</p>') if settings.get('threads') else ''}
{('<h2>Which way to adapt</h2><p id="verdict">' + advice + '</p>') if advice else ''}
<div class="table-scroll"><table id="results"><thead><tr>{head}</tr></thead><tbody>
{body}</tbody></table></div>
<p class="note" id="columns">{_inline(TOKENS_NOTE)}</p>
{('<h2>Stages before tuning</h2><p>' + html.escape(STAGES_NOTE) + '</p><ul>' + staged + '</ul>') if staged else ''}
{('<h2>Generalist runs</h2><p>' + html.escape(GENERALIST_NOTE) + '</p><ul>' + general + '</ul>') if general else ''}
{('<h2>Learning from feedback</h2><p>' + html.escape(FEEDBACK_NOTE) + '</p><ul>' + feedback + '</ul>')
 if feedback else ''}
{('<h2>Failed runs</h2><ul>' + errors + '</ul>') if errors else ''}
{'<h2>Plots</h2>' if plots else ''}
{('<p id="calls">' + html.escape(calls) + '</p>') if plots and calls else ''}
{imgs}
</body></html>
"""


def _n_labels(settings: dict) -> int:
    """The task's label count (for chance in the plots; a preference task's two replies: 2); 0 when it
    has none or cannot be read."""
    if settings.get("n_labels") is not None:
        return int(settings["n_labels"])
    try:
        from adaptlab.tasks import load_task

        task = load_task(str(settings.get("task")))
    except Exception:        # a task file moved since the comparison ran: plots without a chance line
        return 0
    if task.schema == "preference":          # pairwise accuracy: one of two replies, chance 0.5
        return 2
    return len(task.labels) if task.is_classification else 0


def write_report(out, recs: list[dict], settings: dict) -> dict:
    """report.md (+ PNGs beside it) and a self-contained report.html in ``out``."""
    from pathlib import Path

    from adaptlab.config import atomic_write_bytes, atomic_write_text

    from adaptlab import threads

    out = Path(out)
    if not settings.get("threads") and threads.describe() is not None:
        settings = {**settings, "threads": threads.summary()}     # the policy this process ran under
    rows = summarize(recs)
    plots = make_plots(rows, recs, _n_labels(settings)) if any("mean" in r for r in rows) else {}
    for name, png in plots.items():
        atomic_write_bytes(out / f"{name}.png", png)
    atomic_write_text(out / "report.md", markdown_report(rows, settings, list(plots)))
    atomic_write_text(out / "report.html", html_report(rows, settings, plots))
    return {"rows": rows, "plots": list(plots)}
