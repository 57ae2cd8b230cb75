"""DPO: Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference Optimization:
Your Language Model is Secretly a Reward Model"), and IPO (Azar et al. 2023, "A General
Theoretical Paradigm to Understand Learning from Human Preferences").

With the policy pi (the tuned model) and the reference pi_ref (the SAME model with its adapters
off, ``TunedModel.disable_adapters()``: no second copy in memory), the implicit reward of a reply
is r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)) and

    sigmoid:  L = -log sigma( r(x, y_w) - r(x, y_l) )
    ipo:      L = ( (h_w / |y_w| - h_l / |y_l|) - 1 / (2 beta) )^2,   h = log pi(y|x) - log pi_ref(y|x)

(log-probabilities summed over the reply tokens; IPO's per-token average as trl documents it).
Metrics per step: loss, reward accuracy (r_w > r_l), chosen/rejected rewards, their margin and the
policy's summed log-probs. The 2B rows of a batch (``preference.collate_pairs``) go through one
policy forward and one reference forward (no gradient), each running a pair's prompt once for both
replies (``preference.pair_logps``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaptlab.errors import ConfigError
from adaptlab.train.preference import PairObjective, pair_logps


def dpo_losses(pc, pr, rc, rr, beta: float, loss_type: str = "sigmoid", n_c=None, n_r=None) -> torch.Tensor:
    """Per-pair loss from policy (pc, pr) and reference (rc, rr) summed log-probs: [B]."""
    hc, hr = pc - rc, pr - rr
    if loss_type == "ipo":
        return ((hc / n_c.clamp(min=1) - hr / n_r.clamp(min=1)) - 1 / (2 * beta)) ** 2
    return -F.logsigmoid(beta * (hc - hr))


class DPO(PairObjective):
    name = "dpo"

    def __init__(self, tokenizer, task, max_len: int, beta: float = 0.1, loss_type: str = "sigmoid",
                 max_reply_len: int | None = None):
        super().__init__()
        if task.schema != "preference":
            raise ConfigError(f"task {task.name} is {task.schema}: DPO needs a preference task (prompt, chosen, rejected)")
        if beta <= 0:
            raise ConfigError(f"beta={beta}: must be > 0")
        self.tok, self.task, self.max_len, self.beta, self.loss_type = tokenizer, task, max_len, beta, loss_type
        self.max_reply_len = max_reply_len
        self.truncated = 0

    def logps(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy, reference) summed reply log-probs, [2B] each."""
        policy = pair_logps(model, batch)
        with torch.no_grad(), model.disable_adapters():
            ref = pair_logps(model, batch)
        return policy, ref

    def loss(self, model, batch):
        policy, ref = self.logps(model, batch)
        pc, pr = policy.chunk(2)
        rc, rr = ref.chunk(2)
        n = batch["completion_mask"][:, 1:].sum(1).float()
        n_c, n_r = n.chunk(2)
        loss = dpo_losses(pc, pr, rc, rr, self.beta, self.loss_type, n_c, n_r).mean()
        rw_c, rw_r = self.beta * (pc - rc).detach(), self.beta * (pr - rr).detach()
        return loss, {"reward_accuracy": (rw_c > rw_r).float().mean(), "rewards_chosen": rw_c.mean(),
                      "rewards_rejected": rw_r.mean(), "rewards_margin": (rw_c - rw_r).mean(),
                      "logps_chosen": pc.detach().mean(), "logps_rejected": pr.detach().mean()}
