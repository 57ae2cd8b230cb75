"""Learning from feedback on real data with the default decoder (smollm2-135m-instruct, lora), bounded
for a CPU: a subset of train pairs, a short max length, few steps. Prints its figures and appends
one JSON row per run to bench/results/rlhf.jsonl.

    python bench/rlhf_real.py rm   --seed 0 --train-limit 400 --test-limit 223
    python bench/rlhf_real.py dpo  --seed 0 --rm OUT/rm-s0 --gen-prompts 24
    python bench/rlhf_real.py grpo --seed 0 --test-limit 60
    python bench/rlhf_real.py grpo-rm --seed 0 --rm OUT/rm-s0 --train-limit 16 --max-steps 8 --gen-prompts 16

rm:   reward model (Bradley-Terry, lora body) -> held-out pairwise accuracy on the test split.
dpo:  DPO (beta 0.1) -> held-out implicit reward accuracy; greedy replies to test prompts before
      (adapters off) and after, judged by the reward model trained on the train split: win rate.
grpo: GRPO with the exact-match reward on --task (multiarith; train = its train split, test[:50]) ->
      test accuracy (test[100:], the first --test-limit) before/after with the same greedy decoding,
      and the per-step reward and KL.
grpo-rm: GRPO on hh_rlhf_harmless's train prompts with the reward model at --rm as the reward
      (InstructGPT's RL stage) -> the reward model's mean score of greedy replies to the first
      --gen-prompts test prompts before (adapters off) and after, the win rate, and the per-step
      reward and KL. The judge of before/after is the same reward model GRPO was trained against.
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "rlhf.jsonl"

from adaptlab.feedback import curve  # noqa: E402  (the training log's per-step rows)


def run_rm(a, backbone, outdir: Path) -> dict:
    from adaptlab.data import load_split
    from adaptlab.tasks import load_task
    from adaptlab.train import tune
    from adaptlab.train.reward import RewardModel

    out = outdir / f"rm-s{a.seed}"
    res = tune("hh_rlhf_harmless", "lora", out=str(out), backbone=backbone, progress=False, seed=a.seed,
               train_limit=a.train_limit, batch_size=a.batch_size, epochs=a.epochs,
               lr=a.lr, sets={"objective": "reward", "max_seq_len": a.max_len, "eval": False})
    task = load_task("hh_rlhf_harmless")
    rm = RewardModel(out, backbone=backbone, max_len=a.max_len)
    from adaptlab import text as text_path

    def pairwise(exs: list[dict]) -> tuple[float, float]:
        ctx = [text_path.prompt(task, backbone.tokenizer, ex) for ex in exs]
        c = rm.score([(p, task.target.format(answer=ex["chosen"])) for p, ex in zip(ctx, exs)])
        r = rm.score([(p, task.target.format(answer=ex["rejected"])) for p, ex in zip(ctx, exs)])
        return sum(x > y for x, y in zip(c, r)) / len(exs), sum(x - y for x, y in zip(c, r)) / len(exs)

    test = load_split(task, "test", limit=a.test_limit)
    acc, margin = pairwise(test)
    dev = {}
    if a.dev:                    # the last 200 train pairs, never trained on: where settings are chosen
        dev_acc, _ = pairwise(load_split(task, "dev"))
        dev = {"dev_pairwise_accuracy": round(dev_acc, 4)}
    return {"test_pairs": len(test), "test_pairwise_accuracy": round(acc, 4), **dev,
            "test_mean_margin": round(margin, 4), "lr": a.lr,
            "train_steps": res["steps"], "train_seconds": res["train_seconds"],
            "truncated_pairs": res.get("truncated_pairs"), "curve": curve(out, ["loss", "accuracy", "margin"])}


def run_dpo(a, backbone, outdir: Path) -> dict:
    from adaptlab import text as text_path
    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.tasks import load_task
    from adaptlab.train import tune
    from adaptlab.train.dpo import DPO
    from adaptlab.train.reward import RewardModel
    from adaptlab.tuning.io import load_adapter

    out = outdir / f"dpo-s{a.seed}"
    res = tune("hh_rlhf_harmless", "lora", out=str(out), backbone=backbone, progress=False, seed=a.seed,
               train_limit=a.train_limit, batch_size=a.batch_size, epochs=a.epochs,
               sets={"objective": "dpo", "beta": a.beta, "max_seq_len": a.max_len, "eval": False})
    task = load_task("hh_rlhf_harmless")
    test = load_split(task, "test", limit=a.test_limit)
    _, tuned = load_adapter(out, backbone=backbone)
    held = DPO(backbone.tokenizer, task, a.max_len, a.beta).evaluate(tuned, test, batch_size=a.batch_size)
    prompts = [text_path.prompt(task, backbone.tokenizer, ex) for ex in test[: a.gen_prompts]]
    lm = make_lm(backbone, model=tuned, batch_size=8)
    after = [o[0] for o in lm.generate(prompts, max_new_tokens=a.gen_tokens, temperature=0.0, stop=task.stop)]
    with tuned.disable_adapters():
        before = [o[0] for o in lm.generate(prompts, max_new_tokens=a.gen_tokens, temperature=0.0, stop=task.stop)]
    rm = RewardModel(a.rm, backbone=backbone, max_len=a.max_len)
    sb = rm.score(list(zip(prompts, before)))
    sa = rm.score(list(zip(prompts, after)))
    wins = sum(x > y for x, y in zip(sa, sb)) + 0.5 * sum(x == y for x, y in zip(sa, sb))
    return {"test_pairs": len(test), "implicit_reward_accuracy": round(held["reward_accuracy"], 4),
            "held_out_margin": round(held["rewards_margin"], 4), "held_out_loss": round(held["loss"], 4),
            "gen_prompts": len(prompts), "rm_mean_before": round(sum(sb) / len(sb), 4),
            "rm_mean_after": round(sum(sa) / len(sa), 4), "win_rate_after_over_before": round(wins / len(sb), 4),
            "identical_replies": sum(x == y for x, y in zip(before, after)),
            "train_steps": res["steps"], "train_seconds": res["train_seconds"], "judge": str(a.rm),
            "curve": curve(out, ["loss", "reward_accuracy", "rewards_margin"]),
            "example": {"prompt": "hh_rlhf_harmless test[0]", "before": before[0][:200], "after": after[0][:200]}}


def run_grpo(a, backbone, outdir: Path) -> dict:
    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.evaluate import evaluate
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task
    from adaptlab.train import tune
    from adaptlab.tuning.io import load_adapter

    task = load_task(a.task)
    test = load_split(task, "test", limit=a.test_limit)

    def acc(model) -> float:
        lm = make_lm(backbone, model=model, batch_size=16)
        return evaluate(lm, task, make_strategy("zero-shot"), test).score

    before = acc(None)
    out = outdir / f"grpo-{a.task}-s{a.seed}"
    res = tune(a.task, "lora", out=str(out), backbone=backbone, progress=False, seed=a.seed,
               train_limit=a.train_limit, batch_size=a.batch_size, max_steps=a.max_steps,
               sets={"objective": "grpo", "group_size": a.group, "max_new_tokens": a.gen_tokens,
                     "max_seq_len": a.max_len, "eval": False, "log_every": 1, "kl_beta": a.kl_beta})
    _, tuned = load_adapter(out, backbone=backbone)
    after = acc(tuned)
    return {"task": a.task, "group": a.group, "gen_tokens": a.gen_tokens, "test_examples": len(test),
            "accuracy_before": round(before, 4), "accuracy_after": round(after, 4),
            "train_steps": res["steps"], "train_seconds": res["train_seconds"],
            "curve": curve(out, ["loss", "reward", "kl", "reward_std"])}


def run_grpo_rm(a, backbone, outdir: Path) -> dict:
    from adaptlab.data import load_split
    from adaptlab.engine import make_lm
    from adaptlab.tasks import load_task
    from adaptlab.train import tune
    from adaptlab.train.grpo import GRPO, mean_reward
    from adaptlab.train.preference import PreferenceConfig
    from adaptlab.tuning.io import load_adapter

    task = load_task("hh_rlhf_harmless")
    test = load_split(task, "test", limit=a.gen_prompts)
    out = outdir / f"grpo-rm-s{a.seed}"
    res = tune("hh_rlhf_harmless", "lora", out=str(out), backbone=backbone, progress=False, seed=a.seed,
               train_limit=a.train_limit, batch_size=a.batch_size, max_steps=a.max_steps,
               sets={"objective": "grpo", "reward_model": a.rm, "group_size": a.group,
                     "max_new_tokens": a.gen_tokens, "max_seq_len": a.max_len, "eval": False, "log_every": 1,
                     "kl_beta": a.kl_beta})
    _, tuned = load_adapter(out, backbone=backbone)
    pcfg = PreferenceConfig(objective="grpo", reward_model=a.rm)
    obj = GRPO(backbone, tuned, task, a.max_len, pcfg)
    lm = make_lm(backbone, model=tuned, batch_size=8)
    prompts = [obj.render(ex) for ex in test]
    after = mean_reward(lm, prompts, obj.judge, a.gen_tokens, task.stop)
    with tuned.disable_adapters():
        before = mean_reward(lm, prompts, obj.judge, a.gen_tokens, task.stop)
    sa, sb = after["scores"], before["scores"]
    wins = sum(x > y for x, y in zip(sa, sb)) + 0.5 * sum(x == y for x, y in zip(sa, sb))
    return {"gen_prompts": len(test), "rm_mean_before": round(before["reward"], 4),
            "rm_mean_after": round(after["reward"], 4), "win_rate_after_over_before": round(wins / len(sb), 4),
            "identical_replies": sum(x == y for x, y in zip(before["replies"], after["replies"])),
            "train_steps": res["steps"], "train_seconds": res["train_seconds"], "judge": str(a.rm),
            "group": a.group, "gen_tokens": a.gen_tokens,
            "curve": curve(out, ["loss", "reward", "kl", "reward_std", "reply_tokens"]),
            "example": {"before": before["replies"][0][:200], "after": after["replies"][0][:200]}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["rm", "dpo", "grpo", "grpo-rm"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=400)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--kl-beta", type=float, default=0.04)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--rm", default=None)
    p.add_argument("--task", default="multiarith", help="grpo: a numeric qa task (multiarith, singleeq, gsm8k)")
    p.add_argument("--gen-prompts", type=int, default=24)
    p.add_argument("--gen-tokens", type=int, default=48)
    p.add_argument("--out", default="/tmp/adaptlab-rlhf")
    p.add_argument("--lr", type=float, default=None, help="rm: learning rate (default: the method's)")
    p.add_argument("--dev", action="store_true", help="rm: also the pairwise accuracy on the dev split")
    a = p.parse_args()
    from adaptlab.models import load_backbone

    torch.manual_seed(a.seed)
    backbone = load_backbone(None)
    t0 = time.perf_counter()
    row = {"what": a.what, "model": backbone.name, "seed": a.seed, "train_limit": a.train_limit,
           "max_len": a.max_len, "batch_size": a.batch_size, "epochs": a.epochs, "date": time.strftime("%Y-%m-%d"),
           "torch_threads": torch.get_num_threads()}
    row.update({"rm": run_rm, "dpo": run_dpo, "grpo": run_grpo, "grpo-rm": run_grpo_rm}[a.what](a, backbone,
                                                                                              Path(a.out)))
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "curve"}, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
