"""BDPL: Diao et al. 2022, "Black-box Prompt Learning for Pre-trained Language Models" (TMLR 2023);
the discrete-prompt policy of RLPrompt (Deng et al. 2022, EMNLP) without its policy network.

A prompt of n discrete tokens, each drawn from a candidate vocabulary V (|V| = N) by its own
categorical distribution, alpha in R^{n x N}:

    p_i ~ Cat(softmax(alpha_i)),   P_alpha(p) = prod_i softmax(alpha_i)[p_i]
    min_alpha  E_{p ~ P_alpha} [ L( f([p ; x]), y ) ]

The model is only *scored* (the LM interface's ``score``: any engine, local or remote). The
gradient of the expectation is estimated by REINFORCE with the variance-reducing baseline of
the paper, over I prompts sampled per step (``train.steppers.Reinforce``):

    g = 1/(I-1) sum_k (L(p_k) - 1/I sum_j L(p_j)) grad_alpha log P_alpha(p_k)
    grad_{alpha_i} log P_alpha(p) = onehot(p_i) - softmax(alpha_i)

L is the cross-entropy over the label words' log-probabilities (or the hinge). Candidate
vocabulary: the words of the training texts ranked by their pointwise mutual information with
the labels, max_y log p(w | y) / p(w) (words of at least 3 letters seen at least ``min_count``
times; ties by count), the top N (the paper's PMI n-gram vocabulary, unigrams here). The learned
prompt is the argmax word at every position, joined by spaces, and sits before the task's
template as an instruction, ``f"{prompt}\\n\\n{input}"``: exactly what
``adaptlab eval --prompt instruction --set text_file=ADAPTER_DIR`` sends (training scores the
same strings). Through ``--adapter`` the tuned model prepends the prompt's tokens (with the blank
line) to the input ids, the same tokens when the task uses no chat template.

Loop mapping: one step = I sampled prompts x B train rows in one ``score`` call (I*B model calls);
``budget`` (model calls, 0: epochs / max_steps decide) gives max_steps = budget // (I * B).
Saved: ``bdpl_alpha`` [n, N] under our ``peft_type: "ADAPTLAB_BDPL"``; the candidates in the
config; the prompt text in ``prompt.txt`` (readable) and in ``adaptlab.json``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from adaptlab.config import check
from adaptlab.errors import ConfigError

MODULE = "bdpl_policy"             # the registered prefix is "bdpl_"
gradient = False                   # alpha is moved by the REINFORCE stepper from scores alone
KINDS = ("decoder",)
SEP = "\n\n"                       # between the prompt and the input, as an instruction


@dataclass
class Config:
    prompt_length: int = 5             # n
    vocab_size: int = 50               # N, candidates per position
    samples: int = 8                   # I, prompts sampled per step (>= 2 for the baseline)
    min_count: int = 2                 # a candidate word occurs at least this often in the train texts
    candidates: str = ""               # comma-separated words ("": by PMI from the train texts)
    loss: Literal["ce", "hinge"] = "ce"
    budget: int = 0                    # model calls (0: epochs / max_steps decide)
    dev_every: int = 0                 # model calls between dev checks (0: epoch ends)

    def __post_init__(self):
        check(1 <= self.prompt_length <= 64, f"prompt_length={self.prompt_length}: must be in [1, 64]")
        check(self.vocab_size >= 1, f"vocab_size={self.vocab_size}: must be at least 1")
        check(self.samples >= 2, f"samples={self.samples}: the baseline needs at least 2 sampled prompts")
        check(self.min_count >= 1, "min_count: must be at least 1")
        check(self.budget >= 0 and self.dev_every >= 0, "budget and dev_every: must be >= 0")


WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")


def pmi_vocabulary(task, examples: list[dict], size: int, min_count: int) -> list[str]:
    """The ``size`` words of the train texts with the highest max_y PMI(w, y)."""
    by_label: dict[str, Counter] = {}
    total: Counter = Counter()
    for ex in examples:
        words = set(w.lower() for w in WORD.findall(" ".join(task.fields(ex).values())) if len(w) >= 3)
        y = str(task.gold(ex))
        by_label.setdefault(y, Counter()).update(words)
        total.update(words)
    n = max(1, len(examples))
    n_y = Counter(str(task.gold(ex)) for ex in examples)
    scored = []
    for w, c in total.items():
        if c < min_count:
            continue
        pmi = max(math.log((by_label[y][w] / n_y[y]) / (c / n)) for y in by_label if by_label[y][w])
        scored.append((-pmi, -c, w))
    return [w for _, _, w in sorted(scored)[:size]]


class Policy(nn.Module):
    """``alpha`` [n, N] over ``words``; the argmax prompt's tokens as soft embeddings for the seam."""

    def __init__(self, words: list[str], n: int, tokenizer, embedding: nn.Embedding):
        super().__init__()
        self.words = words
        self.alpha = nn.Parameter(torch.zeros(n, len(words)), requires_grad=False)
        self._tok = tokenizer
        object.__setattr__(self, "_embedding", embedding)       # the model's own, not a submodule (not saved)
        self.population: torch.Tensor | None = None              # [I, n] sampled candidate indices
        self.last_cost = (0, 0)

    def text_of(self, idx) -> str:
        return " ".join(self.words[int(i)] for i in idx)

    def text(self) -> str:
        return self.text_of(self.alpha.argmax(-1).tolist())

    def population_texts(self) -> list[str]:
        return [self.text()] if self.population is None else [self.text_of(r) for r in self.population.tolist()]

    @property
    def population_size(self) -> int:
        return 1 if self.population is None else self.population.shape[0]

    def sample(self, k: int, gen: torch.Generator) -> torch.Tensor:
        probs = torch.softmax(self.alpha.detach().float().cpu(), -1)                   # [n, N]
        return torch.multinomial(probs, k, replacement=True, generator=gen).T          # [I, n]

    def _ids(self) -> list[int]:
        return self._tok(self.text() + SEP, add_special_tokens=False)["input_ids"]

    @property
    def n_virtual(self) -> int:
        return len(self._ids())

    def embeds(self, batch_size: int) -> torch.Tensor:
        E = self._embedding
        ids = torch.tensor(self._ids(), device=E.weight.device)
        return E(ids).detach().unsqueeze(0).expand(batch_size, -1, -1)                 # [B, n_tok, H]

    def past_key_values(self, batch_size: int):
        return None


