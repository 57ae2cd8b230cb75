"""Specialist tuning: the seam every method plugs into.

Adding a method = one file ``tuning/<name>.py`` + one ``register(...)`` line at the bottom of
this module. Nothing else changes: the training loop (``adaptlab.train``), adapter files
(``tuning.io``), the engine (``engine.make_lm``) and the CLI (``adaptlab tune --method``) all read
the registry ``METHODS``.

A method module provides
  * ``Config``: a dataclass, fields named as in the paper (``r``, ``alpha``, ``dropout``,
    ``target_modules``, ``num_virtual_tokens`` ...), range checks in ``__post_init__`` with
    ``adaptlab.config.check``. ``adaptlab tune --set k=v`` fills it (``config.build_config``).
  * ``apply(backbone, config, task) -> TunedModel``: build ``t = TunedModel.wrap(backbone, ...)``
    (a *copy* of the backbone's module tree; see "Composition" below), add the method's modules
    under its name prefix, return ``t``. Every parameter the method adds must have a dotted
    name with a segment starting with the registered ``prefix`` (``lora_A``, ``ia3_l``,
    ``prompt_embeddings``, ``prefix_encoder``, ``adapter_down`` ...): trainable-parameter
    selection, saving and merging all key off that prefix.
  * optional ``merge(t)`` / ``unmerge(t)``: fold the method's parameters into the base weights
    (out of place: new tensors, never writes into the shared base storage) and back.
  * ``to_peft_config(config, tuned) -> dict`` / ``from_peft_config(dict) -> config values``:
    the ``adapter_config.json`` fields (peft's names where peft has the method; ``tuned`` gives
    the resolved target modules), required since every adapter folder has that file.
  * optional ``to_file_keys(state) -> state`` / ``from_file_keys(state) -> state``: tensor
    names in ``adapter_model.safetensors``. The default (``io.default_file_keys``) prefixes
    names under the wrapped model with ``base_model.`` (peft: ``base_model.model.model.layers.0.
    self_attn.q_proj.lora_A.weight``) and keeps the rest (``head_classifier.linear.weight``).

and registers it with ``register(name, module, prefix=..., peft_type=..., lr=...)``.

Composition, not patching
-------------------------
``TunedModel.wrap(backbone)`` deep-copies the backbone model's *module tree* while sharing its
weight storage: every parameter of the copy is a new ``nn.Parameter`` over the same memory
(no extra bytes), so a method may replace ``q_proj`` by a ``LoRALinear`` in the copy and set
``requires_grad`` freely; the user's ``backbone.model`` keeps its modules, flags and values.
Methods must never write into base weights in place (``merge`` builds new tensors).
``full`` is the exception that trains the base weights: it wraps a real copy
(``TunedModel.wrap(backbone, share_weights=False)``). There is one wrapper level:
``tuned.model`` is the Hugging Face model, ``tuned.model.model.layers[0].self_attn.q_proj`` a
``LoRALinear`` whose ``base_layer`` is the original ``nn.Linear``.

The engine contract
-------------------
For a decoder, ``tuned(input_ids=, attention_mask=, position_ids=, past_key_values=,
use_cache=, logits_to_keep=)`` returns the Hugging Face causal-LM output (``.logits``,
``.past_key_values``), so ``engine.local.LocalLM`` (prefix-KV reuse, batched sampling) runs a
tuned model unchanged. ``tuned.body(...)`` returns the last hidden states ``[B, L, H]`` (used by
the training loss and by classification heads), ``tuned.classify(...)`` the head's logits
``[B, C]``.

How a prompt-type method plugs in (prefix, prompt tuning, P-tuning, P-tuning v2)
-------------------------------------------------------------------------------
It registers one module with ``t.add_prompt("prompt_encoder", module)`` (any name starting with
its prefix). The module has ``n_virtual: int`` and two methods, either may return None:
  * ``embeds(batch_size) -> [B, n_virtual, H]``: soft tokens prepended to the input embeddings
    (prompt tuning, P-tuning);
  * ``past_key_values(batch_size) -> [(k, v) per layer]``, each ``[B, H_kv, n_virtual, d]``:
    key/value prefixes (prefix tuning, P-tuning v2).
``TunedModel`` then, on every call: prepends ``n_virtual`` ones to ``attention_mask`` and adds
``n_virtual`` to ``position_ids``; and on the *first* call of a sequence (no cache, or an empty
one) it prepends the soft embeddings / seeds the cache with the prefixes and strips the virtual
positions from the returned logits / hidden states. Later calls (decoding with the KV cache, or
the engine's cached shared prefix, which came out of this same model) already hold the virtual
tokens in the cache. So generation with ``use_cache=True`` sees the prompt at every step, and
the engine needs no special case. On an encoder, whose absolute position embeddings count the
cache, a prefix module with ``keep_positions = True`` keeps the real tokens at positions 0..L-1
(otherwise they start at n_virtual, as in peft).

Heads
-----
Classification on an encoder (every method) and the ``head`` method on a decoder train a
``ClassificationHead`` registered as ``t.head_classifier`` (prefix ``head_``, always trainable
when present, saved with the adapter). ``engine.make_lm`` routes a tuned model with a head to
``engine.head.HeadLM``.
"""

