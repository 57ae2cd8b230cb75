"""Encoder "LM": scores each option by the cosine similarity of sentence embeddings.

Sentence-BERT style (Reimers & Gurevych 2019): the context and each option are mean-pooled over
their tokens and L2-normalised, e = mean_t h_t / ||mean_t h_t||, and the options' scores are
log softmax_j (e_ctx . e_j / tau). It is how an encoder such as all-MiniLM-L6-v2 answers a
classification task zero-shot; it cannot generate.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn.functional as F

from adaptlab import text as text_path
from adaptlab.engine import Cost, OptionScore
from adaptlab.errors import ModelError


class EmbeddingLM:
    """Encoder 'LM': scores each option by cosine similarity between the mean-pooled,
    L2-normalised embeddings of the context and of the option (sentence-transformers style),
    as a log-softmax over the options with temperature ``tau``. It cannot generate."""

    def __init__(self, backbone, model=None, batch_size: int = 32, max_length: int | None = None,
                 tau: float = 0.05, truncate: str = "left", progress=None):
        self.backbone = backbone
        self.model = model if model is not None else backbone.model
        self.tok = backbone.tokenizer
        self.batch_size = batch_size
        self.max_length = max_length or min(getattr(self.model.config, "max_position_embeddings", 512), 512)
        self.tau = tau
        self.truncate = truncate
        self.cost = Cost()
        self.progress = progress
        self.device = next(self.model.parameters()).device

    @torch.no_grad()
    def embed(self, texts: Sequence[str], report: bool = False) -> torch.Tensor:
        """Normalised mean-pooled embeddings; ``report``: tell ``progress`` after each batch."""
        outs = []
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        for s in range(0, len(texts), self.batch_size):
            rows = [text_path.encode_input(self.tok, t, self.max_length, self.truncate, "encoder")
                    for t in texts[s: s + self.batch_size]]
            L = max(len(r) for r in rows)
            ids = torch.full((len(rows), L), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), L), dtype=torch.long)
            for i, r in enumerate(rows):                                # right padding
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = 1
            h = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            m = mask.to(self.device).unsqueeze(-1).float()               # [B, L, 1]; h: [B, L, H]
            e = (h * m).sum(1) / m.sum(1).clamp(min=1)                  # [B, H]
            outs.append(F.normalize(e, dim=-1))
            self.cost.forwards += 1
            self.cost.prompt_tokens += int(mask.sum())
            if report and self.progress:
                self.progress(len(rows), len(texts))
        return torch.cat(outs)

    def chat(self, text: str) -> str:
        return text

    def score(self, contexts, options):
        t0 = time.perf_counter()
        self.cost.calls += len(contexts)
        ctx = self.embed(contexts, report=True)
        uniq = sorted({o.strip() for opts in options for o in opts})
        opt = dict(zip(uniq, self.embed(uniq)))
        results = []
        for i, opts in enumerate(options):
            sims = torch.stack([ctx[i] @ opt[o.strip()] for o in opts]) / self.tau
            lp = F.log_softmax(sims, -1).tolist()
            results.append([OptionScore(logprob=v, token_logprobs=[v]) for v in lp])
        self.cost.seconds += time.perf_counter() - t0
        return results

    def generate(self, prompts, n=1, max_new_tokens=64, temperature=0.0, stop=None, top_p=1.0, seed=None):
        raise ModelError(f"model {self.backbone.name!r} is an encoder and cannot generate text; "
                         "use a decoder, or tune a head for classification")
