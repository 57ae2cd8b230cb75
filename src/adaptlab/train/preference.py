"""Preference pairs: the settings and the one featurization every pairwise objective shares.

A ``preference`` task's example is (x = prompt, y_w = chosen, y_l = rejected). Both replies are
rendered as the task's ``target`` after the task's prompt (the same text path as ``adaptlab eval``:
``text.prompt``, ``text.encode_pair``) and end with EOS. One feature holds the prompt's ids and the
two replies' ids; ``collate`` lays a micro-batch of B pairs out as 2B rows, the B chosen rows first
and then the B rejected rows, so both replies of a pair go through ONE batched forward (as trl's
``DPOTrainer`` concatenates them).

Lengths: a reply is cut to ``max_reply_len`` tokens (default: half of ``max_seq_len``) and the
prompt is cut from the left so prompt + the longer reply fit ``max_seq_len``; every pair where
anything was cut is counted (``truncated_pairs`` in the run summary and a note on stderr), never
dropped or cut silently.

``PreferenceConfig`` drives ``adaptlab tune --set objective=dpo|reward|grpo --set beta=...``
(the ``tune`` command's ``--set`` takes these keys next to the method's and the loop's).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from adaptlab import text as text_path
from adaptlab.config import check
from adaptlab.train.objectives import Objective

OBJECTIVES = ("task", "dpo", "reward", "grpo")
DPO_LOSSES = ("sigmoid", "ipo")


@dataclass
class PreferenceConfig:
    objective: str = "task"          # task: the task's own objective; dpo | reward | grpo
    beta: float = 0.1                # DPO's / IPO's beta; GRPO's KL coefficient is kl_beta
    loss_type: str = "sigmoid"       # DPO: sigmoid (Rafailov et al. 2023) | ipo (Azar et al. 2023)
    max_reply_len: int | None = None  # tokens a reply keeps (default max_seq_len // 2)
    group_size: int = 4              # GRPO: replies sampled per prompt
    kl_beta: float = 0.04            # GRPO: KL-to-reference coefficient
    clip_eps: float = 0.2            # GRPO: PPO-style ratio clip
    temperature: float = 1.0         # GRPO: sampling temperature
    max_new_tokens: int = 64         # GRPO: tokens a sampled reply may have
    reward_model: str | None = None  # GRPO: a reward adapter (objective=reward) whose score is the reward

    def __post_init__(self):
        check(self.objective in OBJECTIVES, f"objective={self.objective!r}: must be one of {', '.join(OBJECTIVES)}")
        check(self.beta > 0, f"beta={self.beta}: must be > 0")
        check(self.loss_type in DPO_LOSSES, f"loss_type={self.loss_type!r}: must be one of {', '.join(DPO_LOSSES)}")
        check(self.max_reply_len is None or self.max_reply_len >= 1, "max_reply_len: must be at least 1")
        check(self.group_size >= 2, f"group_size={self.group_size}: a group needs at least 2 replies")
        check(self.kl_beta >= 0, f"kl_beta={self.kl_beta}: must be >= 0")
        check(0 < self.clip_eps < 1, f"clip_eps={self.clip_eps}: must be in (0, 1)")
        check(self.temperature > 0, f"temperature={self.temperature}: must be > 0")
        check(self.max_new_tokens >= 1, "max_new_tokens: must be at least 1")
        check(self.reward_model is None or self.objective == "grpo",
              f"reward_model: only GRPO takes a reward model (objective={self.objective!r})")


def reply_ids(tok, context: str, reply: str) -> tuple[list[int], list[int]]:
    """(context ids, reply ids + EOS) through the one text path."""
    ctx, cont = text_path.encode_pair(tok, context, reply)
    if tok.eos_token_id is not None:
        cont = cont + [tok.eos_token_id]
    return ctx, cont


def featurize_pairs(tok, task, examples: list[dict], max_len: int, max_reply: int | None) -> tuple[list[dict], int]:
    """Pairs -> features {prompt, chosen, rejected} and the number of pairs that were cut."""
    max_reply = max_reply or max(1, max_len // 2)
    feats, cut = [], 0
    for ex in examples:
        ctx = text_path.prompt(task, tok, ex)
        p, c = reply_ids(tok, ctx, task.target.format(answer=ex["chosen"]))
        p2, r = reply_ids(tok, ctx, task.target.format(answer=ex["rejected"]))
        if p2 != p:           # the two replies tokenised the prompt's end differently: use the shorter prefix
            n = next((i for i, (a, b) in enumerate(zip(p, p2)) if a != b), min(len(p), len(p2)))
            c, r, p = p[n:] + c, p2[n:] + r, p[:n]
        was = (len(p), len(c), len(r))
        c, r = c[:max_reply], r[:max_reply]
        p = text_path.fit_context(p, max(len(c), len(r)), max_len, task.truncate)
        cut += (len(p), len(c), len(r)) != was
        feats.append({"prompt": p, "chosen": c, "rejected": r, "ids": p + (c if len(c) >= len(r) else r)})
    if cut:
        print(f"note: {cut} of {len(feats)} preference pairs were cut to fit max_seq_len={max_len} "
              f"(replies to {max_reply} tokens, prompts from the {task.truncate})", file=sys.stderr)
    return feats, cut


def collate_pairs(feats: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """2B right-padded rows (chosen rows, then rejected rows) and the reply-token mask [2B, L]."""
    rows = [(f["prompt"], f["chosen"]) for f in feats] + [(f["prompt"], f["rejected"]) for f in feats]
    L = max(len(p) + len(y) for p, y in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    reply = torch.zeros((len(rows), L), dtype=torch.long)
    for i, (p, y) in enumerate(rows):
        n = len(p) + len(y)
        ids[i, :n] = torch.tensor(p + y)
        mask[i, :n] = 1
        reply[i, len(p): n] = 1
    # the same pairs split at the prompt, for shared_prompt_logps: B left-padded prompts, and the 2B
    # replies right-padded (chosen rows, then rejected rows)
    P = max(len(f["prompt"]) for f in feats)
    R = max(len(y) for _, y in rows)
    p_ids = torch.full((len(feats), P), pad_id, dtype=torch.long)
    p_mask = torch.zeros((len(feats), P), dtype=torch.long)
    for i, f in enumerate(feats):
        if f["prompt"]:
            p_ids[i, P - len(f["prompt"]):] = torch.tensor(f["prompt"])
            p_mask[i, P - len(f["prompt"]):] = 1
    r_ids = torch.full((len(rows), R), pad_id, dtype=torch.long)
    r_mask = torch.zeros((len(rows), R), dtype=torch.long)
    for i, (_, y) in enumerate(rows):
        r_ids[i, : len(y)] = torch.tensor(y)
        r_mask[i, : len(y)] = 1
    return {"input_ids": ids, "attention_mask": mask, "completion_mask": reply,
            "prompt_ids": p_ids, "prompt_mask": p_mask, "reply_ids": r_ids, "reply_mask": r_mask}


def sequence_logps(model, ids: torch.Tensor, mask: torch.Tensor, reply: torch.Tensor) -> torch.Tensor:
    """sum_t log pi(y_t | x, y_<t) over each row's reply tokens: [R]. The LM head runs only at the
    reply positions ([N, V], not [R, L, V])."""
    h = model.body(input_ids=ids, attention_mask=mask)                 # [R, L, H]
    return _summed_logps(model, h[:, :-1], ids[:, 1:], reply[:, 1:].bool())   # position t predicts t+1


def _summed_logps(model, h: torch.Tensor, targets: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """sum over each row's ``sel`` positions of log softmax(lm_head(h))[target]: [R]. ``h`` [R, T, H]
    holds the state that predicts ``targets`` [R, T]; the LM head runs at those positions only."""
    logits = model.lm_head(h[sel]).float()                             # [N, V]
    tok_logp = torch.log_softmax(logits, -1).gather(1, targets[sel][:, None]).squeeze(1)   # [N]
    row = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(sel)[sel]  # [N]
    return torch.zeros(targets.shape[0], device=targets.device, dtype=tok_logp.dtype).index_add(0, row, tok_logp)


def pair_logps(model, batch: dict) -> torch.Tensor:
    """``sequence_logps`` of a ``collate_pairs`` batch [2B], each pair's prompt run once:

        KV(x) from one forward over the B prompts,  then  log pi(y | x) for the 2B replies on KV(x)

    (the chosen and the rejected reply of a pair read the same prompt keys/values, so the prompt's
    forward -- and, with gradients, its backward -- is shared: B * |x| + 2B * |y| token positions
    instead of 2B * (|x| + |y|)). Prompt-type methods (virtual tokens or prefix key/values) and rows
    without a prompt take the one-forward path."""
    if getattr(model, "n_virtual", 0) or "prompt_ids" not in batch or not bool(batch["prompt_mask"][:, -1].all()):
        return sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    from transformers import DynamicCache

    p_ids, p_mask = batch["prompt_ids"], batch["prompt_mask"]               # [B, P], left-padded
    r_ids, r_mask = batch["reply_ids"], batch["reply_mask"]                 # [2B, R], right-padded
    B, P = p_ids.shape
    cache = DynamicCache(config=model.model.config)
    h_p = model.body(input_ids=p_ids, attention_mask=p_mask, past_key_values=cache,
                     position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0))     # [B, P, H]
    # pair b's chosen row is b and its rejected row B + b: interleave to [c0, r0, c1, r1, ...]
    inter = torch.stack([torch.arange(B), torch.arange(B) + B], 1).reshape(-1).to(r_ids.device)   # [2B]
    cache.batch_repeat_interleave(2)                                        # [2B, ., P, .]
    ids, rm = r_ids[inter], r_mask[inter]                                   # [2B, R]
    lengths = p_mask.sum(1).repeat_interleave(2)                            # [2B]
    h_r = model.body(input_ids=ids, attention_mask=torch.cat([p_mask.repeat_interleave(2, 0), rm], 1),
                     position_ids=lengths[:, None] + torch.arange(ids.shape[1], device=ids.device),
                     past_key_values=cache)                                 # [2B, R, H]
    # reply token j is predicted at position j-1; token 0 at the prompt's last position
    h = torch.cat([h_p[:, -1:].repeat_interleave(2, 0), h_r[:, :-1]], 1)    # [2B, R, H]
    out = _summed_logps(model, h, ids, rm.bool())                           # [2B], interleaved
    back = torch.empty_like(inter)
    back[inter] = torch.arange(inter.numel(), device=inter.device)
    return out[back]                                                        # chosen rows, then rejected


def last_token_hidden(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The body's hidden state at each right-padded row's last real token: [R, H]."""
    h = model.body(input_ids=ids, attention_mask=mask)                 # [R, L, H]
    last = mask.sum(1) - 1
    return h[torch.arange(ids.shape[0], device=ids.device), last]


def pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else 0


def pairwise_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"accuracy": (chosen > rejected).float().mean(), "margin": (chosen - rejected).mean(),
            "chosen": chosen.mean(), "rejected": rejected.mean()}


class PairObjective(Objective):
    """What DPO and the reward model share: a pair's featurization (prompt, chosen, rejected ids,
    ``self.truncated`` counting the pairs cut), its length for bucketing, and its collation."""

    def featurize(self, examples: list[dict]) -> list[dict]:
        feats, self.truncated = featurize_pairs(self.tok, self.task, examples, self.max_len, self.max_reply_len)
        return feats

    @staticmethod
    def length(feat: dict) -> int:
        return len(feat["prompt"]) + max(len(feat["chosen"]), len(feat["rejected"]))

    def collate(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        return collate_pairs(feats, pad_id(self.tok))

    def device(self, model) -> torch.device:
        return next(p.device for p in model.parameters())

    @torch.no_grad()
    def evaluate(self, model, examples: list[dict], batch_size: int = 8,
                 feats: list[dict] | None = None) -> dict[str, float]:
        """Held-out pairs: the mean of every per-step metric over all pairs (``feats``: the
        examples already featurized)."""
        feats = self.featurize(examples) if feats is None else feats
        was = model.training
        model.eval()
        dev = self.device(model)
        sums: dict[str, float] = {}
        try:
            for s in range(0, len(feats), batch_size):
                part = feats[s: s + batch_size]
                loss, m = self.loss(model, {k: v.to(dev) for k, v in self.collate(part).items()})
                for k, v in {"loss": loss, **m}.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(part)
        finally:
            model.train(was)
        return {k: v / len(feats) for k, v in sums.items()}
