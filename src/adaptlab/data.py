"""Records for a task split, from a ``<dir>/<split>.jsonl`` (or .csv/.tsv), one file, or a
Hugging Face dataset (``hf:<dataset>[:<config>]``, needs the ``datasets`` extra).

Lookup order: ``--data``, then ``$ADAPTLAB_DATA_DIR/<task>/<split>.*``, then the task's own
source (the package's demo data, an offline generator ``source.generate`` from
``tasks/generate.py``, or its Hugging Face dataset). With none, one error line names where the
task's data comes from (``source.origin`` or the Hugging Face id), the file wanted and its fields
(``docs/data.md``). Schemas are those of the shared
benchmark data (see ``tasks.SCHEMAS``); every bad record raises ``DataError(path, line, why)``.
A single ``--data`` file gets the role's slice where the task cuts one data split into its test
and other roles (``all[-1000:]``), so those roles stay disjoint; the
task's ``source.fields`` maps local columns as it does Hugging Face ones (``docs/tasks.md``).
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any

from adaptlab import untrusted
from adaptlab.errors import DataError
from adaptlab.tasks import DATA_DIR, LETTERS, SCHEMAS, Task, parse_split

SUFFIXES = (".jsonl", ".csv", ".tsv")


# --------------------------------------------------------------------------- raw readers


def _decode_line(path: Path, i: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig" if i == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, i, f"not UTF-8 text (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8") from None


def _lines(path: Path):
    """``(line_number, text)`` of a regular file, streamed: a record over ``max_record_bytes``
    is refused with its line number before it is held (``untrusted.iter_lines``)."""
    with untrusted.open_regular(path, lambda why: DataError(path, None, why)) as f:
        seen = False
        for i, raw in untrusted.iter_lines(f, lambda line, why: DataError(path, line, why)):
            if raw.strip():
                seen = True
            yield i, _decode_line(path, i, raw)
        if not seen:
            raise DataError(path, None, "file is empty")


def iter_file(path: str | Path):
    """``(line_number, record)`` from a .jsonl, .csv or .tsv file, read as it is consumed (so
    ``--limit 10`` of a million-row file reads ten rows)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise DataError(path, None, f"unsupported file type {path.suffix or '(none)'}; use .jsonl, .csv or .tsv")
    if path.suffix == ".jsonl":
        # lines end at "\n" only: str.splitlines() would also split on U+2028 inside JSON strings
        for i, line in _lines(path):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except RecursionError:
                raise DataError(path, i, "bad JSON: nested too deeply") from None
            except json.JSONDecodeError as e:
                raise DataError(path, i, f"bad JSON: {e.msg} (column {e.colno})") from None
            except ValueError as e:          # an integer of over 4300 digits
                raise DataError(path, i, f"bad JSON: {untrusted.json_error(e)}") from None
            if not isinstance(rec, dict):
                raise DataError(path, i, f"expected a JSON object, got {type(rec).__name__}")
            yield i, rec
        return
    delim = "\t" if path.suffix == ".tsv" else ","
    text = (line + "\n" for _, line in _lines(path))
    reader = csv.reader(text, delimiter=delim)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(path, None, "file is empty") from None
    except csv.Error as e:
        raise DataError(path, 1, f"bad {path.suffix[1:].upper()}: {e}") from None
    header = [h.strip() for h in header]
    seen = set()
    for h in header:
        if not h:
            raise DataError(path, 1, "empty column name in header")
        if h in seen:
            raise DataError(path, 1, f"duplicate column {h!r} in header")
        seen.add(h)
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise DataError(path, reader.line_num, f"{len(fields)} fields, header has {len(header)}")
            yield reader.line_num, dict(zip(header, fields))
    except csv.Error as e:
        raise DataError(path, reader.line_num, f"bad {path.suffix[1:].upper()}: {e}") from None


def read_file(path: str | Path) -> list[tuple[int, dict]]:
    """``[(line_number, record), ...]`` from a .jsonl, .csv or .tsv file."""
    return list(iter_file(path))


# --------------------------------------------------------------------------- schema checks


