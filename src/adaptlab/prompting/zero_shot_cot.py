"""Zero-shot chain of thought (Kojima et al. 2022, "Large Language Models are Zero-Shot
Reasoners"): two stages, no demonstrations.

    stage 1 (reasoning extraction):  r = decode( template(x) + " Let's think step by step." )
    stage 2 (answer extraction):     y = decode( template(x) + " Let's think step by step." + r
                                                 + "\\n" + answer_trigger )

The answer trigger names the answer's format, as in the paper: "Therefore, the answer (arabic
numerals) is" for numbers, "(Yes or No)" for yes/no, "among A through E" for choices. For tasks
with fixed options (classification, multiple choice) stage 2 scores the options after the
trigger instead of decoding."""

from __future__ import annotations

from dataclasses import dataclass

from adaptlab.prompting.common import LETTERS_TRIGGER, Prediction, by_options, parse, with_chat
from adaptlab.tasks import Task

STEP = "Let's think step by step."


def answer_trigger(task: Task, example: dict) -> str:
    if task.answer_type == "number":
        return "Therefore, the answer (arabic numerals) is"
    if task.answer_type == "yesno":
        return "Therefore, the answer (Yes or No) is"
    if task.schema == "multiple_choice":
        return LETTERS_TRIGGER.format(last="ABCDEFGHIJKLMNOPQRSTUVWXYZ"[len(example["choices"]) - 1])
    return "Therefore, the answer is"


@dataclass
class ZeroShotCoT:
    name = "zero-shot-cot"
    trigger: str = STEP
    reasoning_tokens: int = 128     # stage-1 budget
    answer_tokens: int = 16         # stage-2 budget
    chat: bool | None = None

    def __post_init__(self):
        if self.reasoning_tokens < 1 or self.answer_tokens < 1:
            raise ValueError("token budgets must be >= 1")

    def render(self, task: Task, example: dict, lm=None) -> str:
        prompt = f"{task.render(example)} {self.trigger}"
        return with_chat(lm, task, prompt, self.chat) if lm is not None else prompt

    def predict(self, lm, task: Task, examples: list[dict]) -> list[Prediction]:
        first = [self.render(task, ex, lm) for ex in examples]
        stop = list(dict.fromkeys([*task.stop, "\n\n"]))
        reasoning = [o[0] for o in lm.generate(first, n=1, max_new_tokens=self.reasoning_tokens,
                                               temperature=0.0, stop=stop)]
        second = [f"{p}{r.rstrip()}\n{answer_trigger(task, ex)}" for p, r, ex in zip(first, reasoning, examples)]
        if task.schema != "qa":
            preds = by_options(lm, task, second, examples)
        else:
            # no "\n" stop: small models often open the answer with a newline, which would cut it to ""
            outs = lm.generate(second, n=1, max_new_tokens=self.answer_tokens, temperature=0.0, stop=["\n\n"])
            preds = []
            for p, ex, o, r in zip(second, examples, outs, reasoning):
                ans = parse(task, ex, o[0])
                if ans is None:                  # nothing in stage 2: fall back to the reasoning's last answer
                    ans = parse(task, ex, r, "last")
                preds.append(Prediction(prediction=ans, prompt=p, raw=o[0]))
        for p, r in zip(preds, reasoning):
            p.extra["reasoning"] = r
        return preds
