"""BBT: Sun et al. 2022, "Black-Box Tuning for Language-Model-as-a-Service" (ICML 2022).

The soft prompt p in R^{n x D} (n virtual tokens of the embedding width D) is never trained by
gradients. It is the image of a low-dimensional z in R^d through a fixed random projection A,

    p = A z + p_0,        A in R^{(n D) x d},  z in R^d   (d = 500, n = 50 in the paper)

and z is searched by CMA-ES (popsize 20, sigma 1; optionally bounded, z in [-b, b]^d) on the loss
of the verbalizer over the k-shot train set, with forward passes only:

    z* = argmin_z  L( f(A z + p_0 ; X), Y )     L = cross-entropy over the label words (or hinge)

under a budget of model calls (8,000 in the paper: one call per candidate and example scored).

A: ``projection=normal`` (default) is BBTv2's, A_ij ~ N(0, sigma_A^2) with sigma_A = sigma_e /
(sqrt(d) sigma), sigma_e the std of the model's word embeddings, so that A z for z ~ N(0, sigma^2 I)
has the scale of real embeddings; ``uniform`` is BBT's own (an ``nn.Linear(d, n D)``'s default
init, U(-1/sqrt(d), 1/sqrt(d))), which on the default decoder puts the prompt ~10x above the
embeddings' scale. A and p_0 are regenerated from ``projection_seed``, never stored. p_0: ``zero``
(the paper without a pre-trained prompt) or ``vocab`` (the embeddings of n tokens drawn from the
first 5,000 ids with the same seed, prompt tuning's init).

Loop mapping: one step = one CMA-ES generation (``train.steppers.CMAES``) over the whole k-shot set
(or ``rows_per_generation`` rows): the P candidates x B rows are scored in one batched forward
(``max_rows`` rows a forward; each row reads its candidate's prompt through ``row_candidates``),
which is P*B model calls; so max_steps = budget // (P * B), and the dev check runs every
``dev_every`` calls (``TrainConfig.eval_every`` generations), keeping the best z. Decoders only:
the verbalizer is read off the LM head; the encoders adaptlab loads carry no MLM head.

Saved: peft's PROMPT_TUNING layout, ``prompt_embeddings`` = the materialised p [n, D] (so
``peft.PeftModel.from_pretrained`` loads it), plus ``bbt_z`` [d] in the same file (peft ignores
it); ``adaptlab.json`` records d, the projection's kind and seed, and z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from adaptlab.config import check
from adaptlab.errors import ConfigError

MODULE = "bbt_prompt"              # the registered prefix is "bbt_"
VOCAB_TOP = 5000
gradient = False                   # z is moved by CMA-ES, never by a gradient
KINDS = ("decoder",)
REQUIRES = {"cma": "bbt"}                   # CMA-ES (optional extra)


@dataclass
class Config:
    d: int = 500                                   # intrinsic dimension of z
    num_virtual_tokens: int = 50                   # n
    popsize: int = 20                              # CMA-ES population P
    sigma: float = 1.0                             # CMA-ES initial step size
    bound: float = 0.0                             # z in [-bound, bound]^d (0: unbounded)
    budget: int = 8000                             # model calls (candidate x example) for the search
    projection: Literal["normal", "uniform"] = "normal"
    projection_seed: int = 0
    init: Literal["zero", "vocab"] = "vocab"       # p_0
    loss: Literal["ce", "hinge"] = "ce"
    rows_per_generation: int = 0                   # train rows scored per generation (0: all of them)
    dev_every: int = 1000                          # model calls between dev checks (0: at the end only)
    max_rows: int = 1024                           # rows per forward when scoring a population

    def __post_init__(self):
        check_search(self)


def check_search(cfg) -> None:
    """The checks BBT's and BBTv2's configs share (the subspace, CMA-ES and the call budget)."""
    check(cfg.d >= 1, f"d={cfg.d}: must be at least 1")
    check(1 <= cfg.num_virtual_tokens <= 1024, f"num_virtual_tokens={cfg.num_virtual_tokens}: must be in [1, 1024]")
    check(cfg.popsize >= 2, f"popsize={cfg.popsize}: CMA-ES needs a population of at least 2")
    check(cfg.sigma > 0, f"sigma={cfg.sigma}: must be > 0")
    check(cfg.bound >= 0, f"bound={cfg.bound}: must be >= 0 (0: unbounded)")
    check(cfg.budget >= 1, f"budget={cfg.budget}: must be at least 1 model call")
    check(cfg.rows_per_generation >= 0, "rows_per_generation: must be >= 0 (0: the whole train set)")
    check(cfg.dev_every >= 0, "dev_every: must be >= 0 (0: only at the end)")
    check(cfg.max_rows >= 1, "max_rows: must be at least 1")


def projection_matrix(rows: int, d: int, kind: str, scale: float, gen: torch.Generator) -> torch.Tensor:
    """A [rows, d]: ``normal`` N(0, scale^2) or ``uniform`` U(-1/sqrt(d), 1/sqrt(d))."""
    if kind == "uniform":
        return (torch.rand(rows, d, generator=gen) * 2 - 1) / math.sqrt(d)
    return torch.randn(rows, d, generator=gen) * scale


class BBTPrompt(nn.Module):
    """``z`` [d] (the searched vector) -> the soft prompt p = A z + p_0 [n, D]. In population mode
    (``set_population``) row r of a batch reads candidate ``row_candidates[r]``."""

    blocks = 1
    gens_per_block = 1

    def __init__(self, A: torch.Tensor, p0: torch.Tensor, max_rows: int):
        super().__init__()
        self.n_virtual, self.D = p0.shape
        self.z = nn.Parameter(torch.zeros(A.shape[1]), requires_grad=False)
        self._A, self._p0 = A, p0                       # plain attributes: regenerated, never saved
        self.max_rows = max_rows
        self.population: torch.Tensor | None = None     # [P, n, D]
        self.row_candidates: torch.Tensor | None = None

    def materialise(self, Z: torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., n, D]."""
        A, p0 = self._A.to(Z.device), self._p0.to(Z.device)
        return (Z.float() @ A.T).view(*Z.shape[:-1], self.n_virtual, self.D) + p0

    def prompt(self) -> torch.Tensor:
        return self.materialise(self.z.detach())                                 # [n, D]

    @property
    def population_size(self) -> int:
        return 1 if self.population is None else self.population.shape[0]

    def embeds(self, batch_size: int) -> torch.Tensor:
        if self.population is not None:
            rc = self.row_candidates
            if rc is None:
                rc = torch.arange(self.population_size).repeat_interleave(batch_size // self.population_size)
            return self.population[rc.to(self.population.device)]               # [B, n, D]
        return self.prompt().unsqueeze(0).expand(batch_size, -1, -1)             # [B, n, D]

    def past_key_values(self, batch_size: int):
        return None

    # the CMA-ES stepper's view: one block, z
    def get(self, block: int) -> np.ndarray:
        return self.z.detach().cpu().double().numpy().copy()

    def set(self, block: int, x) -> None:
        with torch.no_grad():
            self.z.copy_(torch.as_tensor(np.asarray(x), dtype=self.z.dtype))

    def set_population(self, block: int, X) -> None:
        self.population = None if X is None else self.materialise(torch.as_tensor(X, dtype=torch.float32,
                                                                                    device=self.z.device))

    def forwards_for(self, rows: int) -> int:
        return math.ceil(rows / self.max_rows)


def check_decoder(backbone, method: str) -> None:
    if backbone.kind != "decoder":
        raise ConfigError(f"{method}: reads the verbalizer off an LM head, and adaptlab's encoders load without an "
                          "MLM head; use a decoder")


def build(backbone, config: Config, embedding: nn.Embedding) -> BBTPrompt:
    W = embedding.weight.detach().float()                                        # [V, D]
    n, D = config.num_virtual_tokens, W.shape[1]
    if config.d > n * D:
        raise ConfigError(f"bbt: d={config.d} is larger than n x D = {n} x {D} = {n * D} (the prompt's size)")
    gen = torch.Generator().manual_seed(config.projection_seed)
    ids = torch.randint(0, min(VOCAB_TOP, W.shape[0]), (n,), generator=gen)
    p0 = W[ids].clone() if config.init == "vocab" else torch.zeros(n, D)
    A = projection_matrix(n * D, config.d, config.projection, float(W.std()) / (math.sqrt(config.d) * config.sigma), gen)
    return BBTPrompt(A.to(W.device), p0.to(W.device), config.max_rows)


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel

    check_decoder(backbone, "bbt")
    t = TunedModel.wrap(backbone, "bbt", config, task)
    t.add_prompt(MODULE, build(backbone, config, t.model.get_input_embeddings()))
    return t


# --------------------------------------------------------------------------- the loop's pieces


def train_config(cfg, tcfg, n_train: int):
    """Budget in model calls -> steps: one step = one generation of popsize x rows calls."""
    import dataclasses

    rows = cfg.rows_per_generation or n_train
    if rows > n_train:
        raise ConfigError(f"rows_per_generation={rows}: the train set has only {n_train} examples")
    per_gen = cfg.popsize * rows
    if cfg.budget < per_gen:
        raise ConfigError(f"budget={cfg.budget}: smaller than one generation (popsize {cfg.popsize} x {rows} rows "
                          f"= {per_gen} model calls)")
    steps = cfg.budget // per_gen
    if tcfg.max_steps:
        steps = min(steps, tcfg.max_steps)
    every = max(1, cfg.dev_every // per_gen) if cfg.dev_every else steps
    return dataclasses.replace(tcfg, batch_size=rows, grad_accum=1, max_steps=steps, eval_every=min(every, steps))


def objective(tuned, backbone, task, tcfg):
    from adaptlab.train.objectives import Verbalizer

    return Verbalizer(backbone.tokenizer, task, tcfg.max_seq_len, tuned.method_config.loss)


def stepper(cfg, tcfg, lr):
    from adaptlab.train.steppers import CMAES

    return CMAES(cfg.popsize, cfg.sigma, cfg.bound, seed=tcfg.seed)


# --------------------------------------------------------------------------- files


def saved_state(tuned) -> dict:
    p = tuned.prompt
    return {f"{MODULE}.prompt_embeddings": p.prompt(), f"{MODULE}.z": p.z.detach()}


def saved_meta(tuned) -> dict:
    c = tuned.method_config
    return {"d": c.d, "projection": c.projection, "projection_seed": c.projection_seed, "init": c.init,
            "z": [round(float(v), 7) for v in tuned.prompt.z.tolist()]}


def to_file_keys(state: dict) -> dict:
    return {"prompt_embeddings": state[f"{MODULE}.prompt_embeddings"], "bbt_z": state[f"{MODULE}.z"]}


def from_file_keys(state: dict) -> dict:
    return {f"{MODULE}.z": state["bbt_z"]} if "bbt_z" in state else {}


def to_peft_config(cfg: Config, tuned) -> dict:
    from adaptlab.tuning.prompt_tuning import lm_fields

    return {"peft_type": "PROMPT_TUNING", **lm_fields(cfg, tuned), "prompt_tuning_init": "RANDOM",
            "prompt_tuning_init_text": None, "tokenizer_name_or_path": None, "tokenizer_kwargs": None}


def from_peft_config(d: dict) -> dict:
    from adaptlab.tuning.prompt_tuning import check_peft_fields

    check_peft_fields(d, "bbt")
    return {"num_virtual_tokens": d["num_virtual_tokens"]}
