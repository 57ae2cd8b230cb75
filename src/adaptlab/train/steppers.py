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
