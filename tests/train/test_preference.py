"""Learning from feedback: the preference schema and its bad input, DPO and the reward model
against trl (the oracle: same tiny model, same batches, within 1e-4), GRPO's group advantages and
one step through the one loop."""

from __future__ import annotations

from conftest import make_tiny_decoder, run_cli, save_tiny

import copy
import json

import pytest
import torch

from adaptlab.errors import DataError
from adaptlab.tasks import load_task

PAIRS = [{"prompt": "Human: how many apples?\n\nAssistant:", "chosen": "Tom has 7 apples.", "rejected": "a boring film"},
         {"prompt": "Human: is it a great movie?\n\nAssistant:", "chosen": "yes, a fine cast", "rejected": "no"},
         {"prompt": "Human: the battery?\n\nAssistant:", "chosen": "The battery is excellent.",
          "rejected": "The price is terrible. I'm returning it."}]


def _write(folder, rows, split="train"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _tuned(seed=1):
    from adaptlab.tuning import apply_method

    bb = make_tiny_decoder()
    tuned = apply_method(bb, "lora", {"dropout": 0.0}, load_task("hh_rlhf_harmless"))
    g = torch.Generator().manual_seed(seed)
    for p in tuned.parameters():
        if p.requires_grad:                      # B != 0: the policy differs from the reference
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return bb, tuned


# --------------------------------------------------------------------------- schema and bad input


def test_preference_records_are_checked(tmp_path):
    from adaptlab.data import load_split

    task = load_task("hh_rlhf_harmless")
    d = _write(tmp_path / "d", PAIRS)
    assert [r["chosen"] for r in load_split(task, "train", str(d / "train.jsonl"))] == [p["chosen"] for p in PAIRS]
    same = dict(PAIRS[0], rejected=PAIRS[0]["chosen"] + " ")
    with pytest.raises(DataError, match="same reply"):
        load_split(task, "train", str(_write(tmp_path / "s", [same]) / "train.jsonl"))
    with pytest.raises(DataError, match="'rejected' is empty"):
        load_split(task, "train", str(_write(tmp_path / "e", [dict(PAIRS[0], rejected="  ")]) / "train.jsonl"))


def test_long_prompts_are_cut_and_counted(capsys):
    from adaptlab.train.dpo import DPO

    bb = make_tiny_decoder()
    long = dict(PAIRS[0], prompt="Human: " + "a great movie with a fine cast " * 40 + "\n\nAssistant:")
    obj = DPO(bb.tokenizer, load_task("hh_rlhf_harmless"), 48)
    feats = obj.featurize([long, PAIRS[1]])
    assert obj.truncated == 1 and "1 of 2 preference pairs were cut" in capsys.readouterr().err
    assert all(obj.length(f) <= 48 for f in feats)


@pytest.mark.parametrize("extra", [["--set", "beta=0"], ["--set", "beta=-1"], ["--set", "loss_type=hinge"]])
def test_bad_feedback_options_exit_2_and_write_nothing(tiny_folder, tmp_path, extra, capsys):
    out = tmp_path / "o"
    d = _write(tmp_path / "d", PAIRS)
    assert run_cli(["tune", "--task", "hh_rlhf_harmless", "--method", "lora", "--model", tiny_folder, "--data", str(d),
                    "--set", "objective=dpo", *extra, "--out", str(out)]) == 2
    assert not out.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_bad_pairs_and_wrong_tasks_exit_2(tiny_folder, tmp_path, capsys):
    same = _write(tmp_path / "same", [PAIRS[0], dict(PAIRS[1], rejected=PAIRS[1]["chosen"])])
    empty = _write(tmp_path / "empty", [dict(PAIRS[0], chosen="")])
    cases = [["--task", "hh_rlhf_harmless", "--data", str(same), "--set", "objective=dpo"],
             ["--task", "hh_rlhf_harmless", "--data", str(empty), "--set", "objective=reward"],
             ["--task", "hh_rlhf_harmless", "--data", str(same)],                           # no objective given
             ["--task", "reviews", "--set", "objective=dpo"],                              # not a preference task
             ["--task", "reviews", "--set", "objective=grpo"]]                             # not a numeric task
    for i, args in enumerate(cases):
        out = tmp_path / f"o{i}"
        assert run_cli(["tune", "--method", "lora", "--model", tiny_folder, *args, "--out", str(out)]) == 2, args
        assert not out.exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err


def test_a_reward_adapter_is_refused_where_a_policy_is_expected(tiny_folder, tmp_path, capsys):
    d = _write(tmp_path / "d", PAIRS * 4) / "train.jsonl"          # one file: taken whole
    rm = tmp_path / "rm"
    assert run_cli(["tune", "--task", "hh_rlhf_harmless", "--method", "lora", "--model", tiny_folder, "--data", str(d),
                    "--set", "objective=reward", "--set", "eval=false", "--max-steps", "2", "--batch-size", "4",
                    "--out", str(rm)]) == 0
    assert (rm / "reward_head.safetensors").exists()
    capsys.readouterr()
    out = tmp_path / "dpo"
    assert run_cli(["tune", "--task", "hh_rlhf_harmless", "--method", "lora", "--model", tiny_folder, "--data", str(d),
                    "--set", "objective=dpo", "--init", str(rm), "--out", str(out)]) == 2
    assert not out.exists() and "reward model adapter, not a policy" in capsys.readouterr().err
    from adaptlab.models import load_backbone
    from adaptlab.train.reward import RewardModel

    scores = RewardModel(rm, backbone=load_backbone(tiny_folder)).score([(p["prompt"], " " + p["chosen"]) for p in PAIRS])
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    capsys.readouterr()
    assert run_cli(["eval", "--task", "hh_rlhf_harmless", "--adapter", str(rm), "--data", str(d), "--split", "train",
                    "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scored_as"] == "reward model" and doc["n"] == 12 and 0.0 <= doc["accuracy"] <= 1.0


def test_grpo_against_a_reward_model(tiny_folder, tmp_path, capsys):
    """InstructGPT's RL stage: GRPO on a preference task's prompts, the reward a trained reward
    model's score of each sampled reply; bad combinations are one line, exit 2, nothing written."""
    d = _write(tmp_path / "d", PAIRS * 4) / "train.jsonl"
    rm = tmp_path / "rm"
    base = ["tune", "--task", "hh_rlhf_harmless", "--method", "lora", "--model", tiny_folder, "--data", str(d)]
    assert run_cli(base + ["--set", "objective=reward", "--set", "eval=false", "--max-steps", "2", "--batch-size", "4",
                           "--out", str(rm)]) == 0
    lora = tmp_path / "policy"
    assert run_cli(["tune", "--task", "reviews", "--method", "lora", "--model", tiny_folder, "--max-steps", "1",
                    "--set", "eval=false", "--out", str(lora)]) == 0
    capsys.readouterr()
    bad = [["--set", "objective=grpo"],                                              # no reward model
           ["--set", "objective=grpo", "--set", f"reward_model={lora}"],               # not a reward model
           ["--set", "objective=grpo", "--set", f"reward_model={tmp_path / 'none'}"],  # not there
           ["--set", "objective=dpo", "--set", f"reward_model={rm}"]]                  # only GRPO takes one
    for i, extra in enumerate(bad):
        out = tmp_path / f"bad{i}"
        assert run_cli(base + extra + ["--out", str(out)]) == 2, extra
        assert not out.exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, (extra, err)
    out = tmp_path / "grpo"
    assert run_cli(base + ["--set", "objective=grpo", "--set", f"reward_model={rm}", "--set", "group_size=3",
                           "--set", "max_new_tokens=4", "--set", "eval=false", "--set", "log_every=1",
                           "--max-steps", "2", "--batch-size", "2", "--out", str(out)]) == 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if r["event"] == "train"]
    assert [r["step"] for r in steps] == [1, 2]
    assert all("reward" in r and "kl" in r for r in steps)
    assert any(r["reward"] not in (0.0, 1.0) for r in steps)          # a score, not an exact-match reward
    cfg = json.loads((out / "tune_config.json").read_text())
    assert cfg["feedback_config"]["reward_model"] == str(rm.resolve())


def test_grpo_rewards_are_the_judges_scores(tiny_folder):
    from adaptlab.models import load_backbone
    from adaptlab.train.grpo import GRPO, mean_reward
    from adaptlab.train.preference import PreferenceConfig
    from adaptlab.tuning import apply_method

    class Judge:
        def __init__(self):
            self.seen = []

        def score(self, pairs, batch_size=8):
            self.seen += pairs
            return [float(len(y)) for _, y in pairs]

    bb = load_backbone(tiny_folder)
    task = load_task("hh_rlhf_harmless")
    tuned = apply_method(bb, "lora", {"dropout": 0.0}, task)
    judge = Judge()
    obj = GRPO(bb, tuned, task, 128, PreferenceConfig(objective="grpo", group_size=2, reward_model="rm"), judge)
    feats = obj.featurize(PAIRS[:2])
    assert obj.render(PAIRS[0]) == PAIRS[0]["prompt"]                 # the preference task's own prompt
    obj.sample = lambda model, exs: ([obj.render(e) for e in exs], [["ab", "abcd"], ["a", "a"]])
    loss, m = obj.loss(tuned, obj.collate(feats))
    assert float(m["reward"]) == pytest.approx((2 + 4 + 1 + 1) / 4)
    assert judge.seen[0] == (PAIRS[0]["prompt"], "ab")
    loss.backward()                                  # group 1 differs in reward: a gradient; group 2 none
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tuned.parameters() if p.requires_grad)

    class LM:
        def generate(self, prompts, **kw):
            assert kw["temperature"] == 0.0 and kw["n"] == 1
            return [["xyz"] for _ in prompts]

    got = mean_reward(LM(), [obj.render(p) for p in PAIRS], judge, 8, task.stop)
    assert got["reward"] == 3.0 and got["replies"] == ["xyz"] * 3


