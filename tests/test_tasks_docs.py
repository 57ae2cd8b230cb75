"""docs/tasks.md is enough to write a task: its full example (one all.jsonl, a fine-label column,
yes/no labels) loads, splits disjointly, and evaluates; every per-schema example loads; every
Task key is documented."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from adaptlab.data import load_split
from adaptlab.tasks import SCHEMAS, Task, load_task_file

DOC = Path(__file__).parents[1] / "docs" / "tasks.md"


def _blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)


def _example() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- tasks-doc-example: all-jsonl -->\n```yaml\n(.*?)```", text, flags=re.S)
    assert m, "docs/tasks.md lost its full example block"
    return m.group(1)


def _hedges(folder: Path, n: int = 260) -> Path:
    """A tiny all.jsonl sorted the way the doc says: by coarse topic, fine label yes/no."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"sentence": f"It might rain on day {i}." if i % 2 else f"The train leaves at {i}.",
             "label": "weather" if i < n // 2 else "travel", "label_fine": "yes" if i % 2 else "no"} for i in range(n)]
    rows.sort(key=lambda r: r["label_fine"])                          # sorted: unshuffled slices would be one label
    (folder / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_full_example_loads_and_splits(tmp_path):
    (tmp_path / "hedges.yaml").write_text(_example())
    task = load_task_file(tmp_path / "hedges.yaml")
    assert task.labels == ["no", "yes"] and task.options({"text": "x"}) == [" No", " Yes"]
    folder = _hedges(tmp_path / "hedges")
    tr, dv, te = (load_split(task, role, str(folder)) for role in ("train", "dev", "test"))
    assert (len(tr), len(dv), len(te)) == (60, 100, 100)
    texts = [{r["text"] for r in s} for s in (tr, dv, te)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert {r["label"] for r in te} == {"no", "yes"}                 # label_fine, shuffled before slicing
    # the single file gives the same splits as its folder
    assert load_split(task, "test", str(folder / "all.jsonl")) == te
    assert load_split(task, "train", str(folder / "all.jsonl")) == tr


def test_full_example_evaluates(tmp_path, tiny_folder, monkeypatch):
    from conftest import run_cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "hedges.yaml").write_text(_example())
    folder = _hedges(tmp_path / "hedges")
    for prompt, extra in (("zero-shot", []), ("few-shot", ["--set", "k=2"])):
        out = tmp_path / f"{prompt}.json"
        assert run_cli(["eval", "--task", str(tmp_path / "hedges.yaml"), "--data", str(folder), "--model", tiny_folder,
                        "--prompt", prompt, *extra, "--limit", "6", "--out", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert doc["task"] == "hedges" and len(doc["records"]) == 6 and doc["strategy"] == prompt


@pytest.mark.parametrize("i", range(len(_blocks())))
def test_every_yaml_block_loads(tmp_path, i):
    p = tmp_path / "t.yaml"
    p.write_text(_blocks()[i])
    if "name:" not in _blocks()[i]:                                  # a fragment, e.g. source: {fields: ...}
        return
    assert load_task_file(p).schema in SCHEMAS


def test_every_key_and_schema_is_documented():
    text = DOC.read_text()
    keys = {f.name for f in dataclasses.fields(Task)} - {"path"}
    missing = [k for k in keys if f"| `{k}` |" not in text]
    assert not missing, f"docs/tasks.md lacks rows for {missing}"
    worked = {m for m in re.findall(r"^schema: (\w+)", "\n".join(_blocks()), flags=re.M)}
    assert worked == set(SCHEMAS), f"no worked example for {set(SCHEMAS) - worked}"
