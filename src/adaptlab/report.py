"""Readable output: plain-text tables for the terminal (later: Markdown and self-contained
HTML reports with plots)."""

from __future__ import annotations

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


def _curve(recs: list[dict], pick) -> list[tuple[float, float, float]]:
    """(x, mean, std) points from the ok records that ``pick(rec) -> x | None`` accepts."""
    import statistics

    pts: dict[float, list[float]] = {}
    for r in recs:
        if r.get("status") != "ok":
            continue
        x = pick(r)
        if x is not None:
            pts.setdefault(float(x), []).append(r["metrics"][r["metric"]])
    return [(x, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for x, v in sorted(pts.items())]


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


def make_plots(rows: list[dict], recs: list[dict]) -> dict[str, bytes]:
    """PNG plots (matplotlib, Agg): name -> bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "mean" in r]
    plots: dict[str, bytes] = {}

    def save(fig, name):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        plots[name] = buf.getvalue()

    for key, xlabel, name in (("trainable_params", "trainable parameters (log; prompting = 1)", "metric_vs_params"),
                              ("adapter_bytes", "bytes on disk for the task (log; prompting = 1)", "metric_vs_bytes")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for r in ok:
            x = max(1, r[key] or 0)
            marker = "o" if r["kind"] == "tune" else "s"
            ax.errorbar([x], [r["mean"]], yerr=[r["std"]], fmt=marker, capsize=3,
                        color="tab:blue" if r["kind"] == "tune" else "tab:orange")
            ax.annotate(r["run"], (x, r["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ok[0]["metric"] if ok else "metric")
        ax.set_title("quality vs " + ("trainable parameters" if key == "trainable_params" else "storage"))
        ax.grid(alpha=0.3)
        save(fig, name)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 0.5 * max(4, len(ok)) + 1.2))
    names = [r["run"] for r in ok]
    a1.barh(names, [r["train_s"] for r in ok], color="tab:blue", label="train")
    a1.barh(names, [r["eval_s"] for r in ok], left=[r["train_s"] for r in ok], color="tab:orange", label="eval")
    a1.set_xlabel("seconds (mean over seeds)")
    a1.legend(fontsize=8)
    a1.invert_yaxis()
    a2.barh(names, [r["calls"] for r in ok], color="tab:green")
    a2.set_xlabel("model calls at evaluation")
    a2.invert_yaxis()
    a2.set_yticklabels([])
    fig.suptitle("cost per run")
    save(fig, "cost")

    for pick, xlabel, name in ((_k_of, "number of demonstrations k", "accuracy_vs_k"),
                               (_flip_of, "% of demonstration labels flipped", "accuracy_vs_flipped")):
        pts = _curve(recs, pick)
        if len(pts) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(recs[0]["metric"])
        ax.grid(alpha=0.3)
        save(fig, name)
    return plots


def verdict(rows: list[dict]) -> list[str]:
    """Which way to adapt, in a few sentences from the table: the best run, the best of each half,
    what the gain of tuning costs, and the cheapest tuned run close to the best."""
    ok = [r for r in rows if "mean" in r]
    if not ok:
        return []
    metric = ok[0]["metric"]
    best = max(ok, key=lambda r: r["mean"])
    prompt = max((r for r in ok if r["kind"] == "prompt"), key=lambda r: r["mean"], default=None)
    tune = max((r for r in ok if r["kind"] == "tune"), key=lambda r: r["mean"], default=None)
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
        near = [r for r in ok if r["kind"] == "tune" and r["mean"] >= best["mean"] - 0.01]
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
    tuned = [r for r in rows if r.get("kind") == "tune" and "train_steps" in r]
    return (" (steps run: " + ", ".join(f"{r['run']} {r['train_steps']}" for r in tuned) + ")") if tuned else ""


def markdown_report(rows: list[dict], settings: dict, plots: list[str]) -> str:
    lines = [f"# adaptlab compare: {settings.get('task')} on {settings.get('model')}", ""]
    lines.append(f"Test examples: {settings.get('limit') or 'all'}; seeds: {settings.get('seeds')}; "
                 f"tuning: {settings.get('train_limit') or 'all'} train examples, {settings.get('epochs')} epoch(s)"
                 + (f" or at most {settings['max_steps']} steps, whichever is fewer" if settings.get("max_steps")
                    else "") + _steps_run(rows) + ".")
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
    staged = stage_lines(rows)
    if staged:
        lines += ["", "## Stages before tuning", "",
                  "Run once and shared by every run and seed that names them; their seconds are in those runs' train_s.",
                  ""] + staged
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- **{r['run']}**: {r['error']}" for r in failed]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p}.png)" for p in plots]
    return "\n".join(lines) + "\n"


def html_report(rows: list[dict], settings: dict, plots: dict[str, bytes]) -> str:
    import base64
    import html
    import re

    disp = _display_rows(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = ""
    for r in disp:
        cls = ' class="failed"' if r.get("status") != "ok" else ""
        body += f"<tr{cls}>" + "".join(f"<td>{html.escape(str(r.get(c, '-')))}</td>" for c in COLUMNS) + "</tr>\n"
    errors = "".join(f"<li><b>{html.escape(r['run'])}</b>: {html.escape(r['error'])}</li>"
                     for r in rows if r.get("error"))
    imgs = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{name.replace('_', ' ')}</figcaption></figure>\n" for name, png in plots.items())
    title = f"adaptlab compare: {settings.get('task')} on {settings.get('model')}"
    advice = " ".join(verdict(rows))
    advice = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(advice))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child, td:nth-child(2) {{ text-align: left; }}
tr.failed td {{ background: #fde8e8; }}
figure {{ display: inline-block; margin: 1em; }}
img {{ max-width: 640px; border: 1px solid #eee; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Test examples: {html.escape(str(settings.get('limit') or 'all'))}; seeds: {settings.get('seeds')};
tuning on {html.escape(str(settings.get('train_limit') or 'all'))} train examples.</p>
{('<p id="threads">CPU threads: ' + html.escape(str(settings['threads'])) + '.</p>') if settings.get('threads') else ''}
{('<h2>Which way to adapt</h2><p id="verdict">' + advice + '</p>') if advice else ''}
<table id="results"><thead><tr>{head}</tr></thead><tbody>
{body}</tbody></table>
{('<h2>Failed runs</h2><ul>' + errors + '</ul>') if errors else ''}
<h2>Plots</h2>
{imgs}
</body></html>
"""


def write_report(out, recs: list[dict], settings: dict) -> dict:
    """report.md (+ PNGs beside it) and a self-contained report.html in ``out``."""
    from pathlib import Path

    from adaptlab.config import atomic_write_bytes, atomic_write_text

    from adaptlab import threads

    out = Path(out)
    if not settings.get("threads") and threads.describe() is not None:
        settings = {**settings, "threads": threads.summary()}     # the policy this process ran under
    rows = summarize(recs)
    plots = make_plots(rows, recs) if any("mean" in r for r in rows) else {}
    for name, png in plots.items():
        atomic_write_bytes(out / f"{name}.png", png)
    atomic_write_text(out / "report.md", markdown_report(rows, settings, list(plots)))
    atomic_write_text(out / "report.html", html_report(rows, settings, plots))
    return {"rows": rows, "plots": list(plots)}
