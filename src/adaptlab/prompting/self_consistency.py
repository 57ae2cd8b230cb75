"""Self-consistency (Wang et al. 2022, "Self-Consistency Improves Chain of Thought Reasoning in
Language Models"): sample n reasoning paths r_i from the chain-of-thought prompt at temperature
T, parse an answer a_i from each, and marginalise the paths out:

    majority:  y* = argmax_a  sum_i 1[a_i = a]
    weighted:  y* = argmax_a  sum_i 1[a_i = a] * exp( (1/|r_i|) log P(r_i | prompt) )

(the paper's "normalized weighted sum"). The local engine prefills each prompt once and decodes
its n samples as one batch from the shared cache. Paths whose answer cannot be parsed do not
vote; ties go to the answer reached first."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from adaptlab.extract import answers_equal
from adaptlab.prompting.common import Prediction, parse
from adaptlab.prompting.cot import CoT
from adaptlab.tasks import Task


def vote(answers: list, weights: list[float], task: Task):
    """Sum the weights of equal answers (numeric-aware for qa); return (winner, tallies)."""
    groups: list[list] = []                              # [answer, total weight]
    for a, w in zip(answers, weights):
        if a is None:
            continue
        for g in groups:
            if (answers_equal(str(a), str(g[0]), task.answer_type) if task.schema == "qa" else a == g[0]):
                g[1] += w
                break
        else:
            groups.append([a, w])
    if not groups:
        return None, []
    best = max(groups, key=lambda g: g[1])               # max keeps the first of equal tallies
    return best[0], groups


@dataclass
class SelfConsistency(CoT):
    name = "self-consistency"
    n: int = 8                                           # sampled paths per input
    temperature: float = 0.7
    top_p: float = 1.0
    weighting: Literal["majority", "probability"] = "majority"

    def __post_init__(self):
        super().__post_init__()
        if self.n < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("need n >= 1, temperature >= 0 and 0 < top_p <= 1")

    def predict(self, lm, task: Task, examples: list[dict]) -> list[Prediction]:
        prompts = [self.render(task, ex, lm) for ex in examples]
        outs = lm.generate(prompts, n=self.n, max_new_tokens=self.budget(task), temperature=self.temperature,
                           top_p=self.top_p, stop=self.stop(task), seed=self.seed)
        preds = []
        for p, ex, paths in zip(prompts, examples, outs):
            answers = [parse(task, ex, r, "last") for r in paths]
            if self.weighting == "probability":
                # every path re-scored in one batch over the prompt's shared, cached prefix
                scored = lm.score([p] * len(paths), [[r] for r in paths])
                weights = [math.exp(s[0].mean_logprob) for s in scored]
            else:
                weights = [1.0] * len(paths)
            best, groups = vote(answers, weights, task)
            preds.append(Prediction(prediction=best, prompt=p, raw=paths[0], extra={
                "paths": paths, "answers": answers, "votes": [[g[0], round(g[1], 4)] for g in groups]}))
        return preds