# --------------------------------------------------------------------------- oracles: trl


def test_dpo_loss_rewards_and_accuracy_equal_trl(tmp_path):
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    from adaptlab.train.dpo import DPO
    from adaptlab.tuning.io import save_adapter

    bb, tuned = _tuned()
    obj = DPO(bb.tokenizer, load_task("hh_rlhf_harmless"), 64, beta=0.1)
    batch = obj.collate(obj.featurize(PAIRS))
    ours, m = obj.loss(tuned, batch)
    save_adapter(tmp_path / "ad", tuned)
    policy = PeftModel.from_pretrained(make_tiny_decoder().model, str(tmp_path / "ad"), is_trainable=True)
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, per_device_train_batch_size=3, report_to=[],
                     use_cpu=True, bf16=False, max_length=None)
    trainer = DPOTrainer(model=policy, ref_model=copy.deepcopy(make_tiny_decoder().model), args=args,
                         train_dataset=Dataset.from_list(PAIRS), processing_class=bb.tokenizer)
    policy.train()
    theirs = trainer.compute_loss(trainer.model, dict(batch))
    tm = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert abs(float(ours) - float(theirs)) < 1e-4
    for a, b in [("rewards_chosen", "rewards/chosen"), ("rewards_rejected", "rewards/rejected"),
                 ("reward_accuracy", "rewards/accuracies"), ("rewards_margin", "rewards/margins"),
                 ("logps_chosen", "logps/chosen"), ("logps_rejected", "logps/rejected")]:
        assert abs(float(m[a]) - tm[b]) < 1e-4, (a, float(m[a]), tm[b])
    assert float(m["rewards_margin"]) != 0.0                     # the policy is not the reference


