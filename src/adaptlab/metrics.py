"""Task metrics, shared by evaluation, the strategies that score candidates (APE) and training.

    accuracy      the fraction correct
    macro-F1      mean over labels of 2PR/(P+R) = 2TP/(2TP+FP+FN); a label never predicted nor
                  gold is skipped
    exact match   qa answers, numeric-aware (``extract.answers_equal``)
    pairwise      preference pairs: the fraction where r(chosen) > r(rejected)
"""

from __future__ import annotations

from adaptlab.extract import answers_equal
from adaptlab.tasks import Task


def is_correct(task: Task, pred, gold) -> bool:
    if pred is None:
        return False
    if task.schema == "qa":
        return answers_equal(str(pred), str(gold), task.answer_type, getattr(task, "tolerance", None))
    return pred == gold


def accuracy(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def macro_f1(preds: list, golds: list, labels: list) -> float:
    f1s = []
    for lab in labels:
        tp = sum(p == lab and g == lab for p, g in zip(preds, golds))
        fp = sum(p == lab and g != lab for p, g in zip(preds, golds))
        fn = sum(p != lab and g == lab for p, g in zip(preds, golds))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s) if f1s else 0.0


def compute_metrics(task: Task, preds: list, golds: list) -> dict[str, float]:
    flags = [is_correct(task, p, g) for p, g in zip(preds, golds)]
    m: dict[str, float] = {}
    if task.schema == "qa":
        m["exact_match"] = accuracy(flags)
        m["accuracy"] = m["exact_match"]
    else:
        m["accuracy"] = accuracy(flags)
        labels = task.labels if task.is_classification else sorted(set(golds))
        m["macro_f1"] = macro_f1(preds, golds, labels)
    m["n"] = len(flags)
    m["unparsed"] = sum(p is None for p in preds)
    return m


def pairwise_accuracy(chosen: list[float], rejected: list[float]) -> float:
    """The fraction of pairs whose chosen reply scores above the rejected one."""
    pairs = list(zip(chosen, rejected))
    return sum(c > r for c, r in pairs) / len(pairs) if pairs else 0.0
