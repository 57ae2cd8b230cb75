"""Least-to-most prompting (Zhou et al. 2022, "Least-to-Most Prompting Enables Complex
Reasoning in Large Language Models"): two stages, both few-shot.

    stage 1 (decomposition):  "Q: x\\nSub-questions:\\n1. s_1\\n2. s_2 ..." -> s_1 .. s_m
                               (the last sub-question asks what the question asks)
    stage 2 (subproblem solving), for j = 1..m:
        c_j = solving demos sep  template(x) + "\\nQ: s_1\\nA: a_1 ... \\nQ: s_j\\nA:"
        a_j = decode(c_j)    (each answer is appended before the next sub-question)
    y* = extract(a_m)

Exemplars (decompositions and their solutions) are ours, in ``exemplars.py``, for coin_flip,
last_letters and arithmetic word problems. Every step of every input runs as one batched call."""

from __future__ import annotations

import re
from dataclasses import dataclass

from adaptlab.prompting.common import Prediction, parse
from adaptlab.prompting.exemplars import LEAST_TO_MOST, family, raise_missing
from adaptlab.tasks import Task

_ITEM = re.compile(r"^\s*\d+[.)]\s*(.+?)\s*$")


@dataclass
class LeastToMost:
    name = "least-to-most"
    max_subquestions: int = 5
    decompose_tokens: int = 96
    answer_tokens: int = 64

    def __post_init__(self):
        if self.max_subquestions < 1:
            raise ValueError("max_subquestions must be >= 1")

    def _exemplars(self, task: Task):
        fam = family(task)
        if fam is None or fam not in LEAST_TO_MOST:
            raise_missing(task, "least-to-most")
        return LEAST_TO_MOST[fam]

    def decompose_prompt(self, task: Task, example: dict) -> str:
        demos = ["Q: " + q + "\nSub-questions:\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(subs))
                 for q, subs, _ in self._exemplars(task)]
        return task.demo_separator.join([*demos, f"Q: {example['question']}\nSub-questions:\n1."])

    def solve_prefix(self, task: Task) -> str:
        demos = [q + "".join(f"\nQ: {s}\nA: {a}" for s, a in zip(subs, answers))
                 for q, subs, answers in self._exemplars(task)]
        return task.demo_separator.join(demos) + task.demo_separator

    def subquestions(self, text: str, question: str) -> list[str]:
        """Numbered lines of stage 1's output, at most ``max_subquestions``; the last one answers
        the question (as in the exemplars). No sub-question parsed: the question itself."""
        subs = []
        for line in ("1. " + text).splitlines():
            m = _ITEM.match(line)
            if not m:
                break
            subs.append(m.group(1))
        if len(subs) > self.max_subquestions:                   # keep the final one
            subs = subs[: self.max_subquestions - 1] + subs[-1:]
        return subs or [question.strip()]

    def render(self, task: Task, example: dict, lm=None) -> str:
        """Stage 1's prompt; stage 2's prompts depend on stage 1's output (kept in the records)."""
        return self.decompose_prompt(task, example)

    def predict(self, lm, task: Task, examples: list[dict]) -> list[Prediction]:
        first = [self.decompose_prompt(task, ex) for ex in examples]
        outs = lm.generate(first, n=1, max_new_tokens=self.decompose_tokens, temperature=0.0, stop=["\n\n", "\nQ:"])
        plans = [self.subquestions(o[0], ex["question"]) for o, ex in zip(outs, examples)]
        head = self.solve_prefix(task)
        contexts = [head + ex["question"] for ex in examples]
        answers: list[list[str]] = [[] for _ in examples]
        for j in range(max(len(p) for p in plans)):
            todo = [i for i, p in enumerate(plans) if j < len(p)]
            prompts = [f"{contexts[i]}\nQ: {plans[i][j]}\nA:" for i in todo]
            got = lm.generate(prompts, n=1, max_new_tokens=self.answer_tokens, temperature=0.0, stop=["\n"])
            for i, p, o in zip(todo, prompts, got):
                answers[i].append(o[0].strip())
                contexts[i] = f"{p} {o[0].strip()}"
        return [Prediction(prediction=parse(task, ex, ans[-1], "last"), prompt=ctx, raw=ans[-1],
                           extra={"subquestions": plan, "subanswers": ans})
                for ex, ctx, plan, ans in zip(examples, contexts, plans, answers)]
