"""Automatic Prompt Engineer (Zhou et al. 2022, "Large Language Models Are Human-Level Prompt
Engineers"): the LM writes the instruction.

    1. proposal:  rho ~ P_LM( . | "I gave a friend an instruction and five inputs. ... Here are
                  the input-output pairs: <demos> The instruction was to")
                  for ``n_demo_sets`` demo sets x ``per_set`` samples (one prefill, n samples each)
    2. scoring:   f(rho) = accuracy of [rho + template(x)] on a dev subset D of the train pool
                  (ties: mean log P(gold | rho, x), the paper's log-probability score)
    3. resampling (the iterative Monte Carlo search): the ``keep`` best are paraphrased,
                  "Generate a variation of the following instruction while keeping the semantic
                  meaning." -> new candidates, scored the same way; the best of all is kept.
    y* = argmax_y log P_LM( v(y) | rho* + template(x) )

The search's model calls, forwards and tokens are reported (``search_cost``, and in every
record's ``extra``); they are part of the run's total cost as well."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from adaptlab.errors import ConfigError
from adaptlab.metrics import is_correct
from adaptlab.prompting.common import Prediction, predict_prompts, with_chat
from adaptlab.tasks import Task

PROPOSE = ("I gave a friend an instruction and five inputs. The friend read the instruction and wrote an "
           "output for every one of the inputs. Here are the input-output pairs:\n\n{demos}\n\nThe instruction was to")
RESAMPLE = ("Generate a variation of the following instruction while keeping the semantic meaning.\n\n"
            "Input: {instruction}\n\nOutput:")


@dataclass
class APE:
    name = "ape"
    needs_pool = True
    n_demo_sets: int = 4            # proposal prompts, each with its own demonstrations
    per_set: int = 4                # instructions sampled from each proposal prompt
    demos: int = 5                  # input-output pairs shown per proposal prompt
    dev_size: int = 32              # pool examples each candidate is scored on
    keep: int = 2                   # best candidates paraphrased in the resampling round
    resample: int = 3               # paraphrases per kept candidate (0: no resampling)
    temperature: float = 0.9
    max_new_tokens: int = 32
    seed: int = 0
    chat: bool | None = None

    def __post_init__(self):
        if min(self.n_demo_sets, self.per_set, self.demos, self.dev_size, self.keep) < 1 or self.resample < 0:
            raise ValueError("counts must be >= 1 (resample >= 0)")
        self.best: str | None = None
        self.candidates: list[dict] = []
        self.search_cost: dict = {}

    def render(self, task: Task, example: dict, lm=None, instruction: str | None = None) -> str:
        if instruction is None and self.best is None:
            raise ConfigError("ape: the instruction is searched by prepare(lm, task, pool) first")
        head = (instruction if instruction is not None else self.best).strip()
        prompt = f"{head}\n\n{task.render(example)}" if head else task.render(example)
        return with_chat(lm, task, prompt, self.chat) if lm is not None else prompt

    # ------------------------------------------------------------------ search
    @staticmethod
    def _pair(task: Task, ex: dict) -> str:
        return "Input: " + "\n".join(task.fields(ex).values()) + "\nOutput: " + task.answer_text(ex)

    @staticmethod
    def _clean(text: str) -> str:
        return " ".join(text.strip().split()).strip('"').strip()

    def _score(self, lm, task: Task, instructions: list[str], dev: list[dict]) -> list[dict]:
        rows = []
        for ins in instructions:
            preds = predict_prompts(lm, task, [self.render(task, ex, lm, ins) for ex in dev], dev)
            acc = sum(is_correct(task, p.prediction, task.gold(ex)) for p, ex in zip(preds, dev)) / len(dev)
            gold_lp = (sum(p.scores[task.gold_index(ex)] for p, ex in zip(preds, dev)) / len(dev)
                       if task.schema != "qa" else 0.0)
            rows.append({"instruction": ins, "dev_accuracy": acc, "dev_gold_logprob": round(gold_lp, 4)})
        return rows

    def prepare(self, lm, task: Task, pool: list[dict]) -> None:
        if len(pool) < self.demos + 2:
            raise ConfigError(f"ape: task {task.name} needs a train pool of at least {self.demos + 2} examples")
        before = asdict(lm.cost)
        rng = random.Random(self.seed)
        picked = rng.sample(pool, min(len(pool), self.dev_size + self.n_demo_sets * self.demos))
        dev, rest = picked[: self.dev_size], picked[self.dev_size:] or picked
        proposals = []
        for s in range(self.n_demo_sets):
            demos = [rest[(s * self.demos + j) % len(rest)] for j in range(self.demos)]
            proposals.append(PROPOSE.format(demos="\n\n".join(self._pair(task, ex) for ex in demos)))
        outs = lm.generate(proposals, n=self.per_set, max_new_tokens=self.max_new_tokens,
                           temperature=self.temperature, stop=["\n"], seed=self.seed)
        cands = list(dict.fromkeys(c for c in (self._clean("Your task is to " + o) for os_ in outs for o in os_)
                                   if len(c) > len("Your task is to ") + 2))
        scored = self._score(lm, task, cands, dev)
        rank = lambda r: (r["dev_accuracy"], r["dev_gold_logprob"])  # noqa: E731
        if self.resample:
            top = sorted(scored, key=rank, reverse=True)[: self.keep]
            outs = lm.generate([RESAMPLE.format(instruction=r["instruction"]) for r in top], n=self.resample,
                               max_new_tokens=self.max_new_tokens, temperature=self.temperature, stop=["\n"],
                               seed=self.seed + 1)
            seen = {r["instruction"] for r in scored}
            new = list(dict.fromkeys(c for os_ in outs for c in map(self._clean, os_) if c and c not in seen))
            for r in self._score(lm, task, new, dev):
                r["resampled"] = True
                scored.append(r)
        self.candidates = sorted(scored, key=rank, reverse=True)
        self.best = self.candidates[0]["instruction"] if self.candidates else ""
        after = asdict(lm.cost)
        self.search_cost = {k: round(after[k] - before[k], 3) for k in after}
        self.search_cost["candidates"] = len(scored)

    def predict(self, lm, task: Task, examples: list[dict]) -> list[Prediction]:
        if self.best is None:
            raise ConfigError("ape: call prepare(lm, task, pool) before predict")
        prompts = [self.render(task, ex, lm) for ex in examples]
        preds = predict_prompts(lm, task, prompts, examples)
        for p in preds:
            p.extra["ape_instruction"] = self.best
            p.extra["ape_search_calls"] = self.search_cost.get("calls")
        return preds
