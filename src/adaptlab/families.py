"""ONE table of model families: what every tuning method and the engine need to know about a
Hugging Face ``model_type``. Nothing else in adaptlab keeps a per-family list.

Per family:
  * ``kind``: ``decoder`` (causal LM) or ``encoder`` (bidirectional, classification by a head);
  * ``lora``: LoRA's default ``target_modules`` (peft's defaults: the query and value projections,
    as in Hu et al. 2021);
  * ``ia3`` / ``ia3_ff``: (IA)^3's default targets (keys, values, the FFN's second projection) and
    the subset scaled on its input (peft's defaults);
  * ``sublayers``: (attention output projection, feed-forward output projection) as name
    suffixes: where a bottleneck adapter goes (Houlsby et al. 2019);
  * ``linear_head``: the logits are exactly ``h W^T`` (no bias; a config's ``logits_scaling`` or
    ``final_logit_softcapping`` is checked at run time), so the engine may take the projection
    itself (``engine.decoding``);
  * ``plain_attention``: attention is exactly ``softmax(q k^T * scaling + mask) v``, so rows may
    attend to one cached shared prefix without copies (``engine.shared_prefix``; sliding windows
    are checked at run time);
  * ``mlm_head``: for an encoder, the attribute of its ``AutoModelForMaskedLM`` that maps hidden
    states to vocabulary logits (masked-LM pretraining, ``train.objectives.MaskedLM``).

``tests/test_families.py`` builds a tiny random model of every family in this table and checks
each claim against it: the default targets match layers, the linear head reproduces the model's
logits, shared-prefix scoring equals plain scoring. Adding a family is adding a row here.
"""

from __future__ import annotations

from dataclasses import dataclass

from adaptlab.errors import ConfigError


@dataclass(frozen=True)
class Family:
    kind: str
    lora: tuple[str, ...] = ()
    ia3: tuple[str, ...] = ()
    ia3_ff: tuple[str, ...] = ()
    sublayers: tuple[str, str] | None = None
    linear_head: bool = False
    plain_attention: bool = False
    mlm_head: str | None = None     # encoders: the attribute of AutoModelForMaskedLM holding its MLM head


def _llama_like(linear_head: bool = True, plain_attention: bool = True) -> Family:
    return Family(kind="decoder", lora=("q_proj", "v_proj"), ia3=("k_proj", "v_proj", "down_proj"),
                  ia3_ff=("down_proj",), sublayers=("self_attn.o_proj", "mlp.down_proj"),
                  linear_head=linear_head, plain_attention=plain_attention)


def _bert_like(mlm_head: str | None) -> Family:
    return Family(kind="encoder", lora=("query", "value"), ia3=("key", "value", "output.dense"),
                  ia3_ff=("output.dense",), sublayers=("attention.output.dense", "output.dense"), mlm_head=mlm_head)


FAMILIES: dict[str, Family] = {
    # decoders with Llama's module names
    "llama": _llama_like(),
    "mistral": _llama_like(),
    "qwen2": _llama_like(),
    "qwen3": _llama_like(),
    "olmo": _llama_like(),
    "olmo2": _llama_like(),
    "smollm3": _llama_like(),
    "helium": _llama_like(),
    "gemma": _llama_like(),
    "gemma3_text": _llama_like(plain_attention=False),   # 5 of every 6 layers attend in a sliding window
    "granite": _llama_like(),       # logits_scaling != 1 in real checkpoints: the engine checks the config
    # decoders with other names
    "phi3": Family(kind="decoder", lora=("qkv_proj",), ia3=("qkv_proj", "down_proj"), ia3_ff=("down_proj",),
                   sublayers=("self_attn.o_proj", "mlp.down_proj"), linear_head=True, plain_attention=True),
    "starcoder2": Family(kind="decoder", lora=("q_proj", "v_proj"), ia3=("k_proj", "v_proj", "c_proj"),
                         ia3_ff=("c_proj",), sublayers=("self_attn.o_proj", "mlp.c_proj"),
                         linear_head=True, plain_attention=True),
    # encoders
    "bert": _bert_like("cls"),
    "roberta": _bert_like("lm_head"),
    "xlm-roberta": _bert_like("lm_head"),
    "camembert": _bert_like("lm_head"),
    "electra": _bert_like(None),
    "distilbert": Family(kind="encoder", lora=("q_lin", "v_lin"), ia3=("k_lin", "v_lin", "lin2"),
                         ia3_ff=("lin2",), sublayers=("attention.out_lin", "ffn.lin2")),
    # encoders adaptlab loads and scores, with no default targets (give target_modules)
    "albert": Family(kind="encoder"),
    "deberta": Family(kind="encoder"),
    "deberta-v2": Family(kind="encoder"),
    "mpnet": Family(kind="encoder"),
    "modernbert": Family(kind="encoder"),
}

ENCODER_TYPES = frozenset(k for k, f in FAMILIES.items() if f.kind == "encoder")


def family(model_type: str | None) -> Family | None:
    """The family of a ``model_type``, or None when adaptlab has no row for it."""
    return FAMILIES.get(model_type or "")


def of_model(model) -> Family | None:
    return family(getattr(getattr(model, "config", None), "model_type", None))


def default_targets(model_type: str, what: str, method: str) -> tuple[str, ...]:
    """A family's default ``what`` (``lora`` | ``ia3`` | ``ia3_ff`` | ``sublayers``), or a
    ``ConfigError`` that says which option to give instead."""
    fam = family(model_type)
    value = getattr(fam, what) if fam is not None else None
    if not value:
        known = ", ".join(k for k, f in FAMILIES.items() if getattr(f, what))
        raise ConfigError(f"{method}: no default target modules for model type {model_type!r} "
                          f"(families with defaults: {known}); give --set target_modules=name1,name2")
    return tuple(value)