def _text(rec: dict, key: str, path, line) -> str:
    if key not in rec:
        raise DataError(path, line, f"missing field {key!r}")
    v = rec[key]
    if not isinstance(v, str):
        raise DataError(path, line, f"field {key!r}: expected text, got {type(v).__name__}")
    if not v.strip():
        raise DataError(path, line, f"field {key!r} is empty")
    return _checked(v, key, path, line)


def _checked(v: str, key: str, path, line) -> str:
    """A text field within ``max_field_chars`` and valid Unicode (JSON can spell a lone surrogate)."""
    cap = untrusted.limits().max_field_chars
    if len(v) > cap:
        raise DataError(path, line, f"field {key!r} is {len(v)} characters, over "
                                    f"{untrusted.limit_hint('max_field_chars', cap)}")
    bad = untrusted.find_unencodable(v)
    if bad is not None:
        raise DataError(path, line, f"field {key!r}: not valid Unicode text ({bad})")
    return v


def normalize(task: Task, rec: dict, path, line) -> dict:
    """Check one record against the task's schema; return it with the schema's fields typed
    (and ``gold_index`` for multiple choice). Extra keys are kept."""
    out = dict(rec)
    if task.schema in ("classification", "pair_classification"):
        for key in SCHEMAS[task.schema][:-1]:
            out[key] = _text(rec, key, path, line)
        if "label" not in rec:
            raise DataError(path, line, "missing field 'label'")
        label = rec["label"]
        if not isinstance(label, str):
            raise DataError(path, line, f"field 'label': expected a label name, got {type(label).__name__} {label!r}")
        if label not in task.labels:
            raise DataError(path, line, f"label {label!r} is not one of the task's labels ({', '.join(task.labels)})")
    elif task.schema == "instruction":
        out["instruction"] = _text(rec, "instruction", path, line)
        out["output"] = _text(rec, "output", path, line)
        inp = rec.get("input", "")
        if not isinstance(inp, str):
            raise DataError(path, line, f"field 'input': expected text, got {type(inp).__name__}")
        out["input"] = inp
    elif task.schema == "qa":
        out["question"] = _text(rec, "question", path, line)
        if "answer" not in rec:
            raise DataError(path, line, "missing field 'answer'")
        ans = rec["answer"]
        if isinstance(ans, bool) or not isinstance(ans, (str, int, float)):
            raise DataError(path, line, f"field 'answer': expected text or a number, got {type(ans).__name__}")
        if isinstance(ans, float) and ans != ans or ans in (float("inf"), float("-inf")):
            raise DataError(path, line, f"field 'answer': {ans} is not a number an answer can be")
        out["answer"] = _checked(str(ans), "answer", path, line)
        if "rationale" in rec and not isinstance(rec["rationale"], str):
            raise DataError(path, line, "field 'rationale': expected text")
        if "rationale" in rec:
            _checked(rec["rationale"], "rationale", path, line)
    elif task.schema == "preference":
        out["prompt"] = rec.get("prompt", "")
        if not isinstance(out["prompt"], str):
            raise DataError(path, line, "field 'prompt': expected text")
        out["chosen"] = _text(rec, "chosen", path, line)
        out["rejected"] = _text(rec, "rejected", path, line)
        if out["chosen"].strip() == out["rejected"].strip():
            raise DataError(path, line, "chosen and rejected are the same reply: the pair says nothing")
    else:  # multiple_choice
        out["question"] = _text(rec, "question", path, line)
        choices = rec.get("choices")
        if choices is None:
            raise DataError(path, line, "missing field 'choices'")
        if isinstance(choices, str):  # CSV: "a|b|c"
            choices = [c.strip() for c in choices.split("|")]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
            raise DataError(path, line, "field 'choices': expected a list of at least two non-empty texts")
        if len(choices) > len(LETTERS):
            raise DataError(path, line, f"field 'choices': at most {len(LETTERS)} choices")
        out["choices"] = [_checked(c, "choices", path, line) for c in choices]
        # the gold: answer_letter (read against choice_letters, else A, B, C...) or the answer
        # text; a record with both must have them agree
        letter, ans = rec.get("answer_letter"), rec.get("answer")
        if letter is not None:
            letters = rec.get("choice_letters") or list(LETTERS[: len(choices)])
            if not isinstance(letters, list) or len(letters) != len(choices):
                raise DataError(path, line, f"field 'choice_letters': expected a list of {len(choices)} letters, "
                                            "one per choice")
            if letter not in letters:
                raise DataError(path, line, f"answer_letter {letter!r} is not one of {letters}")
            out["gold_index"] = list(letters).index(letter)
            if ans is not None and ans != choices[out["gold_index"]]:
                raise DataError(path, line, f"answer_letter {letter!r} points at choice "
                                            f"{choices[out['gold_index']][:60]!r}, but answer is {str(ans)[:60]!r}: "
                                            "fix one (or drop answer_letter to use answer)")
        else:
            if ans is None:
                raise DataError(path, line, "missing field 'answer' (or 'answer_letter')")
            if ans not in choices:
                raise DataError(path, line, f"answer {ans!r} is not one of the choices")
            out["gold_index"] = choices.index(ans)
        if task.shuffle_choices:
            out = _shuffle_choices(task, out)
    return out


