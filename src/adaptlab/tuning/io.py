"""Adapter folders, in peft's layout:

    adapter_config.json          peft's fields (``peft_type``, ``task_type``, ``r``, ``lora_alpha``,
                                 ``target_modules`` ...), so peft and vLLM read lora / ia3 (and the
                                 prompt-type methods) as their own
    adapter_model.safetensors    the trained tensors under peft's keys
                                 (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``)
    adaptlab.json                ours: method + config, base model identity, task spec, train stats
    tune_config.json             the resolved run config (written by ``adaptlab tune``)

Methods peft does not have use the same layout with our own ``peft_type``: ``ADAPTLAB_FULL``
(every weight), ``ADAPTLAB_HEAD`` (the linear head only). A classification head trained along
with any method is stored as ``head_classifier.linear.{weight,bias}`` beside the method's
tensors (peft ignores keys it does not know). Only safetensors and JSON are read or written:
never pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from adaptlab.config import atomic_write_bytes, atomic_write_json, config_dict
from adaptlab.errors import AdapterError, UserError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
META = "adaptlab.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
FORMAT = 1


def default_file_keys(state: dict) -> dict:
    """Our parameter names -> file keys: under the wrapped model, peft's ``base_model.`` prefix."""
    return {("base_model." + k if k.startswith("model.") else k): v for k, v in state.items()}


def default_from_file_keys(state: dict) -> dict:
    return {(k[len("base_model."):] if k.startswith("base_model.model.") else k): v for k, v in state.items()}


def one_tensor_file_keys(state: dict, own: str, file_key: str) -> dict:
    """File keys for a method that saves one tensor under peft's name (``prompt_embeddings``):
    ``own`` (our parameter name) becomes ``file_key``, the rest as ``default_file_keys``."""
    out = default_file_keys({k: v for k, v in state.items() if k != own})
    out[file_key] = state[own]
    return out


def one_tensor_from_file_keys(state: dict, own: str, file_key: str) -> dict:
    out = default_from_file_keys({k: v for k, v in state.items() if k != file_key})
    if file_key in state:
        out[own] = state[file_key]
    return out


def saved_config(tuned):
    """The method config as saved. A method may save another form than it trains through the
    optional hooks ``saved_config(cfg) -> cfg`` and ``saved_state(tuned) -> state`` (prefix tuning
    and P-tuning save the prompts their encoder produced, as peft does, not the encoder)."""
    from adaptlab.tuning import get_method

    mod = get_method(tuned.method).module
    return mod.saved_config(tuned.method_config) if hasattr(mod, "saved_config") else tuned.method_config


def _file_state(tuned) -> dict:
    from adaptlab.tuning import get_method

    mod = get_method(tuned.method).module
    state = mod.saved_state(tuned) if hasattr(mod, "saved_state") else tuned.adapter_state()
    to_keys = getattr(mod, "to_file_keys", default_file_keys)
    return to_keys(state)


# safetensors' dtype names, in the order of its Rust ``Dtype`` enum (the file lays tensors out by
# dtype, largest first, then by name; the order only moves the offsets' digits in the header)
_ST_DTYPES = ("bool", "uint8", "int8", "int16", "float16", "bfloat16", "int32", "float32", "float64", "int64")
_ST_NAMES = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "float16": "F16", "bfloat16": "BF16",
             "int32": "I32", "float32": "F32", "float64": "F64", "int64": "I64"}
SAVE_METADATA = {"format": "pt"}