def test_ipo_is_the_length_averaged_square():
    from adaptlab.train.dpo import dpo_losses

    pc, pr, rc, rr = (torch.tensor([v]) for v in (-10.0, -12.0, -11.0, -11.0))
    n_c, n_r = torch.tensor([4.0]), torch.tensor([2.0])
    want = ((1.0 / 4 - (-1.0) / 2) - 1 / (2 * 0.5)) ** 2
    assert torch.allclose(dpo_losses(pc, pr, rc, rr, 0.5, "ipo", n_c, n_r), torch.tensor([want]))
    assert torch.allclose(dpo_losses(pc, pr, rc, rr, 0.5), -torch.nn.functional.logsigmoid(torch.tensor([0.5 * 2.0])))


def test_reward_model_loss_equals_trl(tmp_path):
    from datasets import Dataset
    from peft import PeftModel
    from transformers import LlamaForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from adaptlab.train.reward import RewardBT
    from adaptlab.tuning.io import save_adapter

    bb, tuned = _tuned()
    obj = RewardBT(bb.tokenizer, load_task("hh_rlhf_harmless"), 64, hidden=32)
    batch = obj.collate(obj.featurize(PAIRS))
    used = set(batch["input_ids"][batch["attention_mask"].bool()].tolist())
    pad = next(i for i in range(399, 0, -1) if i not in used)   # a pad id no row uses: trl's last non-pad = our last
    assert not (batch["input_ids"][batch["attention_mask"].bool()] == pad).any()
    batch["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, pad)
    ours, m = obj.loss(tuned, batch)
    save_adapter(tmp_path / "ad", tuned)
    base = make_tiny_decoder().model
    cls = LlamaForSequenceClassification(copy.deepcopy(base.config).__class__(**{**base.config.to_dict(),
                                                                                "num_labels": 1, "pad_token_id": pad}))
    merged = PeftModel.from_pretrained(base, str(tmp_path / "ad")).merge_and_unload()     # our lora body, folded
    cls.model.load_state_dict(merged.model.state_dict())
    cls.score.weight.data.copy_(obj.head.weight.data)
    model = cls
    args = RewardConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=3, report_to=[], use_cpu=True,
                        bf16=False)
    trainer = RewardTrainer(model=model, args=args, processing_class=bb.tokenizer,
                            train_dataset=Dataset.from_list(PAIRS))
    assert trainer.model is model
    model.config.pad_token_id = pad               # RewardTrainer sets it from the tokenizer (0 = our EOS)
    model.train()
    theirs = trainer.compute_loss(trainer.model, {"input_ids": batch["input_ids"],
                                                  "attention_mask": batch["attention_mask"]})
    assert abs(float(ours) - float(theirs)) < 1e-4
    tm = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert abs(float(m["accuracy"]) - tm["accuracy"]) < 1e-4
    assert abs(float(m["margin"]) - tm["margin"]) < 1e-4


