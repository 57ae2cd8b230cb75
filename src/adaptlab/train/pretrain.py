"""``adaptlab pretrain``: continued pretraining on unlabelled in-domain text.

Gururangan et al. 2020, "Don't Stop Pretraining: Adapt Language Models to Domains and Tasks":
keep training the pretrained model with its own objective on text from the target domain
(DAPT: a large domain corpus) or from the task itself with the labels dropped (TAPT), then
tune on the task as usual. The objective is the model's own:

    encoders, masked LM (Devlin et al. 2019):  L = -sum_{i in M} log P(x_i | x_{\\M}),  |M| ~ 15%
                                               of the real tokens; of M, 80% -> [MASK], 10% -> a
                                               random token, 10% unchanged
    decoders, causal LM:                       L = -sum_t log P(x_t | x_<t)

Any tuning method supplies the trainable parameters (``full`` as in the paper, ``lora``,
``adapter``, ...); ``head`` trains an encoder's MLM head alone (the body frozen), a warm-up for a
checkpoint whose head is new before a ``full`` run from the folder it writes. The result:
  * ``full``, ``head`` and the mergeable methods (``lora``, ``ia3``): a plain Hugging Face model folder
    (the adapter folded into the weights; an encoder keeps its MLM head), which ``--model DIR``
    of ``tune``, ``eval`` and ``compare`` takes;
  * other methods: their adapter folder, which ``tune --method <the same> --init DIR`` continues
    on the task (and ``eval --adapter DIR`` scores).
An encoder checkpoint without an MLM head (all-MiniLM-L6-v2 ships the bare body) gets a new
one, its decoder tied to the input embeddings; the output says so. A held-out slice of the text
(``dev_fraction``) gives the dev loss at every epoch end, with fixed masks.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from adaptlab.config import atomic_write_json, check, config_dict
from adaptlab.errors import ConfigError
from adaptlab.train.loop import Hooks, process_state, train
from adaptlab.train.objectives import CausalLM, MaskedLM
from adaptlab.train.tune import adam_for, build_configs, prepare_out, train_subset

CONFIG = "pretrain_config.json"
META = "adaptlab_pretrain.json"
DEV_SEED = 1234             # the dev loss's masks: the same every epoch and every run


@dataclass
class PretrainConfig:
    objective: Literal["auto", "mlm", "clm"] = "auto"    # auto: masked LM for encoders, causal LM for decoders
    mlm_probability: float = 0.15
    text_field: str = "text"                             # the text field of a .jsonl/.csv/.tsv corpus
    dev_fraction: float = 0.02                           # held out for the dev loss (at most 2,000 texts)

    def __post_init__(self):
        check(0.0 < self.mlm_probability < 1.0, f"mlm_probability={self.mlm_probability}: must be in (0, 1)")
        check(0.0 <= self.dev_fraction < 0.5, f"dev_fraction={self.dev_fraction}: must be in [0, 0.5)")


def resolve_objective(objective: str, kind: str, model: str) -> str:
    want = {"encoder": "mlm", "decoder": "clm"}[kind]
    if objective == "auto":
        return want
    if objective != want:
        what = {"mlm": "a masked-LM objective needs an encoder (bidirectional attention, a [MASK] token)",
                "clm": "a causal-LM objective needs a decoder (an encoder cannot predict the next token)"}[objective]
        raise ConfigError(f"objective={objective}: {what}; {model} is a{'n' if kind == 'encoder' else ''} {kind}")
    return want


def mlm_head(backbone, tuned):
    """The encoder's MLM head (hidden [.., H] -> logits [.., V]) and a note: the checkpoint's own
    head when it has one, else a new one whose decoder is tied to the input embeddings."""
    from transformers import AutoModelForMaskedLM

    from adaptlab.families import family

    cfg = tuned.model.config
    fam = family(cfg.model_type)
    if fam is None or not fam.mlm_head:
        raise ConfigError(f"objective=mlm: adaptlab knows no MLM head for model type {cfg.model_type!r} "
                          "(families.py: bert, roberta, xlm-roberta, camembert)")
    missing = ["all"]
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(backbone.source or backbone.name, output_loading_info=True,
                                                         dtype=torch.float32)
        missing = [k for k in info.get("missing_keys", []) if k.startswith(fam.mlm_head + ".")]
    except Exception:                           # no loadable checkpoint: a head from the config alone
        mlm = AutoModelForMaskedLM.from_config(cfg)
    head = getattr(mlm, fam.mlm_head)
    emb = tuned.model.get_input_embeddings().weight
    out = mlm.get_output_embeddings()
    out.weight = emb                            # tied to the model being trained (its rows move under full)
    del mlm
    if missing:
        return head, ("the checkpoint has no MLM head: a new one was initialised (transform and bias trained, "
                      "its decoder tied to the input embeddings)")
    return head, "the checkpoint's own MLM head"


def _plain_state(tuned) -> dict[str, torch.Tensor]:
    """The model's weights with a mergeable method folded in (out of place), as the plain model's keys."""
    from adaptlab.tuning import get_method

    m = get_method(tuned.method)
    if m.mergeable:
        m.module.merge(tuned)
    try:
        state = {}
        for k, v in tuned.model.state_dict().items():
            if m.prefix and any(part.startswith(m.prefix) for part in k.split(".")):
                continue
            state[k.replace(".base_layer.", ".")] = v.detach().clone()
    finally:
        if m.mergeable:
            m.module.unmerge(tuned)
    return state


def write_model_folder(out: Path, tuned, tokenizer, head=None, head_attr: str | None = None) -> None:
    """A Hugging Face model folder in ``out`` (files moved in one by one when complete)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    cfg = tuned.model.config
    state = _plain_state(tuned)
    if tuned.kind == "decoder":
        hf = AutoModelForCausalLM.from_config(cfg)
    elif head is not None:
        # one file with the body under its prefix (the pooler too, which the MLM class lacks) and
        # the head: AutoModel reads the body from it, AutoModelForMaskedLM body and head
        hf = AutoModelForMaskedLM.from_config(cfg)
        state = {f"{hf.base_model_prefix}.{k}": v for k, v in state.items()}
        state.update({f"{head_attr}.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    else:
        hf = AutoModel.from_config(cfg)
    got = hf.load_state_dict(state, strict=False)
    if got.missing_keys:
        raise RuntimeError(f"pretrained weights do not cover {got.missing_keys[:3]}")
    tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=out))
    try:
        hf.save_pretrained(tmp, state_dict=state)
        tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _dev_loss(tuned, objective, feats: list[dict], batch_size: int, progress: bool = False, desc: str = "dev loss"):
    from adaptlab.progress import bar

    def score() -> float:
        dev = next(tuned.parameters()).device
        total, n = 0.0, 0
        b = bar(len(feats), desc, enabled=progress and process_state().is_main_process, leave=False)
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(DEV_SEED)
            for s in range(0, len(feats), batch_size):
                part = feats[s: s + batch_size]
                batch = {k: v.to(dev) for k, v in objective.collate(part).items()}
                loss, _ = objective.loss(tuned, batch)
                total, n = total + float(loss) * len(part), n + len(part)
                b.update(len(part))
        b.close()
        return round(total / max(1, n), 5)
    return score


