"""An LM-interface view of a tuned model with a classification head (an encoder tuned with any
method, or a decoder tuned with ``head``). ``score(contexts, options)`` returns, for each
context, the head's log-softmax over the task's labels, read in the order of the options
given (each option must be one of the task's options, e.g. " negative"); ``generate`` is not
possible and raises ``ModelError``. Contexts are tokenized as in training, through the one text
path (``text.encode_input``: an encoder's special tokens kept, the body cut from the task's
``truncate`` side; a decoder's ids with BOS)."""

from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn.functional as F

from adaptlab import text as text_path
from adaptlab.engine import Cost, OptionScore
from adaptlab.errors import ModelError


class HeadLM:
    def __init__(self, backbone, model, batch_size: int = 32, max_length: int | None = None,
                 truncate: str = "left", progress=None):
        self.truncate = truncate
        if getattr(model, "head", None) is None or model.task is None:
            raise ModelError("HeadLM needs a tuned model with a classification head and its task")
        self.backbone = backbone
        self.model = model
        self.task = model.task
        self.tok = backbone.tokenizer
        self.batch_size = batch_size
        cfg_max = getattr(model.config, "max_position_embeddings", None) or 512
        self.max_length = max_length or min(cfg_max, 512)
        self.cost = Cost()
        self.progress = progress
        self.device = next(model.parameters()).device
        self.keys = {}                   # option text (stripped) -> label index
        for i, lab in enumerate(self.task.labels):
            self.keys[self.task.word(lab).strip()] = i
            self.keys.setdefault(lab.strip(), i)

    def chat(self, text: str) -> str:
        return text_path.chat(self.tok, text)

    def _encode(self, text: str) -> list[int]:
        ids = text_path.encode_input(self.tok, text, self.max_length, self.truncate, self.model.kind)
        if len(ids) >= self.max_length and len(self.tok(text)["input_ids"]) > self.max_length:
            self.cost.truncated += 1
        return ids

    @torch.no_grad()
    def label_logprobs(self, contexts: Sequence[str]) -> torch.Tensor:
        """[N, C] log-softmax of the head over the task's labels."""
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        out = []
        for s in range(0, len(contexts), self.batch_size):
            rows = [self._encode(c) for c in contexts[s: s + self.batch_size]]
            L = max(len(r) for r in rows)
            ids = torch.full((len(rows), L), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), L), dtype=torch.long)
            for i, r in enumerate(rows):                           # right padding, as in training
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = 1
            logits = self.model.classify(ids.to(self.device), mask.to(self.device))   # [B, C]
            out.append(F.log_softmax(logits.float(), -1).cpu())
            self.cost.forwards += 1
            self.cost.prompt_tokens += int(mask.sum())
            if self.progress:
                self.progress(len(rows), len(contexts))
        return torch.cat(out) if out else torch.zeros((0, len(self.task.labels)))

    def score(self, contexts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[OptionScore]]:
        t0 = time.perf_counter()
        if len(contexts) != len(options):
            raise ValueError("score: one list of options per context")
        idx = []
        for opts in options:
            row = []
            for o in opts:
                k = self.keys.get(o.strip())
                if k is None:
                    raise ModelError(f"option {o!r} is not a label of task {self.task.name} "
                                     f"({', '.join(self.task.labels)}); a classification head scores only those")
                row.append(k)
            idx.append(row)
        self.cost.calls += len(contexts)
        lp = self.label_logprobs(list(contexts))
        res = [[OptionScore(logprob=float(lp[i, k]), token_logprobs=[float(lp[i, k])]) for k in row]
               for i, row in enumerate(idx)]
        self.cost.seconds += time.perf_counter() - t0
        return res

    def generate(self, prompts, n=1, max_new_tokens=64, temperature=0.0, stop=None, top_p=1.0, seed=None):
        raise ModelError(f"this tuned model ({self.model.method} on {self.backbone.name}) has a classification "
                         "head: it scores the task's labels and cannot generate text")