from __future__ import annotations

import copy
import importlib
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Literal

import torch
from torch import nn

from adaptlab.config import build_config, check, config_dict
from adaptlab.errors import ConfigError
from adaptlab.models import cache_arg

HEAD_PREFIX = "head_"


# --------------------------------------------------------------------------- classification head


@dataclass
class HeadConfig:
    """The classification head: pooled hidden state -> dropout -> linear -> label logits."""

    pooling: Literal["auto", "cls", "mean", "last"] = "auto"   # auto: encoder mean, decoder last
    head_dropout: float = 0.1

    def __post_init__(self):
        check(0.0 <= self.head_dropout < 1.0, f"head_dropout={self.head_dropout}: must be in [0, 1)")


class ClassificationHead(nn.Module):
    """GPT-1 / BERT style linear head on a pooled hidden state.
    pooling: ``cls`` = first token, ``mean`` = masked mean (sentence-transformers' pooling, the
    right one for all-MiniLM-L6-v2), ``last`` = last non-pad token (GPT-1: the extract token)."""

    def __init__(self, hidden: int, n_labels: int, pooling: str, dropout: float):
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, n_labels)
        nn.init.normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def pool(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # h: [B, L, H], mask: [B, L] -> [B, H]
        if self.pooling == "cls":
            return h[:, 0]
        m = mask.to(h.dtype).unsqueeze(-1)                                   # [B, L, 1]
        if self.pooling == "mean":
            return (h * m).sum(1) / m.sum(1).clamp(min=1)
        L = mask.shape[1]
        last = L - 1 - mask.flip(-1).long().argmax(-1)                       # [B]: last 1 in each row
        return h[torch.arange(h.shape[0], device=h.device), last]

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(self.pool(h, mask)))


# --------------------------------------------------------------------------- the tuned model


