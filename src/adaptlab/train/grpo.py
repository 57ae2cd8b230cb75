"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, "DeepSeekMath: Pushing the Limits of
Mathematical Reasoning in Open Language Models", Sec. 4.1), with a verifiable reward.

For each prompt q of a batch, G replies o_1..o_G are sampled from the current policy (the engine's
batched sampler, ``LM.generate(n=G)``, one shared prompt prefix). Each gets a reward: on a numeric
qa task, r_i = 1 when the answer extracted from it (the task's extraction, as ``adaptlab eval``
parses) equals the gold number, else 0 (a verifiable reward); with ``reward_model=DIR`` (a reward
adapter, ``objective=reward``; InstructGPT's RL stage), r_i = r_phi(q, o_i), the reward model's
scalar score, on a preference task's prompts. Advantages are group-relative: A_i = (r_i - mean(r)) / (std(r) + 1e-4). With
rho_t = pi(o_t | q, o_<t) / pi_old(o_t | ...) and the reference pi_ref = the same model with its
adapters off (``TunedModel.disable_adapters()``):

    L = -1/G sum_i 1/|o_i| sum_t [ min(rho_t A_i, clip(rho_t, 1-eps, 1+eps) A_i) - kl_beta * KL_t ]
    KL_t = pi_ref/pi - log(pi_ref/pi) - 1            (the unbiased k3 estimator the paper uses)

One gradient step is taken per sampled batch (pi_old = pi detached, so rho = 1 in value and the
clip is inactive; its gradient is A * grad log pi), the setting of trl's ``GRPOTrainer`` with
``num_iterations=1``. Logged per step: mean reward, KL, reward std within groups, and the reply length.
The prompt is the one ``adaptlab eval --prompt zero-shot`` sends (a preference task: its rendered
prompt, as DPO and the reward model see it), so accuracy before/after is measured on exactly what
was trained; against a reward model, ``mean_reward`` gives the held-out figure: the mean score of
the policy's greedy replies to held-out prompts.
"""

from __future__ import annotations

import torch

from adaptlab import text as text_path
from adaptlab.errors import ConfigError
from adaptlab.train.objectives import Objective
from adaptlab.train.preference import pad_id, reply_ids


class GRPO(Objective):
    name = "grpo"

    def __init__(self, backbone, tuned, task, max_len: int, cfg, judge=None):
        super().__init__()
        check_task(task, cfg.reward_model)
        from adaptlab.prompting import make_strategy

        self.backbone, self.task, self.max_len, self.cfg = backbone, task, max_len, cfg
        self._tuned = [tuned]                    # not a submodule: the loop owns the model
        if judge is None and cfg.reward_model:
            judge = load_judge(cfg.reward_model, backbone)
        self._judge = [judge]                    # a list: the judge's model is no submodule of the objective
        self.strategy = make_strategy("zero-shot")
        self.examples: list[dict] = []
        self.draws = 0

    @property
    def judge(self):
        """The reward model (``train.reward.RewardModel``), or None for the exact-match reward."""
        return self._judge[0]

    def render(self, ex: dict, lm=None) -> str:
        if self.task.schema == "preference":
            return text_path.prompt(self.task, self.backbone.tokenizer, ex)
        return self.strategy.render(self.task, ex, lm)

    def featurize(self, examples: list[dict]) -> list[dict]:
        self.examples = list(examples)
        tok = self.backbone.tokenizer
        return [{"ids": text_path.encode(tok, self.render(ex)), "idx": i} for i, ex in enumerate(examples)]

    def collate(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        return {"idx": torch.tensor([f["idx"] for f in feats])}

    def reward(self, reply: str, example: dict) -> float:
        from adaptlab.metrics import is_correct
        from adaptlab.prompting.common import parse

        return float(is_correct(self.task, parse(self.task, example, reply), self.task.gold(example)))

    def sample(self, model, exs: list[dict]) -> tuple[list[str], list[list[str]]]:
        from adaptlab.engine import make_lm

        lm = make_lm(self.backbone, model=model, batch_size=len(exs) * self.cfg.group_size)
        prompts = [self.render(ex, lm) for ex in exs]
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

    def rewards(self, prompts: list[str], outs: list[list[str]], exs: list[dict]) -> torch.Tensor:
        """[B, G]: the reward model's scores, or the exact-match rewards."""
        if self.judge is None:
            return torch.tensor([[self.reward(o, ex) for o in group] for group, ex in zip(outs, exs)])
        flat = self.judge.score([(p, o) for p, group in zip(prompts, outs) for o in group])
        return torch.tensor(flat).view(len(outs), -1)

    def loss(self, model, batch):
        exs = [self.examples[i] for i in batch["idx"].tolist()]
        G, tok = self.cfg.group_size, self.backbone.tokenizer
        prompts, outs = self.sample(model, exs)
        rewards = self.rewards(prompts, outs, exs)                             # [B, G]
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


def check_task(task, reward_model: str | None) -> None:
    """GRPO's reward needs a numeric qa task (exact match) or a reward model on prompts to answer."""
    if reward_model:
        if task.schema not in ("preference", "qa"):
            raise ConfigError(f"task {task.name} is {task.schema}: GRPO with a reward model needs prompts to answer "
                              "(a preference or qa task)")
    elif task.schema == "preference":
        raise ConfigError(f"task {task.name} is a preference task: GRPO on it needs --set reward_model=DIR "
                          "(a reward adapter trained with --set objective=reward)")
    elif task.schema != "qa" or task.answer_type != "number":
        raise ConfigError(f"task {task.name}: GRPO's exact-match reward needs a numeric qa task "
                          "(or --set reward_model=DIR)")


def load_judge(folder: str, backbone):
    """The reward adapter at ``folder`` on ``backbone``'s weights (shared, not copied)."""
    from adaptlab.train.reward import RewardModel

    return RewardModel(folder, backbone=backbone)


@torch.no_grad()
def mean_reward(lm, prompts: list[str], judge, max_new_tokens: int, stop) -> dict:
    """The held-out figure against a reward model: the judge's mean score of ``lm``'s greedy
    replies to ``prompts`` (and the replies, for the record)."""
    replies = [g[0] for g in lm.generate(prompts, n=1, max_new_tokens=max_new_tokens, temperature=0.0, stop=stop)]
    scores = judge.score(list(zip(prompts, replies)))
    return {"reward": sum(scores) / max(1, len(scores)), "scores": scores, "replies": replies}


def token_logps(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi(x_{t+1} | x_<=t) at every position: [R, L-1] (float32)."""
    h = model.body(input_ids=ids, attention_mask=mask)
    logits = model.lm_head(h[:, :-1]).float()
    return torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None]).squeeze(2)
