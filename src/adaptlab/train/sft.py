"""Instruction SFT: supervised fine-tuning on (instruction prompt, response) pairs with the loss on
the response tokens only ("completion-only" loss; FLAN, Wei et al. 2022; Alpaca, Taori et al. 2023):

    L = - (1 / sum_i |y_i|) sum_i sum_t log P(y_{i,t} | p_i, y_{i,<t})

over a micro-batch, where p_i is the rendered prompt (a mixture task's template, drawn per
example with the run's seed, or an ``instruction``-schema record in the task's Alpaca template),
wrapped in the tokenizer's chat template where it has one and the run asks (``chat``), and y_i is
the response (+ EOS). Prompt tokens and padding are masked out of the loss (label -100), exactly
as trl's ``SFTTrainer`` with ``completion_only_loss`` (``bench/sft_vs_trl.py`` checks the losses).
Length-bucketed batches come from the one loop; any tuning method trains (``lora`` by default);
the result is a normal adapter folder (``adaptlab eval --adapter``).

``instruct(...)`` is the Python API behind ``adaptlab instruct``: either a mixture (built-in name
or YAML) with held-out clusters, or one ``instruction``-schema task/file (``--data``). Every option
and the held-out split are checked before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adaptlab import text as text_path
from adaptlab.train.objectives import Objective, target_collate, target_loss


@dataclass
class SFTConfig:
    chat: Literal["auto", "yes", "no"] = "auto"   # auto: a mixture task's own ``chat``; instruction data: the
                                                  # tokenizer's template where it has one
    add_eos: bool = True                          # the response ends with EOS (the model learns to stop)
    mix_seed: int | None = None                   # template draw and mixing; None: the run's seed


class InstructionSFT(Objective):
    """Examples: dicts with ``prompt``, ``target`` and ``chat`` (whether to chat-wrap the prompt)."""

    name = "instruction-sft"

    def __init__(self, tokenizer, max_len: int, add_eos: bool = True):
        super().__init__()
        self.tok, self.max_len, self.add_eos = tokenizer, max_len, add_eos

    def featurize(self, examples: list[dict]) -> list[dict]:
        feats = []
        for ex in examples:
            p = text_path.chat(self.tok, ex["prompt"]) if ex.get("chat") else ex["prompt"]
            ids, n = text_path.encode_lm(self.tok, p, ex["target"], self.max_len, "left", add_eos=self.add_eos)
            feats.append({"ids": ids, "n_target": n})
        return feats

    def collate(self, feats):
        return target_collate(feats, self.tok)

    def loss(self, model, batch):
        return target_loss(model, batch)


def wants_chat(cfg: SFTConfig, tok, default: bool) -> bool:
    if cfg.chat == "auto":
        return default
    return cfg.chat == "yes"


def instruction_pairs(task, records: list[dict], chat: bool) -> list[dict]:
    """``instruction``-schema records -> SFT examples in the task's template."""
    return [{"prompt": task.render(r), "target": task.target_text(r), "chat": chat} for r in records]


def mixture_pairs(mix, entries, cfg: SFTConfig, tok, seed: int) -> list[dict]:
    from adaptlab.data import load_split
    from adaptlab.tasks.mixture import build

    pools = {e.task.name: load_split(e.task, "train", None) for e in entries}
    return [{"prompt": x.prompt, "target": x.target, "chat": wants_chat(cfg, tok, x.chat), "task": x.task,
             "cluster": x.cluster} for x in build(mix, entries, pools, seed)]


