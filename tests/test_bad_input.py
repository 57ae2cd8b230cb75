"""The bad-input catalog: every row is a CLI invocation with one broken input. Each must exit
with code 2, print exactly one line on stderr naming the file (and line) or the value, print no
traceback, and leave no new file behind."""

import shutil
from pathlib import Path

import pytest

from adaptlab.cli import main

GOOD_ROW = '{"text": "The price is great. I\'m keeping it.", "label": "positive"}'


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Model folders and adapters the rows start from (built once)."""
    from conftest import make_tiny_decoder

    from adaptlab.train import tune

    root = tmp_path_factory.mktemp("assets")
    for seed, name in ((0, "tiny"), (1, "other")):
        bb = make_tiny_decoder(seed)
        bb.model.save_pretrained(root / name)
        bb.tokenizer.save_pretrained(root / name)
    tune("reviews", "lora", model=str(root / "tiny"), out=str(root / "lora"), sets={"r": "2", "eval": "false"},
         max_steps=1, train_limit=4, batch_size=2, progress=False)
    (root / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 40)
    return root


def _adapter_variant(assets, work, how):
    d = work / "adapter"
    shutil.copytree(assets / "lora", d)
    w = d / "adapter_model.safetensors"
    if how == "no_config":
        (d / "adapter_config.json").unlink()
    elif how == "no_weights":
        w.unlink()
    elif how == "pickle":
        w.unlink()
        (d / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    elif how == "truncated":
        w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    elif how == "shape":
        from safetensors.torch import load_file, save_file

        t = load_file(w)
        k = sorted(t)[0]
        t[k] = t[k].new_zeros((t[k].shape[0] + 3, *t[k].shape[1:]))
        save_file(t, w)
    return str(d)


def _data(work, name, content):
    p = work / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


EVAL = ["eval", "--task", "reviews", "--limit", "2"]
# (id, builder(assets, work) -> argv, words expected in the one line)
ROWS = [
    # data
    ("data-missing", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", str(w / "nope.jsonl")], "nope.jsonl: file not found"),
    ("data-empty", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "e.jsonl", "")], "e.jsonl: file is empty"),
    ("data-not-utf8", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "l.jsonl", GOOD_ROW.encode() + b'\n{"text": "caf\xe9"}\n')], "l.jsonl:2: not UTF-8"),
    ("data-bad-json", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "b.jsonl", GOOD_ROW + "\n" + GOOD_ROW + "\n{oops\n")], "b.jsonl:3: bad JSON"),
    ("data-missing-field", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "m.jsonl", '{"label": "positive"}\n')], "m.jsonl:1: missing field 'text'"),
    ("data-wrong-type", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "t.jsonl", '{"text": ["a"], "label": "positive"}\n')], "t.jsonl:1: field 'text': expected text"),
    ("data-label-outside", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "o.jsonl", GOOD_ROW + '\n{"text": "x", "label": "meh"}\n')], "o.jsonl:2: label 'meh'"),
    ("data-empty-text", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "x.jsonl", '{"text": "  ", "label": "positive"}\n')], "x.jsonl:1: field 'text' is empty"),
    ("data-csv-dup-header", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "d.csv", "text,label,text\na,positive,b\n")], "d.csv:1: duplicate column 'text'"),
    # task YAML
    ("task-unknown-key", lambda a, w: ["eval", "--task", _data(w, "t.yaml", "name: t\nschema: classification\nlabels: [a, b]\ntemplate: '{text}'\ncolour: red\n")], "unknown key 'colour'"),
    ("task-duplicate-key", lambda a, w: ["eval", "--task", _data(w, "t.yaml", "name: t\nname: u\nschema: classification\nlabels: [a, b]\ntemplate: '{text}'\n")], "duplicate key 'name'"),
    ("task-missing-template", lambda a, w: ["eval", "--task", _data(w, "t.yaml", "name: t\nschema: classification\nlabels: [a, b]\n")], "missing required key 'template'"),
    ("task-template-field", lambda a, w: ["eval", "--task", _data(w, "t.yaml", "name: t\nschema: classification\nlabels: [a, b]\ntemplate: 'Q: {question}'\n")], "{question}"),
    ("task-unknown-name", lambda a, w: ["eval", "--task", "sst3"], "sst3: unknown task"),
    # CLI values
    ("cli-unknown-strategy", lambda a, w: EVAL + ["--prompt", "telepathy"], "telepathy"),
    ("cli-unknown-method", lambda a, w: ["tune", "--task", "reviews", "--method", "magic", "--out", str(w / "o")], "magic"),
    ("cli-set-unknown-key", lambda a, w: ["tune", "--task", "reviews", "--method", "lora", "--set", "rank=8", "--model", str(a / "tiny"), "--out", str(w / "o")], "'rank'"),
    ("cli-set-wrong-type", lambda a, w: ["tune", "--task", "reviews", "--method", "lora", "--set", "r=eight", "--model", str(a / "tiny"), "--out", str(w / "o")], "r='eight'"),
    ("cli-set-zero", lambda a, w: ["tune", "--task", "reviews", "--method", "lora", "--set", "r=0", "--model", str(a / "tiny"), "--out", str(w / "o")], "r=0"),
    ("cli-negative-limit", lambda a, w: EVAL[:3] + ["--limit", "-5"], "-5"),
    ("cli-zero-batch", lambda a, w: ["tune", "--task", "reviews", "--method", "lora", "--batch-size", "0", "--out", str(w / "o")], "--batch-size"),
    ("cli-set-malformed", lambda a, w: EVAL + ["--set", "k"], "key=value"),
    # adapters
    ("adapter-folder-missing", lambda a, w: EVAL + ["--adapter", str(w / "none")], "adapter folder not found"),
    ("adapter-config-missing", lambda a, w: EVAL + ["--adapter", _adapter_variant(a, w, "no_config")], "adapter_config.json"),
    ("adapter-weights-missing", lambda a, w: EVAL + ["--adapter", _adapter_variant(a, w, "no_weights")], "adapter_model.safetensors"),
    ("adapter-pickle", lambda a, w: EVAL + ["--adapter", _adapter_variant(a, w, "pickle")], "pickle"),
    ("adapter-truncated", lambda a, w: EVAL + ["--adapter", _adapter_variant(a, w, "truncated")], "safetensors"),
    ("adapter-shape", lambda a, w: EVAL + ["--adapter", _adapter_variant(a, w, "shape")], "shape"),
    ("adapter-other-base", lambda a, w: EVAL + ["--adapter", _adapter_variant(a, w, "ok"), "--model", str(a / "other")], "trained on base"),
    # models
    ("model-unknown", lambda a, w: EVAL + ["--model", "no-such-model-anywhere"], "no-such-model-anywhere"),
    ("model-missing-folder-before-data", lambda a, w: EVAL[:3] + ["--model", str(w / "nope_model"), "--data", str(w / "nope.jsonl")], "nope_model': no such model folder"),
    ("adapter-missing-before-data", lambda a, w: EVAL[:3] + ["--adapter", str(w / "none"), "--data", str(w / "nope.jsonl")], "adapter folder not found"),
    ("model-unreadable-gguf", lambda a, w: EVAL + ["--model", str(a / "broken.gguf")], "broken.gguf: cannot read this GGUF"),
]


# --------------------------------------------------------------------------- Reliability II (issue 25)
TASK_HEAD = "name: t\nschema: classification\nlabels: [negative, positive]\n"


def _task(work, body, name="t.yaml"):
    return ["eval", "--task", _data(work, name, body)]


def _link(work, name, target="/dev/zero"):
    p = work / name
    p.symlink_to(target)
    return str(p)


def _adapter_edit(assets, work, how):
    """An adapter folder copy with one untrusted part changed."""
    import json

    d = Path(_adapter_variant(assets, work, "ok"))
    w = d / "adapter_model.safetensors"
    meta = d / "adaptlab.json"
    if how in ("config_devzero", "weights_devzero"):
        f = d / ("adapter_config.json" if how == "config_devzero" else "adapter_model.safetensors")
        f.unlink()
        f.symlink_to("/dev/zero")
    elif how in ("nan", "huge"):
        from safetensors.torch import load_file, save_file

        t = load_file(w)
        k = sorted(t)[0]
        t[k] = t[k].clone().fill_(float("nan") if how == "nan" else 1e30)
        save_file(t, w)
    elif how == "meta_deep":
        meta.write_text('{"method": ' + "[" * 100000 + "]" * 100000 + "}")
    elif how == "meta_long_int":
        meta.write_text('{"method": "lora", "format": ' + "9" * 5000 + "}")
    elif how == "meta_labels":
        doc = json.loads(meta.read_text())
        doc["task"]["labels"] = [["negative"], {"p": 1}]
        meta.write_text(json.dumps(doc))
    elif how == "meta_method_list":
        doc = json.loads(meta.read_text())
        doc["method"] = ["lora"]
        meta.write_text(json.dumps(doc))
    return str(d)


def _folder(work, name):
    (work / name).mkdir()
    return str(work / name)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
TUNE = ["tune", "--task", "reviews", "--method", "lora"]

ROWS_II = [
    # task templates are checked when the YAML is read: plain {field} only
    ("task-template-attribute", lambda a, w: _task(w, TASK_HEAD + "template: 'R: {text.__class__}'\n"), "not a plain field name"),
    ("task-template-nested-spec", lambda a, w: _task(w, TASK_HEAD + "template: 'R: {text:{text.__class__}}'\n"), "format spec"),
    ("task-template-bad-spec", lambda a, w: _task(w, TASK_HEAD + "template: 'R: {text:%}'\n"), "format spec"),
    ("task-template-conversion", lambda a, w: _task(w, TASK_HEAD + "template: 'R: {text!z}'\n"), "conversion"),
    ("task-template-width-bomb", lambda a, w: _task(w, TASK_HEAD + "template: 'R: {text:>1000000000}'\n"), "format spec"),
    ("task-target-spec", lambda a, w: _task(w, TASK_HEAD + "template: 'R: {text}'\ntarget: ' {answer:d}'\n"), "format spec"),
    # task names are names, not paths; packages are the package's own data
    ("task-name-dotdot", lambda a, w: _task(w, "name: '..'\nschema: classification\nlabels: [a, b]\ntemplate: '{text}'\n"), "not a path"),
    ("task-package-path", lambda a, w: _task(w, TASK_HEAD + "template: '{text}'\nsource: {package: /etc}\n"), "source.package"),
    # non-hashable / odd values
    ("task-labels-unhashable", lambda a, w: _task(w, "name: t\nschema: classification\nlabels: [[a], b]\ntemplate: '{text}'\n"), "labels: expected a list of texts"),
    ("task-yaml-unhashable-key", lambda a, w: _task(w, TASK_HEAD + "template: '{text}'\nverbalizer: {[a]: x}\n"), "a key must be a plain value"),
    ("task-shuffle-seed-huge", lambda a, w: _task(w, TASK_HEAD + "template: '{text}'\nshuffle_seed: " + str(2**70) + "\n"), "shuffle_seed"),
    ("task-lone-surrogate", lambda a, w: _task(w, TASK_HEAD + 'template: "{text}"\ninstruction: "\\ud800"\n'), "not valid Unicode"),
    # resource bombs
    ("task-yaml-alias-bomb", lambda a, w: ["tune", "--task", _data(w, "b.yaml", TASK_HEAD + "template: '{text}'\nsource:\n  fields:\n" + "".join("    " + line + "\n" for line in BOMB.splitlines())), "--method", "lora", "--model", str(a / "tiny"), "--out", str(w / "o")], "expands to over"),
    ("task-file-dev-zero", lambda a, w: ["eval", "--task", _link(w, "z.yaml")], "character device"),
    ("data-dev-zero", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _link(w, "z.jsonl")], "character device"),
    ("data-record-too-big", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "big.jsonl", '{"text": "' + "a" * (5 << 20) + '", "label": "positive"}\n')], "big.jsonl:1: record is over the limit max_record_bytes"),
    ("data-field-too-long", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "long.jsonl", '{"text": "' + "a" * 1_500_000 + '", "label": "positive"}\n')], "long.jsonl:1: field 'text' is 1500000 characters"),
    # JSON and number edges
    ("data-long-integer", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "i.jsonl", '{"text": "a", "label": ' + "9" * 5000 + "}\n")], "i.jsonl:1: bad JSON"),
    ("data-deep-nesting", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "n.jsonl", '{"text": ' + "[" * 100000 + "]" * 100000 + "}\n")], "n.jsonl:1: bad JSON: nested too deeply"),
    ("data-lone-surrogate", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--data", _data(w, "s.jsonl", '{"text": "bad \\ud800 text", "label": "positive"}\n')], "s.jsonl:1: field 'text': not valid Unicode"),
    ("cli-seed-beyond-64-bits", lambda a, w: EVAL + ["--seed", str(2**70)], "--seed"),
    ("tune-seed-beyond-64-bits", lambda a, w: TUNE + ["--set", f"seed={2**70}", "--model", str(a / "tiny"), "--out", str(w / "o")], "seed="),
    # non-finite settings and tensors
    ("cli-set-nan-temperature", lambda a, w: EVAL + ["--prompt", "self-consistency", "--set", "temperature=nan"], "temperature='nan': must be a finite number"),
    ("cli-set-inf-alpha", lambda a, w: TUNE + ["--set", "alpha=inf", "--model", str(a / "tiny"), "--out", str(w / "o")], "alpha='inf': must be a finite number"),
    ("adapter-nan-tensor", lambda a, w: EVAL + ["--adapter", _adapter_edit(a, w, "nan")], "non-finite values"),
    ("adapter-huge-tensor", lambda a, w: EVAL + ["--adapter", _adapter_edit(a, w, "huge")], "max_abs_weight"),
    # untrusted adapter files
    ("adapter-config-dev-zero", lambda a, w: EVAL + ["--adapter", _adapter_edit(a, w, "config_devzero")], "not a regular file (/dev/zero)"),
    ("adapter-weights-dev-zero", lambda a, w: EVAL + ["--adapter", _adapter_edit(a, w, "weights_devzero")], "not a regular file (/dev/zero)"),
    ("adapter-meta-deep-json", lambda a, w: EVAL + ["--adapter", _adapter_edit(a, w, "meta_deep")], "nested too deeply"),
    ("adapter-meta-long-integer", lambda a, w: EVAL + ["--adapter", _adapter_edit(a, w, "meta_long_int")], "not readable JSON"),
    ("adapter-meta-unhashable-labels", lambda a, w: EVAL + ["--adapter", _adapter_edit(a, w, "meta_labels")], "labels: expected a list of texts"),
    ("adapter-meta-method-list", lambda a, w: EVAL + ["--adapter", _adapter_edit(a, w, "meta_method_list")], "'method' must be text"),
    # output places, checked before the work starts
    ("eval-out-is-folder", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--out", _folder(w, "res")], "is a folder; give a file name"),
    ("eval-out-under-file", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--out", _data(w, "f.txt", "x") + "/r.json"], "is a file, not a folder"),
    ("eval-out-unwritable", lambda a, w: EVAL + ["--model", str(a / "tiny"), "--out", "/proc/adaptlab-nowhere/r.json"], "cannot write in /proc"),
    ("tune-out-is-file", lambda a, w: TUNE + ["--model", str(a / "tiny"), "--out", _data(w, "o.txt", "x")], "exists and is not a folder"),
    ("tune-out-under-file", lambda a, w: TUNE + ["--model", str(a / "tiny"), "--out", _data(w, "o.txt", "x") + "/run"], "is a file, not a folder"),
    ("merge-out-under-file", lambda a, w: ["merge", "--adapter", str(a / "lora"), "--out", _data(w, "m.txt", "x") + "/m"], "is a file, not a folder"),
]
ROWS += ROWS_II

# --------------------------------------------------------------------------- task files as a new user writes them (issue 28)
MC_OK = '{"question": "Which?", "choices": ["red", "blue", "green"], "answer": "blue", "answer_letter": "B"}'
MC_STALE = '{"question": "Which?", "choices": ["red", "blue", "green"], "answer": "blue", "answer_letter": "A"}'


def _only_all(work):
    (work / "d").mkdir()
    (work / "d" / "all.jsonl").write_text(GOOD_ROW + "\n")
    return str(work / "d")


ROWS_28 = [
    ("task-labels-yaml-booleans", lambda a, w: _task(w, "name: t\nschema: classification\nlabels: [no, yes]\ntemplate: '{text}'\n"), "labels: [False, True] are YAML booleans"),
    ("task-verbalizer-yaml-booleans", lambda a, w: _task(w, "name: t\nschema: classification\nlabels: ['no', 'yes']\nverbalizer: {'no': no, 'yes': yes}\ntemplate: '{text}'\n"), "verbalizer words: [False, True] are YAML booleans"),
    ("task-labels-on-qa", lambda a, w: _task(w, "name: t\nschema: qa\nlabels: ['no', 'yes']\ntemplate: 'Q: {question}'\n"), "labels: a qa task has no fixed labels"),
    ("data-answer-letter-disagrees", lambda a, w: ["eval", "--task", "commonsenseqa", "--limit", "2", "--model", str(a / "tiny"), "--data", _data(w, "mc.jsonl", MC_OK + "\n" + MC_STALE + "\n")], "mc.jsonl:2: answer_letter 'A' points at choice 'red', but answer is 'blue'"),
    ("data-only-all-jsonl", lambda a, w: ["eval", "--task", _data(w, "t.yaml", TASK_HEAD + "template: '{text}'\n"), "--limit", "2", "--model", str(a / "tiny"), "--data", _only_all(w)], "only all.jsonl: add `splits:` to the task"),
]
ROWS += ROWS_28


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(row, assets, tmp_path, monkeypatch, capsys):
    _, build, words = row
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = build(assets, work)
    if argv[0] in ("eval", "compare") and "--out" not in argv:
        argv = argv + ["--out", str(work / "result.json")]
    before, assets_before = _files(work), _files(assets)
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert e.value.code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert "Traceback" not in err
    assert _files(work) == before, "new files left behind"
    assert _files(assets) == assets_before


def test_catalog_is_big_enough():
    assert len(ROWS) >= 25
    assert len(ROWS_II) >= 25


def test_every_row_is_documented():
    """docs/reliability.md has a table row per catalog row, whose message holds the words checked."""
    doc = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text()
    documented = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 4:
            documented[cells[0]] = cells[-1]
    for rid, _, words in ROWS:
        assert rid in documented, f"{rid} has no row in docs/reliability.md"
        assert words in documented[rid], f"{rid}: the documented message lacks {words!r}"