def candidate_words(config: Config, task, examples: list[dict] | None) -> list[str]:
    if config.candidates.strip():
        words = list(dict.fromkeys(w.strip() for w in config.candidates.split(",") if w.strip()))
    else:
        if examples is None:
            from adaptlab.data import load_split

            examples = load_split(task, "train")
        words = pmi_vocabulary(task, examples, config.vocab_size, config.min_count)
    if not words:
        raise ConfigError(f"bdpl: the candidate vocabulary is empty after filtering (words of >= 3 letters seen "
                          f">= min_count={config.min_count} times in the train texts); lower min_count or give "
                          "candidates=w1,w2,...")
    return words[: config.vocab_size]


def prepare_config(config: Config, task, examples: list[dict]) -> Config:
    """Fill ``candidates`` from the run's own train examples (so the saved config rebuilds the policy)."""
    import dataclasses

    return dataclasses.replace(config, candidates=",".join(candidate_words(config, task, examples)))


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel
    from adaptlab.tuning.bbt import check_decoder

    check_decoder(backbone, "bdpl")
    if task is None and not config.candidates.strip():
        raise ConfigError("bdpl: needs a task (or candidates=...) to build its candidate vocabulary")
    words = candidate_words(config, task, None)
    import dataclasses

    t = TunedModel.wrap(backbone, "bdpl", dataclasses.replace(config, candidates=",".join(words)), task)
    t.add_prompt(MODULE, Policy(words, config.prompt_length, backbone.tokenizer, t.model.get_input_embeddings()))
    return t


# --------------------------------------------------------------------------- the loop's pieces


def train_config(cfg, tcfg, n_train: int):
    import dataclasses

    rows = min(tcfg.batch_size, n_train)
    per_step = cfg.samples * rows
    steps = tcfg.max_steps
    if cfg.budget:
        if cfg.budget < per_step:
            raise ConfigError(f"budget={cfg.budget}: smaller than one step (samples {cfg.samples} x {rows} rows = "
                              f"{per_step} model calls)")
        steps = min(cfg.budget // per_step, steps or 10 ** 9)
    every = max(1, cfg.dev_every // per_step) if cfg.dev_every else None
    return dataclasses.replace(tcfg, grad_accum=1, max_steps=steps, eval_every=every)


def objective(tuned, backbone, task, tcfg):
    from adaptlab.engine import make_lm
    from adaptlab.train.objectives import ScoreLoss

    return ScoreLoss(make_lm(backbone, truncate=task.truncate, max_length=tcfg.max_seq_len), task,
                     tuned.method_config.loss)


def stepper(cfg, tcfg, lr):
    from adaptlab.train.steppers import Reinforce

    return Reinforce(lr=tcfg.lr if tcfg.lr is not None else lr, samples=cfg.samples, seed=tcfg.seed)


# --------------------------------------------------------------------------- files


def saved_meta(tuned) -> dict:
    return {"prompt": tuned.prompt.text(), "file": "prompt.txt"}


def extra_files(tuned) -> dict[str, str]:
    return {"prompt.txt": tuned.prompt.text() + "\n"}


def to_file_keys(state: dict) -> dict:
    return {"bdpl_alpha": state[f"{MODULE}.alpha"]}


def from_file_keys(state: dict) -> dict:
    return {f"{MODULE}.alpha": state["bdpl_alpha"]} if "bdpl_alpha" in state else {}


def to_peft_config(cfg: Config, tuned) -> dict:
    return {"peft_type": "ADAPTLAB_BDPL", "prompt_length": cfg.prompt_length, "vocab_size": cfg.vocab_size,
            "candidates": cfg.candidates, "prompt": tuned.prompt.text()}


def from_peft_config(d: dict) -> dict:
    return {"prompt_length": int(d["prompt_length"]), "vocab_size": int(d["vocab_size"]),
            "candidates": str(d.get("candidates", ""))}
