import json

import pytest

from adaptlab.data import load_split, read_file
from adaptlab.errors import DataError
from adaptlab.tasks import load_task


@pytest.fixture
def sst2():
    return load_task("sst2")


def write(path, text, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def jsonl(rows):
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def test_jsonl_csv_tsv_agree(tmp_path, sst2):
    rows = [{"text": "good, fine film", "label": "positive"}, {"text": "bad", "label": "negative"}]
    a = write(tmp_path / "a.jsonl", jsonl(rows))
    b = write(tmp_path / "b.csv", 'text,label\n"good, fine film",positive\nbad,negative\n')
    c = write(tmp_path / "c.tsv", "text\tlabel\ngood, fine film\tpositive\nbad\tnegative\n")
    got = [load_split(sst2, "test", str(p)) for p in (a, b, c)]
    assert got[0] == got[1] == got[2] == rows


@pytest.mark.parametrize("content, line, words", [
    ('{"text": "ok", "label": "positive"}\n{"text": "x", "label": \n', 2, "bad JSON"),
    ('{"text": "ok", "label": "positive"}\n{"label": "positive"}\n', 2, "missing field 'text'"),
    ('{"text": "ok", "label": "neutral"}\n', 1, "not one of the task's labels"),
    ('{"text": "   ", "label": "positive"}\n', 1, "is empty"),
    ('{"text": 5, "label": "positive"}\n', 1, "expected text"),
    ('{"text": "ok", "label": 1}\n', 1, "expected a label name"),
    ('[1, 2]\n', 1, "expected a JSON object"),
])
def test_bad_records_name_file_and_line(tmp_path, sst2, content, line, words):
    p = write(tmp_path / "d.jsonl", content)
    with pytest.raises(DataError) as e:
        load_split(sst2, "test", str(p))
    assert e.value.line == line and words in str(e.value) and str(p) in str(e.value)


def test_file_level_errors(tmp_path, sst2):
    with pytest.raises(DataError, match="not found"):
        load_split(sst2, "test", str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="empty"):
        load_split(sst2, "test", str(write(tmp_path / "e.jsonl", "")))
    with pytest.raises(DataError, match="not UTF-8") as e:
        load_split(sst2, "test", str(write(tmp_path / "l.jsonl", b'{"text": "ok", "label": "positive"}\n{"text": "caf\xe9"}\n')))
    assert e.value.line == 2
    with pytest.raises(DataError, match="duplicate column 'text'"):
        load_split(sst2, "test", str(write(tmp_path / "d.csv", "text,text,label\na,b,positive\n")))
    with pytest.raises(DataError, match="unsupported file type"):
        read_file(write(tmp_path / "x.txt", "hello"))
    with pytest.raises(DataError, match="no validation.jsonl"):
        load_split(sst2, "test", str(tmp_path))


def test_lookup_order_and_slices(tmp_path, monkeypatch, sst2):
    rows = [{"text": f"t{i}", "label": "positive" if i % 2 else "negative"} for i in range(1200)]
    write(tmp_path / "env" / "sst2" / "train.jsonl", jsonl(rows))
    write(tmp_path / "env" / "sst2" / "validation.jsonl", jsonl(rows[:10]))
    monkeypatch.setenv("ADAPTLAB_DATA_DIR", str(tmp_path / "env"))
    assert len(load_split(sst2, "train")) == 200          # train[:-1000]
    assert load_split(sst2, "dev")[0]["text"] == "t200"   # train[-1000:]
    assert len(load_split(sst2, "test")) == 10            # validation
    assert len(load_split(sst2, "validation", limit=3)) == 3
    # --data beats the env var
    write(tmp_path / "mine" / "validation.jsonl", jsonl(rows[:4]))
    assert len(load_split(sst2, "test", str(tmp_path / "mine"))) == 4


def test_shuffled_slices_are_disjoint_and_deterministic(tmp_path, monkeypatch):
    mr = load_task("mr")
    rows = [{"text": f"t{i}", "label": "negative" if i < 3000 else "positive"} for i in range(6000)]
    write(tmp_path / "mr" / "all.jsonl", jsonl(rows))
    monkeypatch.setenv("ADAPTLAB_DATA_DIR", str(tmp_path))
    tr, dv, te = (load_split(mr, s) for s in ("train", "dev", "test"))
    assert (len(tr), len(dv), len(te)) == (3500, 500, 2000)
    assert not {r["text"] for r in tr} & {r["text"] for r in te}
    assert 0.4 < sum(r["label"] == "positive" for r in te) / 2000 < 0.6   # shuffled before slicing
    assert load_split(mr, "test") == te


def test_package_demo_data_found_without_env(monkeypatch):
    monkeypatch.delenv("ADAPTLAB_DATA_DIR", raising=False)
    t = load_task("reviews")
    assert len(load_split(t, "train")) == 1000 and len(load_split(t, "test")) == 300


def test_no_data_says_how(monkeypatch):
    monkeypatch.delenv("ADAPTLAB_DATA_DIR", raising=False)
    with pytest.raises(DataError, match=r"ADAPTLAB_DATA_DIR is not set.*zero_shot_cot.*multiarith/test\.jsonl.*docs/data\.md"):
        load_split(load_task("multiarith"), "test")


def test_multiple_choice_letters(tmp_path):
    t = load_task("commonsenseqa")
    rec = {"question": "q?", "choices": ["x", "y", "x"], "answer": "x", "answer_letter": "C",
           "choice_letters": ["A", "B", "C"]}
    p = write(tmp_path / "mc.jsonl", jsonl([rec, {"question": "q?", "choices": ["a", "b"], "answer": "b"}]))
    got = load_split(t, "test", str(p))
    assert [g["gold_index"] for g in got] == [2, 1]
    bad = write(tmp_path / "bad.jsonl", jsonl([{"question": "q?", "choices": ["a", "b"], "answer": "c"}]))
    with pytest.raises(DataError, match="not one of the choices"):
        load_split(t, "test", str(bad))


def test_shared_data_validates_if_present():
    from conftest import shared_data_dir

    from adaptlab.tasks import builtin_names

    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data not beside the checkout")
    from pathlib import Path

    for name in builtin_names():
        if not (Path(root) / name).is_dir():
            continue
        t = load_task(name)
        for role in ("train", "test"):
            assert load_split(t, role, str(Path(root) / name)), (name, role)


def test_jsonl_keeps_unicode_line_separators(tmp_path, sst2):
    p = write(tmp_path / "u.jsonl", '{"text": "one\u2028two\u0085three", "label": "positive"}\r\n')
    assert load_split(sst2, "test", str(p))[0]["text"] == "one\u2028two\u0085three"


# --------------------------------------------------------------------------- issue 28: task files as a new user writes them


def _task_file(tmp_path, body):
    from adaptlab.tasks import load_task_file

    p = tmp_path / "t.yaml"
    p.write_text("name: t\nschema: classification\nlabels: [neg, pos]\ntemplate: 'T: {text}'\n" + body)
    return load_task_file(p)


def _sorted_rows(n=3000):
    return [{"text": f"t{i}", "label": "neg" if i < n // 2 else "pos"} for i in range(n)]


def test_single_file_gets_the_roles_slices(tmp_path):
    """--data FILE keeps the task's slices: train and test are disjoint parts of the file (issue 28, 1)."""
    t = _task_file(tmp_path, 'splits: {train: "all[:-1500]", test: "all[-1000:]"}\nshuffle_seed: 0\n')
    f = write(tmp_path / "all.jsonl", jsonl(_sorted_rows()))
    tr, te = load_split(t, "train", str(f)), load_split(t, "test", str(f))
    assert (len(tr), len(te)) == (1500, 1000)
    assert not {r["text"] for r in tr} & {r["text"] for r in te}
    assert te == load_split(t, "test", str(tmp_path))                  # the file and its folder agree
    assert len(load_split(t, "test", str(f), limit=7)) == 7


def test_single_file_too_short_for_the_slice_says_so(tmp_path):
    t = _task_file(tmp_path, 'splits: {train: "all[:-1500]", test: "all[-1000:]"}\n')
    f = write(tmp_path / "all.jsonl", jsonl(_sorted_rows(1000)))
    with pytest.raises(DataError, match=r"split 'train' is all\[:-1500\], which leaves none of this source's 1000"):
        load_split(t, "train", str(f))


def test_single_file_as_train_of_another_split_is_noted(tmp_path, sst2, capsys):
    """sst2 trains on train[:-1000] and tests on validation: a single file is the user's own
    split, taken whole, and read as train it says to keep test examples out."""
    f = write(tmp_path / "mine.jsonl", jsonl([{"text": f"t{i}", "label": "positive"} for i in range(1200)]))
    assert len(load_split(sst2, "train", str(f))) == 1200
    err = capsys.readouterr().err
    assert "taken whole as the train split" in err and "keep test examples out of this file" in err
    assert len(err.strip().splitlines()) == 1
    assert len(load_split(sst2, "dev", str(f))) == 1200 and len(load_split(sst2, "test", str(f))) == 1200
    assert capsys.readouterr().err == ""
    assert len(load_split(sst2, "train[:10]", str(f))) == 10            # a spec asked for by itself is cut


def test_only_all_file_points_at_splits(tmp_path, monkeypatch):
    t = _task_file(tmp_path, "")
    write(tmp_path / "d" / "all.jsonl", jsonl(_sorted_rows(10)))
    with pytest.raises(DataError, match=r"only all.jsonl: add `splits:` to the task.*docs/tasks.md"):
        load_split(t, "test", str(tmp_path / "d"))
    write(tmp_path / "env" / "t" / "all.jsonl", jsonl(_sorted_rows(10)))
    monkeypatch.setenv("ADAPTLAB_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(DataError, match=r"only all.jsonl: add `splits:`"):
        load_split(t, "test")


def test_unshuffled_single_label_slice_warns(tmp_path, capsys):
    f = write(tmp_path / "all.jsonl", jsonl(_sorted_rows(3000)))
    t = _task_file(tmp_path, 'splits: {train: "all[:-1000]", test: "all[-1000:]"}\n')
    load_split(t, "test", str(f))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds only label 'pos'" in err[0] and "shuffle_seed" in err[0]
    t = _task_file(tmp_path, 'splits: {train: "all[:-1000]", test: "all[-1000:]"}\nshuffle_seed: 1\n')
    load_split(t, "test", str(f))
    assert capsys.readouterr().err == ""


def test_source_fields_map_local_columns(tmp_path):
    t = _task_file(tmp_path, "source: {fields: {label: label_fine, text: sentence}}\n")
    rows = [{"sentence": "a", "label": "coarse", "label_fine": "neg"}, {"sentence": "b", "label_fine": "pos"}]
    got = load_split(t, "test", str(write(tmp_path / "x.jsonl", jsonl(rows))))
    assert [(r["text"], r["label"]) for r in got] == [("a", "neg"), ("b", "pos")]
    csv_got = load_split(t, "test", str(write(tmp_path / "x.csv", "sentence,label_fine\na,neg\nb,pos\n")))
    assert [(r["text"], r["label"]) for r in csv_got] == [("a", "neg"), ("b", "pos")]
    with pytest.raises(DataError, match=r"x2.jsonl:1: missing field 'label' \(nor 'label_fine', its column in the task's source.fields\)"):
        load_split(t, "test", str(write(tmp_path / "x2.jsonl", jsonl([{"sentence": "a"}]))))


def test_answer_and_answer_letter_must_agree(tmp_path):
    """Issue 28 (3): a stale answer_letter is refused, naming the file and line."""
    t = load_task("commonsenseqa")
    ok = {"question": "q?", "choices": ["a", "b", "c"], "answer": "b", "answer_letter": "B"}
    stale = dict(ok, answer_letter="A")
    p = write(tmp_path / "mc.jsonl", jsonl([ok, stale]))
    with pytest.raises(DataError) as e:
        load_split(t, "test", str(p))
    assert e.value.line == 2 and str(p) in str(e.value)
    assert "answer_letter 'A' points at choice 'a', but answer is 'b'" in str(e.value)
    lettered = dict(ok, answer_letter="(2)", choice_letters=["(1)", "(2)", "(3)"])
    assert load_split(t, "test", str(write(tmp_path / "l.jsonl", jsonl([lettered]))))[0]["gold_index"] == 1
    short = dict(ok, choice_letters=["A", "B"])
    with pytest.raises(DataError, match="choice_letters': expected a list of 3 letters"):
        load_split(t, "test", str(write(tmp_path / "s.jsonl", jsonl([short]))))
