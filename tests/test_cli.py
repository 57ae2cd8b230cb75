import json
import subprocess
import sys

import pytest

from adaptlab.cli import COMMANDS, main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture
def tiny_folder(tmp_path, tiny_decoder):
    d = tmp_path / "tiny"
    tiny_decoder.model.save_pretrained(d)
    tiny_decoder.tokenizer.save_pretrained(d)
    return str(d)


def test_commands_listed(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for name in COMMANDS:
        assert name in out


def test_tasks_and_models(capsys):
    code, out, _ = run_cli(["tasks", "--json"], capsys)
    assert code == 0 and "reviews" in [t["name"] for t in json.loads(out)["tasks"]]
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and "smollm2-135m-instruct" in out


def test_eval_json_and_out(capsys, tmp_path, tiny_folder):
    out_file = tmp_path / "res" / "r.json"
    code, out, err = run_cli(["eval", "--task", "reviews", "--model", tiny_folder, "--limit", "5", "--json",
                              "--out", str(out_file)], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["metrics"]["n"] == 5 and len(doc["records"]) == 5
    assert json.loads(out_file.read_text()) == doc
    assert doc["config"]["prompt"] == "zero-shot"


@pytest.mark.parametrize("args, words", [
    (["eval", "--task", "nope"], "unknown task"),
    (["eval", "--task", "reviews", "--prompt", "magic"], "unknown prompting strategy"),
    (["eval", "--task", "reviews", "--set", "normalize=max"], "must be one of"),
    (["eval", "--task", "reviews", "--set", "bogus=1"], "unknown key 'bogus'"),
    (["eval", "--task", "reviews", "--limit", "0"], "--limit"),
    (["eval", "--task", "reviews", "--model", "/no/such/model"], "unknown model"),
    (["eval", "--task", "reviews", "--data", "/no/such/file.jsonl"], "file not found"),
    (["eval"], "--task"),
    (["frobnicate"], "No such command"),
])
def test_bad_input_one_line_exit_2(capsys, tmp_path, monkeypatch, args, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    out_file = tmp_path / "o.json"
    code, out, err = run_cli(args + ["--out", str(out_file)] if args[0] == "eval" and len(args) > 1 else args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err
    assert not out_file.exists() and list(tmp_path.iterdir()) == []


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "adaptlab", "eval", "--task", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:")


def test_eval_help_lists_every_prompting_strategy(capsys):
    """`eval --help` names each --prompt strategy (issue 26), kept in step with the registry."""
    from adaptlab.prompting import STRATEGIES

    code, out, _ = run_cli(["eval", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split()).replace("- ", "-")       # click wraps lines after a hyphen
    missing = [name for name in STRATEGIES if f" {name}," not in text and f" {name} (" not in text]
    assert not missing, missing


def test_eval_with_an_adapter_shows_it(tmp_path, tiny_folder, capsys):
    """`eval --adapter DIR` prints the adapter in its table, unlike the base run (issue 26)."""
    from adaptlab.train import tune

    tune("reviews", "lora", model=tiny_folder, out=str(tmp_path / "lora"), sets={"r": "2", "eval": "false"},
         max_steps=1, train_limit=4, batch_size=2, progress=False)
    capsys.readouterr()
    code, base, _ = run_cli(["eval", "--task", "reviews", "--model", tiny_folder, "--limit", "2"], capsys)
    assert code in (0, None) and "adapter" not in base.splitlines()[0].split()
    code, out, _ = run_cli(["eval", "--task", "reviews", "--adapter", str(tmp_path / "lora"), "--limit", "2"], capsys)
    assert code in (0, None)
    assert "adapter" in out.splitlines()[0].split() and str(tmp_path / "lora") in out
