import json

import pytest

from adaptlab.errors import TaskError
from adaptlab.tasks import builtin_names, demo, load_task, load_task_file, parse_split

SHARED = ["sst2", "sst5", "mr", "subj", "agnews", "rte", "mrpc", "cola", "gsm8k", "multiarith", "singleeq",
          "coin_flip", "last_letters", "commonsenseqa", "aqua", "tracking_shuffled_objects_3", "scan_length"]


def test_every_shared_task_is_builtin_and_loads():
    names = builtin_names()
    for name in SHARED + ["reviews"]:
        assert name in names
        t = load_task(name)
        assert t.name == name


def test_render_and_options():
    t = load_task("sst2")
    ex = {"text": "a fine film", "label": "positive"}
    assert t.render(ex) == "Review: a fine film\nSentiment:"
    assert t.options(ex) == [" negative", " positive"]
    assert t.gold(ex) == "positive" and t.target_text(ex) == " positive"
    mc = load_task("aqua")
    ex = {"question": "2+2?", "choices": ["3", "4"], "gold_index": 1}
    assert "A. 3\nB. 4" in mc.render(ex) and mc.answer_text(ex) == "4"


def test_demo_data_is_what_the_generator_makes():
    from adaptlab.tasks import DATA_DIR

    for split in demo.SPLITS:
        shipped = [json.loads(line) for line in (DATA_DIR / "reviews" / f"{split}.jsonl").read_text().splitlines()]
        assert shipped == demo.generate(split)
    labels = [r["label"] for r in demo.generate("test")]
    assert 0.4 < labels.count("positive") / len(labels) < 0.6


def _write(tmp_path, text):
    p = tmp_path / "task.yaml"
    p.write_text(text)
    return p


GOOD = "name: t\nschema: classification\nlabels: [a, b]\ntemplate: 'X: {text}'\n"


@pytest.mark.parametrize("text, words", [
    (GOOD + "colour: red\n", "unknown key 'colour'"),
    (GOOD + "name: u\n", "duplicate key"),
    ("name: t\nschema: classification\nlabels: [a, b]\n", "missing required key 'template'"),
    ("name: t\nschema: classification\nlabels: [a, b]\ntemplate: '{question}'\n", "lacks"),
    ("name: t\nschema: table\nlabels: [a, b]\ntemplate: '{text}'\n", "schema 'table'"),
    ("name: t\nschema: classification\nlabels: [a]\ntemplate: '{text}'\n", "at least two labels"),
    (GOOD + "verbalizer: {c: x}\n", "not one of the labels"),
    (GOOD + "verbalizer: {a: x, b: x}\n", "same word"),
    (GOOD + "metric: bleu\n", "metric 'bleu'"),
    (GOOD + "splits: {test: 'x[1:b]'}\n", "split spec"),
    ("- a\n- b\n", "mapping"),
    ("name: [unclosed\n", "invalid YAML"),
    ("name: t\nschema: classification\nlabels: [a, b]\ntemplate: '{text'\n", "malformed"),
])
def test_bad_task_yaml(tmp_path, text, words):
    with pytest.raises(TaskError, match=words):
        load_task_file(_write(tmp_path, text))


def test_yaml_error_names_line(tmp_path):
    with pytest.raises(TaskError) as e:
        load_task_file(_write(tmp_path, GOOD + "name: again\n"))
    assert ":5:" in str(e.value) or "line" in str(e.value)


def test_unknown_task_name():
    with pytest.raises(TaskError, match="unknown task"):
        load_task("no_such_task")


def test_parse_split():
    assert parse_split("validation") == ("validation", None)
    assert parse_split("all[:-2000]") == ("all", slice(None, -2000))
    assert parse_split("test[50:100]") == ("test", slice(50, 100))


@pytest.mark.parametrize("body, words", [
    ("labels: [no, yes]\ntemplate: '{text}'\n",
     r"labels: \[False, True\] are YAML booleans .*quote them: labels: \['no', 'yes'\]"),
    ("labels: [1, 2]\ntemplate: '{text}'\n", r"labels: \[1, 2\] are YAML numbers, not texts; quote them: labels: \['1', '2'\]"),
    ("labels: ['no', 'yes']\nverbalizer: {no: nope, 'yes': yep}\ntemplate: '{text}'\n",
     r"verbalizer keys: \[False\] are YAML booleans"),
    ("labels: ['no', 'yes']\nverbalizer: {'no': no, 'yes': yes}\ntemplate: '{text}'\n",
     r"verbalizer words: \[False, True\] are YAML booleans.*quote them: 'no', 'yes'"),
    ("labels: [a, b]\nsource: {label_names: [off, on]}\ntemplate: '{text}'\n", r"source.label_names: \[False, True\]"),
    ("labels: [a, b]\nstop: [1]\ntemplate: '{text}'\n", r"stop: \[1\] are YAML numbers"),
])
def test_yaml_booleans_and_numbers_are_refused_with_the_fix(tmp_path, body, words):
    """Issue 28 (2): an unquoted no/yes is a YAML boolean; the task file is refused with the fix."""
    with pytest.raises(TaskError, match=words):
        load_task_file(_write(tmp_path, "name: t\nschema: classification\n" + body))


