"""``adaptlab compare``: one task, many ways to adapt one model, one table.

Each run in ``--runs "zero-shot,few-shot:k=8,lora:r=8,prompt-tuning:num_virtual_tokens=20"`` is a
prompting strategy (``prompting.STRATEGIES``) or a tuning method (``tuning.METHODS``) with its
``key=value`` options after colons. Every run x seed sees the same test examples (and, for tuning,
the same train subset and dev split); a prompting run's seed drives its random choices (demo
draws, sampling), a tuning run's seed drives initialisation and batch order. Tuned models are
scored with the same zero-shot scoring as prompting, so the numbers are comparable.

A generalist run (kind ``generalist``, ``GENERALISTS``) trains on a task mixture instead of the
task: ``instruct[:mixture=flan-mini][:method=lora][:options]`` (FLAN instruction tuning,
``train/sft.py``) or ``metaicl[:k=4][:mixture=...][:method=...][:options]`` (MetaICL,
``train/metaicl.py``), where options are the method's, SFT's or MetaICL's and the training ones.
The cluster of the mixture entry named like the compared task is held out (FLAN's held-out
evaluation: the task is never trained on; a task not in the mixture holds nothing out); the record
says which clusters were trained (``train_clusters``) and held out (``held_out``). The task is then
scored with its own template: zero-shot after ``instruct``, few-shot with k demonstrations from its
train split (the run's seed) after ``metaicl``. Like a tuning run, it takes ``--train-limit``,
``--epochs``, ``--max-steps`` (a cap), ``--batch-size`` and the seeds, and its record has the
trainable parameters, adapter bytes, seconds, steps and the trainer's resolved config.

A feedback run (kind ``feedback``, ``feedback.py``) learns from feedback on the task itself:
``reward-model`` and ``dpo`` on a preference task's pairs (scored by held-out pairwise accuracy),
``grpo`` on a numeric qa task (exact-match reward; scored by the task metric before and after) or,
with ``:reward_model=DIR``, on a preference task's prompts (scored by that reward model).

``DIR/results.jsonl`` gets one record per finished run x seed (written atomically, in full, after
each one). Re-running with the same ``--out`` keeps the finished records and redoes the rest (with
more ``--seeds``, only the new seeds run);
an interrupted tuning or generalist run continues from its last checkpoint. ``DIR/report.md`` and
``DIR/report.html`` are rebuilt from the records at the end (``report.py``).

Seconds: a record's ``train_seconds`` (the report's train_s) is the whole training cost of its
adapter: the seconds of its stages (in every run that shares them) and of every step its
checkpoints kept, over all invocations. ``seconds`` counts the same way: this invocation's wall
time (``wall_seconds``) plus ``seconds_before``, the training seconds this invocation did not
redo (steps kept from an interrupted invocation: the tuner's ``resumed_seconds``, and stages
already run). So ``seconds >= train_seconds`` always, resumed or not.

Progress (stderr): before each run ``[3/5] lora seed=0 (2 done in 95 s, ~150 s left)``, the
estimate being the mean seconds of this invocation's finished runs of the same kind (prompting,
tuning or generalist; of all runs, and ``or more``, before one of that kind has finished) over the
runs left; each run's own bars (``test eval``, ``tune``, ``dev eval``) beneath it; and ``compare: 5 run(s) in 6 min`` at the end.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from adaptlab.config import atomic_write_json, atomic_write_text, build_config, check, config_dict
from adaptlab import feedback, stages
from adaptlab.errors import ConfigError, ResultsNotWritten, UserError

DEFAULT_RUNS = "zero-shot,instruction,few-shot:k=4,head,lora"
RESULTS = "results.jsonl"
SETTINGS = "compare_config.json"
_clock = time.perf_counter      # the clock of the progress lines' estimate (a test's fake one)


@dataclass
class CompareConfig:
    task: str = "reviews"
    model: str | None = None
    runs: str = DEFAULT_RUNS
    seeds: int = 1
    limit: int | None = None              # test examples (the first N of the test split)
    data: str | None = None
    train_limit: int | None = 500         # tuning: train examples (same subset for every run and seed)
    epochs: int = 1
    max_steps: int | None = None          # tuning: a cap, min(max_steps, epochs x steps per epoch)
    batch_size: int = 16
    eval_limit: int | None = 100          # tuning: dev examples scored per epoch

    def __post_init__(self):
        check(self.seeds >= 1, f"seeds={self.seeds}: must be at least 1")
        check(self.limit is None or self.limit >= 1, "limit: must be at least 1")
        check(self.train_limit is None or self.train_limit >= 1, "train_limit: must be at least 1")
        check(self.epochs >= 1, "epochs: must be at least 1")
        check(self.max_steps is None or self.max_steps >= 1, "max_steps: must be at least 1")
        check(self.batch_size >= 1, "batch_size: must be at least 1")


@dataclass
class RunSpec:
    label: str                       # as the user wrote it, e.g. "lora:r=8"
    name: str                        # strategy, method or generalist trainer name
    kind: str                        # "prompt" | "tune" | "generalist" | "feedback"
    sets: dict = field(default_factory=dict)


# Generalist runs: trained on a task mixture with the compared task's cluster held out, then scored
# on the task with this strategy (MetaICL: few-shot with its k, what it meta-trains for).
GENERALISTS = {"instruct": "zero-shot", "metaicl": "few-shot"}
DEFAULT_MIXTURE = "flan-mini"


def held_out_of(mix, task) -> tuple[list[str], list[str]]:
    """(held-out clusters, training clusters) of a generalist run on ``task``: the cluster of the
    mixture entry named like the task is held out; a task not in the mixture holds nothing out."""
    from adaptlab.tasks.mixture import select

    hold = [e.cluster for e in mix.tasks if e.task.name == task.name][:1]
    entries = select(mix, hold)          # nothing left after holding it out: a ConfigError
    return hold, list(dict.fromkeys(e.cluster for e in entries))


def _check_generalist(item: str, name: str, sets: dict, task=None, model_kind=None) -> None:
    """A generalist run's options (``mixture``, ``method``, then the method's, SFT/MetaICL and
    training options) built into their configs; with ``task``, its held-out split; with
    ``model_kind`` (a callable), that the model is a decoder."""
    from adaptlab.tasks.mixture import load_mixture
    from adaptlab.train.metaicl import MetaICLConfig
    from adaptlab.train.sft import SFTConfig
    from adaptlab.train.tune import build_configs
    from adaptlab.tuning import METHODS

    rest = dict(sets)
    method, mixture = rest.pop("method", "lora"), rest.pop("mixture", DEFAULT_MIXTURE)
    if method not in METHODS:
        raise ConfigError(f"--runs {item}: unknown method {method!r}; methods: {', '.join(METHODS)}")
    try:
        build_configs(method, rest, {}, SFTConfig if name == "instruct" else MetaICLConfig, f"{name} option")
        mix = load_mixture(mixture)
        if task is not None:
            held_out_of(mix, task)
    except ConfigError as e:
        why = str(e).removeprefix("--set: ")
        raise ConfigError(f"--runs {item}: {why}" + ("; run keys: mixture, method" if "unknown key" in why else "")) \
            from None
    except UserError as e:            # a mixture that is not there or does not parse
        raise ConfigError(f"--runs {item}: mixture {e}") from None
    if model_kind is not None and model_kind() != "decoder":
        raise ConfigError(f"--runs {item}: the model is an encoder; {name} trains a decoder")


def parse_runs(text: str, *, task=None, model_kind=None) -> list[RunSpec]:
    """``"zero-shot,few-shot:k=8:selection=balanced,lora:r=8"`` -> RunSpecs, each checked (its
    options are built into its config) before anything runs. ``task`` (a Task) and ``model_kind``
    (a callable returning ``decoder`` | ``encoder``, called once, only for a generalist run) add
    the checks that need them."""
    from adaptlab.prompting import STRATEGIES, make_strategy
    from adaptlab.tuning import METHODS

    specs, seen, known = [], set(), {}

    def kind() -> str:                   # the model's kind, asked once
        if "kind" not in known:
            known["kind"] = model_kind()
        return known["kind"]

    for item in [s.strip() for s in text.split(",")]:
        if not item:
            raise ConfigError(f"--runs {text!r}: empty run name (two commas, or a trailing comma)")
        name, *opts = [p.strip() for p in item.split(":")]
        sets = {}
        for o in opts:
            k, eq, v = o.partition("=")
            if not eq or not k.strip():
                raise ConfigError(f"--runs {item!r}: option {o!r} must be key=value")
            sets[k.strip().replace("-", "_")] = v.strip()
        if item in seen:
            raise ConfigError(f"--runs: {item!r} given twice")
        seen.add(item)
        if name in STRATEGIES:
            make_strategy(name, sets)
            specs.append(RunSpec(item, name, "prompt", sets))
        elif stages.split_name(name)[1] in METHODS:
            from adaptlab.train import TrainConfig, split_sets

            staged, method = stages.split_name(name)
            _, rest = stages.check_run(item, staged, method, sets)
            mvals, tvals = split_sets(METHODS[method].Config, rest)
            build_config(METHODS[method].Config, mvals, where=f"--runs {item}")
            build_config(TrainConfig, tvals, where=f"--runs {item}")
            specs.append(RunSpec(item, name, "tune", sets))
        elif name in GENERALISTS:
            _check_generalist(item, name, sets, task, model_kind and kind)
            specs.append(RunSpec(item, name, "generalist", sets))
        elif name in feedback.FEEDBACK:
            feedback.check_run(item, name, sets, task)
            specs.append(RunSpec(item, name, "feedback", sets))
        else:
            raise ConfigError(f"--runs: unknown run {name!r}; prompting: {', '.join(STRATEGIES)}; "
                              f"tuning: {', '.join(METHODS)} (optionally after stages: "
                              f"{', '.join(s + '+' for s in stages.STAGES)}); generalist: "
                              f"{', '.join(GENERALISTS)} (trained on a mixture, the task's cluster held out); "
                              f"feedback: {', '.join(feedback.FEEDBACK)}")
    return specs


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def load_results(out: Path) -> list[dict]:
    f = out / RESULTS
    if not f.exists():
        return []
    recs = []
    for line in f.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{f}: not a results file written by adaptlab compare (bad JSON)") from None
    return recs


def _write_results(out: Path, recs: list[dict]) -> None:
    atomic_write_text(out / RESULTS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))


def _run_prompt(spec: RunSpec, seed: int, backbone, task, test, pool_loader, progress: bool = True) -> dict:
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.progress import bar
    from adaptlab.prompting import make_strategy

    strategy = make_strategy(spec.name, spec.sets)
    if any(f.name == "seed" for f in dataclasses.fields(strategy)) and "seed" not in spec.sets:
        strategy.seed = seed
    pool = pool_loader() if getattr(strategy, "needs_pool", False) else None
    random.seed(seed)
    import torch

    torch.manual_seed(seed)
    lm = make_lm(backbone, truncate=task.truncate)
    b = bar(len(test), f"{spec.label} seed={seed}", enabled=progress, leave=False)
    try:
        res = evaluate(lm, task, strategy, test, model_name=backbone.name, split="test", pool=pool, progress=b.update)
    finally:
        b.close()
    return {"metrics": res.metrics, "cost": res.cost, "trainable_params": 0, "adapter_bytes": 0,
            "train_seconds": 0.0, "config": config_dict(strategy), "train_calls": 0, "train_forwards": 0,
            "train_steps": 0}


def _score_adapter(spec: RunSpec, seed: int, backbone, body, rundir: Path, task, test, strategy, pool,
                   progress: bool):
    """The adapter in ``rundir`` on ``body`` (the base, or a stage's body, in memory: no reload
    from disk), scored on the test examples with ``strategy``, as every run is."""
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.progress import bar
    from adaptlab.tuning.io import load_adapter

    body, tuned = load_adapter(rundir, backbone=body)
    lm = make_lm(body, model=tuned, truncate=task.truncate)
    b = bar(len(test), f"test eval {spec.label} seed={seed}", enabled=progress, leave=False)
    try:
        return evaluate(lm, task, strategy, test, model_name=backbone.name, split="test", pool=pool,
                        progress=b.update if progress else None)
    finally:
        b.close()


def _run_tune(spec: RunSpec, seed: int, backbone, task, test, cfg: CompareConfig, rundir: Path,
              loaded: dict, progress: bool = True) -> dict:
    from adaptlab.prompting import make_strategy
    from adaptlab.train import tune

    staged, method = stages.split_name(spec.name)
    scfg, sets = stages.check_run(spec.label, staged, method, dict(spec.sets))
    prep = {"backbone": backbone, "init": None, "vocab": None, "seconds": 0.0, "stages": []}
    if staged:
        prep = stages.prepare(staged, scfg, method, task, backbone, rundir.parent.parent / "stages", cfg.data, loaded)
    body = prep["backbone"]
    for k, v in _budget(cfg, seed, eval_limit=cfg.eval_limit).items():
        sets.setdefault(k, v)
    resume = (rundir / "tune_config.json").exists()
    stats = tune(task.path or task.name, method, out=str(rundir), sets=sets, resume=resume, data=cfg.data,
                 backbone=body, progress=progress, init=prep["init"], vocab=prep["vocab"])
    res = _score_adapter(spec, seed, backbone, body, rundir, task, test, make_strategy("zero-shot"), None, progress)
    rec = {"metrics": res.metrics, "cost": res.cost, **_trained(stats, rundir),
           "train_seconds": round(stats["train_seconds"] + prep["seconds"], 2),
           "config": {"method_config": stats["method_config"], "train_config": stats["train_config"]},
           "best_dev": stats.get("best_dev"),
           # training seconds in train_seconds that this invocation did not spend (see the module doc)
           "seconds_before": round(stats.get("resumed_seconds", 0.0)
                                   + sum(s.get("seconds", 0.0) for s in prep["stages"] if s.get("reused")), 2)}
    if staged:
        rec["stages"] = prep["stages"]
        rec["config"]["stage_config"] = prep["config"]
    return rec


def _run_generalist(spec: RunSpec, seed: int, backbone, task, test, cfg: CompareConfig, rundir: Path, pool_loader,
                    progress: bool = True) -> dict:
    """Train ``instruct`` or ``metaicl`` on the run's mixture minus ``task``'s cluster (FLAN's
    held-out evaluation: the task is never trained on), then score ``task`` with its own template:
    zero-shot after instruction tuning, few-shot with k train demonstrations after MetaICL."""
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks.mixture import load_mixture
    from adaptlab.train.metaicl import metaicl
    from adaptlab.train.sft import instruct

    sets = dict(spec.sets)
    method, mixture = sets.pop("method", "lora"), sets.pop("mixture", DEFAULT_MIXTURE)
    hold, trained = held_out_of(load_mixture(mixture), task)
    for k, v in _budget(cfg, seed).items():             # as for a tuning run; a run's own options override
        sets.setdefault(k, v)
    trainer = instruct if spec.name == "instruct" else metaicl
    stats = trainer(out=str(rundir), mixture=mixture, hold_out=hold, method=method, sets=sets, backbone=backbone,
                    resume=(rundir / f"{spec.name}_config.json").exists(), progress=progress)
    config = json.loads((rundir / f"{spec.name}_config.json").read_text())
    strategy = make_strategy(GENERALISTS[spec.name])
    pool = None
    if spec.name == "metaicl":
        strategy = make_strategy("few-shot", {"k": config["metaicl_config"]["k"], "seed": seed})
        pool = pool_loader()
    res = _score_adapter(spec, seed, backbone, backbone, rundir, task, test, strategy, pool, progress)
    return {"metrics": res.metrics, "cost": res.cost, **_trained(stats, rundir), "config": config,
            "eval_config": {"strategy": GENERALISTS[spec.name], **config_dict(strategy)},
            "held_out": hold, "train_clusters": trained}


def _run_feedback(spec: RunSpec, seed: int, backbone, task, test, cfg: CompareConfig, rundir: Path,
                  progress: bool = True) -> dict:
    """A reward model, DPO or GRPO trained on the task with compare's budget (``feedback.py``)."""
    stats, scored = feedback.run(spec, backbone, task, test, _budget(cfg, seed, eval_limit=cfg.eval_limit),
                                 cfg.data, rundir, progress)
    return {**scored, **_trained(stats, rundir)}