def _shuffle_choices(task: Task, rec: dict) -> dict:
    """The record with its options in a seeded order (``shuffle_choices: true``): the order
    depends on ``shuffle_seed`` and the record's own text only, so a record is shuffled the same
    way in every split, slice and run. ``answer_letter``/``choice_letters`` named the old order
    and are dropped."""
    order = list(range(len(rec["choices"])))
    key = "\0".join([str(task.shuffle_seed or 0), rec["question"], *rec["choices"]])
    random.Random(key).shuffle(order)
    out = dict(rec)
    out["choices"] = [rec["choices"][i] for i in order]
    out["gold_index"] = order.index(rec["gold_index"])
    out.pop("answer_letter", None)
    out.pop("choice_letters", None)
    return out


# --------------------------------------------------------------------------- sources


def _find_in_dir(folder: Path, split: str) -> Path | None:
    for suf in SUFFIXES:
        f = folder / f"{split}{suf}"
        if f.exists():
            return f
    return None


def fields_hint(task: Task) -> str:
    """The record fields of the task's schema, as a ``--data`` file must spell them."""
    if task.schema == "multiple_choice":
        return "question, choices (a list), answer (the choice text) or answer_letter"
    if task.schema == "qa":
        return "question, answer; optional rationale"
    if task.schema == "instruction":
        return "instruction, input (may be empty), output"
    if task.schema == "preference":
        return "prompt (may be empty), chosen, rejected"
    return ", ".join(SCHEMAS[task.schema]) + (f" (one of {', '.join(task.labels)})" if task.labels else "")


def _local_hint(task: Task, split: str) -> str:
    """How to give a split from local files: the ``--data`` layout, the ``$ADAPTLAB_DATA_DIR`` one, the fields."""
    return (f"give --data DIR holding {split}.jsonl or put it at $ADAPTLAB_DATA_DIR/{task.name}/{split}.jsonl "
            f"(fields: {fields_hint(task)}; see docs/data.md)")