def pretrain(text: str | None = None, task: str | None = None, method: str = "full", model: str | None = None, *,
             out: str, **kwargs) -> dict:
    """The Python API behind ``adaptlab pretrain``: ``text`` (a corpus file: DAPT) or ``task`` (its
    train split, labels dropped: TAPT); returns the run summary. ``out`` is locked for the run."""
    from adaptlab.outputs import claim_folder

    with claim_folder(out, enabled=process_state().is_main_process):
        return _pretrain(text, task, method, model, out=out, **kwargs)


def _pretrain(text: str | None = None, task: str | None = None, method: str = "full", model: str | None = None, *,
              out: str, sets: dict | None = None, resume: bool = False, data: str | None = None,
              progress: bool = True, backbone=None, **train_values) -> dict:
    from adaptlab.data import load_split, read_texts, task_texts
    from adaptlab.models import kind_of_ref, load_backbone, resolve_name
    from adaptlab.tasks import load_task
    from adaptlab.tuning import apply_method

    if (text is None) == (task is None):
        raise ConfigError("pretrain: give the text to pretrain on: --text FILE (domain text) or --task T "
                          "(the task's train split, labels dropped)")
    head_only = method == "head"                 # the MLM head alone, the body frozen: a warm-up for a new head
    m, mcfg, pcfg, tcfg = build_configs(method, sets, train_values, PretrainConfig, "pretraining option")
    kind = backbone.kind if backbone is not None else kind_of_ref(model)
    model_name = backbone.name if backbone is not None else resolve_name(model)
    objective_name = resolve_objective(pcfg.objective, kind, model_name)
    if head_only and objective_name != "mlm":
        raise ConfigError("pretrain --method head trains only an encoder's MLM head (a warm-up before full "
                          "pretraining); a decoder's LM head is already trained: use full, lora, ...")
    if text is not None:
        texts, source = read_texts(text, pcfg.text_field), {"text": str(Path(text).resolve())}
    else:
        spec = load_task(task)
        texts, source = task_texts(spec, load_split(spec, "train", data)), {"task": spec.name, "data": data}
    texts = train_subset(texts, tcfg.train_limit)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    n_dev = min(2000, int(len(texts) * pcfg.dev_fraction)) if len(texts) >= 50 else 0
    dev_texts = [texts[i] for i in sorted(order[:n_dev])]
    train_texts = [texts[i] for i in sorted(order[n_dev:])]
    resolved = {"source": source, "method": method, "model": model_name, "objective": objective_name,
                "method_config": config_dict(mcfg), "train_config": config_dict(tcfg),
                "pretrain_config": config_dict(pcfg)}
    outp = Path(out)
    prepare_out(outp, resolved, resume, CONFIG, "pretrain")
    state = process_state()
    if backbone is None:
        backbone = load_backbone(model)
    torch.manual_seed(tcfg.seed)
    if head_only:
        from adaptlab.tuning import TunedModel

        tuned = TunedModel.wrap(backbone, "head", mcfg)
        for p in tuned.parameters():
            p.requires_grad_(False)
    else:
        tuned = apply_method(backbone, method, mcfg, None)
    tok = backbone.tokenizer
    head, note, head_attr = None, "", None
    if objective_name == "mlm":
        from adaptlab.families import family

        head, note = mlm_head(backbone, tuned)
        head_attr = family(tuned.model.config.model_type).mlm_head
        objective = MaskedLM(tok, head, tcfg.max_seq_len, pcfg.mlm_probability)
    else:
        objective = CausalLM(tok, tcfg.max_seq_len)
    if note and state.is_main_process:
        print(f"note: {note}", file=sys.stderr)
    lr = tcfg.lr if tcfg.lr is not None else m.default_lr(kind)
    resolved["lr"] = lr
    as_model = method in ("full", "head") or m.mergeable
    if state.is_main_process:
        outp.mkdir(parents=True, exist_ok=True)
        atomic_write_json(outp / CONFIG, {**resolved, "base": backbone.identity})

    def save(stats: dict) -> None:
        from adaptlab.tuning.io import save_adapter

        if as_model:
            write_model_folder(outp, tuned, tok, head, head_attr)
        else:
            save_adapter(outp, tuned, stats=stats, meta={"pretrain_config": CONFIG})
        atomic_write_json(outp / META, {"result": "model folder" if as_model else "adapter folder", "method": method,
                                        "objective": objective_name, "mlm_head": note or None, "source": source,
                                        "base": backbone.identity, "stats": stats})

    dev_feats = objective.featurize(dev_texts) if dev_texts else []
    dev_loss = _dev_loss(tuned, objective, dev_feats, max(16, tcfg.batch_size), progress, f"dev loss pretrain {method}")
    hooks = Hooks(evaluate=dev_loss if dev_feats else None,
                  save=save, update=save, metric="dev_loss", keep_best=False, save_on_epoch=False)
    stats = train(tuned, train_texts, objective, adam_for(tcfg, lr), tcfg, hooks, out=outp, resume=resume,
                  progress=progress, desc=f"pretrain {objective_name} {method}")
    return {"out": str(outp), "result": "model folder" if as_model else "adapter folder", "method": method,
            "model": model_name, "objective": objective_name, "mlm_head": note or None, "source": source,
            "texts": len(train_texts), "dev_texts": len(dev_texts), "method_config": config_dict(mcfg),
            "train_config": config_dict(tcfg), **stats,
            "next": (f"adaptlab tune --model {outp} ..." if as_model else f"adaptlab tune --method {method} --init {outp} ...")}
