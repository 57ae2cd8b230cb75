"""Zero-shot chain of thought (Kojima et al. 2022, "Large Language Models are Zero-Shot
Reasoners"): two stages, no demonstrations.

    stage 1 (reasoning extraction):  r = decode( template(x) + " Let's think step by step." )
    stage 2 (answer extraction):     c = template(x) + " Let's think step by step." + r + "\\n" + answer_trigger
        closed answer set:  y = argmax_y log P_LM( option(y) | c )        (scored, lm-eval style)
        open answer:        y = extract( decode(c) )                        (the paper's stage 2)

The answer trigger names the answer's format, as in the paper: "Therefore, the answer (arabic
numerals) is" for numbers, "(Yes or No)" for yes/no, "among A through E" for choices.

Rule: when the task has a closed answer set -- classification / pair_classification (its labels),
multiple choice (the example's choices), a qa task with ``answer_type: yesno`` (" Yes" / " No",
as the trigger names them, through the task's ``target``; predicted "yes" / "no") -- stage 2
scores that set after the trigger with the engine's option scoring (the call zero-shot uses), so
every prediction is one of the options and none is unparsed. Kojima et al. decode the answer and
parse it with answer-extraction prompts; a small model often says neither option there (29 of 50
StrategyQA answers were unparsed); a scored answer cannot be. Open answers (numbers, text) keep the
paper's decoding + extraction, falling back to the reasoning's last answer. Each record says
which was used: ``answer_by`` is "scoring" or "decoding". Stage 2 costs one scoring request per
example on the closed path (no answer tokens generated), one generation on the open path."""

from __future__ import annotations

from dataclasses import dataclass

from adaptlab.prompting.common import LETTERS_TRIGGER, Prediction, by_options, parse, with_chat
from adaptlab.tasks import Task

STEP = "Let's think step by step."
YESNO = ("yes", "no")   # predictions of a yes/no task, scored as the trigger names them: " Yes", " No"


def answer_trigger(task: Task, example: dict) -> str:
    if task.answer_type == "number":
        return "Therefore, the answer (arabic numerals) is"
    if task.answer_type == "yesno":
        return "Therefore, the answer (Yes or No) is"
    if task.schema == "multiple_choice":
        return LETTERS_TRIGGER.format(last="ABCDEFGHIJKLMNOPQRSTUVWXYZ"[len(example["choices"]) - 1])
    return "Therefore, the answer is"


def closed_set(task: Task) -> bool:
    """Whether the task's answers form a closed set that stage 2 scores (see the module docstring)."""
    return task.is_classification or task.schema == "multiple_choice" or task.answer_type == "yesno"


def by_yesno(lm, task: Task, prompts: list[str], examples: list[dict]) -> list[Prediction]:
    """Score the trigger's words, " Yes" and " No" (formatted by the task's ``target``), after each prompt."""
    options = [task.target.format(answer=w.capitalize()) for w in YESNO]
    scored = lm.score(prompts, [options] * len(prompts))
    preds = []
    for p, sc in zip(prompts, scored):
        vals = [s.logprob for s in sc]
        preds.append(Prediction(prediction=YESNO[max(range(len(vals)), key=vals.__getitem__)], prompt=p, scores=vals))
    return preds


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
        closed = closed_set(task)
        if task.is_classification or task.schema == "multiple_choice":
            preds = by_options(lm, task, second, examples)
        elif closed:                             # answer_type yesno
            preds = by_yesno(lm, task, second, examples)
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
            p.extra["answer_by"] = "scoring" if closed else "decoding"
        return preds