def _hf_rows(task: Task, dataset: str, config: str | None, split: str,
             ours: str | None = None) -> tuple[str, list[tuple[int, dict]]]:
    where = f"hf:{dataset}" + (f":{config}" if config else "") + f" split {split}"
    try:
        import datasets  # optional extra
    except ImportError:
        raise DataError(where, None, "Hugging Face datasets need: pip install 'adaptlab[hf]' (and the network); "
                                     f"or {_local_hint(task, ours or split)}") from None
    try:
        import logging

        for quiet in ("huggingface_hub", "datasets", "fsspec"):   # our one error line says it; theirs would repeat it
            logging.getLogger(quiet).setLevel(logging.ERROR)
        datasets.utils.logging.set_verbosity_error()
        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as e:  # network, unknown dataset, unknown split...
        why = " ".join(str(e).split())[:160]
        raise DataError(where, None, f"cannot load ({type(e).__name__}: {why}); offline, "
                                     f"{_local_hint(task, ours or split)}") from None
    fields = dict(task.source.get("fields") or {})
    names = task.source.get("label_names")
    feat = ds.features.get(fields.get("label", "label")) if hasattr(ds, "features") else None
    if names is None and feat is not None and hasattr(feat, "names"):
        names = feat.names
    rows = []
    for i, rec in enumerate(ds, 1):
        r = _rename(fields, rec, dotted=True)
        if task.schema == "qa" and isinstance(r.get("answer"), str) and "\n#### " in r["answer"] and "rationale" not in r:
            # GSM8K's "steps\n#### 72": the rationale, then the number (commas dropped, as in the shared files)
            r["rationale"], _, ans = r["answer"].rpartition("\n#### ")
            r["answer"] = ans.strip().replace(",", "")
        if "label" in r and isinstance(r["label"], int) and names:
            r["label"] = names[r["label"]] if 0 <= r["label"] < len(names) else r["label"]
        rows.append((i, r))
    return where, rows


def _missing_split(folder: Path, split: str) -> str:
    """Why ``folder`` has no ``split`` file, and the key that would fix it."""
    have = sorted(f.name for f in folder.iterdir() if f.suffix in SUFFIXES) if folder.is_dir() else []
    if not have:
        return f"no {split}.jsonl/.csv/.tsv in this folder (it holds no .jsonl/.csv/.tsv file)"
    stem = Path(have[0]).stem
    if len(have) == 1 and stem not in ("train", "dev", "validation", "test"):
        return (f"no {split}.jsonl/.csv/.tsv in this folder, only {have[0]}: add `splits:` to the task, e.g. "
                f"splits: {{train: \"{stem}[:-1000]\", test: \"{stem}[-1000:]\"}} with shuffle_seed: 0 (see docs/tasks.md)")
    return (f"no {split}.jsonl/.csv/.tsv in this folder (it holds {', '.join(have[:6])}): name the split "
            "files after the task's `splits:` or change them (see docs/tasks.md)")


def _is_single_file(data: str | None) -> bool:
    return bool(data) and not data.startswith("hf:") and Path(data).expanduser().is_file()


def locate(task: Task, split: str, data: str | None = None) -> tuple[str, Any]:
    """Where a split comes from: ``("file", Path)``, ``("hf", (dataset, config, split))`` or
    ``("generate", (generator, seed, n, names))`` (``source.generate``, made offline).
    A single ``--data`` file stands for whatever split is asked for (``load_split`` still applies
    the role's slice to it)."""
    if data:
        if data.startswith("hf:"):
            parts = data[3:].split(":")
            return "hf", (parts[0], parts[1] if len(parts) > 1 and parts[1] else None, split)
        p = Path(data).expanduser()
        if p.is_dir():
            f = _find_in_dir(p, split)
            if f is None:
                raise DataError(p, None, _missing_split(p, split))
            return "file", f
        if not p.exists():
            raise DataError(p, None, "file not found")
        return "file", p
    env = os.environ.get("ADAPTLAB_DATA_DIR")
    if env:
        folder = Path(env).expanduser() / task.name
        f = _find_in_dir(folder, split)
        if f is not None:
            return "file", f
        if folder.is_dir() and not {"package", "hf", "generate"} & set(task.source):
            raise DataError(folder, None, _missing_split(folder, split))
    src = task.source
    if "package" in src:
        f = _find_in_dir(DATA_DIR / src["package"], split)
        if f is not None:
            return "file", f
    if "generate" in src:
        from adaptlab.tasks.generate import DEFAULTS, SPLIT

        params = (src["generate"], *(src.get(k, DEFAULTS[k]) for k in ("seed", "n", "names")))
        if split != SPLIT:
            raise DataError(f"generate:{src['generate']}", None,
                            f"the generator makes one data split, {SPLIT!r} ({params[2]} records), not {split!r}: "
                            f"cut it into roles with `splits:` (e.g. train: \"{SPLIT}[:50]\"), or "
                            f"{_local_hint(task, split)}")
        return "generate", params
    if "hf" in src:
        hf_split = (src.get("hf_splits") or {}).get(split, split)
        return "hf", (src["hf"], src.get("config"), hf_split)
    origin = src.get("origin", "").strip()
    looked = f"not in $ADAPTLAB_DATA_DIR={env}/{task.name}/" if env else "ADAPTLAB_DATA_DIR is not set"
    raise DataError(task.name, None, f"no data for split {split!r} ({looked}): "
                                     + (f"the data is {origin}; " if origin else "")
                                     + _local_hint(task, split))