def safetensors_bytes(tensors: dict) -> int:
    """The exact size of the safetensors file ``tensors`` make: an 8-byte length, the JSON header
    (padded with spaces to a multiple of 8) and the raw tensor bytes, without writing it."""
    from safetensors.torch import save

    dts = [str(v.dtype).removeprefix("torch.") for v in tensors.values()]
    if any(d not in _ST_NAMES for d in dts):                 # a rare dtype: measure by serialising
        return len(save({k: v.contiguous() for k, v in tensors.items()}, metadata=SAVE_METADATA))
    order = sorted(zip(tensors, tensors.values(), dts), key=lambda t: (-_ST_DTYPES.index(t[2]), t[0]))
    header, offset = {"__metadata__": SAVE_METADATA}, 0
    for name, v, d in order:
        n = v.numel() * v.element_size()
        header[name] = {"dtype": _ST_NAMES[d], "shape": list(v.shape), "data_offsets": [offset, offset + n]}
        offset += n
    h = len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode())
    return 8 + (h + 7) // 8 * 8 + offset


def adapter_bytes(tuned) -> int:
    """``adapter_bytes`` everywhere (tune, compare, the report): the size of the adapter's
    adapter_model.safetensors, the file peft and vLLM load (tensors and header). The folder's JSON
    configs add a few KB more; ``experiment storage`` counts whole folders and says so."""
    return safetensors_bytes(_file_state(tuned))


def peft_config(tuned, base_name: str) -> dict:
    from adaptlab.tuning import get_method

    mod = get_method(tuned.method).module
    from adaptlab.models import hub_id

    # peft and vLLM read a Hugging Face id here; our short name stays in adaptlab.json's "base"
    d = {"base_model_name_or_path": hub_id(base_name), "revision": None,
         "task_type": "CAUSAL_LM" if tuned.kind == "decoder" else "FEATURE_EXTRACTION",
         "inference_mode": True}
    d.update(mod.to_peft_config(saved_config(tuned), tuned))
    if tuned.token_ids and d.get("peft_type") == "LORA":
        d["trainable_token_indices"] = list(tuned.token_ids)      # peft's trainable tokens (tuning/tokens.py)
    return d


def save_adapter(out, tuned, *, stats: dict | None = None, meta: dict | None = None) -> Path:
    """Write the adapter folder ``out`` (files written atomically, metadata last)."""
    from safetensors.torch import save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = tuned.base_identity
    tensors = {k: v.detach().cpu().contiguous() for k, v in _file_state(tuned).items()}
    from adaptlab.errors import TrainingDiverged
    from adaptlab.untrusted import check_finite

    check_finite(tensors, lambda name, why: TrainingDiverged(f"{out}: not saving the adapter: tensor {name!r} {why}"))
    atomic_write_bytes(out / WEIGHTS, save(tensors, metadata=SAVE_METADATA))
    atomic_write_json(out / CONFIG, peft_config(tuned, base.get("name", "")))
    from adaptlab.config import atomic_write_text
    from adaptlab.tuning import get_method as _gm

    for name, text in (getattr(_gm(tuned.method).module, "extra_files", lambda t: {})(tuned)).items():
        atomic_write_text(out / name, text)            # readable companions (BDPL's prompt.txt)
    head = None
    if tuned.head is not None:
        head = {"pooling": tuned.head.pooling, "n_labels": tuned.head.linear.out_features,
                "dropout": tuned.head.dropout.p}
    from adaptlab.tuning import get_method

    mod = get_method(tuned.method).module
    extra = {"method_state": mod.saved_meta(tuned)} if hasattr(mod, "saved_meta") else {}
    doc = {"format": FORMAT, "method": tuned.method, "config": config_dict(saved_config(tuned)),
           "base": base, "kind": tuned.kind, "head": head, **extra,
           "task": tuned.task.to_dict() if tuned.task is not None else None,
           "stats": stats or {}, **(meta or {})}
    if tuned.token_ids:                          # added tokens: their ids, and the tokenizer that has them
        doc["vocab"] = {"token_ids": list(tuned.token_ids), "tokenizer_size": len(tuned.tokenizer)}
        tuned.tokenizer.save_pretrained(out)
    atomic_write_json(out / META, doc)
    return out


def update_stats(out, stats: dict) -> None:
    p = Path(out) / META
    doc = json.loads(p.read_text())
    doc["stats"] = stats
    atomic_write_json(p, doc)


