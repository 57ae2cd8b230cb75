"""Reward model (Ouyang et al. 2022, "Training language models to follow instructions with human
feedback", Sec. 3.5; Stiennon et al. 2020): a scalar head r(x, y) = w^T h_last(x, y) on the body's
hidden state at the last token of prompt + reply, trained with the Bradley-Terry loss

    L = -log sigma( r(x, y_w) - r(x, y_l) )

(Bradley & Terry 1952). The body is tuned by any method (lora by default); the head w [H] is owned
by this objective, so it trains and is checkpointed with the adapter, and is written next to it as
``reward_head.safetensors``. Both replies of a pair go through one batched forward
(``preference.collate_pairs``). Metrics: pairwise accuracy (r_w > r_l) and the mean margin.

``RewardModel`` scores (prompt, reply) pairs with a saved reward adapter (the Python API, and the
judge of DPO's before/after generations).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from adaptlab.errors import ConfigError
from adaptlab.train.preference import (PairObjective, last_token_hidden, pad_id, pairwise_metrics, reply_ids)

HEAD_FILE = "reward_head.safetensors"


class RewardBT(PairObjective):
    name = "reward"

    def __init__(self, tokenizer, task, max_len: int, hidden: int, max_reply_len: int | None = None):
        super().__init__()
        if task.schema != "preference":
            raise ConfigError(f"task {task.name} is {task.schema}: a reward model needs a preference task")
        self.tok, self.task, self.max_len, self.max_reply_len = tokenizer, task, max_len, max_reply_len
        self.head = nn.Linear(hidden, 1, bias=False)
        nn.init.normal_(self.head.weight, std=1 / (hidden + 1) ** 0.5)
        self.truncated = 0

    def rewards(self, model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = last_token_hidden(model, ids, mask)                            # [R, H]
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1).float()  # [R]

    def loss(self, model, batch):
        r = self.rewards(model, batch["input_ids"], batch["attention_mask"])
        rc, rr = r.chunk(2)
        loss = -nn.functional.logsigmoid(rc - rr).mean()
        return loss, {k: v.detach() for k, v in pairwise_metrics(rc, rr).items()}

    def device(self, model) -> torch.device:
        return self.head.weight.device

    def save_head(self, folder) -> None:
        from safetensors.torch import save_file

        save_file({"weight": self.head.weight.detach().cpu().contiguous()}, str(Path(folder) / HEAD_FILE))


def is_reward_adapter(folder) -> bool:
    return (Path(folder) / HEAD_FILE).exists()


def check_reward_adapter(folder) -> None:
    if not is_reward_adapter(folder):
        raise ConfigError(f"{folder}: not a reward model (no {HEAD_FILE}); train one with --set objective=reward")


def trained_max_len(folder, default: int = 512) -> int:
    """The max_seq_len the reward adapter at ``folder`` was trained with (its tune_config.json)."""
    import json

    cfg = Path(folder) / "tune_config.json"
    try:
        return int(json.loads(cfg.read_text())["train_config"]["max_seq_len"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


class RewardModel:
    """A saved reward adapter: ``score([(prompt, reply), ...]) -> [float]`` (prompt as the task renders it)."""

    def __init__(self, folder, backbone=None, max_len: int | None = None):
        from safetensors.torch import load_file

        from adaptlab.tuning.io import load_adapter

        check_reward_adapter(folder)
        self.backbone, self.tuned = load_adapter(folder, backbone=backbone)
        self.max_len = max_len or trained_max_len(folder)
        self.tuned.eval()
        w = load_file(str(Path(folder) / HEAD_FILE))["weight"]
        self.head = nn.Linear(w.shape[1], 1, bias=False)
        self.head.weight.data.copy_(w)

    @torch.no_grad()
    def score(self, pairs: list[tuple[str, str]], batch_size: int = 8) -> list[float]:
        tok = self.backbone.tokenizer
        out: list[float] = []
        for s in range(0, len(pairs), batch_size):
            rows = []
            for p, y in pairs[s: s + batch_size]:
                ctx, cont = reply_ids(tok, p, y)
                cont = cont[: self.max_len // 2]
                rows.append((ctx[-(self.max_len - len(cont)):], cont))
            L = max(len(a) + len(b) for a, b in rows)
            ids = torch.full((len(rows), L), pad_id(tok), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, (a, b) in enumerate(rows):
                ids[i, : len(a) + len(b)] = torch.tensor(a + b)
                mask[i, : len(a) + len(b)] = 1
            h = last_token_hidden(self.tuned, ids, mask)
            out += self.head(h.float()).squeeze(-1).tolist()
        return out


def eval_preference(task, adapter: str | None, *, data: str | None = None, split: str = "test",
                    limit: int | None = None, batch_size: int = 8, max_len: int = 512) -> dict:
    """``adaptlab eval`` on a preference task: a reward adapter's pairwise accuracy and margin, or a
    policy adapter's (DPO) implicit reward accuracy, on the split's pairs."""
    from adaptlab.data import load_split
    from adaptlab.tuning.io import load_adapter

    if adapter is None:
        raise ConfigError(f"task {task.name} is a preference task: eval needs --adapter (a reward model or a DPO policy)")
    exs = load_split(task, split, data, limit=limit)
    backbone, tuned = load_adapter(adapter)
    obj, what = pair_scorer(task, backbone, tuned, adapter, max_len)
    m = obj.evaluate(tuned, exs, batch_size)
    return {"task": task.name, "adapter": str(adapter), "scored_as": what, "split": split, "n": len(exs),
            "truncated_pairs": obj.truncated, **{k: round(v, 6) for k, v in m.items()}}


def pair_scorer(task, backbone, tuned, adapter, max_len: int = 512):
    """(objective whose ``evaluate(tuned, pairs)`` scores held-out pairs, what it scores as): a
    reward adapter's Bradley-Terry head, or a policy's implicit reward (DPO, with its own beta)."""
    import json

    if is_reward_adapter(adapter):
        from safetensors.torch import load_file

        obj = RewardBT(backbone.tokenizer, task, max_len, tuned.model.config.hidden_size)
        obj.head.weight.data.copy_(load_file(str(Path(adapter) / HEAD_FILE))["weight"])
        return obj, "reward model"
    from adaptlab.train.dpo import DPO

    cfg = Path(adapter) / "tune_config.json"
    beta = json.loads(cfg.read_text()).get("feedback_config", {}).get("beta", 0.1) if cfg.exists() else 0.1
    return DPO(backbone.tokenizer, task, max_len, beta), "policy (implicit reward)"
