"""Answer extraction shared by every strategy and metric: numbers (commas, decimals,
fractions, currency and units), yes/no, choice letters and label words. Each function returns
``None`` when nothing can be found, so a record can show a failed extraction next to the raw
generation."""

from __future__ import annotations

import math
import re
from fractions import Fraction

_NUM = re.compile(r"(?<![\w.])[-−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?%?|(?<![\w.])[-−]?\.\d+")
_TRIGGERS = ("the answer is", "answer is", "answer:", "therefore,", "so the answer is")
_QUOTES = "\"'`“”‘’*"


def after_trigger(text: str) -> str | None:
    """The text after the last answer trigger ("The answer is", "Answer:", ...), or None."""
    low = (text or "").lower()
    best = -1
    for trig in _TRIGGERS:
        k = low.rfind(trig)
        if k >= 0:
            best = max(best, k + len(trig))
    return text[best:] if best >= 0 else None


def _to_number(tok: str) -> float | None:
    t = tok.replace("−", "-").replace("$", "").replace(",", "").replace(" ", "").rstrip("%")
    try:
        if "/" in t:
            num, den = t.split("/")
            if float(den) == 0:
                return None
            return float(Fraction(int(float(num)), int(float(den)))) if num.lstrip("-").isdigit() else float(num) / float(den)
        return float(t)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def format_number(x: float) -> str:
    """Canonical text of a number: integers without '.0', others to 6 significant decimals."""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if abs(x - round(x)) < 1e-9 and abs(x) < 1e15:
        return str(int(round(x)))
    return f"{x:.6f}".rstrip("0").rstrip(".")


def numbers(text: str) -> list[float]:
    out = []
    for m in _NUM.finditer(text or ""):
        v = _to_number(m.group(0))
        if v is not None:
            out.append(v)
    return out


def extract_number(text: str, which: str = "first") -> str | None:
    """A number in ``text`` as canonical text. After an answer trigger ("The answer is") the
    first number following it wins; otherwise the first (or ``which="last"``) number."""
    tail = after_trigger(text)
    if tail is not None:
        after = numbers(tail)
        if after:
            return format_number(after[0])
    found = numbers(text)
    if not found:
        return None
    return format_number(found[0] if which == "first" else found[-1])


def extract_yesno(text: str, which: str = "first") -> str | None:
    """'yes' or 'no': the first after an answer trigger, else the first (or last) in the text."""
    for part in (after_trigger(text), text):
        found = re.findall(r"\b(yes|no)\b", (part or "").lower())
        if found:
            return found[0] if part is not text or which == "first" else found[-1]
    return None


def extract_letter(text: str, n_choices: int) -> int | None:
    """Index of a choice letter: '(B)', 'B.', 'answer is B', a lone 'B'."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_choices]
    if n_choices <= 0:
        return None
    tail = after_trigger(text)
    if tail is not None and tail.strip():
        m = re.match(rf"\s*[:(\s]*([{letters}])\b", tail)
        if m:
            return letters.index(m.group(1))
    t = text or ""
    for pat in (rf"\(([{letters}])\)", rf"answer is:?\s*\(?([{letters}])\b", rf"\b([{letters}])[.):]",
                rf"^\s*([{letters}])\b"):
        m = re.search(pat, t, flags=re.IGNORECASE if "answer" in pat else 0)
        if m:
            return letters.index(m.group(1).upper())
    return None


def extract_label(text: str, words: list[str]) -> int | None:
    """Index of the label word that appears first in ``text`` (whole words, case-insensitive);
    a longer word wins over a shorter one it contains ('very negative' over 'negative')."""
    tail = after_trigger(text)
    found = _first_word(tail, words) if tail else None
    return found if found is not None else _first_word(text, words)


def _first_word(text: str, words: list[str]) -> int | None:
    low = (text or "").lower()
    best: tuple[int, int, int] | None = None
    for i, w in enumerate(words):
        m = re.search(rf"(?<!\w){re.escape(w.lower().strip())}(?!\w)", low)
        if m:
            key = (m.start(), -len(w), i)
            if best is None or key < best:
                best = key
    return best[2] if best else None


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", (text or "").strip().lower()).strip(" .")


def answers_equal(pred: str | None, gold: str, answer_type: str = "text", tolerance: float | None = None) -> bool:
    """Exact match, numeric-aware: '1,000' == '1000.0' == '1000'; '0.5' == '1/2'. Numbers agree
    within ``tolerance`` (absolute; a task's ``tolerance:`` key) when given, else to a relative 1e-6."""
    if pred is None:
        return False
    if answer_type == "number" or (numbers(gold) and normalize_text(gold).replace(",", "").replace(".", "", 1).lstrip("-").isdigit()):
        p, g = numbers(str(pred)), numbers(str(gold))
        if p and g:
            return abs(p[0] - g[0]) <= (tolerance if tolerance is not None else 1e-6 * max(1.0, abs(g[0])))
    return normalize_text(str(pred)) == normalize_text(str(gold))


def extract(text: str, answer_type: str, *, words: list[str] | None = None, n_choices: int = 0,
            which: str = "first"):
    """Dispatch on the task's answer type."""
    if answer_type == "number":
        return extract_number(text, which)
    if answer_type == "yesno":
        return extract_yesno(text, which)
    if answer_type == "choice":
        return extract_letter(text, n_choices)
    if answer_type == "label":
        return extract_label(text, words or [])
    return extract_text(text)


def extract_text(text: str) -> str | None:
    """A free-text answer: the first line after an answer trigger (else of the text), without
    quotes and the final period."""
    t = after_trigger(text)
    t = (text if t is None else t).strip().lstrip(":").strip()
    if not t:
        return None
    t = t.splitlines()[0].strip().rstrip(".").strip().strip(_QUOTES).strip().rstrip(".")
    return t or None
