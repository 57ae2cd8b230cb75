"""``adaptlab tune``: a labelled task, one tuning method, the one loop; writes an adapter folder.

``train_on_task`` puts the pieces together for a task: the objective the model calls for
(``objectives.for_task``: an LM target, or a head's cross-entropy), AdamW, and the hooks: dev
evaluation through the same path as ``adaptlab eval --prompt zero-shot`` at every epoch end,
best-keeping, and writing the adapter (``tuning.io.save_adapter``). ``tune`` is the Python API
behind the command: it checks the output folder and every option before anything loads, then
loads, applies the method (optionally starting from another adapter's weights, ``init``), trains.

A method module may bring its own pieces of the loop (the black-box methods do): ``objective(tuned,
backbone, task, cfg)``, ``stepper(method_config, cfg, lr)`` (CMA-ES, REINFORCE instead of AdamW),
``train_config(method_config, cfg, n_train) -> cfg`` (a budget in model calls mapped to steps,
checked before anything is written), ``prepare_config(method_config, task, train_examples)`` (BDPL's
candidate vocabulary from the run's own train texts) and ``pick_source(...)`` (SPoT's
``--init best-source``). ``shots_per_class`` draws a k-shot train set with the run's seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import sys
from pathlib import Path
from typing import Callable

import torch

from adaptlab.config import atomic_write_json, config_dict, remove_stale_temp_files
from adaptlab.errors import ConfigError
from adaptlab.outputs import claim_folder, holds_files
from adaptlab.train.loop import Hooks, TrainConfig, process_state, train
from adaptlab.train.objectives import for_task
from adaptlab.train.steppers import AdamW

TRAIN_SUBSET_SEED = 0      # train_limit takes the first N after this fixed shuffle: same subset every seed


def split_sets(method_cls, sets: dict, extra_cls=()) -> tuple[dict, dict]:
    """``--set`` values -> (method config values, TrainConfig values); unknown keys are errors."""
    import dataclasses

    mf = {f.name for f in dataclasses.fields(method_cls)}
    tf = {f.name for f in dataclasses.fields(TrainConfig)}
    for c in extra_cls:
        tf |= {f.name for f in dataclasses.fields(c)}
    unknown = sorted(set(sets) - mf - tf)
    if unknown:
        raise ConfigError(f"--set: unknown key {unknown[0]!r}; method keys: {', '.join(sorted(mf)) or '-'}; "
                          f"training keys: {', '.join(sorted(tf))}")
    return {k: v for k, v in sets.items() if k in mf}, {k: v for k, v in sets.items() if k not in mf}


def build_configs(method: str, sets: dict | None, train_values: dict, extra_cls, extra_where: str):
    """``--set`` values + the loop's CLI options -> (method entry, method config, ``extra_cls`` config,
    TrainConfig): one split for every recipe with its own options (pretrain, feedback, SFT, MetaICL)."""
    import dataclasses

    from adaptlab.config import build_config
    from adaptlab.tuning import get_method

    m = get_method(method)
    mvals, rest = split_sets(m.Config, dict(sets or {}), (extra_cls,))
    keys = {f.name for f in dataclasses.fields(extra_cls)}
    evals = {k: v for k, v in rest.items() if k in keys}
    tvals = {k: v for k, v in rest.items() if k not in keys}
    tvals.update({k: v for k, v in train_values.items() if v is not None})
    ecfg = build_config(extra_cls, evals, where=extra_where)
    mcfg = build_config(m.Config, mvals, where=f"--method {method}")
    tcfg = build_config(TrainConfig, tvals, where="training option")
    return m, mcfg, ecfg, tcfg


def train_subset(examples: list, limit: int | None) -> list:
    """The first ``limit`` examples after a fixed shuffle (the same subset for every seed)."""
    if limit is None or limit >= len(examples):
        return examples
    idx = list(range(len(examples)))
    random.Random(TRAIN_SUBSET_SEED).shuffle(idx)
    return [examples[i] for i in sorted(idx[:limit])]


def kshot(examples: list, task, k: int, seed: int) -> list:
    """k examples of every label (fewer where a label has fewer), drawn with ``seed``; in file order."""
    if not task.is_classification:
        raise ConfigError(f"shots_per_class: task {task.name} is {task.schema}, it has no labels to draw from")
    rng = random.Random(seed)
    by: dict = {}
    for i, ex in enumerate(examples):
        by.setdefault(task.gold(ex), []).append(i)
    keep = sorted(i for idx in by.values() for i in rng.sample(idx, min(k, len(idx))))
    return [examples[i] for i in keep]


def dev_hook(backbone, tuned, task, examples: list[dict], batch_size: int,
             progress: bool = False) -> Callable[[], float]:
    """The task metric on ``examples`` through the same path as ``adaptlab eval``; with ``progress``
    its own bar (``dev eval METHOD``) on the main process."""
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.progress import bar
    from adaptlab.prompting import make_strategy

    def score() -> float:
        lm = make_lm(backbone, model=tuned, batch_size=batch_size, truncate=task.truncate)
        shown = progress and process_state().is_main_process
        b = bar(len(examples), f"dev eval {tuned.method}", enabled=shown, leave=False)
        try:
            return evaluate(lm, task, make_strategy("zero-shot"), examples, progress=b.update if shown else None).score
        finally:
            b.close()

    return score


def adam_for(cfg: TrainConfig, lr: float) -> AdamW:
    return AdamW(lr=cfg.lr if cfg.lr is not None else lr, weight_decay=cfg.weight_decay,
                 warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm)


def feedback_objective(backbone, tuned, task, cfg: TrainConfig, pref, judge=None):
    """The objective of ``--set objective=dpo|reward|grpo`` (``train.preference.PreferenceConfig``)."""
    if pref.objective == "dpo":
        from adaptlab.train.dpo import DPO

        return DPO(backbone.tokenizer, task, cfg.max_seq_len, pref.beta, pref.loss_type, pref.max_reply_len)
    if pref.objective == "reward":
        from adaptlab.train.reward import RewardBT

        return RewardBT(backbone.tokenizer, task, cfg.max_seq_len, tuned.model.config.hidden_size,
                        pref.max_reply_len)
    from adaptlab.train.grpo import GRPO

    return GRPO(backbone, tuned, task, cfg.max_seq_len, pref, judge)


def train_on_task(backbone, tuned, task, train_examples: list[dict], cfg: TrainConfig, out, *,
                  dev_examples: list[dict] | None = None, lr: float = 1e-3, resume: bool = False,
                  progress: bool = True, on_step: Callable[[int, float], None] | None = None,
                  meta: dict | None = None, pref=None, judge=None) -> dict:
    """Train ``tuned`` on a labelled task and write the best adapter to ``out``; returns the run
    summary (also in ``out/adaptlab.json``'s ``stats``). ``pref``: a ``PreferenceConfig`` whose
    objective (dpo, reward, grpo) replaces the task's own; ``judge``: GRPO's reward model, loaded."""
    from adaptlab.tuning.io import adapter_bytes, save_adapter, update_stats

    from adaptlab.tuning import get_method

    out = Path(out)
    if pref is not None and pref.objective != "task":
        return _train_feedback(backbone, tuned, task, train_examples, cfg, out, dev_examples, lr, resume,
                               progress, on_step, meta, pref, judge)
    if task.schema == "preference":
        raise ConfigError(f"task {task.name} is a preference task: train it with --set objective=dpo or "
                          "--set objective=reward")
    mod = get_method(tuned.method).module
    if hasattr(mod, "train_config"):
        cfg = mod.train_config(tuned.method_config, cfg, len(train_examples))
    objective = (mod.objective(tuned, backbone, task, cfg) if hasattr(mod, "objective")
                 else for_task(tuned, backbone.tokenizer, task, cfg.max_seq_len))
    stepper = mod.stepper(tuned.method_config, cfg, lr) if hasattr(mod, "stepper") else adam_for(cfg, lr)
    hooks = Hooks(
        evaluate=dev_hook(backbone, tuned, task, dev_examples, max(16, cfg.batch_size), progress)
        if dev_examples and cfg.eval else None,
        save=lambda stats: save_adapter(out, tuned, stats=stats, meta=meta),
        update=lambda stats: update_stats(out, stats),
        on_step=on_step, describe=lambda: {"adapter_bytes": adapter_bytes(tuned)}, metric=task.metric)
    return train(tuned, train_examples, objective, stepper, cfg, hooks, out=out, resume=resume, progress=progress,
                 desc=f"tune {tuned.method}")


def _train_feedback(backbone, tuned, task, train_examples, cfg, out, dev_examples, lr, resume, progress, on_step,
                    meta, pref, judge=None) -> dict:
    """DPO, a reward model or GRPO through the one loop: AdamW, the held-out score as the dev metric
    (implicit reward accuracy, pairwise accuracy, the task metric after GRPO, or against a reward
    model the judge's mean score of greedy replies to the dev prompts)."""
    from adaptlab.tuning.io import adapter_bytes, save_adapter, update_stats

    if not getattr(get_method_module(tuned.method), "gradient", True):
        raise ConfigError(f"method {tuned.method} is gradient-free: --set objective={pref.objective} needs gradients")
    objective = feedback_objective(backbone, tuned, task, cfg, pref, judge)
    if pref.objective == "grpo" and objective.judge is not None:
        def judged() -> float:
            from adaptlab.engine import make_lm
            from adaptlab.progress import status
            from adaptlab.train.grpo import mean_reward

            with status(f"dev eval grpo {tuned.method}") if progress else contextlib.nullcontext():
                lm = make_lm(backbone, model=tuned, batch_size=max(16, cfg.batch_size), truncate=task.truncate)
                return mean_reward(lm, [objective.render(ex) for ex in dev_examples], objective.judge,
                                   pref.max_new_tokens, task.stop)["reward"]

        evaluate, metric = (judged if dev_examples else None), "reward"
    elif pref.objective == "grpo":
        evaluate = (dev_hook(backbone, tuned, task, dev_examples, max(16, cfg.batch_size), progress)
                    if dev_examples else None)
        metric = task.metric
    else:
        key = "reward_accuracy" if pref.objective == "dpo" else "accuracy"

        def held_out() -> float:
            from adaptlab.progress import status

            with status(f"dev eval {pref.objective} {tuned.method}") if progress else contextlib.nullcontext():
                return objective.evaluate(tuned, dev_examples, cfg.batch_size)[key]

        evaluate = held_out if dev_examples else None
        metric = key

    def save(stats):
        save_adapter(out, tuned, stats=stats, meta={**(meta or {}), "objective": pref.objective})
        if pref.objective == "reward":
            objective.save_head(out)

    hooks = Hooks(evaluate=evaluate if cfg.eval else None, save=save, update=lambda stats: update_stats(out, stats),
                  on_step=on_step, metric=metric,
                  describe=lambda: {"adapter_bytes": adapter_bytes(tuned), "feedback_objective": pref.objective,
                                    "truncated_pairs": getattr(objective, "truncated", 0)})
    return train(tuned, train_examples, objective, adam_for(cfg, lr), cfg, hooks, out=out, resume=resume,
                 progress=progress, desc=f"{pref.objective} {tuned.method}")


def get_method_module(name: str):
    from adaptlab.tuning import get_method

    return get_method(name).module


def prepare_out(outp: Path, resolved: dict, resume: bool, config_name: str, what: str) -> None:
    """Refuse an output folder that holds something else, or another run without ``--resume``,
    or ``--resume`` with other settings; remove what a killed atomic write left. Every process
    of a multi-process launch checks; the main process cleans."""
    state = process_state()
    if state.is_main_process:
        remove_stale_temp_files(outp)            # a run killed mid-write leaves only these
    state.wait_for_everyone()
    cfg_path = outp / config_name
    if outp.exists() and not outp.is_dir():
        raise ConfigError(f"{outp}: exists and is not a folder; choose another --out")
    if cfg_path.exists():
        if not resume:
            raise ConfigError(f"{outp}: already holds a {what} run; pass --resume to continue it, or another --out")
        prev = json.loads(cfg_path.read_text())
        for k, v in resolved.items():
            if prev.get(k) != v:
                raise ConfigError(f"{outp}: --resume with settings that differ from the run there ({k}: "
                                  f"{json.dumps(prev.get(k))[:80]} vs {json.dumps(v)[:80]})")
    elif holds_files(outp):
        raise ConfigError(f"{outp}: folder is not empty and holds no {what} run; choose another --out")


def with_vocab(backbone, tuned, folder: str):
    """Add the tokens of an ``adaptlab vocab --extend`` folder to ``tuned``; returns the backbone
    with the extended tokenizer (the same model)."""
    import dataclasses

    from transformers import AutoTokenizer

    from adaptlab.tuning.tokens import extend
    from adaptlab.vocab import read_extension

    spec = read_extension(folder)
    n0 = backbone.model.get_input_embeddings().weight.shape[0]
    if spec["base_vocab"] != n0 or len(backbone.tokenizer) != spec["tokenizer_size"]:
        raise ConfigError(f"--vocab {folder}: made for a model with {spec['base_vocab']} embeddings and a "
                          f"{spec['tokenizer_size']}-token tokenizer, not this one ({n0}, {len(backbone.tokenizer)})")
    tok = AutoTokenizer.from_pretrained(folder)
    extend(tuned, spec["ids"], spec["init"])
    tuned.tokenizer = tok
    return dataclasses.replace(backbone, tokenizer=tok)


def tune(task: str, method: str, model: str | None = None, *, out: str, **kwargs) -> dict:
    """The Python API behind ``adaptlab tune``: load, apply the method, train, write the adapter.
    ``train_values`` are TrainConfig fields (None: keep the default). ``init``: an adapter folder
    of the same method whose weights the run starts from (continued training, prompt transfer).
    ``vocab``: an ``adaptlab vocab --extend`` folder whose added tokens train with the method.
    ``out`` is locked for the run (``outputs.claim_folder``): a second run on it is refused."""
    with claim_folder(out, enabled=process_state().is_main_process):
        return _tune(task, method, model, out=out, **kwargs)


def _tune(task: str, method: str, model: str | None = None, *, out: str, sets: dict | None = None,
          resume: bool = False, data: str | None = None, progress: bool = True, backbone=None,
          init: str | None = None, vocab: str | None = None, **train_values) -> dict:
    from adaptlab.data import load_split
    from adaptlab.errors import DataError
    from adaptlab.models import load_backbone, resolve_name
    from adaptlab.tasks import load_task
    from adaptlab.tuning import apply_method, check_requirements, check_task, get_method

    from adaptlab.train.preference import PreferenceConfig

    spec = load_task(task)
    m, mcfg, pcfg, tcfg = build_configs(method, sets, train_values, PreferenceConfig, "feedback option")
    check_requirements(method)
    if spec.schema == "preference" and pcfg.objective == "task":
        raise ConfigError(f"task {spec.name} is a preference task: pass --set objective=dpo, --set objective=reward, "
                          "or --set objective=grpo with --set reward_model=DIR")
    if pcfg.objective in ("dpo", "reward") and spec.schema != "preference":
        raise ConfigError(f"--set objective={pcfg.objective}: task {spec.name} is {spec.schema}, not a preference task")
    if pcfg.objective == "grpo":
        from adaptlab.train.grpo import check_task as check_grpo_task

        try:
            check_grpo_task(spec, pcfg.reward_model)
        except ConfigError as e:
            raise ConfigError(f"--set objective=grpo: {e}") from None
        if pcfg.reward_model:
            from adaptlab.train.reward import check_reward_adapter
            from adaptlab.tuning.io import read_adapter

            check_reward_adapter(pcfg.reward_model)
            read_adapter(pcfg.reward_model)
            pcfg = dataclasses.replace(pcfg, reward_model=str(Path(pcfg.reward_model).resolve()))
    if pcfg.objective in ("dpo", "grpo") and not get_method(method).prefix:
        raise ConfigError(f"--set objective={pcfg.objective}: the reference is the model with its adapter off; "
                          f"method {method} trains the base weights, so there is none")
    if init:
        from adaptlab.train.reward import is_reward_adapter

        if is_reward_adapter(init) and pcfg.objective != "reward":
            raise ConfigError(f"--init {init}: a reward model adapter, not a policy")
    best_source = init == "best-source"
    if best_source and not hasattr(m.module, "pick_source"):
        raise ConfigError(f"--init best-source: only a method with a source library takes it (spot), not {method}")
    if init and not best_source:
        from adaptlab.tuning.io import read_adapter

        read_adapter(init)
    model_name = backbone.name if backbone is not None else resolve_name(model)
    resolved = {"task": spec.name, "task_spec": spec.to_dict(), "method": method, "model": model_name,
                "method_config": config_dict(mcfg), "train_config": config_dict(tcfg), "data": data}
    if pcfg.objective != "task":
        resolved["feedback_config"] = config_dict(pcfg)
    if init:
        resolved["init"] = init if best_source else str(Path(init).resolve())
    if vocab:
        from adaptlab.vocab import read_extension

        read_extension(vocab)
        resolved["vocab"] = str(Path(vocab).resolve())
    outp = Path(out)
    state = process_state()                      # under a multi-process launch: the main one writes
    prepare_out(outp, resolved, resume, "tune_config.json", "tune")
    train_ex = load_split(spec, "train", data)
    train_ex = (kshot(train_ex, spec, tcfg.shots_per_class, tcfg.seed) if tcfg.shots_per_class
                else train_subset(train_ex, tcfg.train_limit))
    if hasattr(m.module, "train_config"):              # a bad budget fails here, before anything is written
        m.module.train_config(mcfg, tcfg, len(train_ex))
    if hasattr(m.module, "prepare_config"):
        mcfg = m.module.prepare_config(mcfg, spec, train_ex)
    dev_ex = None
    if tcfg.eval:
        try:
            dev_ex = load_split(spec, "dev", data, limit=tcfg.eval_limit)
        except DataError as e:
            if state.is_main_process:
                print(f"note: no dev split, so no per-epoch evaluation; the last weights are kept ({e})",
                      file=sys.stderr)
    if backbone is None:
        backbone = load_backbone(model)
    check_task(backbone, spec)
    judge = None
    if pcfg.reward_model:                             # another base's reward model fails here, before writing
        from adaptlab.train.grpo import load_judge

        judge = load_judge(pcfg.reward_model, backbone)
    torch.manual_seed(tcfg.seed)                      # the method's initialisation is seeded too
    tuned = apply_method(backbone, method, mcfg, spec)
    if vocab:
        backbone = with_vocab(backbone, tuned, vocab)
    if best_source:
        init, ranking = m.module.pick_source(backbone, mcfg, spec, train_ex, tcfg, model_name)
        resolved["init_pick"] = {"adapter": init, "ranking": ranking}
    if init:
        from adaptlab.tuning.io import init_from

        init_from(tuned, init)
    resolved["lr"] = tcfg.lr if tcfg.lr is not None else m.default_lr(backbone.kind)
    state.wait_for_everyone()
    if state.is_main_process:
        outp.mkdir(parents=True, exist_ok=True)
        atomic_write_json(outp / "tune_config.json", {**resolved, "base": backbone.identity})
    stats = train_on_task(backbone, tuned, spec, train_ex, tcfg, outp, dev_examples=dev_ex, lr=m.default_lr(backbone.kind), resume=resume,
                          progress=progress, meta={"tune_config": "tune_config.json"}, pref=pcfg, judge=judge)
    return {"out": str(outp), "task": spec.name, "method": method, "model": model_name,
            "method_config": config_dict(mcfg), "train_config": config_dict(tcfg), **stats}