def _share_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree whose parameters are new ``nn.Parameter`` objects over
    the same storage (ties preserved); buffers are shared."""
    memo: dict[int, Any] = {}
    for p in model.parameters(recurse=True):
        if id(p) not in memo:
            memo[id(p)] = nn.Parameter(p.detach(), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b
    return copy.deepcopy(model, memo)


class TunedModel(nn.Module):
    """A backbone model plus one tuning method's parameters (and optionally a head / prompt)."""

    def __init__(self, model: nn.Module, *, kind: str, method: str, config: Any, task=None,
                 identity: dict | None = None):
        super().__init__()
        self.model = model
        self.kind = kind
        self.method = method
        self.method_config = config
        self.task = task
        self.base_identity = identity or {}
        self.config = model.config                      # the engine reads .config
        self.generation_config = getattr(model, "generation_config", None)
        self.head_name: str | None = None
        self.prompt_name: str | None = None
        self.cache_arg = cache_arg(model)               # the name the HF forward takes the KV cache under
        self._prompt_enabled = True                     # False inside disable_adapters()
        self.token_ids: list[int] | None = None         # ids of added tokens (tuning/tokens.py), if any
        self.tokenizer = None                           # the extended tokenizer, saved with the adapter

    @classmethod
    def wrap(cls, backbone, method: str, config: Any, task=None, share_weights: bool = True) -> "TunedModel":
        model = _share_copy(backbone.model) if share_weights else copy.deepcopy(backbone.model)
        return cls(model, kind=backbone.kind, method=method, config=config, task=task,
                   identity=backbone.identity)

    # ------------------------------------------------------------------ parts
    def add_head(self, name: str, module: nn.Module) -> None:
        if not name.startswith(HEAD_PREFIX):
            raise ValueError(f"head module name {name!r} must start with {HEAD_PREFIX!r}")
        setattr(self, name, module)
        self.head_name = name

    def add_prompt(self, name: str, module: nn.Module) -> None:
        setattr(self, name, module)
        self.prompt_name = name

    @property
    def head(self) -> nn.Module | None:
        return getattr(self, self.head_name) if self.head_name else None

    @property
    def prompt(self) -> nn.Module | None:
        return getattr(self, self.prompt_name) if self.prompt_name else None

    @property
    def n_virtual(self) -> int:
        p = self.prompt
        return int(p.n_virtual) if p is not None and self._prompt_enabled else 0

    @property
    def adapters_on(self) -> bool:
        """False inside ``disable_adapters()`` (what an engine's cached key/values depend on)."""
        return self._prompt_enabled

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    # ------------------------------------------------------------------ the hook points
    def _prepare(self, input_ids, attention_mask, position_ids, past_key_values, inputs_embeds=None,
                 token_type_ids=None) -> tuple[dict, int]:
        """Model kwargs with the prompt's virtual tokens applied; returns (kwargs, n_prepended)
        where n_prepended is how many leading output positions are virtual (to strip)."""
        kw: dict[str, Any] = {}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        p = self.prompt if self._prompt_enabled else None
        n = self.n_virtual
        if p is None or n == 0:
            kw.update(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                      position_ids=position_ids)
            if past_key_values is not None:
                kw[self.cache_arg] = past_key_values
            return {k: v for k, v in kw.items() if v is not None}, 0
        ref = input_ids if input_ids is not None else inputs_embeds
        B, L = ref.shape[0], ref.shape[1]
        dev = ref.device
        first = past_key_values is None or past_key_values.get_seq_length() == 0
        if attention_mask is None:
            attention_mask = torch.ones((B, L), dtype=torch.long, device=dev)
        # the cache holds n virtual positions before everything the caller sees
        attention_mask = torch.cat([torch.ones((B, n), dtype=attention_mask.dtype, device=dev), attention_mask], 1)
        if position_ids is not None:
            position_ids = position_ids + n
        prepended = 0
        if first:
            emb = p.embeds(B)
            if emb is not None:                                              # [B, n, H]
                if inputs_embeds is None:
                    inputs_embeds = self.model.get_input_embeddings()(input_ids)
                inputs_embeds = torch.cat([emb.to(inputs_embeds.dtype), inputs_embeds], 1)  # [B, n+L, H]
                input_ids = None
                prepended = n
                if position_ids is not None:
                    virt = torch.arange(n, device=dev).unsqueeze(0).expand(B, -1)
                    position_ids = torch.cat([virt, position_ids], 1)
                if token_type_ids is not None:
                    kw["token_type_ids"] = torch.cat([token_type_ids[:, :1].expand(-1, n), token_type_ids], 1)
            else:
                kv = p.past_key_values(B)
                if kv is not None:
                    from transformers import DynamicCache

                    past_key_values = DynamicCache(ddp_cache_data=list(kv), config=self.model.config)
                    if self.kind == "encoder" and position_ids is None and getattr(p, "keep_positions", False):
                        # absolute positions count the cache: without this the real tokens would sit
                        # at n..n+L-1 ([CLS] at n); the prefixes are free keys/values with no position
                        position_ids = torch.arange(L, device=dev).unsqueeze(0).expand(B, -1)   # [B, L]
        kw.update(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                  position_ids=position_ids)
        if past_key_values is not None:
            kw[self.cache_arg] = past_key_values
        return {k: v for k, v in kw.items() if v is not None}, prepended

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=None, logits_to_keep=0, inputs_embeds=None, token_type_ids=None, **kwargs):
        kw, pre = self._prepare(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                token_type_ids)
        if self.kind == "encoder":
            out = self.model(**kw, **kwargs)
            if pre:
                out.last_hidden_state = out.last_hidden_state[:, pre:]
            return out
        out = self.model(**kw, use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
        if pre and not logits_to_keep:
            out.logits = out.logits[:, pre:]
        return out

    def body(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
             token_type_ids=None) -> torch.Tensor:
        """Last hidden states ``[B, L, H]`` (virtual positions stripped), without the LM head."""
        kw, pre = self._prepare(input_ids, attention_mask, position_ids, past_key_values, None, token_type_ids)
        body = self.model.base_model
        if self.kind == "decoder":
            kw["use_cache"] = self.cache_arg in kw
        h = body(**kw).last_hidden_state
        return h[:, pre:] if pre else h

    def lm_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(h)

    def classify(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Label logits ``[B, C]`` from the head."""
        if self.head is None:
            raise ValueError("this tuned model has no classification head")
        h = self.body(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.head(h, attention_mask)

    # ------------------------------------------------------------------ parameters
    def trainable_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Name -> tensor of every parameter a gradient trains (``requires_grad``)."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def owns(self, name: str) -> bool:
        """Whether tensor ``name`` is the method's (its registered prefix) or the head's."""
        parts = name.split(".")
        return (get_method(self.method).is_own(name) or any(part.startswith(HEAD_PREFIX) for part in parts)
                or "token_adapter" in parts)                     # new token rows (tuning/tokens.py)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Name -> tensor of what the method adds and saves (parameters and buffers under its
        prefix, and the head), whether or not a gradient trains it: a black-box method's
        vector is saved though nothing backpropagates into it. This, not ``requires_grad``,
        is what an adapter file holds (in the method's saved form, ``io.saved_state``)."""
        out = {n: p.detach() for n, p in self.named_parameters() if self.owns(n)}
        out.update({n: b for n, b in self.named_buffers() if self.owns(n) and n not in out})
        return out

    @contextmanager
    def disable_adapters(self):
        """Run the base model through this same object: every adapter layer (``adapter_enabled``)
        passes its input to its base layer unchanged and no virtual tokens are added; the head
        stays. No second copy of the model is made (a DPO reference, a server's base rows)."""
        if get_method(self.method).prefix == "":
            raise ConfigError(f"method {self.method} trains the base weights themselves: there is no base model "
                              "to switch back to without a second copy")
        layers = [m for m in self.model.modules() if hasattr(m, "adapter_enabled")]
        if any(getattr(m, "merged", False) for m in layers):
            raise ConfigError("the adapter is merged into the base weights; unmerge it before disabling it")
        before = [m.adapter_enabled for m in layers], self._prompt_enabled
        for m in layers:
            m.adapter_enabled = False
        self._prompt_enabled = False
        try:
            yield self
        finally:
            for m, on in zip(layers, before[0]):
                m.adapter_enabled = on
            self._prompt_enabled = before[1]

    def n_trainable(self) -> int:
        """What training moves: the ``requires_grad`` parameters, and for a gradient-free method
        (``gradient = False``: BBT's z, BDPL's policy) the tensors it saves and searches."""
        n = sum(p.numel() for p in self.parameters() if p.requires_grad)
        if not getattr(get_method(self.method).module, "gradient", True):
            n += sum(v.numel() for k, v in self.adapter_state().items()
                     if not any(x.startswith(HEAD_PREFIX) for x in k.split(".")))
        return n


def make_head(tuned: TunedModel, task, cfg: HeadConfig | None = None) -> None:
    """Add the classification head for ``task`` to ``tuned`` (as ``head_classifier``)."""
    cfg = cfg or HeadConfig()
    if task is None or not task.is_classification:
        kind = task.schema if task is not None else "no task"
        raise ConfigError(f"a classification head needs a classification task (got {kind})")
    pooling = cfg.pooling if cfg.pooling != "auto" else ("mean" if tuned.kind == "encoder" else "last")
    hidden = tuned.model.config.hidden_size
    tuned.add_head("head_classifier", ClassificationHead(hidden, len(task.labels), pooling, cfg.head_dropout))


# --------------------------------------------------------------------------- registry


@dataclass
class Method:
    name: str
    module: ModuleType
    prefix: str                         # "" = every parameter (full fine-tuning)
    peft_type: str                      # adapter_config.json "peft_type"
    lr: float                           # default learning rate
    about: str = ""
    encoder_lr: float | None = None     # the default on an encoder where it differs (measured: docs/benchmarks.md)

    def default_lr(self, kind: str) -> float:
        """The learning rate a run uses unless told otherwise; the benches read it here too."""
        return self.encoder_lr if kind == "encoder" and self.encoder_lr is not None else self.lr

    @property
    def Config(self):
        return self.module.Config

    def is_own(self, name: str) -> bool:
        if not self.prefix:
            return True
        return any(part.startswith(self.prefix) for part in name.split("."))

    @property
    def mergeable(self) -> bool:
        return hasattr(self.module, "merge")


METHODS: dict[str, Method] = {}


def register(name: str, module: str, *, prefix: str, peft_type: str, lr: float, about: str = "",
             encoder_lr: float | None = None) -> None:
    """Register the method in ``adaptlab.tuning.<module>`` under ``name``."""
    if name in METHODS:
        raise ValueError(f"tuning method {name!r} registered twice")
    mod = importlib.import_module(f"adaptlab.tuning.{module}")
    METHODS[name] = Method(name=name, module=mod, prefix=prefix, peft_type=peft_type, lr=lr, about=about,
                           encoder_lr=encoder_lr)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown tuning method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def check_requirements(name: str) -> None:
    """A method's optional packages (its module's ``REQUIRES = {import name: extra}``) are there,
    or one line saying which extra to install -- before any output is written."""
    import importlib.util

    for mod, extra in getattr(get_method(name).module, "REQUIRES", {}).items():
        if importlib.util.find_spec(mod) is None:
            raise ConfigError(f"--method {name} needs the {mod} package: pip install 'adaptlab[{extra}]'")


def method_for_peft_type(peft_type: str) -> Method:
    for m in METHODS.values():
        if m.peft_type == peft_type:
            return m
    raise ConfigError(f"peft_type {peft_type!r} is not one adaptlab reads; known: "
                      f"{', '.join(m.peft_type for m in METHODS.values())}")


def make_config(method: str, values: dict | None = None):
    m = get_method(method)
    return build_config(m.Config, values, where=f"--method {method}")


def check_task(backbone, task) -> None:
    if task is None:
        return
    if backbone.kind == "encoder" and not task.is_classification:
        raise ConfigError(f"task {task.name} is {task.schema}: an encoder can only be tuned for classification "
                          "(with a head); use a decoder")


def apply_method(backbone, method: str, config=None, task=None) -> TunedModel:
    """Apply a registered method to ``backbone`` and select its trainable parameters:
    the method's own (by prefix), plus the classification head when there is one.
    Every encoder gets a head for the task (a classifier needs one)."""
    m = get_method(method)
    check_requirements(method)
    if config is None or isinstance(config, dict):
        config = make_config(method, config)
    check_task(backbone, task)
    tuned = m.module.apply(backbone, config, task)
    if backbone.kind == "encoder" and tuned.head is None and task is not None:
        make_head(tuned, task, getattr(config, "head", None))
    train_own = getattr(m.module, "gradient", True)  # a black-box method moves its state without gradients
    for n, p in tuned.named_parameters():
        p.requires_grad_(tuned.owns(n) and (train_own or any(x.startswith(HEAD_PREFIX) for x in n.split("."))))
    if not tuned.adapter_state():
        raise ConfigError(f"method {method}: no trainable parameters (check target_modules)")
    return tuned


def describe(tuned: TunedModel) -> dict:
    return {"method": tuned.method, "config": config_dict(tuned.method_config),
            "trainable_params": tuned.n_trainable(),
            "total_params": sum(p.numel() for p in tuned.parameters())}


def find_targets(model: nn.Module, targets, types=(nn.Linear,)) -> list[str]:
    """Names of submodules of ``model`` matching ``targets`` the way peft matches
    ``target_modules``: a name equal to a target or ending in ``.<target>``."""
    out = []
    for name, mod in model.named_modules():
        if not isinstance(mod, types):
            continue
        if any(name == t or name.endswith("." + t) for t in targets):
            out.append(name)
    return out


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def merged_model(tuned: TunedModel) -> nn.Module:
    """A plain Hugging Face model with the method folded into its weights (lora, ia3)."""
    m = get_method(tuned.method)
    if not m.mergeable:
        raise ConfigError(f"method {tuned.method} cannot be merged into the base weights "
                          f"(mergeable: {', '.join(k for k, v in METHODS.items() if v.mergeable)})")
    if tuned.head is not None:
        raise ConfigError("this adapter has a classification head; a merged plain model would drop it")
    m.module.merge(tuned)
    model = tuned.model
    for name, mod in list(model.named_modules()):
        if getattr(mod, "merged", False) and hasattr(mod, "base_layer"):
            replace_module(model, name, mod.base_layer)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


Apply = Callable[..., TunedModel]

# name, module, parameter-name prefix, adapter_config peft_type, default learning rate (and on an encoder,
# where the SST-2 runs of docs/benchmarks.md used another)
register("full", "full", prefix="", peft_type="ADAPTLAB_FULL", lr=2e-5, encoder_lr=1e-4, about="Howard & Ruder 2018; Sun et al. 2019")
register("head", "head", prefix=HEAD_PREFIX, peft_type="ADAPTLAB_HEAD", lr=1e-3, encoder_lr=5e-3, about="Radford et al. 2018")
register("lora", "lora", prefix="lora_", peft_type="LORA", lr=1e-3, about="Hu et al. 2021")
register("ia3", "ia3", prefix="ia3_", peft_type="IA3", lr=3e-3, encoder_lr=5e-3, about="Liu et al. 2022")
register("adapter", "adapter", prefix="adapter_", peft_type="ADAPTLAB_BOTTLENECK", lr=1e-3, about="Houlsby et al. 2019; Pfeiffer et al. 2021")
register("prefix", "prefix", prefix="prefix_", peft_type="PREFIX_TUNING", lr=1e-3, about="Li & Liang 2021")
register("prompt-tuning", "prompt_tuning", prefix="prompt_", peft_type="PROMPT_TUNING", lr=3e-2, about="Lester et al. 2021")
register("p-tuning", "p_tuning", prefix="p_tuning_", peft_type="P_TUNING", lr=1e-3, encoder_lr=1e-2, about="Liu et al. 2021")
register("p-tuning-v2", "p_tuning_v2", prefix="deep_prompt_", peft_type="ADAPTLAB_P_TUNING_V2", lr=1e-2, about="Liu et al. 2022")
# gradient-free (black-box) methods: lr is unused by CMA-ES (bbt, bbtv2); REINFORCE's step size for bdpl
register("bbt", "bbt", prefix="bbt_", peft_type="PROMPT_TUNING", lr=1.0, about="Sun et al. 2022 (ICML)")
register("bbtv2", "bbtv2", prefix="bbtv2_", peft_type="ADAPTLAB_BBTV2", lr=1.0, about="Sun et al. 2022 (EMNLP)")
register("bdpl", "bdpl", prefix="bdpl_", peft_type="ADAPTLAB_BDPL", lr=5.0, about="Diao et al. 2022")
register("spot", "spot", prefix="prompt_", peft_type="PROMPT_TUNING", lr=3e-2, about="Vu et al. 2022")
