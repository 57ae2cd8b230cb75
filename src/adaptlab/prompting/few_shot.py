"""Few-shot in-context learning (Brown et al. 2020, "Language Models are Few-Shot Learners"):
k demonstrations (x_i, y_i) from a pool precede the test input, and

    y* = argmax_y  log P_LM( v(y) | d(x_1, y_1) sep ... sep d(x_k, y_k) sep template(x) )

with d(x, y) = template(x) + target(v(y)) and sep the task's demonstration separator.
Selection: ``balanced``, the default (k / |labels| per label, round robin over the task's labels,
so a small k drawn from a skewed or label-sorted pool still shows every label; on a task without
labels -- qa, multiple choice -- it draws at random, as ``random``), ``random`` (k drawn uniformly
from the pool: the default before issue 28, which at k=4 could give 4 demonstrations of one label
and a model that predicts it for every input), ``first`` (the pool's first k, as lm-eval's
``first_n`` sampler) or ``similar`` (the k nearest to x by cosine similarity of
the default encoder's mean-pooled embeddings; Liu et al. 2022, "What Makes Good In-Context
Examples for GPT-3?"; the most similar sits last). The same demonstrations serve every input
(``per_input=false``, the default: the local engine then caches their KV once) or are drawn per
input.

Ablations of what demonstrations do:
  * Min et al. 2022, "Rethinking the Role of Demonstrations": ``labels=random`` (a fraction p of
    the demos get a label drawn uniformly from the label set), ``inputs=ood`` (demo inputs taken
    from another task's data), ``labels=none`` (inputs without labels), k=0 (no demos).
  * Wei et al. 2023, "Larger language models do in-context learning differently":
    ``labels=flipped`` -- exactly round(p k) demos get a wrong label (binary: the other one;
    more labels: the next one in the label list).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from adaptlab.errors import ConfigError
from adaptlab.prompting.common import Prediction, demo_text, join_demos, predict_prompts, with_chat
from adaptlab.prompting.zero_shot import Instruction, ZeroShot
from adaptlab.tasks import Task

_MAIN = {"classification": "text", "pair_classification": "text_a", "qa": "question", "multiple_choice": "question"}


def _embedder(name: str):
    """The encoder that embeds inputs for ``selection=similar`` (tests swap in a tiny one)."""
    from adaptlab.engine.embedding import EmbeddingLM
    from adaptlab.models import load_backbone

    return EmbeddingLM(load_backbone(name))


@dataclass
class FewShot(ZeroShot):
    name = "few-shot"
    needs_pool = True
    k: int = 4                                                  # number of demonstrations
    # balanced: k / |labels| demos per label on classification tasks, random elsewhere
    selection: Literal["balanced", "random", "first", "similar"] = "balanced"
    order: Literal["random", "fixed"] = "random"                # fixed: as selected (similar: most similar last)
    per_input: bool = False                                     # draw demos per input (similar always is)
    labels: Literal["gold", "random", "flipped", "none"] = "gold"
    p: float = 1.0                                              # fraction of demo labels made random/flipped
    inputs: Literal["gold", "ood"] = "gold"                     # ood: demo inputs from ``ood_task``
    ood_task: str = "agnews"
    instruct: bool = False                                      # put the task's instruction first
    pool_size: int = 2000                                       # demos come from a random subset this big
    seed: int = 0
    encoder: str = "minilm-l6"

    def __post_init__(self):
        if self.k < 0:
            raise ValueError("k must be >= 0")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError("p must be in [0, 1]")
        if self.pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        self._fixed: list[str] | None = None
        self._pool: list[dict] = []

    # ------------------------------------------------------------------ demonstrations
    def prepare(self, lm, task: Task, pool: list[dict]) -> None:
        if self.k and not pool:
            raise ConfigError(f"few-shot: task {task.name} has no train pool to draw demonstrations from")
        rng = random.Random(self.seed)
        keep_order = self.selection == "first"
        self._pool = list(pool) if len(pool) <= self.pool_size or keep_order else rng.sample(pool, self.pool_size)
        self._ood: list[str] = []
        if self.inputs == "ood" and self.k:
            from adaptlab.data import load_split
            from adaptlab.tasks import load_task

            other = load_task(self.ood_task)
            self._ood = [ex[_MAIN[other.schema]] for ex in load_split(other, "train")]
        self._emb = None
        if self.selection == "similar" and self.k:
            self._encoder = _embedder(self.encoder)
            self._emb = self._encoder.embed([task.render(ex) for ex in self._pool])   # [N, H]
        self._fixed = None
        if not (self.per_input or self.selection == "similar"):
            self._fixed = self._draw(task, rng, None)

    def _select(self, task: Task, rng: random.Random, query_emb) -> list[dict]:
        pool, k = self._pool, min(self.k, len(self._pool))
        if self.selection == "first":
            return pool[:k]
        if self.selection == "similar":
            sims = self._emb @ query_emb                                            # [N]
            top = sims.topk(k).indices.tolist()                                     # most similar first
            return [pool[i] for i in reversed(top)]
        if self.selection == "balanced" and task.is_classification:
            by_label = {lab: [ex for ex in pool if ex["label"] == lab] for lab in task.labels}
            picked, labs = [], [lab for lab in task.labels if by_label[lab]]
            for j in range(k):                                                      # round robin over labels
                lab = labs[j % len(labs)]
                rest = [ex for ex in by_label[lab] if ex not in picked]
                picked.append(rng.choice(rest or by_label[lab]))
            return picked
        return rng.sample(pool, k)

    def _answer(self, task: Task, ex: dict, rng: random.Random, corrupt: bool) -> str | None:
        if self.labels == "none":
            return ""
        if not corrupt:
            return None
        if task.is_classification:
            g = task.labels.index(ex["label"])
            j = rng.randrange(len(task.labels)) if self.labels == "random" else (g + 1) % len(task.labels)
            return task.word(task.labels[j])
        other = [task.answer_text(o) for o in self._pool if task.answer_text(o) != task.answer_text(ex)]
        return rng.choice(other) if other else None

    def _draw(self, task: Task, rng: random.Random, query_emb) -> list[str]:
        picked = self._select(task, rng, query_emb)
        if self.order == "random":
            picked = rng.sample(picked, len(picked))
        n_bad = round(self.p * len(picked)) if self.labels in ("random", "flipped") else 0
        bad = set(rng.sample(range(len(picked)), n_bad))
        demos = []
        for i, ex in enumerate(picked):
            answer = self._answer(task, ex, rng, i in bad)
            if self._ood:
                ex = dict(ex, **{_MAIN[task.schema]: rng.choice(self._ood)})
            demos.append(demo_text(task, ex, answer))
        return demos

    def demos_for(self, task: Task, examples: list[dict]) -> list[list[str]]:
        if self._fixed is not None:
            return [self._fixed] * len(examples)
        if not self._pool and self.k:
            raise ConfigError("few-shot: call prepare(lm, task, pool) before render/predict")
        embs = self._encoder.embed([task.render(ex) for ex in examples]) if self._emb is not None else None
        return [self._draw(task, random.Random(f"{self.seed}|{task.render(ex)}"), None if embs is None else embs[i])
                for i, ex in enumerate(examples)]

    # ------------------------------------------------------------------ prompts
    def _prompt(self, task: Task, example: dict, demos: list[str], lm=None) -> str:
        head = Instruction().instruction(task) if self.instruct else ""
        prompt = join_demos(task, demos, task.render(example), head)
        return with_chat(lm, task, prompt, self.chat) if lm is not None else prompt

    def render(self, task: Task, example: dict, lm=None) -> str:
        return self._prompt(task, example, self.demos_for(task, [example])[0], lm)

    def predict(self, lm, task: Task, examples: list[dict]) -> list[Prediction]:
        prompts = [self._prompt(task, ex, d, lm) for ex, d in zip(examples, self.demos_for(task, examples))]
        return predict_prompts(lm, task, prompts, examples, self.normalize)
