"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, "DeepSeekMath: Pushing the Limits of
Mathematical Reasoning in Open Language Models", Sec. 4.1), with a verifiable reward.

For each prompt q of a batch, G replies o_1..o_G are sampled from the current policy (the engine's
batched sampler, ``LM.generate(n=G)``, one shared prompt prefix). Each gets a reward r_i = 1 when
the answer extracted from it (the task's extraction, as ``adaptlab eval`` parses) equals the gold
number, else 0. Advantages are group-relative: A_i = (r_i - mean(r)) / (std(r) + 1e-4). With
rho_t = pi(o_t | q, o_<t) / pi_old(o_t | ...) and the reference pi_ref = the same model with its
adapters off (``TunedModel.disable_adapters()``):

    L = -1/G sum_i 1/|o_i| sum_t [ min(rho_t A_i, clip(rho_t, 1-eps, 1+eps) A_i) - kl_beta * KL_t ]
    KL_t = pi_ref/pi - log(pi_ref/pi) - 1            (the unbiased k3 estimator the paper uses)

One gradient step is taken per sampled batch (pi_old = pi detached, so rho = 1 in value and the
clip is inactive; its gradient is A * grad log pi), the setting of trl's ``GRPOTrainer`` with
``num_iterations=1``. Logged per step: mean reward, KL, reward std within groups, and the reply length.
The prompt is the one ``adaptlab eval --prompt zero-shot`` sends, so accuracy before/after is measured
on exactly what was trained.
"""

from __future__ import annotations

import torch

from adaptlab import text as text_path
from adaptlab.errors import ConfigError
from adaptlab.train.objectives import Objective
from adaptlab.train.preference import pad_id, reply_ids


class GRPO(Objective):
    name = "grpo"

    def __init__(self, backbone, tuned, task, max_len: int, cfg):
        super().__init__()
        if task.schema != "qa" or task.answer_type != "number":
            raise ConfigError(f"task {task.name}: GRPO's exact-match reward needs a numeric qa task")
        from adaptlab.prompting import make_strategy

        self.backbone, self.task, self.max_len, self.cfg = backbone, task, max_len, cfg
        self._tuned = [tuned]                    # not a submodule: the loop owns the model
        self.strategy = make_strategy("zero-shot")
        self.examples: list[dict] = []
        self.draws = 0

    def featurize(self, examples: list[dict]) -> list[dict]:
        self.examples = list(examples)
        tok = self.backbone.tokenizer
        return [{"ids": text_path.encode(tok, self.strategy.render(self.task, ex)), "idx": i}
                for i, ex in enumerate(examples)]

    def collate(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        return {"idx": torch.tensor([f["idx"] for f in feats])}

    def reward(self, reply: str, example: dict) -> float:
        from adaptlab.metrics import is_correct
        from adaptlab.prompting.common import parse

        return float(is_correct(self.task, parse(self.task, example, reply), self.task.gold(example)))

    def sample(self, model, exs: list[dict]) -> tuple[list[str], list[list[str]]]:
        from adaptlab.engine import make_lm

        lm = make_lm(self.backbone, model=model, batch_size=len(exs) * self.cfg.group_size)
        prompts = [self.strategy.render(self.task, ex, lm) for ex in exs]
        self.draws += 1
        was = model.training
        model.eval()
        try:
            outs = lm.generate(prompts, n=self.cfg.group_size, max_new_tokens=self.cfg.max_new_tokens,
                               temperature=self.cfg.temperature, stop=self.task.stop,
                               seed=int(torch.randint(0, 2**31 - 1, (1,)).item()))
        finally:
            model.train(was)
        return prompts, outs

    def loss(self, model, batch):
        exs = [self.examples[i] for i in batch["idx"].tolist()]
        G, tok = self.cfg.group_size, self.backbone.tokenizer
        prompts, outs = self.sample(model, exs)
        rewards = torch.tensor([[self.reward(o, ex) for o in group] for group, ex in zip(outs, exs)])   # [B, G]
        adv = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)       # [B, G]
        rows = []
        for p, group in zip(prompts, outs):
            for o in group:
                ctx, cont = reply_ids(tok, p, o)
                cont = cont[: self.cfg.max_new_tokens + 1]
                rows.append((text_path.fit_context(ctx, len(cont), self.max_len, self.task.truncate), cont))
        dev = next(model.parameters()).device
        L = max(len(a) + len(b) for a, b in rows)
        ids = torch.full((len(rows), L), pad_id(tok), dtype=torch.long)
        mask, comp = torch.zeros_like(ids), torch.zeros_like(ids)
        for i, (a, b) in enumerate(rows):
            ids[i, : len(a) + len(b)] = torch.tensor(a + b)
            mask[i, : len(a) + len(b)] = 1
            comp[i, len(a): len(a) + len(b)] = 1
        ids, mask, comp = ids.to(dev), mask.to(dev), comp.to(dev)
        logp = token_logps(model, ids, mask)                                  # [R, L-1]
        with torch.no_grad(), model.disable_adapters():
            ref = token_logps(model, ids, mask)
        m = comp[:, 1:].float()
        ratio = torch.exp(logp - logp.detach())
        a = adv.reshape(-1, 1).to(dev)
        eps = self.cfg.clip_eps
        pg = torch.minimum(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a)
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_tok = -(pg - self.cfg.kl_beta * kl)
        loss = ((per_tok * m).sum(1) / m.sum(1).clamp(min=1)).mean()
        return loss, {"reward": rewards.mean(), "kl": ((kl.detach() * m).sum() / m.sum().clamp(min=1)),
                      "reward_std": rewards.std(1).mean(), "reply_tokens": m.sum(1).mean()}


def token_logps(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi(x_{t+1} | x_<=t) at every position: [R, L-1] (float32)."""
    h = model.body(input_ids=ids, attention_mask=mask)
    logits = model.lm_head(h[:, :-1]).float()
    return torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None]).squeeze(2)
