"""The next token of a decode step: the vocabulary projection and the draw.

Projection. A causal LM's logits are z = h W^T + b (h: the body's last hidden state [B, D], W:
the output embedding [V, D]); for the families marked ``linear_head`` in ``families.py`` b = 0 and nothing rescales or
caps z afterwards (checked from the config: no ``logits_scaling``, no
``final_logit_softcapping``). A decode step reads every weight once for all B rows, so it is
bound by memory traffic, but for a few rows MKL computes h W^T ([B, D] x [D, V]) ~1.5-1.7x
slower than the same product laid out as W h^T ([V, D] x [D, B]) (8 x 576 x 49,152 at 2 threads:
49-55 vs 33 ms on a loaded machine, about a tenth of a step of the default decoder). So for such
a model the engine runs the body and takes z = (W h^T)^T itself.

Draw (Holtzman et al. 2020 for top-p): p = softmax(z / T); with top-p the smallest set of tokens
whose mass reaches p is kept (renormalized by the draw); then one uniform u ~ U(0, sum p) per row
and the token is the first index whose cumulative mass exceeds u (inverse CDF).
``torch.multinomial`` would draw one exponential per vocabulary entry (~10 ms a step for 8 rows x
49k on a CPU). T = 0 is greedy argmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaptlab.families import family

ROWS = (2, 32)      # row counts for which W h^T beats the model's own h W^T


def linear_head(model) -> torch.Tensor | None:
    """W [V, D] where ``model``'s logits are exactly h W^T (a ``linear_head`` family), else None."""
    cfg, head = model.config, model.get_output_embeddings()
    fam = family(getattr(cfg, "model_type", None))
    ok = (fam is not None and fam.linear_head and isinstance(head, torch.nn.Linear)
          and head.bias is None and not getattr(cfg, "final_logit_softcapping", None)
          and getattr(cfg, "logits_scaling", 1) == 1)
    return head.weight if ok else None


def project(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """z = h W^T computed as (W h^T)^T: [V, D] x [D, B] -> [V, B] -> [B, V]."""
    return torch.mm(w, h.T).T.contiguous()


def sample(logits: torch.Tensor, temperature: float, top_p: float, gen) -> torch.Tensor:
    """One token id per row of ``logits`` [B, V]: greedy at T = 0, else top-p + inverse CDF."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = F.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sp, si = probs.sort(-1, descending=True)
        keep = sp.cumsum(-1) - sp < top_p
        probs = torch.zeros_like(probs).scatter(-1, si, sp * keep)
    cdf = probs.cumsum(-1)                                            # [B, V]
    u = torch.rand((cdf.shape[0], 1), generator=gen).to(cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
