"""Chain-of-thought prompting (Wei et al. 2022, "Chain-of-Thought Prompting Elicits Reasoning in
Large Language Models"): each demonstration is a triple (question, rationale, answer),

    d_i = template(q_i) + " " + rationale_i + " The answer is " + a_i + "."
    prompt = d_1 sep ... sep d_k sep template(q)
    y* = extract( text after "The answer is" in greedy_decode(prompt) )

Rationales come from the task's train pool when it has them (GSM8K train, calculator
annotations ``<<...>>`` removed), else from our hand-written exemplars (``exemplars.py``) for
coin_flip, last_letters and arithmetic word problems. ``Direct`` is the same prompt without
rationales (the paper's "standard prompting" baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from adaptlab.prompting.common import Prediction, parse, with_chat
from adaptlab.prompting.exemplars import cot_exemplars, strip_calc
from adaptlab.tasks import Task

TRIGGER = "The answer is"


@dataclass
class CoT:
    name = "cot"
    needs_pool = True
    k: int = 4                      # demonstrations
    max_new_tokens: int = 0         # 0: the task's max_new_tokens
    seed: int = 0                   # which pool rationales are drawn
    chat: bool | None = None

    def __post_init__(self):
        if self.k < 0 or self.max_new_tokens < 0:
            raise ValueError("k and max_new_tokens must be >= 0")
        self._demos: list[str] | None = None

    def rationale(self, text: str) -> str:
        return " ".join(strip_calc(text).split())

    def demo(self, task: Task, example: dict, rationale: str, answer: str) -> str:
        why = self.rationale(rationale)
        return task.render(example) + (f" {why} {TRIGGER} {answer}." if why else f" {TRIGGER} {answer}.")

    def prepare(self, lm, task: Task, pool: list[dict]) -> None:
        self._demos = [self.demo(task, ex, r, a) for ex, r, a in cot_exemplars(task, pool, self.k, self.seed)]

    def stop(self, task: Task) -> list[str]:
        return list(dict.fromkeys([*task.stop, "\n\n"]))

    def render(self, task: Task, example: dict, lm=None) -> str:
        if self._demos is None:
            self.prepare(lm, task, [])
        prompt = task.demo_separator.join([*self._demos, task.render(example)])
        return with_chat(lm, task, prompt, self.chat) if lm is not None else prompt

    def budget(self, task: Task) -> int:
        return self.max_new_tokens or task.max_new_tokens

    def predict(self, lm, task: Task, examples: list[dict]) -> list[Prediction]:
        prompts = [self.render(task, ex, lm) for ex in examples]
        outs = lm.generate(prompts, n=1, max_new_tokens=self.budget(task), temperature=0.0, stop=self.stop(task))
        return [Prediction(prediction=parse(task, ex, o[0], "last"), prompt=p, raw=o[0])
                for p, ex, o in zip(prompts, examples, outs)]


@dataclass
class Direct(CoT):
    """Standard few-shot prompting on the same exemplars: question -> "The answer is a." """
    name = "direct"

    def rationale(self, text: str) -> str:
        return ""

    def budget(self, task: Task) -> int:
        return self.max_new_tokens or min(task.max_new_tokens, 24)
