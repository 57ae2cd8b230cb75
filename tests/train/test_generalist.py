"""Instruction SFT and MetaICL through the one loop, on a tiny decoder and a tiny user mixture."""

import json

import pytest
import torch

from conftest import TOY_SENT as SENT, run_cli, toy_mixture

TEMPLATES = {"toy_a": ["{text} is {options}?", "Say: {text}"], "toy_b": ["{text} ({options})"], "toy_c": ["Q {text} A"]}


@pytest.fixture
def mix(tmp_path, monkeypatch):
    return toy_mixture(tmp_path, monkeypatch, {"toy_a": ("one", "negative", "positive"), "toy_b": ("two", "nope", "yeah"),
                                               "toy_c": ("three", "bad", "good")}, templates=TEMPLATES,
                       test_split=False)[0]


def test_sft_masks_the_prompt(tiny_decoder):
    from adaptlab.train.sft import InstructionSFT

    obj = InstructionSFT(tiny_decoder.tokenizer, 64)
    f = obj.featurize([{"prompt": "Review: great\nSentiment:", "target": " positive"},
                       {"prompt": "x", "target": " a b c"}])
    b = obj.collate(f)
    for i, feat in enumerate(f):
        lab = b["labels"][i]
        n = int((lab != -100).sum())
        assert n == feat["n_target"] and feat["ids"][-1] == tiny_decoder.tokenizer.eos_token_id
        assert (lab[: len(feat["ids"]) - n] == -100).all()


def test_instruct_mixture_cli_writes_an_adapter(tiny_folder, mix, tmp_path):
    out = tmp_path / "run"
    code = run_cli(["instruct", "--mixture", mix, "--hold-out", "three", "--model", tiny_folder, "--out", str(out),
                    "--max-steps", "3", "--batch-size", "4", "--set", "r=2"])
    assert code == 0
    cfg = json.loads((out / "instruct_config.json").read_text())
    assert cfg["train_clusters"] == ["one", "two"] and cfg["hold_out"] == ["three"]
    assert (out / "adapter_model.safetensors").exists()
    from adaptlab.tuning.io import load_adapter

    assert load_adapter(str(out)) is not None


def test_instruct_alpaca_file_and_metaicl(tiny_folder, mix, tmp_path):
    f = tmp_path / "ins.jsonl"
    f.write_text("\n".join(json.dumps({"instruction": f"Repeat {s}", "input": "" if i % 2 else s, "output": s})
                           for i, s in enumerate(SENT)))
    assert run_cli(["instruct", "--data", str(f), "--model", tiny_folder, "--out", str(tmp_path / "a"),
                    "--max-steps", "2", "--batch-size", "2"]) == 0
    assert run_cli(["metaicl", "--mixture", mix, "--hold-out", "one", "--model", tiny_folder, "--set", "k=2",
                    "--out", str(tmp_path / "m"), "--max-steps", "2", "--batch-size", "2"]) == 0
    cfg = json.loads((tmp_path / "m" / "metaicl_config.json").read_text())
    assert cfg["metaicl_config"]["k"] == 2


def test_metaicl_examples_hold_k_demos_never_the_query(mix):
    from adaptlab.data import load_split
    from adaptlab.tasks.mixture import build, load_mixture, select
    from adaptlab.train.metaicl import meta_examples

    m = load_mixture(mix)
    entries = select(m, ["three"])
    pools = {e.task.name: load_split(e.task, "train") for e in entries}
    q = build(m, entries, pools, 0)
    ex = meta_examples(entries, pools, q, 3, 0)
    for x, qq in zip(ex, q):
        parts = x["prompt"].split("\n\n")
        assert len(parts) == 4 and parts[-1] == f"Text: {qq.source['text']}\nLabel:"
        assert all(qq.source["text"] + "\n" not in p for p in parts[:-1])


def test_sft_loss_equals_manual_completion_only_ce(tiny_decoder):
    from adaptlab.train.sft import InstructionSFT
    from adaptlab.tuning import apply_method

    tuned = apply_method(tiny_decoder, "lora", None, None)
    obj = InstructionSFT(tiny_decoder.tokenizer, 64)
    b = obj.collate(obj.featurize([{"prompt": "Review: great", "target": " positive"},
                                   {"prompt": "Q: 3+4", "target": " 7 ok"}]))
    loss, _ = obj.loss(tuned, b)
    logits = tiny_decoder.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                            b["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert abs(loss.item() - ref.item()) < 1e-5


@pytest.mark.parametrize("args,why", [
    (["instruct", "--hold-out", "nope"], "unknown cluster 'nope'"),
    (["instruct", "--hold-out", "one", "--clusters", "one,two"], "both held out and in training"),
    (["metaicl", "--hold-out", "three", "--set", "k=6", "--set", "max_seq_len=16"], "tokens, more than max_seq_len=16"),
])
def test_bad_generalist_input_exit_2_nothing_written(tiny_folder, mix, tmp_path, capsys, args, why):
    out = tmp_path / "never"
    code = run_cli(args[:1] + ["--mixture", mix, "--model", tiny_folder, "--out", str(out)] + args[1:])
    err = capsys.readouterr().err.strip()
    assert code == 2 and why in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_instruction_file_and_template(tiny_folder, tmp_path, capsys):
    f = tmp_path / "ins.jsonl"
    f.write_text(json.dumps({"instruction": "a", "input": "", "output": "b"}) + "\n"
                 + json.dumps({"instruction": "c", "input": "", "output": "  "}))
    out = tmp_path / "never"
    assert run_cli(["instruct", "--data", str(f), "--model", tiny_folder, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'output' is empty" in err and ":2" in err and len(err.splitlines()) == 1 and not out.exists()
    m = tmp_path / "m.yaml"
    m.write_text("name: m\ntasks:\n  - {task: sst2, cluster: c, templates: ['{text_b}']}\n")
    assert run_cli(["instruct", "--mixture", str(m), "--model", tiny_folder, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "field {text_b}" in err and not out.exists()
