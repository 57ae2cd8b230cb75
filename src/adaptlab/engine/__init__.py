"""The LM interface every prompting strategy talks to.

    score(contexts, options)  -> for each context, for each of its options, the sum and the
                                 per-token log-probabilities of the option following it
    generate(prompts, n, max_new_tokens, temperature, stop) -> for each prompt, n completions

``engine.local.LocalLM`` implements it over a Backbone (or a tuned model), ``engine.embedding.EmbeddingLM`` scores
options by embedding similarity for encoders. A model given to ``LocalLM`` is called as
``model(input_ids=, attention_mask=, position_ids=, past_key_values=, use_cache=, logits_to_keep=)``
and returns ``.logits`` and ``.past_key_values``, as Hugging Face causal LMs do (the cache goes
under the name the model's forward takes: ``cache`` since transformers renamed it, see
``models.cache_arg``); tuned models (LoRA, prefix, prompt tuning, ...) keep that contract, so the
engine has no special cases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence


@dataclass
class OptionScore:
    logprob: float                    # sum over the option's tokens
    token_logprobs: list[float] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return max(1, len(self.token_logprobs))

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.n_tokens


@dataclass
class Cost:
    """What a run spent. ``calls`` counts LM requests (a context scored over all its options is
    one; one prompt sampled n times is n); ``forwards`` counts batched model forward passes."""

    calls: int = 0
    forwards: int = 0
    prompt_tokens: int = 0            # tokens run through the model as input (a cached prefix once)
    generated_tokens: int = 0
    truncated: int = 0                # inputs cut to fit the model's context
    seconds: float = 0.0

    def add(self, other: "Cost") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(d["seconds"], 3)
        return d


class LM(Protocol):
    cost: Cost

    def score(self, contexts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[OptionScore]]: ...

    def generate(self, prompts: Sequence[str], n: int = 1, max_new_tokens: int = 64,
                 temperature: float = 0.0, stop: Sequence[str] | None = None,
                 top_p: float = 1.0, seed: int | None = None) -> list[list[str]]: ...

    def chat(self, text: str) -> str: ...


def make_lm(backbone, model=None, **kwargs) -> LM:
    """The local engine for a backbone (``model`` overrides its model, e.g. a tuned one; a tuned
    model with a classification head gets ``engine.head.HeadLM``)."""
    from adaptlab.engine.embedding import EmbeddingLM
    from adaptlab.engine.local import LocalLM

    if model is not None and getattr(model, "head", None) is not None:
        from adaptlab.engine.head import HeadLM   # a tuned classifier: the head scores the labels

        return HeadLM(backbone, model, **kwargs)
    if backbone.kind == "encoder":
        return EmbeddingLM(backbone, model=model, **kwargs)
    return LocalLM(backbone, model=model, **kwargs)