def _budget(cfg: CompareConfig, seed: int, **extra) -> dict:
    """The training values every trained run gets from compare (a run's own options override them);
    ``--max-steps`` is a cap: min(max_steps, epochs x steps per epoch)."""
    tv = {"seed": seed, "train_limit": cfg.train_limit, "epochs": cfg.epochs, "step_cap": cfg.max_steps,
          "batch_size": cfg.batch_size, **extra}
    return {k: v for k, v in tv.items() if v is not None}


def _trained(stats: dict, rundir: Path) -> dict:
    """The record fields of a trained adapter, from its tuner's stats (tuning, generalist, feedback)."""
    return {"trainable_params": stats["trainable_params"], "adapter_bytes": stats["adapter_bytes"],
            "train_seconds": stats["train_seconds"], "adapter": str(rundir),
            "train_calls": stats.get("train_calls", 0), "train_forwards": stats.get("train_forwards", 0),
            "train_steps": stats.get("steps", 0), "resumed_from_step": stats.get("resumed_from_step", 0),
            "seconds_before": round(stats.get("resumed_seconds", 0.0), 2)}


def _secs(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _so_far(rest: list, took: dict[str, list[float]], elapsed: float) -> str:
    """`` (2 done in 95 s, ~150 s left)`` before a run: the seconds left are, for every run still to
    do (this one included), the mean of the finished runs of its kind (prompt / tune), or of all
    (then ``or more``: a kind not timed yet, tuning after prompting, is likely slower)."""
    done = sum(len(v) for v in took.values())
    if not done:
        return ""
    mean_all = sum(sum(v) for v in took.values()) / done
    left = sum(sum(took[s.kind]) / len(took[s.kind]) if s.kind in took else mean_all for s, _ in rest)
    guess = any(s.kind not in took for s, _ in rest)     # a tuning run timed by prompting runs: more, likely
    return f" ({done} done in {_secs(elapsed)}, ~{_secs(left)} left{' or more' if guess else ''})"


def compare(cfg: CompareConfig, out: str, *, progress: bool = True) -> list[dict]:
    """Run every run x seed not yet in ``out/results.jsonl``; write the report; return the records.
    ``out`` is locked for the comparison: a second ``compare`` on it is refused while this one runs."""
    from adaptlab.outputs import claim_folder

    with claim_folder(out):
        return _compare(cfg, out, progress=progress)


def _compare(cfg: CompareConfig, out: str, *, progress: bool = True) -> list[dict]:
    from adaptlab.data import load_split
    from adaptlab.models import kind_of_ref, load_backbone, resolve_name
    from adaptlab.outputs import holds_files
    from adaptlab.report import write_report
    from adaptlab.tasks import load_task

    task = load_task(cfg.task)
    specs = parse_runs(cfg.runs, task=task, model_kind=lambda: kind_of_ref(cfg.model))
    outp = Path(out)
    settings = {k: v for k, v in config_dict(cfg).items() if k != "runs"}
    settings["model"] = resolve_name(cfg.model)
    if outp.exists() and not outp.is_dir():
        raise ConfigError(f"{outp}: exists and is not a folder")
    if (outp / SETTINGS).exists():
        prev = json.loads((outp / SETTINGS).read_text())
        diff = [k for k in settings if k != "seeds" and prev.get(k) != settings[k]]   # more seeds: resume
        if diff:
            raise ConfigError(f"{outp}: holds a comparison with other settings ({diff[0]}: {prev.get(diff[0])!r} "
                              f"vs {settings[diff[0]]!r}); use another --out")
    elif holds_files(outp):
        raise ConfigError(f"{outp}: folder is not empty and holds no comparison; choose another --out")
    from adaptlab.progress import status

    with status(f"reading {task.name} test data"):
        test = load_split(task, "test", cfg.data, cfg.limit)   # bad data fails before any model loads
    pool_cache: dict = {}
    loaded: dict = {}                                            # pretrained bodies of tapt/dapt stages

    def pool_loader():
        if "pool" not in pool_cache:
            pool_cache["pool"] = load_split(task, "train", cfg.data)
        return pool_cache["pool"]

    backbone = load_backbone(cfg.model)
    outp.mkdir(parents=True, exist_ok=True)
    atomic_write_json(outp / SETTINGS, settings)
    recs = [r for r in load_results(outp) if r.get("status") == "ok"]
    done = {(r["run"], r["seed"]) for r in recs}
    todo = [(s, seed) for s in specs for seed in range(cfg.seeds) if (s.label, seed) not in done]
    if done:
        print(f"resuming: {len(done)} finished run(s) kept, {len(todo)} to do", file=sys.stderr)
    t_all = _clock()
    took: dict[str, list[float]] = {}            # kind -> seconds of each run finished in this invocation
    for i, (spec, seed) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {spec.label} seed={seed}{_so_far(todo[i - 1:], took, _clock() - t_all)}",
              file=sys.stderr)
        t0 = time.perf_counter()
        t_run = _clock()
        rec = {"run": spec.label, "name": spec.name, "kind": spec.kind, "seed": seed, "task": task.name,
               "model": backbone.name, "metric": task.metric}
        try:
            if spec.kind == "prompt":
                rec.update(_run_prompt(spec, seed, backbone, task, test, pool_loader, progress))
            elif spec.kind == "feedback":
                rec.update(_run_feedback(spec, seed, backbone, task, test, cfg,
                                         outp / "runs" / f"{_safe(spec.label)}-seed{seed}", progress))
            elif spec.kind == "generalist":
                rec.update(_run_generalist(spec, seed, backbone, task, test, cfg,
                                           outp / "runs" / f"{_safe(spec.label)}-seed{seed}", pool_loader, progress))
            else:
                rec.update(_run_tune(spec, seed, backbone, task, test, cfg,
                                     outp / "runs" / f"{_safe(spec.label)}-seed{seed}", loaded, progress))
            rec["status"] = "ok"
        except UserError as e:
            rec.update(status="failed", error=str(e))
        except Exception as e:  # a crash in one run must not lose the others
            rec.update(status="failed", error=f"{type(e).__name__}: {e}",
                       traceback=traceback.format_exc(limit=8))
        rec["wall_seconds"] = round(time.perf_counter() - t0, 2)
        rec["seconds"] = round(rec["wall_seconds"] + rec.get("seconds_before", 0.0), 2)
        recs = [r for r in recs if (r["run"], r["seed"]) != (spec.label, seed)] + [rec]
        try:
            _write_results(outp, recs)
        except OSError as e:          # a full disk: keep the records in memory, try again at the end
            print(f"  could not write {outp / RESULTS} ({e.strerror or e}); kept in memory", file=sys.stderr)
        if rec["status"] != "ok":
            print(f"  failed: {rec['error']}", file=sys.stderr)
        took.setdefault(spec.kind, []).append(_clock() - t_run)
    if todo:
        failed = sum(1 for r in recs if r.get("status") != "ok")
        print(f"compare: {len(todo)} run(s) in {_secs(_clock() - t_all)}" + (f", {failed} failed" if failed else ""),
              file=sys.stderr)
    order = {s.label: k for k, s in enumerate(specs)}
    recs.sort(key=lambda r: (order.get(r["run"], 1e9), r["seed"]))
    for path, write in ((outp / RESULTS, lambda: _write_results(outp, recs)),
                        (outp / "report.html", lambda: write_report(outp, recs, settings))):
        try:
            write()
        except OSError as e:
            raise ResultsNotWritten(path, e.strerror or str(e), recs) from None
    return recs
