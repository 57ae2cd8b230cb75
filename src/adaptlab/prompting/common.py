"""What every prompting strategy shares: predictions, option scoring and generation with
answer extraction. Strategies build prompts; these turn prompts into predictions through the
LM interface only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adaptlab.extract import extract

LETTERS_TRIGGER = "Therefore, among A through {last}, the answer is"
from adaptlab.tasks import Task


@dataclass
class Prediction:
    prediction: Any                     # label name | choice index | answer text (None: nothing found)
    prompt: str
    scores: list[float] | None = None   # option log-probabilities (scored tasks)
    raw: str | None = None              # raw generation (generated tasks)
    extra: dict = field(default_factory=dict)


def by_options(lm, task: Task, prompts: list[str], examples: list[dict], normalize: str = "sum") -> list[Prediction]:
    """Pick the option with the highest log-probability after each prompt.
    ``normalize="mean"`` divides by the option's token count (lm-eval's acc_norm is per char;
    per token is the common choice for multi-token choices)."""
    options = [task.options(ex) for ex in examples]
    scored = lm.score(prompts, options)
    preds = []
    for p, ex, sc in zip(prompts, examples, scored):
        vals = [s.mean_logprob if normalize == "mean" else s.logprob for s in sc]
        best = max(range(len(vals)), key=vals.__getitem__)
        pred = task.labels[best] if task.is_classification else best
        preds.append(Prediction(prediction=pred, prompt=p, scores=vals))
    return preds


def by_generation(lm, task: Task, prompts: list[str], examples: list[dict], *, max_new_tokens: int | None = None,
                  stop: list[str] | None = None, which: str = "first") -> list[Prediction]:
    """Greedy generation, then the task's answer extraction."""
    outs = lm.generate(prompts, n=1, max_new_tokens=max_new_tokens or task.max_new_tokens,
                       temperature=0.0, stop=task.stop if stop is None else stop)
    return [Prediction(prediction=parse(task, ex, o[0], which), prompt=p, raw=o[0])
            for p, ex, o in zip(prompts, examples, outs)]


def parse(task: Task, example: dict, text: str, which: str = "first"):
    """A generation -> a prediction of the task's kind."""
    if task.is_classification:
        i = extract(text, "label", words=[task.word(lab) for lab in task.labels])
        return task.labels[i] if i is not None else None
    if task.schema == "multiple_choice":
        i = extract(text, "choice", n_choices=len(example["choices"]))
        if i is None:
            j = extract(text, "label", words=example["choices"])
            return j
        return i
    return extract(text, task.answer_type, which=which)


def with_chat(lm, task: Task, prompt: str, chat: bool | None) -> str:
    return lm.chat(prompt) if (task.chat if chat is None else chat) else prompt


def demo_text(task: Task, example: dict, answer: str | None = None) -> str:
    """One demonstration: the input as the task renders it, then its answer as the task's
    target formats it (``answer`` overrides the gold answer text; "" gives the input alone)."""
    if answer == "":
        return task.render(example)
    return task.render(example) + (task.target_text(example) if answer is None else task.target.format(answer=answer))


def join_demos(task: Task, demos: list[str], query: str, head: str = "") -> str:
    """[head] demo_1 <sep> ... demo_k <sep> query, with the task's demonstration separator."""
    parts = ([head] if head else []) + demos + [query]
    return task.demo_separator.join(parts)


def predict_prompts(lm, task: Task, prompts: list[str], examples: list[dict], normalize: str = "sum",
                    **gen) -> list[Prediction]:
    """Score the options (classification, multiple choice) or generate and extract (qa)."""
    if task.schema == "qa":
        return by_generation(lm, task, prompts, examples, **gen)
    return by_options(lm, task, prompts, examples, normalize)