def _read_json(path: Path) -> dict:
    from adaptlab.untrusted import read_json

    d = read_json(path, lambda why: AdapterError(f"{path}: {why}"))
    if not isinstance(d, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    return d


def _read_weights(path: Path) -> dict:
    """The tensors of a regular safetensors file (memory-mapped, never read past its header's
    claims), each finite and within ``max_abs_weight``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from adaptlab.untrusted import check_finite, open_regular

    open_regular(path, lambda why: AdapterError(f"{path}: {why}")).close()
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise AdapterError(f"{path}: not a readable safetensors file ({e})") from None
    check_finite(state, lambda name, why: AdapterError(f"{path}: tensor {name!r} {why}; refusing a broken adapter"))
    return state


def _check_entries(d: Path) -> None:
    """Every file of an adapter folder is a regular file (a symlink to /dev/zero is refused)."""
    import stat

    for p in d.iterdir():
        try:
            mode = p.stat().st_mode
        except OSError:
            raise AdapterError(f"{p}: a broken link in the adapter folder") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise AdapterError(f"{p}: is not a regular file ({p.resolve()}); only regular files are read")


def read_adapter(adapter_dir) -> tuple[Path, dict, dict | None]:
    """Check the folder and read its configs: (folder, adapter_config, adaptlab meta or None)."""
    d = Path(adapter_dir).expanduser()
    if not d.exists():
        raise AdapterError(f"{d}: adapter folder not found")
    if not d.is_dir():
        raise AdapterError(f"{d}: an adapter is a folder (with {CONFIG} and {WEIGHTS})")
    _check_entries(d)
    if not (d / WEIGHTS).exists():
        pickles = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise AdapterError(f"{d / pickles[0]}: pickle weight files are never loaded (they can run code); "
                               f"save the adapter as {WEIGHTS}")
        raise AdapterError(f"{d}: no {WEIGHTS} in this folder")
    if not (d / CONFIG).exists():
        raise AdapterError(f"{d}: no {CONFIG} in this folder")
    cfg = _read_json(d / CONFIG)
    meta = _read_json(d / META) if (d / META).exists() else None
    if not isinstance(cfg.get("peft_type"), str):
        raise AdapterError(f"{d / CONFIG}: missing 'peft_type'" if "peft_type" not in cfg else
                           f"{d / CONFIG}: 'peft_type' must be text")
    if meta is not None:
        for key, typ in (("method", str), ("config", dict), ("base", dict), ("task", dict), ("vocab", dict)):
            if meta.get(key) is not None and not isinstance(meta[key], typ):
                raise AdapterError(f"{d / META}: {key!r} must be {'text' if typ is str else 'a JSON object'}, "
                                   f"got {type(meta[key]).__name__}")
    return d, cfg, meta


def load_adapter(adapter_dir, model_name: str | None = None, backbone=None):
    """-> (backbone, tuned model) for an adapter folder written by adaptlab or by peft.
    ``model_name`` overrides the base recorded in the folder; it must be the same model.
    ``backbone``: the base already in memory (checked against the recorded identity), so
    nothing is read from disk again but the adapter's own files."""
    from adaptlab.config import build_config
    from adaptlab.models import load_backbone, resolve_name
    from adaptlab.tasks import task_from_dict
    from adaptlab.tuning import apply_method, get_method, method_for_peft_type

    d, cfg, meta = read_adapter(adapter_dir)
    # 1. the method and its config, validated before anything is allocated
    try:
        if meta is not None:
            method = get_method(meta.get("method", ""))
            values = meta.get("config") or {}
        else:
            method = method_for_peft_type(str(cfg["peft_type"]))
            values = method.module.from_peft_config(cfg)
        config = build_config(method.Config, values, where=str(d / (META if meta else CONFIG)))
    except UserError as e:
        raise AdapterError(f"{d}: {e}") from None
    # 2. the base model, checked against the recorded identity
    base = (meta or {}).get("base") or {}
    name = model_name or base.get("name") or cfg.get("base_model_name_or_path")
    if backbone is not None:
        name = backbone.name
    if not name:
        raise AdapterError(f"{d}: the folder names no base model; give --model")
    if backbone is None:
        backbone = load_backbone(name)
    if base:
        have = backbone.identity
        for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "fingerprint"):
            if base.get(key) is not None and base.get(key) != have.get(key):
                raise AdapterError(f"{d}: adapter was trained on base {base.get('name')!r} ({key}={base.get(key)}), "
                                   f"not on {resolve_name(name)!r} ({key}={have.get(key)})")
    task = None
    if meta and meta.get("task"):
        try:
            task = task_from_dict(meta["task"], str(d / META))
        except UserError as e:                   # the message already names adaptlab.json
            raise AdapterError(str(e)) from None
    # 3. the tuned model and its tensors
    try:
        tuned = apply_method(backbone, method.name, config, task)
    except UserError as e:
        raise AdapterError(f"{d}: {e}") from None
    file_state = _read_weights(d / WEIGHTS)
    if meta and meta.get("vocab"):                # the adapter's own tokenizer, with its added tokens
        backbone = _with_added_tokens(d, backbone, tuned, meta["vocab"])
    from_keys = getattr(method.module, "from_file_keys", default_from_file_keys)
    state = from_keys(file_state)
    load_state(tuned, state, where=str(d / WEIGHTS))
    tuned.eval()
    return backbone, tuned