# fields a record may lack (the schema check decides: ``answer`` stands in for ``answer_letter``)
_OPTIONAL_FIELDS = {"answer_letter", "choice_letters", "rationale", "input", "prompt"}


def map_fields(task: Task, rec: dict, path=None, line=None) -> dict:
    """A local record with the task's ``source.fields`` column mapping applied (ours <- theirs,
    e.g. ``{label: label_fine}``), as for Hugging Face data: a mapped column wins over a column
    already named like ours, the other columns are kept, and a record without the mapped column
    keeps its own (the shared files already use the schema's names)."""
    fields = task.source.get("fields") or {}
    if not fields:
        return rec
    for ours, theirs in fields.items():
        if theirs not in rec and ours not in rec and ours not in _OPTIONAL_FIELDS:
            raise DataError(path, line, f"missing field {ours!r} (nor {theirs!r}, its column in the task's source.fields)")
    return _rename(fields, rec)


def _rename(fields: dict, rec: dict, dotted: bool = False) -> dict:
    """``rec`` with ``fields`` (ours <- theirs) applied: a mapped column wins, the rest are kept.
    With ``dotted`` (Hugging Face rows) ``theirs`` may name a nested column, ``choices.text``."""
    r = {}
    for ours, theirs in fields.items():
        if theirs in rec:
            r[ours] = rec[theirs]
        elif dotted and "." in theirs:
            v = rec
            for part in theirs.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            if v is not None:
                r[ours] = v
    for k, v in rec.items():
        r.setdefault(k, v)
    return r


def _note(msg: str) -> None:
    import sys

    print(f"note: {msg}", file=sys.stderr)


def _check_slice_labels(task: Task, records: list[dict], path, split: str, spec: str, whole: list[dict]) -> None:
    """One stderr line when a slice of an unshuffled source holds a single label while the
    whole source holds several (a sorted file sliced from its end)."""
    if not task.is_classification or task.shuffle_seed is not None or len(records) < 2:
        return
    got = {r["label"] for r in records}
    if len(got) == 1 and len({r["label"] for r in whole}) > 1:
        _note(f"{path}: split {split!r} ({spec}) holds only label {next(iter(got))!r} ({len(records)} records): "
              "the data is sliced unshuffled; add `shuffle_seed: 0` to the task (see docs/tasks.md)")


def _slices_single_file(task: Task, split: str, name: str) -> bool:
    """Whether one ``--data`` file read for ``split`` gets its slice: yes where the task cuts the
    data split its test role reads into several roles (``all[:-1500]`` / ``all[-1000:]``), so the
    one file holding it is cut the same way and test stays disjoint; yes for a spec asked for by
    itself (``--split all[:100]``); no where the role's data split is not the test one (sst2's
    ``train[:-1000]`` vs ``validation``): that file is taken whole, as the user's own split."""
    if split not in task.splits:
        return True
    test_name, _ = parse_split(task.split_spec("test"))
    sharing = [r for r in ("train", "dev", "test") if parse_split(task.split_spec(r))[0] == test_name]
    return name == test_name and len(sharing) > 1