# --------------------------------------------------------------------------- through the one loop


def test_dpo_in_the_loop_raises_train_reward_accuracy(tmp_path):
    from adaptlab.train.dpo import DPO
    from adaptlab.train.loop import TrainConfig, train
    from adaptlab.train.steppers import AdamW
    from adaptlab.tuning import apply_method

    bb = make_tiny_decoder()
    task = load_task("hh_rlhf_harmless")
    tuned = apply_method(bb, "lora", {"dropout": 0.0}, task)
    obj = DPO(bb.tokenizer, task, 64, beta=0.5)
    before = obj.evaluate(tuned, PAIRS)
    cfg = TrainConfig(max_steps=30, batch_size=3, lr=1e-2, warmup_ratio=0.0, eval=False)
    res = train(tuned, PAIRS, obj, AdamW(lr=1e-2, weight_decay=0.0, warmup_ratio=0.0, max_grad_norm=1.0), cfg,
                out=tmp_path / "run", progress=False)
    after = obj.evaluate(tuned, PAIRS)
    assert before["loss"] == pytest.approx(0.693147, abs=1e-5)    # lora B = 0: the policy is the reference
    assert after["loss"] < before["loss"] - 0.1 and after["reward_accuracy"] == 1.0
    assert res["objective"] == "dpo" and "rewards_margin" in res["train_metrics"]


def test_grpo_advantages_are_group_relative_and_a_step_runs(tiny_folder, tmp_path):
    from adaptlab.models import load_backbone
    from adaptlab.train.grpo import GRPO
    from adaptlab.train.preference import PreferenceConfig
    from adaptlab.tuning import apply_method

    bb = load_backbone(tiny_folder)
    task = load_task("multiarith")
    tuned = apply_method(bb, "lora", {"dropout": 0.0}, task)
    obj = GRPO(bb, tuned, task, 128, PreferenceConfig(objective="grpo", group_size=3, max_new_tokens=6))
    ex = {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "7"}
    assert obj.reward("The answer is 7.", ex) == 1.0 and obj.reward("The answer is 8.", ex) == 0.0
    feats = obj.featurize([ex, dict(ex, answer="9")])
    obj.sample = lambda model, exs: (["Q:"] * 2, [["7", "8", "7"], ["1", "2", "3"]])    # fixed replies, known rewards
    loss, m = obj.loss(tuned, obj.collate(feats))
    assert float(m["reward"]) == pytest.approx(2 / 6) and float(m["kl"]) == pytest.approx(0.0, abs=1e-6)
    loss.backward()                                  # group 2: all zero reward, no advantage; group 1 pushes
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tuned.parameters() if p.requires_grad)


def test_pair_logps_share_the_prompt_and_equal_the_one_forward_path():
    """Each pair's prompt runs once for both replies; log-probs and their gradients equal the
    2B-row forward's (which the trl oracle above checks)."""
    from adaptlab.train.dpo import DPO
    from adaptlab.train.preference import pair_logps, sequence_logps

    bb, tuned = _tuned()
    obj = DPO(bb.tokenizer, load_task("hh_rlhf_harmless"), 64, beta=0.1)
    batch = obj.collate(obj.featurize(PAIRS))
    assert batch["prompt_ids"].shape[0] * 2 == batch["reply_ids"].shape[0] == batch["input_ids"].shape[0]
    params = [p for p in tuned.parameters() if p.requires_grad]
    full = sequence_logps(tuned, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    g_full = torch.autograd.grad(full.sum(), params)
    shared = pair_logps(tuned, batch)
    g_shared = torch.autograd.grad(shared.sum(), params)
    assert torch.allclose(shared, full, atol=1e-4), (shared, full)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(g_shared, g_full))
    with torch.no_grad(), tuned.disable_adapters():              # the reference path too
        assert torch.allclose(pair_logps(tuned, batch), sequence_logps(
            tuned, batch["input_ids"], batch["attention_mask"], batch["completion_mask"]), atol=1e-4)