def run_generalist(kind: str, backbone, method: str, mcfg, tcfg, examples: list[dict], objective, resolved: dict,
                   outp: Path, resume: bool, progress: bool) -> dict:
    """Apply ``method``, train ``objective`` on ``examples`` in the one loop, write the adapter
    (the resolved config as ``<kind>_config.json`` beside it)."""
    import torch

    from adaptlab.config import atomic_write_json
    from adaptlab.train.loop import Hooks, process_state, train
    from adaptlab.train.tune import adam_for
    from adaptlab.tuning import apply_method, get_method
    from adaptlab.tuning.io import adapter_bytes, save_adapter, update_stats

    m = get_method(method)
    torch.manual_seed(tcfg.seed)
    tuned = apply_method(backbone, method, mcfg, None)
    lr = m.default_lr(backbone.kind)
    resolved["lr"] = tcfg.lr if tcfg.lr is not None else lr
    state = process_state()
    if state.is_main_process:
        outp.mkdir(parents=True, exist_ok=True)
        atomic_write_json(outp / f"{kind}_config.json", {**resolved, "base": backbone.identity})
    meta = {f"{kind}_config": f"{kind}_config.json", "generalist": kind}
    hooks = Hooks(save=lambda stats: save_adapter(outp, tuned, stats=stats, meta=meta),
                  update=lambda stats: update_stats(outp, stats),
                  describe=lambda: {"adapter_bytes": adapter_bytes(tuned)})
    import dataclasses

    tcfg = dataclasses.replace(tcfg, eval=False)
    stats = train(tuned, examples, objective, adam_for(tcfg, lr), tcfg, hooks, out=outp, resume=resume,
                  progress=progress, desc=f"{kind} {method}")
    return {"out": str(outp), "method": method, "model": resolved["model"], "n_train": len(examples), **stats}


def instruct(*, out: str, mixture: str | None = None, data: str | None = None, task: str | None = None,
             hold_out: list[str] | None = None, clusters: list[str] | None = None, method: str = "lora",
             model: str | None = None, sets: dict | None = None, resume: bool = False, progress: bool = True,
             backbone=None, **train_values) -> dict:
    """Instruction-tune on a mixture (minus held-out clusters) or on one ``instruction`` task/file."""
    from adaptlab.config import config_dict
    from adaptlab.data import load_split
    from adaptlab.errors import ConfigError
    from adaptlab.models import load_backbone, resolve_name
    from adaptlab.tasks import load_task
    from adaptlab.tasks.mixture import load_mixture, select
    from adaptlab.train.tune import build_configs, prepare_out, train_subset

    if (mixture is None) == (data is None and task is None):
        raise ConfigError("instruct: give either --mixture, or --data FILE / --task T of the instruction schema")
    m, mcfg, scfg, tcfg = build_configs(method, sets, train_values, SFTConfig, "--set")
    seed = scfg.mix_seed if scfg.mix_seed is not None else tcfg.seed
    model_name = backbone.name if backbone is not None else resolve_name(model)
    resolved = {"method": method, "model": model_name, "method_config": config_dict(mcfg),
                "train_config": config_dict(tcfg), "sft_config": config_dict(scfg)}
    if mixture is not None:
        mix = load_mixture(mixture)
        entries = select(mix, list(hold_out or []), list(clusters or []) or None)
        resolved.update({"mixture": mix.to_dict(), "hold_out": list(hold_out or []),
                         "train_clusters": list(dict.fromkeys(e.cluster for e in entries))})
    else:
        if hold_out or clusters:
            raise ConfigError("--hold-out/--clusters: only with --mixture")
        spec = load_task(task or "alpaca")
        if spec.schema != "instruction":
            raise ConfigError(f"task {spec.name} is {spec.schema}; instruct --data needs the instruction schema")
        records = train_subset(load_split(spec, "train", data), tcfg.train_limit)   # a bad record fails here
        resolved.update({"task": spec.name, "task_spec": spec.to_dict(), "data": data})
    outp = Path(out)
    prepare_out(outp, resolved, resume, "instruct_config.json", "instruct")
    if backbone is None:
        backbone = load_backbone(model)
    if backbone.kind != "decoder":
        raise ConfigError(f"instruct: {model_name} is an encoder; instruction SFT needs a decoder")
    tok = backbone.tokenizer
    if mixture is not None:
        examples = train_subset(mixture_pairs(mix, entries, scfg, tok, seed), tcfg.train_limit)
    else:
        examples = instruction_pairs(spec, records, wants_chat(scfg, tok, bool(getattr(tok, "chat_template", None))))
    obj = InstructionSFT(tok, tcfg.max_seq_len, scfg.add_eos)
    return run_generalist("instruct", backbone, method, mcfg, tcfg, examples, obj, resolved, outp, resume, progress)
