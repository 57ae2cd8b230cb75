"""Feedback runs in ``adaptlab compare``: ``reward-model`` and ``dpo`` on a preference task, ``grpo``
with the exact-match reward on a numeric qa task and against a reward model on a preference task;
each trained on the task, scored on its test split, with its training curve and (grpo) the figure
before training; bad run options are one ConfigError before anything runs."""

import json

import pytest

from adaptlab.compare import CompareConfig, compare, parse_runs
from adaptlab.errors import ConfigError
from adaptlab.tasks import load_task

PAIRS = [{"prompt": "Human: how many apples?\n\nAssistant:", "chosen": "Tom has 7 apples.", "rejected": "a boring film"},
         {"prompt": "Human: is it a great movie?\n\nAssistant:", "chosen": "yes, a fine cast", "rejected": "no"},
         {"prompt": "Human: the battery?\n\nAssistant:", "chosen": "The battery is excellent.",
          "rejected": "The price is terrible. I'm returning it."}]
SUMS = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?", "answer": str(a + b)}
        for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (6, 3), (2, 7)]]


def _data(path, rows):
    """One file: every split reads it whole (the first --limit of it as test)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _cfg(model, task, data, runs):
    return CompareConfig(task=task, model=model, data=data, runs=runs, limit=3, train_limit=8, batch_size=4,
                         eval_limit=3)


def test_reward_model_dpo_and_grpo_against_it_on_a_preference_task(tmp_path, tiny_folder):
    from adaptlab.train import tune

    data = _data(tmp_path / "hh.jsonl", PAIRS * 3)
    judge = tmp_path / "judge"
    tune("hh_rlhf_harmless", "lora", tiny_folder, out=str(judge), data=data, progress=False, max_steps=2,
         batch_size=4, sets={"objective": "reward", "eval": False})
    runs = f"reward-model:max_steps=2,dpo:max_steps=2:beta=0.2,grpo:reward_model={judge}:max_steps=2:group_size=2" \
           ":max_new_tokens=4"
    out = tmp_path / "cmp"
    recs = compare(_cfg(tiny_folder, "hh_rlhf_harmless", data, runs), str(out), progress=False)
    assert [r["status"] for r in recs] == ["ok"] * 3, [r.get("error") for r in recs]
    rm, dpo, grpo = recs
    assert [r["kind"] for r in recs] == ["feedback"] * 3
    assert [r["objective"] for r in recs] == ["reward", "dpo", "grpo"]
    assert rm["metric"] == dpo["metric"] == "accuracy" and grpo["metric"] == "reward"
    assert rm["scored_as"] == "reward model" and dpo["scored_as"] == "policy (implicit reward)"
    assert dpo["metrics"]["accuracy"] == dpo["metrics"]["reward_accuracy"]
    assert dpo["config"]["feedback_config"]["beta"] == 0.2
    for r in (rm, dpo):
        assert 0.0 <= r["metrics"]["accuracy"] <= 1.0 and r["cost"]["calls"] == 6 and r["metrics"]["n"] == 3
        assert [c["step"] for c in r["curve"]] == [1, 2] and "loss" in r["curve"][0]
        assert "before" not in r
    assert "accuracy" in rm["curve"][0] and "reward_accuracy" in dpo["curve"][0]
    assert {"reward", "kl"} <= set(grpo["curve"][0]) and [c["step"] for c in grpo["curve"]] == [1, 2]
    assert set(grpo["before"]) == {"reward"} and 0.0 <= grpo["metrics"]["win_rate"] <= 1.0
    assert grpo["metrics"]["n"] == 3
    assert grpo["config"]["feedback_config"]["reward_model"] == str(judge.resolve())
    assert grpo["cost"]["calls"] == 6                                  # 3 prompts, after and before
    for r in recs:
        assert r["trainable_params"] > 0 and r["adapter_bytes"] > 0 and r["train_steps"] == 2
    md = (out / "report.md").read_text()
    assert "| reward-model:max_steps=2 | feedback |" in md
    from adaptlab.report import _n_by_run, _n_labels

    assert set(_n_by_run(recs).values()) == {3}                         # n for the plots' error bars and titles
    assert _n_labels({"task": "hh_rlhf_harmless"}) == 2                  # pairwise accuracy: chance 0.5


def test_grpo_on_a_numeric_task_scores_the_metric_before_and_after(tmp_path, tiny_folder):
    data = _data(tmp_path / "sums.jsonl", SUMS)
    task = tmp_path / "sums.yaml"                    # multiarith's fields, every split the whole file
    spec = load_task("multiarith").to_dict()
    task.write_text(json.dumps({**{k: spec[k] for k in ("schema", "instruction", "template", "answer_type", "metric",
                                                         "stop")}, "name": "sums", "max_new_tokens": 8}))
    recs = compare(_cfg(tiny_folder, str(task), data, "zero-shot,grpo:max_steps=1:group_size=2:max_new_tokens=4"),
                   str(tmp_path / "cmp"), progress=False)
    assert [r["status"] for r in recs] == ["ok"] * 2, [r.get("error") for r in recs]
    zs, grpo = recs
    assert grpo["metric"] == "exact_match" and grpo["metrics"]["n"] == 3
    assert grpo["before"] == {"exact_match": zs["metrics"]["exact_match"]}      # the same prompt and decoding
    assert [c["step"] for c in grpo["curve"]] == [1] and "reward" in grpo["curve"][0]


@pytest.mark.parametrize("task,runs,why", [
    ("reviews", "dpo", "dpo trains on preference pairs; task reviews is classification"),
    ("reviews", "reward-model", "preference pairs"),
    ("hh_rlhf_harmless", "grpo", "needs --set reward_model=DIR"),
    ("reviews", "grpo", "numeric qa task"),
    ("hh_rlhf_harmless", "dpo:objective=reward", "set by the run's name"),
    ("hh_rlhf_harmless", "dpo:method=nope", "unknown method 'nope'"),
    ("hh_rlhf_harmless", "dpo:bogus=1", "run keys: method"),
    ("hh_rlhf_harmless", "dpo:beta=0", "beta=0.0: must be > 0"),
    ("hh_rlhf_harmless", "reward-model:reward_model=x", "only GRPO takes a reward model"),
])
def test_bad_feedback_runs_are_one_config_error(task, runs, why):
    with pytest.raises(ConfigError, match=why.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_runs(runs, task=load_task(task))
    assert "\n" not in str(e.value) and str(e.value).startswith(f"--runs {runs}")