@pytest.mark.parametrize("schema, body, words", [
    ("qa", "labels: ['no', 'yes']\ntemplate: 'Q: {question}'\nanswer_type: yesno\n",
     "labels: a qa task has no fixed labels.*answer_type: yesno"),
    ("multiple_choice", "labels: [a, b]\ntemplate: '{question}'\n", "labels: a multiple_choice task has no fixed labels"),
    ("qa", "verbalizer: {'no': n}\ntemplate: '{question}'\n", "verbalizer: a qa task has no labels"),
])
def test_labels_outside_classification_are_refused(tmp_path, schema, body, words):
    with pytest.raises(TaskError, match=words):
        load_task_file(_write(tmp_path, f"name: t\nschema: {schema}\n" + body))


def test_quoted_yes_no_labels_load(tmp_path):
    t = load_task_file(_write(tmp_path, "name: t\nschema: classification\nlabels: ['no', 'yes']\n"
                                        "verbalizer: {'no': 'No', 'yes': 'Yes'}\ntemplate: '{text}'\n"))
    assert t.labels == ["no", "yes"] and t.options({"text": "x"}) == [" No", " Yes"]


def test_tolerance_key_for_number_answers(tmp_path):
    """Issue 28 (8): `tolerance:` lets '0.67' match a gold of 0.6666666666666666."""
    from adaptlab.metrics import is_correct

    head = "name: t\nschema: qa\nanswer_type: number\ntemplate: 'Q: {question}'\n"
    t = load_task_file(_write(tmp_path, head + "tolerance: 0.01\n"))
    assert is_correct(t, "0.67", "0.6666666666666666") and not is_correct(t, "0.68", "0.6666666666666666")
    plain = load_task_file(_write(tmp_path, head))
    assert not is_correct(plain, "0.67", "0.6666666666666666") and is_correct(plain, "1,000", "1000")
    for bad, words in (("tolerance: -1\n", "tolerance: expected a finite number"), ("tolerance: .inf\n", "finite"),
                       ("tolerance: yes\n", "tolerance: expected")):
        with pytest.raises(TaskError, match=words):
            load_task_file(_write(tmp_path, head + bad))
    with pytest.raises(TaskError, match="tolerance: only for answer_type: number"):
        load_task_file(_write(tmp_path, head.replace("number", "text") + "tolerance: 0.1\n"))


def test_shuffle_choices_is_seeded_and_keeps_the_gold(tmp_path):
    """Issue 28 (8): `shuffle_choices: true` permutes options per record, seeded, gold kept."""
    from adaptlab.data import load_split

    rows = [{"question": f"q{i}?", "choices": ["right", "w1", "w2", "w3"], "answer": "right"} for i in range(40)]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    head = "name: t\nschema: multiple_choice\nanswer_type: choice\ntemplate: '{question}\\n{choices}'\n"
    t = load_task_file(_write(tmp_path, head + "shuffle_choices: true\nshuffle_seed: 3\n"))
    got = load_split(t, "test", str(data))
    assert all(g["choices"][g["gold_index"]] == "right" and sorted(g["choices"]) == sorted(rows[0]["choices"]) for g in got)
    assert len({g["gold_index"] for g in got}) == 4                      # the right answer is no longer always A
    assert load_split(t, "test", str(data)) == got                      # deterministic
    other = load_task_file(_write(tmp_path, head + "shuffle_choices: true\nshuffle_seed: 4\n"))
    assert [g["choices"] for g in load_split(other, "test", str(data))] != [g["choices"] for g in got]
    unshuffled = load_task_file(_write(tmp_path, head))
    assert {g["gold_index"] for g in load_split(unshuffled, "test", str(data))} == {0}
    with pytest.raises(TaskError, match="shuffle_choices: only for the multiple_choice schema"):
        load_task_file(_write(tmp_path, GOOD + "shuffle_choices: true\n"))
