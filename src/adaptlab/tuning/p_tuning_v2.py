"""P-tuning v2: Liu et al. 2022, "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning
Universally Across Scales and Tasks" (ACL 2022).

Deep prompt tuning: continuous prompts at *every* layer, not only at the input. At layer l the
attention of every real token also reads n trained key/value pairs,

    Attn_l(x) = softmax( Q_l [P^k_l ; K_l]^T / sqrt(d) ) [P^v_l ; V_l],     P^k_l, P^v_l in R^{n x D}

so the prompts act on the whole depth of the model (more tunable capacity: 0.1%-3% of the
weights, against 0.01% for input-only prompts). Differences from prefix tuning that the paper
names: (1) no reparameterization by default (the MLP helps on some tasks, hurts on others:
``prefix_projection=True`` restores it); (2) classification with a randomly initialized linear
head on the [CLS]/pooled representation instead of a verbalizer; (3) prompt length tuned per
task (about 20 for simple classification); (4) prefix dropout (0.1 in the authors' code).

Dropout of the frozen model: the authors set BERT's ``hidden_dropout_prob`` per task (0.1 in their
scripts); ``hidden_dropout`` does that here: every ``nn.Dropout`` of the wrapped model (BERT's
hidden and attention dropout) gets that p while training. The wrapped model is our own copy of the
module tree (``TunedModel.wrap``), so the user's model keeps its own. ``None`` keeps the model's.
A dropout that is a plain float in the model (Llama's ``attention_dropout``, 0 in the default
decoder) is not an ``nn.Dropout`` and is left as it is.

Initialization: ``random`` (N(0, 1), the authors' ``nn.Embedding``), or, as prefix tuning's
authors found better (Li & Liang Sec. 7.2), the frozen model's own keys and values at every layer
for n real tokens: ``text`` (``init_text`` repeated to n tokens; empty = the task's instruction)
or ``vocab`` (tokens sampled from the first 5,000 ids), the choices of prompt tuning.

Positions on an encoder: BERT-style absolute position embeddings count the cache, so with n
prefixes the real tokens would be embedded at positions n..n+L-1 and [CLS] at n (what the
authors' code and peft get from Hugging Face). ``keep_positions=True`` keeps them at 0..L-1, where
the frozen model was pretrained to see them; the prefixes are free keys/values and need no
position of their own. A decoder is unaffected (its positions continue after the prefix).

Here: the prompts are ``PrefixEncoder`` of ``prefix.py`` (the same P_theta layout [n, 2 L D],
D = H_kv * d_head) registered under ``deep_prompt_encoder``. Every encoder gets the head (as for
every method), pooled as the ``head`` method pools (``pooling``: ``mean`` by default, the default
encoder's own pooling, or ``cls``, the first token as in the authors' BERT code); a decoder uses
the LM head over the verbalizer's label words (so the same classification and qa tasks run and a
tuned decoder still generates) unless ``classifier=head`` asks for the paper's linear head on the
last token. The adapter file is
peft's PREFIX_TUNING layout (``prompt_embeddings`` [n, 2 L D]) under our own
``peft_type: "ADAPTLAB_P_TUNING_V2"``; the head, when present, is ``head_classifier.linear.*``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from torch import nn

from adaptlab.config import check
from adaptlab.tuning import prefix as _prefix

MODULE = "deep_prompt_encoder"     # the registered prefix is "deep_prompt_"


@dataclass
class Config:
    num_virtual_tokens: int = 20            # n, the prompt length at every layer
    prefix_projection: bool = False         # reparameterize through an MLP (off by default, Sec. 3.2)
    encoder_hidden_size: int = 512          # the MLP's width when prefix_projection
    prefix_dropout: float = 0.1             # the authors' code: dropout 0.1 on the prompts
    hidden_dropout: float | None = None     # the frozen model's dropout p while training (None: its own)
    classifier: Literal["auto", "head", "verbalizer"] = "auto"   # decoder: auto = verbalizer
    pooling: Literal["auto", "cls", "mean", "last"] = "auto"     # the head's input (auto: encoder mean, decoder last)
    head_dropout: float = 0.1
    keep_positions: bool = False            # encoder: real tokens keep positions 0..L-1 (see above)
    init: Literal["random", "vocab", "text"] = "random"   # P at the start: N(0, 1), or real tokens' k/v
    init_text: str = ""                     # for init=text ("" = the task's instruction)

    def __post_init__(self):
        check(1 <= self.num_virtual_tokens <= 1024, f"num_virtual_tokens={self.num_virtual_tokens}: must be in [1, 1024]")
        check(1 <= self.encoder_hidden_size <= 65536, f"encoder_hidden_size={self.encoder_hidden_size}: must be in [1, 65536]")
        check(0.0 <= self.prefix_dropout < 1.0, f"prefix_dropout={self.prefix_dropout}: must be in [0, 1)")
        check(0.0 <= self.head_dropout < 1.0, f"head_dropout={self.head_dropout}: must be in [0, 1)")
        check(self.hidden_dropout is None or 0.0 <= self.hidden_dropout < 1.0,
              f"hidden_dropout={self.hidden_dropout}: must be in [0, 1) or none")
        check(self.init == "text" or not self.init_text, "init_text is only used with init=text")
        check(self.init == "random" or not self.prefix_projection,
              f"init={self.init} sets the prompts themselves: it needs prefix_projection=false")

    @property
    def head(self):
        from adaptlab.tuning import HeadConfig

        return HeadConfig(pooling=self.pooling, head_dropout=self.head_dropout)


def apply(backbone, config: Config, task=None):
    from adaptlab.errors import ConfigError
    from adaptlab.tuning import TunedModel, make_head
    from adaptlab.tuning.prompt_tuning import init_ids

    t = TunedModel.wrap(backbone, "p-tuning-v2", config, task)
    if config.hidden_dropout is not None:              # the copy's modules only: backbone.model keeps its p
        for m in t.model.modules():
            if isinstance(m, nn.Dropout):
                m.p = config.hidden_dropout
    enc = _prefix.make_encoder(t.model, config, keep_positions=config.keep_positions)
    if config.init != "random":                        # the real tokens' keys/values (prompt tuning's choices)
        V = backbone.model.get_input_embeddings().weight.shape[0]
        ids = init_ids(backbone.tokenizer, V, config.init, config.init_text, config.num_virtual_tokens, task,
                       enc.embedding.weight.device, method="p-tuning-v2")
        enc.embedding.weight.data.copy_(_prefix.activation_prefixes(t.model, ids))
    t.add_prompt(MODULE, enc)
    if config.classifier == "verbalizer" and backbone.kind == "encoder":
        raise ConfigError("p-tuning-v2: classifier=verbalizer needs a decoder; an encoder classifies with a head")
    if config.classifier == "head" and backbone.kind == "decoder":
        make_head(t, task, config.head)                                     # pooled on the last token
    return t


def saved_config(cfg: Config) -> Config:
    # the file holds the trained prompts themselves: no MLP, nothing to initialize on load
    return dataclasses.replace(cfg, prefix_projection=False, init="random", init_text="")


def saved_state(tuned):
    return _prefix.folded_state(tuned, MODULE)


def to_file_keys(state: dict) -> dict:
    return _prefix.file_keys(state, MODULE)


def from_file_keys(state: dict) -> dict:
    return _prefix.from_file_keys_for(state, MODULE)


def to_peft_config(cfg: Config, tuned) -> dict:
    return {"peft_type": "ADAPTLAB_P_TUNING_V2", **_prefix.peft_fields(cfg, tuned),
            "prefix_dropout": cfg.prefix_dropout, "classifier": cfg.classifier, "head_dropout": cfg.head_dropout,
            "keep_positions": cfg.keep_positions, "pooling": cfg.pooling, "hidden_dropout": cfg.hidden_dropout}


def from_peft_config(d: dict) -> dict:
    v = _prefix.values_from_peft(d, "p-tuning-v2")
    v.update(prefix_dropout=float(d.get("prefix_dropout", 0.1)), classifier=d.get("classifier", "auto"),
             head_dropout=float(d.get("head_dropout", 0.1)), keep_positions=bool(d.get("keep_positions", False)),
             pooling=d.get("pooling", "auto"), hidden_dropout=d.get("hidden_dropout"))
    return v
