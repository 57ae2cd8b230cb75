"""Property tests (hypothesis): whatever a user feeds the data loader, the task-YAML loader or
answer extraction, the result is a value or a DataError/TaskError, never another exception or
a hang (each case has a deadline). The calculator's own properties are in
tests/prompting/test_calculator.py."""

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptlab.data import load_split
from adaptlab.errors import DataError, TaskError
from adaptlab.extract import answers_equal, extract_label, extract_letter, extract_number, extract_yesno
from adaptlab.tasks import load_task, load_task_file, task_from_dict

FAST = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
TASKS = {name: load_task(name) for name in ("sst2", "rte", "gsm8k", "commonsenseqa")}

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


@FAST
@given(raw=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".csv", ".tsv"]),
       task=st.sampled_from(sorted(TASKS)))
def test_data_loader_any_bytes(tmp_path_factory, raw, suffix, task):
    p = tmp_path_factory.mktemp("d") / f"f{suffix}"
    p.write_bytes(raw)
    try:
        out = load_split(TASKS[task], "test", str(p))
        assert isinstance(out, list) and out
    except DataError:
        pass


@FAST
@given(rows=st.lists(st.dictionaries(st.sampled_from(["text", "label", "text_a", "text_b", "question", "answer",
                                                      "choices", "answer_letter", "choice_letters", "rationale"]),
                                     json_values, max_size=6), min_size=1, max_size=5),
       task=st.sampled_from(sorted(TASKS)))
def test_data_loader_any_records(tmp_path_factory, rows, task):
    import json

    p = tmp_path_factory.mktemp("d") / "f.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    try:
        load_split(TASKS[task], "test", str(p))
    except DataError:
        pass


@FAST
@given(text=st.text(max_size=300))
def test_task_yaml_any_text(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("t") / "t.yaml"
    p.write_text(text, encoding="utf-8")
    try:
        load_task_file(p)
    except TaskError:
        pass


KEYS = ["name", "schema", "template", "labels", "verbalizer", "instruction", "target", "answer_type", "metric",
        "splits", "shuffle_seed", "chat", "max_new_tokens", "stop", "truncate", "source", "bogus"]


@FAST
@given(raw=st.dictionaries(st.sampled_from(KEYS), json_values | st.sampled_from(
    ["classification", "qa", "{text}", "{question}", "{answer}", "{", "accuracy", "label"]), max_size=10))
def test_task_dict_any_values(raw):
    base = {"name": "t", "schema": "classification", "template": "{text}", "labels": ["a", "b"]}
    for cand in (raw, {**base, **raw}):
        try:
            t = task_from_dict(cand, "fuzz.yaml")
            if t.is_classification:
                t.options({"text": "x", "label": t.labels[0]})
        except TaskError:
            pass


@FAST
@given(text=st.text(alphabet=string.printable + "−½ü$€,.", max_size=200),
       words=st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=5))
def test_extraction_never_raises(text, words):
    n = extract_number(text)
    assert n is None or isinstance(n, str)
    assert extract_number(text, "last") is None or isinstance(extract_number(text, "last"), str)
    assert extract_yesno(text) in (None, "yes", "no")
    i = extract_letter(text, 5)
    assert i is None or 0 <= i < 5
    j = extract_label(text, words)
    assert j is None or 0 <= j < len(words)
    assert isinstance(answers_equal(text, "42", "number"), bool)


@FAST
@given(x=st.integers(min_value=-10**12, max_value=10**12))
def test_number_roundtrip(x):
    assert answers_equal(extract_number(f"The answer is {x:,}."), str(x), "number")


# --------------------------------------------------------------------------- Reliability II (issue 25)
template_text = st.text(alphabet=string.ascii_letters + "{}!:.[]%<>^=0123456789_ ", max_size=40)


@FAST
@given(template=template_text, target=template_text)
def test_task_templates_any_format_spec(template, target):
    """Any template / target text: refused when the task is read, or it renders (never a
    ValueError, an attribute lookup, or a huge padding at render time)."""
    raw = {"name": "t", "schema": "classification", "template": template, "target": target,
           "labels": ["a", "b"]}
    try:
        t = task_from_dict(raw, "fuzz.yaml")
    except TaskError:
        return
    ex = {"text": "x" * 5, "label": "a"}
    prompt = t.render(ex)
    assert len(prompt) <= len(template) + 5 * len(template)
    assert all(len(o) <= len(target) + 5 * len(target) + 2 for o in t.options(ex))


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    from conftest import make_tiny_decoder

    from adaptlab.tuning import apply_method, get_method
    from adaptlab.tuning.io import save_adapter

    bb = make_tiny_decoder()
    tuned = apply_method(bb, "lora", get_method("lora").Config(r=2), TASKS["sst2"])
    d = tmp_path_factory.mktemp("ad") / "a"
    save_adapter(d, tuned)
    return bb, d


META_KEYS = ["format", "method", "config", "base", "kind", "head", "task", "stats", "vocab", "method_state"]


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.dictionaries(st.sampled_from(META_KEYS), json_values, max_size=4),
       cfg_edits=st.dictionaries(st.sampled_from(["peft_type", "r", "lora_alpha", "target_modules", "task_type"]),
                                 json_values, max_size=3))
def test_adapter_metadata_any_values(adapter_dir, tmp_path_factory, edits, cfg_edits):
    """Whatever adaptlab.json / adapter_config.json hold: the adapter loads or an AdapterError
    says why, never another exception."""
    import json
    import shutil

    from adaptlab.errors import UserError
    from adaptlab.tuning.io import load_adapter

    bb, src = adapter_dir
    d = tmp_path_factory.mktemp("m") / "a"
    shutil.copytree(src, d)
    for name, ed in (("adaptlab.json", edits), ("adapter_config.json", cfg_edits)):
        doc = json.loads((d / name).read_text())
        doc.update(ed)
        (d / name).write_text(json.dumps(doc))
    try:
        load_adapter(d, backbone=bb)
    except UserError:
        pass


@FAST
@given(parts=st.lists(st.sampled_from(["a", "b", "f.txt", "..", ".", "x.json", "a/b", "/proc/nope"]), min_size=1,
                      max_size=4), kind=st.sampled_from(["file", "folder"]))
def test_output_place_checks_any_path(tmp_path_factory, parts, kind):
    """Any output path (under a file, a folder where a file is wanted, unwritable): a ConfigError
    or nothing, and nothing is created."""
    from pathlib import Path

    from adaptlab.errors import ConfigError
    from adaptlab.outputs import check_place

    root = tmp_path_factory.mktemp("o")
    (root / "f.txt").write_text("x")
    (root / "a").mkdir()
    before = sorted(p.name for p in root.rglob("*"))
    path = parts[0] if parts[0].startswith("/") else str(root / Path(*parts))
    try:
        check_place(path, kind)
    except ConfigError:
        pass
    assert sorted(p.name for p in root.rglob("*")) == before
