"""Prompt tuning: Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning".

The frozen model reads a soft prompt P_e in R^{p x e} (p virtual tokens of the embedding width
e) prepended to the embedded input X_e in R^{n x e}:

    [P_e ; X_e] in R^{(p + n) x e}  ->  frozen LM  ->  Pr_theta(Y | [P ; X])

and only P_e is trained (max_{P_e} log Pr(Y | [P ; X])). Initialization (Sec. 3, 7.1):
``random`` (normal with the standard deviation of the model's own embedding matrix, so the soft
tokens start at the scale of real ones; the paper used uniform [-0.5, 0.5] for T5), ``vocab``
(embeddings of tokens sampled from the first 5,000 ids, the paper's "5,000 most common tokens"
for a frequency-ordered BPE vocabulary), ``text`` (the embeddings of ``init_text``, repeated to
fill p; empty ``init_text`` takes the task's instruction).

P_e enters through the seam's ``embeds(batch_size)`` hook: ``TunedModel`` prepends it on the
first call of every sequence and the virtual positions stay in the KV cache, so cached
generation sees the prompt. The adapter file is peft's PROMPT_TUNING: ``prompt_embeddings``
[p, e] and peft's config fields, so ``peft.PeftModel.from_pretrained`` loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from adaptlab.config import check
from adaptlab.errors import ConfigError

MODULE = "prompt_encoder"          # the registered prefix is "prompt_"
FILE_KEY = "prompt_embeddings"
VOCAB_TOP = 5000
PEFT_INIT = {"random": "RANDOM", "vocab": "SAMPLE_VOCAB", "text": "TEXT"}


@dataclass
class Config:
    num_virtual_tokens: int = 20                           # p
    init: Literal["random", "vocab", "text"] = "vocab"
    init_text: str = ""                                    # for init=text ("" = the task's instruction)

    def __post_init__(self):
        check(1 <= self.num_virtual_tokens <= 1024, f"num_virtual_tokens={self.num_virtual_tokens}: must be in [1, 1024]")
        check(self.init == "text" or not self.init_text, "init_text is only used with init=text")


class SoftPrompt(nn.Module):
    """``prompt_embeddings``: P_e [p, e]."""

    def __init__(self, P_e: torch.Tensor):
        super().__init__()
        self.n_virtual = P_e.shape[0]
        self.prompt_embeddings = nn.Parameter(P_e)

    def embeds(self, batch_size: int) -> torch.Tensor:
        return self.prompt_embeddings.unsqueeze(0).expand(batch_size, -1, -1)     # [B, p, e]

    def past_key_values(self, batch_size: int):
        return None


def init_text_ids(tokenizer, text: str, p: int) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"init_text {text!r} has no tokens")
    return (ids * (p // len(ids) + 1))[:p]


def init_ids(tokenizer, vocab_size: int, init: str, init_text: str, p: int, task, device,
             method: str = "prompt-tuning") -> torch.Tensor:
    """The p real token ids an ``init=vocab`` / ``init=text`` prompt starts from, [p]."""
    if init == "vocab":
        return torch.randint(0, min(VOCAB_TOP, vocab_size), (p,), device=device)
    text = init_text or (getattr(task, "instruction", "") or "")
    if not text.strip():
        raise ConfigError(f"{method}: init=text needs init_text (or a task with an instruction)")
    return torch.tensor(init_text_ids(tokenizer, text, p), device=device)


def initial_prompt(embedding: nn.Embedding, tokenizer, cfg: Config, task=None) -> torch.Tensor:
    """P_e at initialization, [p, e] (float32, detached from the base weights)."""
    W = embedding.weight.detach()                                            # [V, e]
    p = cfg.num_virtual_tokens
    if cfg.init == "random":
        return torch.randn(p, W.shape[1], device=W.device) * W.float().std()
    ids = init_ids(tokenizer, W.shape[0], cfg.init, cfg.init_text, p, task, W.device)
    return W[ids].float().clone()                                            # [p, e]


def apply(backbone, config: Config, task=None):
    from adaptlab.tuning import TunedModel

    t = TunedModel.wrap(backbone, "prompt-tuning", config, task)
    P_e = initial_prompt(t.model.get_input_embeddings(), backbone.tokenizer, config, task)
    t.add_prompt(MODULE, SoftPrompt(P_e))
    return t


def to_file_keys(state: dict) -> dict:
    from adaptlab.tuning.io import one_tensor_file_keys

    return one_tensor_file_keys(state, f"{MODULE}.prompt_embeddings", FILE_KEY)


def from_file_keys(state: dict) -> dict:
    from adaptlab.tuning.io import one_tensor_from_file_keys

    return one_tensor_from_file_keys(state, f"{MODULE}.prompt_embeddings", FILE_KEY)


def lm_fields(cfg, tuned) -> dict:
    """peft's PromptLearningConfig fields for a decoder-only / encoder-only model."""
    c = tuned.model.config
    return {"num_virtual_tokens": cfg.num_virtual_tokens, "token_dim": c.hidden_size,
            "num_transformer_submodules": 1, "num_attention_heads": c.num_attention_heads,
            "num_layers": c.num_hidden_layers, "modules_to_save": None}


def to_peft_config(cfg: Config, tuned) -> dict:
    d = {"peft_type": "PROMPT_TUNING", **lm_fields(cfg, tuned), "prompt_tuning_init": PEFT_INIT[cfg.init],
         "prompt_tuning_init_text": None, "tokenizer_name_or_path": None, "tokenizer_kwargs": None}
    if cfg.init == "text":
        # peft requires both for TEXT; with inference_mode it never loads the tokenizer
        d["prompt_tuning_init_text"] = cfg.init_text or (getattr(tuned.task, "instruction", "") or "")
        d["tokenizer_name_or_path"] = tuned.base_identity.get("name") or ""
    return d


def check_peft_fields(d: dict, method: str) -> None:
    if d.get("num_transformer_submodules") not in (None, 1):
        raise ConfigError(f"{method}: num_transformer_submodules={d.get('num_transformer_submodules')} "
                          "(encoder-decoder models) is not supported")
    if not isinstance(d.get("num_virtual_tokens"), int):
        raise ConfigError(f"{method}: adapter_config.json needs an integer num_virtual_tokens")


def from_peft_config(d: dict) -> dict:
    check_peft_fields(d, "prompt-tuning")
    # the init is irrelevant once trained weights are loaded; keep it as a record
    init = {v: k for k, v in PEFT_INIT.items()}.get(str(d.get("prompt_tuning_init", "RANDOM")), "random")
    return {"num_virtual_tokens": d["num_virtual_tokens"], "init": "random" if init == "text" else init}
