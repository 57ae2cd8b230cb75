"""``adaptlab compare``'s learning-from-feedback runs (kind ``feedback``): ``reward-model``, ``dpo``
and ``grpo``, each trained on the compared task through ``adaptlab tune --set objective=...``
(``train/reward.py``, ``train/dpo.py``, ``train/grpo.py``) and scored on the comparison's test
examples:

    reward-model   pairwise accuracy of r(x, y_w) > r(x, y_l) on the test pairs        (chance 0.5)
    dpo            implicit reward accuracy, beta (log pi/pi_ref (y_w) - log pi/pi_ref (y_l)) > 0   (chance 0.5)
    grpo           the task's metric, zero-shot, before (adapter off) and after, on a numeric qa task
                   (the exact-match reward); with ``reward_model=DIR`` on a preference task, the reward
                   model's mean score of greedy replies to the test prompts, before and after

Options after the run's name: ``method`` (default ``lora``: the reference of DPO and GRPO is the
model with its adapter off), then the method's, the feedback objective's (``beta``, ``group_size``,
``reward_model``, ...; ``train.preference.PreferenceConfig``) and the loop's. The record keeps the
training log's per-step rows as ``curve`` (``log_every`` is 1 here) for the report's reward and KL
curves, and for ``grpo`` the ``before`` figure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from adaptlab.errors import ConfigError

FEEDBACK = {"reward-model": "reward", "dpo": "dpo", "grpo": "grpo"}     # run name -> --set objective=
CURVE_KEYS = ("loss", "reward", "kl", "reward_std", "reply_tokens", "accuracy", "margin", "reward_accuracy",
              "rewards_margin", "rewards_chosen", "rewards_rejected")


def _sets(name: str, sets: dict) -> tuple[str, dict]:
    rest = dict(sets)
    method = rest.pop("method", "lora")
    if "objective" in rest:
        raise ConfigError(f"objective: set by the run's name ({name} trains objective={FEEDBACK[name]})")
    rest["objective"] = FEEDBACK[name]
    return method, rest


def check_run(item: str, name: str, sets: dict, task=None) -> None:
    """A feedback run's options built into their configs; with ``task``, that the objective fits it."""
    from adaptlab.train.preference import PreferenceConfig
    from adaptlab.train.tune import build_configs
    from adaptlab.tuning import METHODS

    try:
        method, rest = _sets(name, sets)
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
        _, _, pcfg, _ = build_configs(method, rest, {}, PreferenceConfig, f"{name} option")
        if task is not None:
            check_task(name, task, pcfg.reward_model)
    except ConfigError as e:
        why = str(e).removeprefix("--set: ")
        raise ConfigError(f"--runs {item}: {why}" + ("; run keys: method" if "unknown key" in why else "")) from None


def check_task(name: str, task, reward_model: str | None) -> None:
    if name == "grpo":
        from adaptlab.train.grpo import check_task as check_grpo

        check_grpo(task, reward_model)
    elif task.schema != "preference":
        raise ConfigError(f"{name} trains on preference pairs; task {task.name} is {task.schema}")


def curve(rundir: Path, keys=CURVE_KEYS) -> list[dict]:
    """The training log's per-step rows: step and the ``keys`` it logged."""
    path = rundir / "log.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    return [{"step": r["step"], **{k: r[k] for k in keys if k in r}} for r in rows if r.get("event") == "train"]


def run(spec, backbone, task, test: list[dict], budget: dict, data, rundir: Path,
        progress: bool = True) -> tuple[dict, dict]:
    """Train the run's objective on ``task`` with compare's ``budget`` (the loop's values a run's own
    options override), then score it on ``test``: (the tuner's stats, the scored part of the record)."""
    from adaptlab.train import tune
    from adaptlab.tuning.io import load_adapter

    method, sets = _sets(spec.name, spec.sets)
    for k, v in {**budget, "log_every": 1}.items():
        sets.setdefault(k, v)
    stats = tune(task.path or task.name, method, out=str(rundir), sets=sets, resume=(rundir / "tune_config.json").exists(),
                 data=data, backbone=backbone, progress=progress)
    _, tuned = load_adapter(rundir, backbone=backbone)
    fcfg = json.loads((rundir / "tune_config.json").read_text())["feedback_config"]
    t0 = time.perf_counter()
    scored = (_score_pairs(task, backbone, tuned, rundir, test) if spec.name != "grpo"
              else _score_policy(task, backbone, tuned, test, fcfg))
    scored["cost"]["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return stats, {**scored, "objective": FEEDBACK[spec.name], "curve": curve(rundir),
                   "config": {"method_config": stats["method_config"], "train_config": stats["train_config"],
                              "feedback_config": fcfg}}


def _score_pairs(task, backbone, tuned, rundir: Path, test: list[dict]) -> dict:
    """reward-model / dpo: held-out pairwise (implicit) reward accuracy as ``accuracy``."""
    from adaptlab.train.reward import pair_scorer

    obj, what = pair_scorer(task, backbone, tuned, rundir)
    feats = obj.featurize(test)
    m = obj.evaluate(tuned, test, feats=feats)
    if "reward_accuracy" in m:                                   # DPO: its implicit reward's accuracy
        m["accuracy"] = m["reward_accuracy"]
    tokens = sum(2 * len(f["prompt"]) + len(f["chosen"]) + len(f["rejected"]) for f in feats)
    return {"metrics": {**{k: round(v, 6) for k, v in m.items()}, "n": len(test)}, "metric": "accuracy",
            "scored_as": what,
            "truncated_test_pairs": obj.truncated,
            "cost": {"calls": 2 * len(test), "prompt_tokens": tokens, "generated_tokens": 0}}


def _score_policy(task, backbone, tuned, test: list[dict], fcfg: dict) -> dict:
    """grpo: after, and before with the adapter off (the same engine, examples and greedy decoding)."""
    from adaptlab.engine import make_lm

    lm = make_lm(backbone, model=tuned, truncate=task.truncate)
    if fcfg.get("reward_model"):
        from adaptlab import text as text_path
        from adaptlab.train.grpo import load_judge, mean_reward

        judge = load_judge(fcfg["reward_model"], backbone)
        prompts = [text_path.prompt(task, backbone.tokenizer, ex) for ex in test]     # GRPO's prompts
        after = mean_reward(lm, prompts, judge, fcfg["max_new_tokens"], task.stop)
        with tuned.disable_adapters():
            before = mean_reward(lm, prompts, judge, fcfg["max_new_tokens"], task.stop)
        wins = sum((a > b) + 0.5 * (a == b) for a, b in zip(after["scores"], before["scores"]))
        return {"metrics": {"reward": round(after["reward"], 6), "win_rate": round(wins / max(1, len(test)), 6),
                            "n": len(test)},
                "metric": "reward", "before": {"reward": round(before["reward"], 6)}, "cost": lm.cost.to_dict()}
    from adaptlab.evaluate import evaluate
    from adaptlab.prompting import make_strategy

    after = evaluate(lm, task, make_strategy("zero-shot"), test, model_name=backbone.name, split="test")
    with tuned.disable_adapters():
        base = evaluate(lm, task, make_strategy("zero-shot"), test, model_name=backbone.name, split="test")
    return {"metrics": after.metrics, "metric": task.metric, "before": {task.metric: base.metrics[task.metric]},
            "cost": after.cost}
