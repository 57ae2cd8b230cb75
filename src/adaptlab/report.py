"""Readable output: plain-text tables for the terminal (later: Markdown and self-contained
HTML reports with plots)."""

from __future__ import annotations


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
