"""Every built-in task runs offline out of the box, or says in one line where its data comes from
(issue 26). No $ADAPTLAB_DATA_DIR, no Hugging Face ``datasets``: the registry is iterated, so a new
built-in task is covered without touching this file."""

import re
import sys

import pytest

from adaptlab.data import load_split, normalize
from adaptlab.errors import DataError, TaskError
from adaptlab.tasks import builtin_names, load_task, task_from_dict
from adaptlab.tasks.generate import FIRST_NAMES, generate

OFFLINE = {"reviews", "coin_flip", "last_letters"}   # tasks that must load with nothing given


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.delenv("ADAPTLAB_DATA_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)   # `import datasets` raises ImportError


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_task_loads_offline_or_says_where_its_data_is(offline, name):
    task = load_task(name)
    try:
        records = load_split(task, "test", limit=5)
    except DataError as e:
        msg = str(e)
        assert name not in OFFLINE, f"{name} should run offline: {msg}"
        assert "\n" not in msg
        assert "docs/data.md" in msg
        assert "--data DIR" in msg and f"$ADAPTLAB_DATA_DIR/{name}/" in msg
        if "hf" in task.source:
            assert f"hf:{task.source['hf']}" in msg and "adaptlab[hf]" in msg
        else:
            assert task.source.get("origin"), f"{name}: no HF id, so source.origin must say where the data is"
            assert task.source["origin"] in msg
        return
    assert len(records) == 5
    for rec in records:       # valid against the task's schema (normalize raises otherwise)
        normalize(task, rec, "test", None)
        task.render(rec)


def _people(rec):
    return re.search(r'"(.*)"', rec["question"]).group(1).split()


@pytest.mark.parametrize("kind", ["coin_flip", "last_letters"])
def test_generated_sets_are_deterministic_distinct_and_sized(kind):
    a, b = generate(kind, seed=0), generate(kind, seed=0)
    assert a == b and len(a) == 500
    assert generate(kind, seed=1) != a
    assert len({r["question"] for r in a}) == 500          # no question twice
    assert len(generate(kind, seed=3, n=40, names=2)) == 40


def test_generated_answers_are_right():
    for rec in generate("coin_flip", seed=7, n=300, names=3):
        q = rec["question"]
        assert q.startswith("A coin is heads up. ") and q.endswith('Is the coin still heads up? Note that "flip" here means "reverse".')
        steps = re.findall(r"(\w+) (flips|does not flip) the coin\.", q)
        assert len(steps) == 3 and all(p in FIRST_NAMES for p, _ in steps)
        flips = sum(v == "flips" for _, v in steps)
        assert rec["answer"] == ("yes" if flips % 2 == 0 else "no")
    answers = [r["answer"] for r in generate("coin_flip")]
    assert 200 < answers.count("yes") < 300                 # balanced, as the published set (253/247)
    for rec in generate("last_letters", seed=7, n=300):
        people = _people(rec)
        assert rec["question"].startswith("Take the last letters of each words in ")
        assert len(people) == 4 == len(set(people))
        assert rec["answer"] == "".join(p[-1] for p in people)


@pytest.mark.parametrize("name", ["coin_flip", "last_letters"])
def test_generated_task_roles_are_disjoint(offline, name):
    task = load_task(name)
    roles = {r: load_split(task, r) for r in ("train", "dev", "test")}
    assert [len(roles[r]) for r in ("train", "dev", "test")] == [50, 50, 400]
    qs = [{x["question"] for x in roles[r]} for r in roles]
    assert not (qs[0] & qs[1] or qs[0] & qs[2] or qs[1] & qs[2])
    assert load_split(task, "test") == load_split(task, "test")


def test_data_dir_still_wins_over_the_generator(monkeypatch, tmp_path):
    (tmp_path / "coin_flip").mkdir()
    lines = [f'{{"question": "Q{i}?", "answer": "yes"}}' for i in range(120)]
    (tmp_path / "coin_flip" / "test.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("ADAPTLAB_DATA_DIR", str(tmp_path))
    recs = load_split(load_task("coin_flip"), "test")
    assert [r["question"] for r in recs] == [f"Q{i}?" for i in range(100, 120)]
    recs = load_split(load_task("coin_flip"), "test", data=str(tmp_path / "coin_flip"))
    assert recs[0]["question"] == "Q100?"


def test_generator_makes_only_the_test_split(offline):
    task = task_from_dict({"name": "cf", "schema": "qa", "template": "{question}", "answer_type": "yesno",
                           "source": {"generate": "coin_flip"}}, "cf.yaml")
    assert len(load_split(task, "test")) == 500
    with pytest.raises(DataError, match=r"makes one data split, 'test' \(500 records\), not 'train'.*docs/data\.md"):
        load_split(task, "train")


@pytest.mark.parametrize("source, why", [
    ({"generate": "dice"}, r"source.generate 'dice': not one of the generators \(coin_flip, last_letters\)"),
    ({"generate": "coin_flip", "seed": -1}, r"source.seed: expected an integer in \[0, "),
    ({"generate": "coin_flip", "n": "500"}, r"source.n: expected an integer"),
    ({"generate": "coin_flip", "names": True}, r"source.names: expected an integer"),
    ({"generate": "coin_flip", "people": 2}, r"source: unknown key 'people'; known keys: "),
    ({"seed": 0}, r"source.seed: only with source.generate"),
    ({"generate": "coin_flip", "hf": "x"}, r"source: generate and hf are two sources"),
    ({"origin": "a\nb"}, r"source.origin: one line only"),
    ({"origin": 3}, r"source.origin: expected one line of text"),
])
def test_source_keys_are_strict(source, why):
    with pytest.raises(TaskError, match=why):
        task_from_dict({"name": "t", "schema": "qa", "template": "{question}", "source": source}, "t.yaml")


class _FakeDataset(list):
    features: dict = {}


def _fake_datasets(rows_by_id):
    """A stand-in for the ``datasets`` module: rows shaped like the hub datasets' published schemas
    (made-up contents); the hub itself is not reachable from the tests."""
    import types

    mod = types.ModuleType("datasets")
    mod.utils = types.SimpleNamespace(logging=types.SimpleNamespace(set_verbosity_error=lambda: None))
    mod.load_dataset = lambda dataset, config=None, split=None: _FakeDataset(rows_by_id[(dataset, config, split)])
    return mod


def test_hf_field_mappings_give_schema_records(monkeypatch):
    monkeypatch.delenv("ADAPTLAB_DATA_DIR", raising=False)
    rows = {
        ("tau/commonsense_qa", None, "validation"): [
            {"id": "x", "question": "Where is a fork kept?", "question_concept": "fork", "answerKey": "B",
             "choices": {"label": ["A", "B", "C"], "text": ["sky", "drawer", "river"]}}],
        ("gsm8k", "main", "test"): [{"question": "2 + 3 * 400?", "answer": "3 * 400 = 1200\n2 + 1200 = 1202\n#### 1,202"}],
        ("deepmind/aqua_rat", "raw", "test"): [
            {"question": "1 + 1?", "options": ["A)1", "B)2", "C)3"], "rationale": "1 + 1 = 2", "correct": "B"}] * 101,
    }
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(rows))
    (rec,) = load_split(load_task("commonsenseqa"), "test")
    assert rec["choices"] == ["sky", "drawer", "river"] and rec["gold_index"] == 1
    (rec,) = load_split(load_task("gsm8k"), "test")
    assert rec["answer"] == "1202" and rec["rationale"] == "3 * 400 = 1200\n2 + 1200 = 1202"
    (rec,) = load_split(load_task("aqua"), "test")    # test is test[100:]
    assert rec["gold_index"] == 1 and rec["choices"][1] == "B)2"
