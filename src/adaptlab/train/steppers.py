"""Steppers: how one training step moves the parameters. The loop hands a stepper the group of
micro-batches of one step and a ``loss(batch) -> (loss, metrics)`` function; the stepper decides
what to do with them. A gradient stepper backpropagates; a gradient-free one (CMA-ES for
black-box tuning, REINFORCE over discrete prompts) only calls the loss under ``torch.no_grad``.

A stepper provides
  * ``setup(module, total_steps)``: bind to the parameters it moves (``requires_grad`` ones for a
    gradient stepper; a black-box one finds its own) and the length of the run;
  * ``prepare(accel, module) -> module``: hand the module (and an optimizer) to Accelerate, which
    wraps it in DDP under a multi-process launch;
  * ``step(accel, module, batches, autocast) -> (loss, metrics)``: one step over ``batches``;
  * ``state() -> (tensors, values)`` / ``load(tensors, values)``: what a resume checkpoint holds;
  * ``lr``: the current learning rate (logged), or None.

AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"):

    m_t = b1 m + (1 - b1) g,   v_t = b2 v + (1 - b2) g^2,
    theta <- theta - lr_t (m_hat / (sqrt(v_hat) + eps) + wd theta)

no weight decay on biases and norms; lr_t: linear warmup over ``warmup_ratio`` of the steps,
then linear decay to 0; gradients clipped to ``max_grad_norm``; gradient accumulation over the
step's micro-batches (DDP syncs on the last one only).

Every stepper also reports what a step cost: ``cost(batches) -> (calls, forwards)``, model calls
(one per example row scored: for a black-box stepper one per (candidate, example), as an API
bills) and batched forward passes (a gradient step's forward+backward counts as one forward).

``CMAES`` (Hansen & Ostermeier 2001; the ``cma`` package, never a hand-written one) searches the
vector a black-box method exposes (``tuning/bbt.py``, ``tuning/bbtv2.py``): a step is one
generation, x_1..x_P ~ N(m, sigma^2 C); the objective scores the whole population in one batched
forward and ``tell`` updates m, sigma, C from the ranking of the P losses. ``Reinforce`` (Williams
1992) moves a categorical policy over discrete prompt tokens (``tuning/bdpl.py``) with the
variance-reduced estimator of Diao et al. 2022: for I sampled prompts p_k with losses L_k,

    g = 1/(I-1) sum_k (L_k - mean(L)) grad_alpha log P_alpha(p_k),     alpha <- alpha - lr g

both only call the loss under ``torch.no_grad``. Their resume state is JSON: CMA-ES keeps the
losses of every generation and a resume replays ask/tell on them (``cma`` is deterministic for a
seed), so no pickled object is ever written; REINFORCE draws step t's samples from a generator
seeded with (seed, t) and needs nothing beyond alpha itself.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


def _metrics_mean(acc: dict[str, float], m: dict, weight: float) -> None:
    for k, v in (m or {}).items():
        acc[k] = acc.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) * weight


class AdamW:
    def __init__(self, lr: float, weight_decay: float = 0.01, warmup_ratio: float = 0.06,
                 max_grad_norm: float = 1.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.base_lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.max_grad_norm = max_grad_norm
        self.betas = betas
        self.eps = eps
        self.optimizer = None
        self.scheduler = None
        self.params: list[torch.nn.Parameter] = []

    # ------------------------------------------------------------------ set-up
    def setup(self, module: torch.nn.Module, total: int) -> None:
        warmup = int(self.warmup_ratio * total)
        flat = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.params = [p for _, p in flat]

        def no_decay(n: str, p) -> bool:
            return p.ndim < 2 or "norm" in n.lower() or n.endswith(".bias")

        groups = [g for g in ({"params": [p for n, p in flat if not no_decay(n, p)], "weight_decay": self.weight_decay},
                              {"params": [p for n, p in flat if no_decay(n, p)], "weight_decay": 0.0}) if g["params"]]
        # torch's fused AdamW (one pass over each tensor a step) on the devices that have it
        fused = all(p.device.type in ("cpu", "cuda", "mps", "xpu") for p in self.params) or None
        self.optimizer = torch.optim.AdamW(groups, lr=self.base_lr, betas=self.betas, eps=self.eps, fused=fused)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    def cost(self, batches: list[dict]) -> tuple[int, int]:
        return sum(len(next(iter(b.values()))) for b in batches), len(batches)

    def prepare(self, accel, module):
        # the scheduler is not prepared: Accelerate would step it once per process; ours counts
        # optimizer steps of one process already
        module, self.optimizer = accel.prepare(module, self.optimizer)
        return module

    @property
    def lr(self) -> float | None:
        return self.scheduler.get_last_lr()[0] if self.scheduler is not None else None

    # ------------------------------------------------------------------ one step
    def step(self, accel, module, batches: list[dict], autocast: torch.dtype | None = None) -> tuple[float, dict]:
        """One optimizer step over ``batches`` (the gradient-accumulation group); returns the
        step's loss and metrics (means over the micro-batches, and over processes)."""
        loss_sum, metrics = 0.0, {}
        multi = accel.num_processes > 1
        cast = (lambda: torch.autocast(accel.device.type, dtype=autocast)) if autocast is not None else nullcontext
        for j, batch in enumerate(batches):
            sync = j == len(batches) - 1
            with (accel.no_sync(module) if multi and not sync else nullcontext()), cast():
                loss, m = module(**batch)
                loss = loss / len(batches)
            accel.backward(loss)
            loss_sum += float(loss.detach())
            _metrics_mean(metrics, m, 1.0 / len(batches))
        if multi:                                   # the step's loss over every process's batches
            vals = torch.tensor([loss_sum, *metrics.values()], device=accel.device)
            vals = accel.reduce(vals, "mean").tolist()
            loss_sum, metrics = vals[0], dict(zip(metrics, vals[1:]))
        if self.max_grad_norm > 0:
            accel.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, metrics

    # ------------------------------------------------------------------ resume
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        osd = self.optimizer.state_dict()
        flat = {f"{i}.{k}": v for i, st in osd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
        values = {"param_groups": osd["param_groups"],
                  "scheduler": {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}}
        return flat, values

    def load(self, tensors: dict[str, torch.Tensor], values: dict) -> None:
        ostate: dict[int, dict] = {}
        for key, v in tensors.items():
            i, _, k = key.partition(".")
            ostate.setdefault(int(i), {})[k] = v
        self.optimizer.load_state_dict({"state": ostate, "param_groups": values["param_groups"]})
        sched = dict(values["scheduler"])
        sched["lr_lambdas"] = [None] * len(self.optimizer.param_groups)
        self.scheduler.load_state_dict(sched)


# --------------------------------------------------------------------------- gradient-free steppers


def _black_box_prepare(accel, module, what: str):
    from adaptlab.errors import ConfigError

    if accel.num_processes > 1:
        raise ConfigError(f"{what} runs in one process (the population is one batched forward); "
                          "launch it without torchrun / accelerate launch")
    return module.to(accel.device)


def _loss_vector(module, batches: list[dict], autocast) -> tuple[torch.Tensor, dict]:
    """Mean over the step's batches of the objective's per-candidate losses [P]."""
    total, metrics = None, {}
    cast = (lambda: torch.autocast(next(module.parameters()).device.type, dtype=autocast)) \
        if autocast is not None else nullcontext
    with torch.no_grad(), cast():
        for b in batches:
            loss, m = module(**b)
            loss = loss.float().reshape(-1)
            total = loss / len(batches) if total is None else total + loss / len(batches)
            _metrics_mean(metrics, m, 1.0 / len(batches))
    return total, metrics


class CMAES:
    """One generation per step over the method's search blocks (``prompt.blocks``: BBT has one,
    z in R^d; BBTv2 one per layer, optimised in turn, ``prompt.gens_per_block`` generations each)."""

    base_lr = None
    lr = None

    def __init__(self, popsize: int, sigma: float, bound: float = 0.0, seed: int = 0):
        self.popsize, self.sigma, self.bound, self.seed = popsize, sigma, bound, seed
        self.history: list[list] = []          # per step: [block, [P losses]] (the resume replay)
        self.es: list = []
        self.prompt = None
        self.step_i = 0

    def _new(self, block: int):
        import cma

        opts = {"seed": self.seed * 1000 + block + 1, "popsize": self.popsize, "verbose": -9,
                "maxiter": 10 ** 9, "tolfun": 0, "tolx": 0, "tolflatfitness": 10 ** 9, "tolfunhist": 0,
                "tolstagnation": 10 ** 9}
        if self.bound > 0:
            opts["bounds"] = [-self.bound, self.bound]
        return cma.CMAEvolutionStrategy(self.x0[block], self.sigma, opts)

    def setup(self, module, total: int) -> None:
        self.prompt = module.model.prompt
        self.x0 = [self.prompt.get(b).astype("float64") for b in range(self.prompt.blocks)]
        self.es = [self._new(b) for b in range(self.prompt.blocks)]

    def prepare(self, accel, module):
        return _black_box_prepare(accel, module, "CMA-ES")

    def _block(self, step: int) -> int:
        return (step // self.prompt.gens_per_block) % self.prompt.blocks

    def cost(self, batches: list[dict]) -> tuple[int, int]:
        rows = sum(len(next(iter(b.values()))) for b in batches)
        return self.popsize * rows, sum(self.prompt.forwards_for(self.popsize * len(next(iter(b.values()))))
                                        for b in batches)

    def step(self, accel, module, batches: list[dict], autocast=None) -> tuple[float, dict]:
        import numpy as np

        b = self._block(self.step_i)
        es = self.es[b]
        X = es.ask()                                                    # P x [d]
        self.prompt.set_population(b, np.stack(X))
        try:
            losses, metrics = _loss_vector(module, batches, autocast)   # [P]
        finally:
            self.prompt.set_population(b, None)
        f = [float(v) for v in losses.tolist()]
        es.tell(X, f)
        self.prompt.set(b, es.result.xbest)                             # the best candidate so far
        self.history.append([b, f])
        self.step_i += 1
        metrics = {**metrics, "best_loss": float(es.result.fbest), "sigma": float(es.sigma), "block": b}
        return float(np.mean(f)), metrics

    def state(self) -> tuple[dict, dict]:
        return {}, {"history": self.history, "x0": [x.tolist() for x in self.x0]}

    def load(self, tensors: dict, values: dict) -> None:
        """Replay ask/tell on the recorded losses: the strategies reach the exact state they had."""
        import numpy as np

        self.x0 = [np.asarray(x, dtype="float64") for x in values["x0"]]
        self.es = [self._new(b) for b in range(self.prompt.blocks)]
        self.history = [list(h) for h in values["history"]]
        for b, f in self.history:
            self.es[b].tell(self.es[b].ask(), f)
        self.step_i = len(self.history)


class Reinforce:
    """REINFORCE with the mean-loss baseline over a categorical prompt policy (``prompt.alpha``)."""

    lr = None

    def __init__(self, lr: float, samples: int, seed: int = 0):
        self.base_lr = self.lr = lr
        self.samples, self.seed = samples, seed
        self.prompt = None
        self.step_i = 0

    def setup(self, module, total: int) -> None:
        self.prompt = module.model.prompt

    def prepare(self, accel, module):
        return _black_box_prepare(accel, module, "REINFORCE")

    def cost(self, batches: list[dict]) -> tuple[int, int]:
        return self.prompt.last_cost

    def step(self, accel, module, batches: list[dict], autocast=None) -> tuple[float, dict]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step_i)
        ids = self.prompt.sample(self.samples, g)                       # [I, n] candidate indices
        self.prompt.population = ids
        try:
            losses, metrics = _loss_vector(module, batches, autocast)   # [I]
        finally:
            self.prompt.population = None
        with torch.no_grad():
            alpha = self.prompt.alpha
            p = torch.softmax(alpha.float(), -1)                        # [n, N]
            onehot = torch.nn.functional.one_hot(ids, alpha.shape[1]).float()   # [I, n, N]
            adv = (losses - losses.mean()) / max(1, self.samples - 1)   # [I]
            grad = (adv[:, None, None] * (onehot - p[None])).sum(0)     # [n, N]: d log P / d alpha
            alpha.sub_((self.lr * grad).to(alpha.dtype))
        self.step_i += 1
        return float(losses.mean()), {**metrics, "best_loss": float(losses.min())}

    def state(self) -> tuple[dict, dict]:
        return {}, {"step": self.step_i}

    def load(self, tensors: dict, values: dict) -> None:
        self.step_i = int(values["step"])