def _with_added_tokens(d: Path, backbone, tuned, vocab: dict):
    import dataclasses

    from transformers import AutoTokenizer

    from adaptlab.tuning.tokens import extend

    ids = vocab.get("token_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise AdapterError(f"{d / META}: 'vocab.token_ids' must be a list of token ids")
    try:
        tok = AutoTokenizer.from_pretrained(str(d))
    except Exception as e:
        raise AdapterError(f"{d}: the adapter has added tokens but no readable tokenizer ({type(e).__name__})") from None
    if len(tok) != vocab.get("tokenizer_size") or max(ids) >= len(tok):
        raise AdapterError(f"{d}: its tokenizer has {len(tok)} tokens, the adapter was saved with "
                           f"{vocab.get('tokenizer_size')}")
    try:
        extend(tuned, ids)
    except UserError as e:
        raise AdapterError(f"{d}: {e}") from None
    tuned.tokenizer = tok
    return dataclasses.replace(backbone, tokenizer=tok)


def load_state(tuned, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy ``state`` into what the method saves (``TunedModel.adapter_state``); every name must
    match, and every shape."""
    params = {n: p for n, p in tuned.named_parameters() if tuned.owns(n)}
    params.update({n: b for n, b in tuned.named_buffers() if tuned.owns(n) and n not in params})
    missing = sorted(set(params) - set(state))
    extra = sorted(set(state) - set(params))
    if missing:
        raise AdapterError(f"{where}: missing tensor {missing[0]!r} ({len(missing)} missing): "
                           "the adapter does not fit this model or method config")
    if extra:
        raise AdapterError(f"{where}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected): "
                           "the adapter does not fit this model or method config")
    for n, p in params.items():
        if tuple(state[n].shape) != tuple(p.shape):
            raise AdapterError(f"{where}: tensor {n!r} has shape {tuple(state[n].shape)}, "
                               f"the model needs {tuple(p.shape)}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n].to(p.dtype))


def merge_adapter(adapter_dir, out, model_name: str | None = None) -> dict:
    """Fold a lora / ia3 adapter into its base and write a plain Hugging Face model folder.

    The folder is written as ``.<out>.merging`` beside ``out`` and renamed into place, under
    ``out``'s lock (``outputs.claim_folder``); what a killed merge left there is removed by the
    next merge to the same ``out``."""
    import os
    import shutil

    from adaptlab.errors import ConfigError
    from adaptlab.outputs import LOCK, check_place, claim_folder, holds_files
    from adaptlab.tuning import merged_model

    outp = Path(out)
    check_place(outp, "folder")
    if holds_files(outp):
        raise ConfigError(f"{outp}: already exists and is not an empty folder")
    read_adapter(adapter_dir)
    tmp = outp.parent / f".{outp.name}.merging"
    with claim_folder(outp):
        shutil.rmtree(tmp, ignore_errors=True)            # a killed merge's leftovers
        backbone, tuned = load_adapter(adapter_dir, model_name)
        try:
            model = merged_model(tuned)
        except UserError as e:
            raise AdapterError(f"{adapter_dir}: {e}") from None
        try:
            tmp.mkdir()
            model.save_pretrained(tmp)
            backbone.tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / "adaptlab_merged.json", {"adapter": str(Path(adapter_dir).resolve()),
                                                             "method": tuned.method, "base": tuned.base_identity})
            for p in outp.iterdir():                          # our lock file (still held) and stale temps
                if p.name != LOCK:
                    p.unlink()
            (outp / LOCK).unlink(missing_ok=True)
            outp.rmdir()
            os.replace(tmp, outp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    size = sum(p.stat().st_size for p in outp.iterdir() if p.is_file())
    return {"adapter": str(adapter_dir), "out": str(outp), "method": tuned.method,
            "base": tuned.base_identity.get("name"), "params": sum(p.numel() for p in model.parameters()),
            "bytes": size}


def init_from(tuned, adapter_dir) -> None:
    """Start ``tuned`` from the weights of another adapter of the same method (continued training
    after in-domain pretraining, or a prompt transferred from another task). The method's own
    tensors must all be there with the same shapes; a classification head is not taken (the new
    task has its own labels)."""
    from adaptlab.tuning import HEAD_PREFIX, get_method, method_for_peft_type

    d, cfg, meta = read_adapter(adapter_dir)
    try:
        method = get_method(meta["method"]) if meta and meta.get("method") else method_for_peft_type(str(cfg["peft_type"]))
    except UserError as e:
        raise AdapterError(f"{d}: {e}") from None
    accepted = getattr(get_method(tuned.method).module, "init_methods", (tuned.method,))
    if method.name not in accepted:
        raise AdapterError(f"{d}: an initial adapter must be of the method being tuned ({', '.join(accepted)}); "
                           f"this one is {method.name}")
    base = (meta or {}).get("base") or {}
    have = tuned.base_identity or {}
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "fingerprint"):
        if base.get(key) is not None and have.get(key) is not None and base.get(key) != have.get(key):
            raise AdapterError(f"{d}: an initial adapter must come from the same base model; this one was trained on "
                               f"{base.get('name')!r} ({key}={base.get(key)}), not {have.get('name')!r} "
                               f"({key}={have.get(key)})")
    file_state = _read_weights(d / WEIGHTS)
    from_keys = getattr(method.module, "from_file_keys", default_from_file_keys)
    if method.name != tuned.method:                 # another method of the same file layout (SPoT <- prompt tuning)
        from_keys = getattr(get_method(tuned.method).module, "from_file_keys", default_from_file_keys)

    def is_head(n: str) -> bool:
        return any(part.startswith(HEAD_PREFIX) for part in n.split("."))

    state = {k: v for k, v in from_keys(file_state).items() if not is_head(k)}
    own = {n: v for n, v in tuned.adapter_state().items() if not is_head(n)}
    if set(state) != set(own):
        gone = sorted(set(own) - set(state)) or sorted(set(state) - set(own))
        raise AdapterError(f"{d}: its tensors do not fit this {tuned.method} config (e.g. {gone[0]!r}); an adapter "
                           "saved in inference form (prefix / P-tuning save their prompts, not the encoder) cannot "
                           "restart training")
    load_state(tuned, {**{n: v for n, v in tuned.adapter_state().items() if is_head(n)}, **state}, where=str(d / WEIGHTS))