def load_split(task: Task, split: str, data: str | None = None, limit: int | None = None) -> list[dict]:
    """Validated records of ``split`` (a role like ``test``/``train``/``dev`` mapped through the
    task's ``splits``, or a split spec such as ``validation`` or ``all[:2000]``).

    A single ``--data`` file stands for the data split the role names. Where the task cuts its
    test data split into several roles, the role's slice (after the ``shuffle_seed`` shuffle) is
    applied to the file, so ``all[:-1500]`` and ``all[-1000:]`` give disjoint train and test
    records of one file; a file read for a role of another data split is taken whole (with one
    note when it is read as train: keep test examples out of it)."""
    spec = task.split_spec(split)
    name, sl = parse_split(spec)
    kind, where = locate(task, name, data)
    if kind == "hf":
        path, rows = _hf_rows(task, *where, ours=name)
    elif kind == "generate":
        from adaptlab.tasks.generate import generate

        gen, seed, n, names = where
        path = f"generate:{gen}(seed={seed}, n={n}, names={names})"
        rows = list(enumerate(generate(gen, seed=seed, n=n, names=names), 1))
    else:
        path = where
        if _is_single_file(data) and sl is not None and not _slices_single_file(task, split, name):
            if split == "train":
                test_name, _ = parse_split(task.split_spec("test"))
                _note(f"{path}: taken whole as the train split (the task's train is {spec}, of data split "
                      f"{name!r}; it tests on split {test_name!r}): keep test examples out of this file, or "
                      f"give a folder with {name}.jsonl and {test_name}.jsonl")
            sl = None
        if sl is None and limit is not None:
            # the first N are kept and checked; the rest of the file is streamed through the JSON
            # reader (a broken line anywhere is still found) but not held or schema-checked
            records = []
            for line, rec in iter_file(where):
                if len(records) < limit:
                    records.append(normalize(task, map_fields(task, rec, path, line), path, line))
            if not records:
                raise DataError(path, None, "file has no records")
            return records
        rows = [(line, map_fields(task, rec, path, line)) for line, rec in read_file(where)]
        if not rows:
            raise DataError(path, None, "file has no records")
    records = [normalize(task, rec, path, line) for line, rec in rows]
    if sl is not None:
        whole = records
        if task.shuffle_seed is not None:
            records = list(records)
            random.Random(task.shuffle_seed).shuffle(records)
        records = records[sl]
        if not records:
            raise DataError(path, None, f"split {split!r} is {spec}, which leaves none of this source's "
                                        f"{len(whole)} records; give more data or change the task's `splits:`")
        _check_slice_labels(task, records, path, split, spec, whole)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise DataError(path, None, f"split {split!r} has no records")
    return records


# --------------------------------------------------------------------------- unlabelled text


def read_texts(path: str | Path, field: str = "text") -> list[str]:
    """The texts of an unlabelled corpus (continued pretraining, vocabularies): a ``.txt`` file
    (one text per non-empty line) or a ``.jsonl``/``.csv``/``.tsv`` file (the ``field`` of every
    record, e.g. a task file's ``text``). Blank texts are skipped; a file with none is an error."""
    path = Path(path)
    if path.suffix == ".txt":
        texts = [line.strip() for _, line in _lines(path)]
    elif path.suffix in SUFFIXES:
        texts = []
        for line, rec in read_file(path):
            v = rec.get(field)
            if v is None:
                raise DataError(path, line, f"missing field {field!r} (the text field; choose another with text_field)")
            if not isinstance(v, str):
                raise DataError(path, line, f"field {field!r}: expected text, got {type(v).__name__}")
            texts.append(v.strip())
    else:
        raise DataError(path, None, f"unsupported file type {path.suffix or '(none)'}; use .txt, .jsonl, .csv or .tsv")
    texts = [t for t in texts if t]
    if not texts:
        raise DataError(path, None, "no usable text in this file (every line is blank)")
    return texts


def task_texts(task: Task, examples: list[dict]) -> list[str]:
    """A task's inputs with the labels dropped (task-adaptive pretraining): the text fields of
    each example, joined by a newline where a schema has several."""
    out = []
    for ex in examples:
        if task.schema == "classification":
            out.append(ex["text"])
        elif task.schema == "pair_classification":
            out.append(f"{ex['text_a']}\n{ex['text_b']}")
        elif task.schema == "multiple_choice":
            out.append("\n".join([ex["question"], *ex["choices"]]))
        elif task.schema == "preference":
            out.append(ex["prompt"] + ex["chosen"])
        else:
            out.append(ex["question"])
    return out
