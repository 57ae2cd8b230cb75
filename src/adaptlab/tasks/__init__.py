"""Task specs: what to predict, how to prompt for it, where its data lives.

A task is a strict YAML file (unknown or duplicate keys are errors, no code):

    name: sst2
    schema: classification            # classification | pair_classification | qa | multiple_choice | preference
    labels: [negative, positive]
    verbalizer: {negative: negative, positive: positive}   # label -> word the LM says
    instruction: Classify the sentiment of the review as negative or positive.
    template: "Review: {text}\\nSentiment:"                   # fields of the schema
    target: " {answer}"               # how an answer follows the prompt (options, training target)
    answer_type: label                # label | number | yesno | text | choice
    metric: accuracy                  # accuracy | macro_f1 | exact_match
    source: {hf: glue, config: sst2, fields: {text: sentence}, label_names: [negative, positive]}
    splits: {train: "train[:-1000]", dev: "train[-1000:]", test: validation}

Split specs are data split names with an optional Python slice (``all[:2000]``), taken after a
deterministic shuffle when ``shuffle_seed`` is set. Built-in specs live in ``builtin/``; the
guide to writing one, with every key, is ``docs/tasks.md``. Labels, verbalizer words and stop
texts must be texts: an unquoted YAML ``no``/``yes`` (a boolean) or number is refused with the fix.
"""

from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adaptlab.config import load_yaml
from adaptlab.errors import TaskError

BUILTIN_DIR = Path(__file__).parent / "builtin"
DATA_DIR = Path(__file__).parent / "data"

SCHEMAS = {
    "classification": ("text", "label"),
    "pair_classification": ("text_a", "text_b", "label"),
    "qa": ("question", "answer"),
    "multiple_choice": ("question", "choices", "answer"),
    "preference": ("prompt", "chosen", "rejected"),      # a pair of replies, the human-preferred one first
    "instruction": ("instruction", "input", "output"),     # Alpaca format; input may be empty
}
# fields a template may name, per schema (``choices`` renders as "A. ...\nB. ...")
TEMPLATE_FIELDS = {
    "classification": {"text"},
    "pair_classification": {"text_a", "text_b"},
    "qa": {"question"},
    "multiple_choice": {"question", "choices"},
    "preference": {"prompt"},
    "instruction": {"instruction", "input"},
}
ANSWER_TYPES = ("label", "number", "yesno", "text", "choice")
METRICS = ("accuracy", "macro_f1", "exact_match")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SPLIT_RE = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[(-?\d*):(-?\d*)\])?$")


@dataclass
class Task:
    name: str
    schema: str
    template: str
    description: str = ""
    labels: list[str] = field(default_factory=list)
    verbalizer: dict[str, str] = field(default_factory=dict)
    instruction: str = ""
    target: str = " {answer}"
    answer_type: str = "label"
    metric: str = "accuracy"
    source: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "dev": "validation", "test": "test"})
    shuffle_seed: int | None = None
    shuffle_choices: bool = False    # multiple choice: permute each record's options (seeded by shuffle_seed)
    tolerance: float | None = None   # answer_type number: |pred - gold| <= tolerance counts as right
    chat: bool = False
    max_new_tokens: int = 32
    stop: list[str] = field(default_factory=lambda: ["\n"])
    truncate: str = "left"
    demo_separator: str = "\n\n"
    path: str = ""                   # where the spec was read from (not a YAML key)

    # ------------------------------------------------------------------ labels and answers
    @property
    def is_classification(self) -> bool:
        return self.schema in ("classification", "pair_classification")

    def word(self, label: str) -> str:
        return self.verbalizer.get(label, label)

    def fields(self, example: dict) -> dict[str, str]:
        """The values a template can use for ``example``."""
        if self.schema == "multiple_choice":
            choices = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(example["choices"]))
            return {"question": example["question"], "choices": choices}
        return {k: example[k] for k in TEMPLATE_FIELDS[self.schema]}

    def render(self, example: dict, template: str | None = None) -> str:
        """The prompt for one example, without its answer. An ``instruction`` example with an
        empty ``input`` drops the template's paragraphs (blank-line separated) that name ``{input}``
        (Alpaca's no-input prompt)."""
        template = template or self.template
        if self.schema == "instruction" and not example.get("input", "").strip():
            template = "\n\n".join(b for b in template.split("\n\n") if "{input}" not in b)
        return template.format(**self.fields(example))

    def answers(self, example: dict) -> list[str]:
        """The candidate answer strings (unformatted): label words or choice texts."""
        if self.is_classification:
            return [self.word(lab) for lab in self.labels]
        if self.schema == "multiple_choice":
            return list(example["choices"])
        raise ValueError(f"task {self.name}: {self.schema} has no fixed options")

    def options(self, example: dict) -> list[str]:
        """Continuations scored after the prompt, e.g. ``[" negative", " positive"]``."""
        return [self.target.format(answer=a) for a in self.answers(example)]

    def gold(self, example: dict):
        """Gold label name (classification), choice index (multiple choice) or answer text."""
        if self.is_classification:
            return example["label"]
        if self.schema == "multiple_choice":
            return example["gold_index"]
        if self.schema == "preference":
            return example["chosen"]
        if self.schema == "instruction":
            return example["output"]
        return example["answer"]

    def gold_index(self, example: dict) -> int:
        if self.is_classification:
            return self.labels.index(example["label"])
        return example["gold_index"]

    def answer_text(self, example: dict) -> str:
        """The gold answer as the LM should say it (training target, demonstrations)."""
        if self.schema == "preference":
            return example["chosen"]
        if self.is_classification:
            return self.word(example["label"])
        if self.schema == "multiple_choice":
            return example["choices"][example["gold_index"]]
        if self.schema == "instruction":
            return example["output"]
        return example["answer"]

    def target_text(self, example: dict) -> str:
        return self.target.format(answer=self.answer_text(example))

    def split_spec(self, role_or_split: str) -> str:
        return self.splits.get(role_or_split, role_or_split)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d


def parse_split(spec: str) -> tuple[str, slice | None]:
    m = _SPLIT_RE.match(spec.strip())
    if not m:
        raise TaskError(spec, "split spec must look like 'name' or 'name[start:stop]'")
    name, a, b = m.groups()
    if a is None and b is None:
        return name, None
    return name, slice(int(a) if a else None, int(b) if b else None)


def _template_names(template: str) -> set[str]:
    """The fields ``template`` names. Only plain ``{field}`` is allowed (and ``{{``/``}}`` for
    braces): a format spec (``{text:>1000000000}``), a conversion (``{text!r}``) or an attribute
    or index (``{text.__class__}``, ``{text[0]}``) is refused, so rendering can neither fail nor
    reach into objects."""
    names = set()
    try:
        for _, fname, spec, conv in string.Formatter().parse(template):
            if fname is None:
                continue
            shown = "{" + fname + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            if conv is not None or spec:
                raise ValueError(f"{shown} has a {'conversion' if conv is not None else 'format spec'}; "
                                 "templates take plain {field} only")
            if not fname.isidentifier():
                raise ValueError(f"{shown} is not a plain field name; templates take plain {{field}} only")
            names.add(fname)
    except ValueError as e:
        raise ValueError(f"template {template[:80]!r} is malformed: {e}") from None
    return names


def _check_texts(path: str, key: str, values: list, what: str = "") -> None:
    """Every value is text. An unquoted ``no``/``yes``/``on``/``off``/``true``/``false`` or a bare
    number is read by YAML as a boolean or a number: say so, and how to quote it."""
    odd = [v for v in values if not isinstance(v, str)]
    if not odd:
        return
    shown = "[" + ", ".join(repr(v) for v in odd[:4]) + "]"
    label = f"{key} {what}".strip()

    def example(texts):
        quoted = ", ".join(repr(v) for v in texts)
        return f"{key}: [{quoted}]" if not what else quoted

    if all(isinstance(v, bool) for v in odd):
        eg = example(["yes" if v else "no" for v in odd[:4]])
        raise TaskError(path, f"{label}: {shown} are YAML booleans (an unquoted no/yes/off/on/false/true), not texts; "
                              f"quote them: {eg} (see docs/tasks.md)")
    if all(isinstance(v, (int, float)) for v in odd):
        eg = example([str(v) for v in odd[:4]])
        raise TaskError(path, f"{label}: {shown} are YAML numbers, not texts; quote them: {eg} (see docs/tasks.md)")
    bad = odd[0]
    raise TaskError(path, f"{key}: expected a list of texts, got {type(bad).__name__} {str(bad)[:40]}")


def task_from_dict(raw: Any, path: str) -> Task:
    if not isinstance(raw, dict):
        raise TaskError(path, "a task spec must be a mapping of keys to values")
    known = {f.name for f in dataclasses.fields(Task)} - {"path"}
    for key in raw:
        if key not in known:
            raise TaskError(path, f"unknown key {key!r}; known keys: {', '.join(sorted(known))}")
    for key in ("name", "schema", "template"):
        if key not in raw:
            raise TaskError(path, f"missing required key {key!r}")
    types_ = {"name": str, "schema": str, "template": str, "description": str, "labels": list,
              "verbalizer": dict, "instruction": str, "target": str, "answer_type": str, "metric": str,
              "source": dict, "splits": dict, "chat": bool, "shuffle_choices": bool, "max_new_tokens": int, "stop": list,
              "truncate": str, "demo_separator": str}
    for key, typ in types_.items():
        if key in raw and not isinstance(raw[key], typ):
            raise TaskError(path, f"{key}: expected {typ.__name__}, got {type(raw[key]).__name__}")
    if "shuffle_seed" in raw and raw["shuffle_seed"] is not None and (
            isinstance(raw["shuffle_seed"], bool) or not isinstance(raw["shuffle_seed"], int)):
        raise TaskError(path, "shuffle_seed: expected an integer")
    tol = raw.get("tolerance")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < float("inf")):
        raise TaskError(path, f"tolerance: expected a finite number >= 0 (e.g. tolerance: 0.01), got {str(tol)[:40]!r}")
    for key in ("labels", "stop"):
        if key in raw:
            _check_texts(path, key, raw[key])
    if isinstance(raw.get("source"), dict) and isinstance(raw["source"].get("label_names"), list):
        _check_texts(path, "source.label_names", raw["source"]["label_names"])
    if "verbalizer" in raw:
        _check_texts(path, "verbalizer", list(raw["verbalizer"]), what="keys")
        _check_texts(path, "verbalizer", list(raw["verbalizer"].values()), what="words")
    for key in ("splits", "source"):
        if key in raw and not all(isinstance(k, str) for k in raw[key]):
            raise TaskError(path, f"{key}: keys must be texts")
    from adaptlab.untrusted import find_unencodable

    bad = find_unencodable(raw)
    if bad is not None:
        raise TaskError(path, f"not valid Unicode text: {bad}")
    task = Task(**raw, path=str(path))
    _validate(task, path)
    return task


def _validate(t: Task, path: str) -> None:
    if not _NAME_RE.match(t.name):
        raise TaskError(path, f"name {t.name[:80]!r}: a task name is a name, not a path: letters, digits, '_', '-' "
                              "and '.', starting with a letter or digit")
    if t.schema not in SCHEMAS:
        raise TaskError(path, f"schema {t.schema!r}: must be one of {', '.join(SCHEMAS)}")
    if t.answer_type not in ANSWER_TYPES:
        raise TaskError(path, f"answer_type {t.answer_type!r}: must be one of {', '.join(ANSWER_TYPES)}")
    if t.metric not in METRICS:
        raise TaskError(path, f"metric {t.metric!r}: must be one of {', '.join(METRICS)}")
    if t.truncate not in ("left", "right"):
        raise TaskError(path, "truncate: must be 'left' or 'right'")
    try:
        names = _template_names(t.template) | _template_names(t.instruction)
        target_names = _template_names(t.target)
    except ValueError as e:
        raise TaskError(path, str(e)) from None
    allowed = TEMPLATE_FIELDS[t.schema]
    bad = sorted(names - allowed)
    if bad:
        raise TaskError(path, f"template names field {{{bad[0]}}}, which the {t.schema} schema lacks "
                              f"(it has: {', '.join(sorted(allowed))})")
    if target_names - {"answer"}:
        raise TaskError(path, "target may only name {answer}")
    if t.labels and not t.is_classification:
        raise TaskError(path, f"labels: a {t.schema} task has no fixed labels (labels are for classification and "
                              "pair_classification); remove the key"
                              + (" (a yes/no question is answer_type: yesno)" if t.schema == "qa" else ""))
    if t.verbalizer and not t.is_classification:
        raise TaskError(path, f"verbalizer: a {t.schema} task has no labels to verbalize; remove the key")
    if t.tolerance is not None and t.answer_type != "number":
        raise TaskError(path, f"tolerance: only for answer_type: number (this task's is {t.answer_type})")
    if t.shuffle_choices and t.schema != "multiple_choice":
        raise TaskError(path, f"shuffle_choices: only for the multiple_choice schema (this task's is {t.schema})")
    if t.is_classification:
        if len(t.labels) < 2:
            raise TaskError(path, "labels: a classification task needs at least two labels")
        if len(set(t.labels)) != len(t.labels):
            raise TaskError(path, "labels: duplicate label")
        for k, v in t.verbalizer.items():
            if k not in t.labels:
                raise TaskError(path, f"verbalizer: {k!r} is not one of the labels")
            if not isinstance(v, str) or not v.strip():
                raise TaskError(path, f"verbalizer: word for {k!r} must be non-empty text")
        words = [t.word(lab) for lab in t.labels]
        if len(set(words)) != len(words):
            raise TaskError(path, "verbalizer: two labels map to the same word")
    if t.max_new_tokens <= 0:
        raise TaskError(path, "max_new_tokens must be positive")
    for role, spec in t.splits.items():
        if not isinstance(spec, str):
            raise TaskError(path, f"splits.{role}: expected a split spec string")
        try:
            parse_split(spec)
        except TaskError as e:
            raise TaskError(path, f"splits.{role}: {e.why}") from None
    src = t.source
    if src:
        unknown = set(src) - SOURCE_KEYS
        if unknown:
            raise TaskError(path, f"source: unknown key {sorted(unknown)[0]!r}; known keys: {', '.join(sorted(SOURCE_KEYS))}")
        _validate_generate(src, path)
        if "origin" in src and (not isinstance(src["origin"], str) or not src["origin"].strip()):
            raise TaskError(path, "source.origin: expected one line of text saying where the data comes from")
        if "origin" in src and "\n" in src["origin"].strip():
            raise TaskError(path, "source.origin: one line only")
        pkg = src.get("package")
        if pkg is not None and (not isinstance(pkg, str) or not _NAME_RE.match(pkg) or not (DATA_DIR / pkg).is_dir()):
            known = ", ".join(sorted(p.name for p in DATA_DIR.iterdir() if p.is_dir()))
            raise TaskError(path, f"source.package {str(pkg)[:80]!r}: not one of the package's demo data sets ({known}); "
                                  "give your own data with --data or $ADAPTLAB_DATA_DIR")
    if t.shuffle_seed is not None and not 0 <= t.shuffle_seed < 2**63:
        raise TaskError(path, f"shuffle_seed={t.shuffle_seed}: must be in [0, 2**63)")
    if not 0 < t.max_new_tokens <= 1_000_000:
        raise TaskError(path, f"max_new_tokens={t.max_new_tokens}: must be in [1, 1000000]")


SOURCE_KEYS = {"hf", "config", "fields", "label_names", "package", "hf_splits", "origin",
               "generate", "seed", "n", "names"}
_GENERATE_KEYS = ("seed", "n", "names")
_GENERATE_RANGES = {"seed": (0, 2**63 - 1), "n": (1, 100_000), "names": (1, 20)}


def _validate_generate(src: dict, path: str) -> None:
    """``source.generate`` (an offline generator, ``tasks/generate.py``) and its ``seed``/``n``/``names``."""
    from adaptlab.tasks.generate import GENERATORS

    gen = src.get("generate")
    if gen is None:
        stray = [k for k in _GENERATE_KEYS if k in src]
        if stray:
            raise TaskError(path, f"source.{stray[0]}: only with source.generate (a generated data set)")
        return
    if not isinstance(gen, str) or gen not in GENERATORS:
        raise TaskError(path, f"source.generate {str(gen)[:80]!r}: not one of the generators ({', '.join(GENERATORS)})")
    both = [k for k in ("hf", "package") if k in src]
    if both:
        raise TaskError(path, f"source: generate and {both[0]} are two sources; give one")
    for key in _GENERATE_KEYS:
        if key in src:
            v, (lo, hi) = src[key], _GENERATE_RANGES[key]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise TaskError(path, f"source.{key}: expected an integer in [{lo}, {hi}], got {str(v)[:40]!r}")


def source_summary(t: Task) -> str:
    """Where a task's data comes from when neither --data nor $ADAPTLAB_DATA_DIR has it (one phrase)."""
    src = t.source
    if "package" in src:
        return f"package demo data ({src['package']})"
    if "generate" in src:
        from adaptlab.tasks.generate import DEFAULTS

        return f"generated offline ({src['generate']}, seed {src.get('seed', DEFAULTS['seed'])})"
    if "hf" in src:
        return f"hf:{src['hf']}" + (f":{src['config']}" if src.get("config") else "")
    return "--data or $ADAPTLAB_DATA_DIR (see docs/data.md)"


def load_task_file(path: str | Path) -> Task:
    from adaptlab.untrusted import check_yaml_size, read_bytes

    path = Path(path)
    raw_bytes = read_bytes(path, lambda why: TaskError(path, "task file not found" if why == "file not found" else why))
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise TaskError(path, "task file is not UTF-8 text") from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TaskError(line, f"invalid YAML: {problem}") from None
    except RecursionError:
        raise TaskError(path, "invalid YAML: nested too deeply") from None
    check_yaml_size(raw, lambda why: TaskError(path, why))
    return task_from_dict(raw, str(path))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_task(name_or_path: str) -> Task:
    """A built-in task by name, or a task YAML file by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_task_file(p)
    f = BUILTIN_DIR / f"{name_or_path}.yaml"
    if f.exists():
        return load_task_file(f)
    raise TaskError(name_or_path, f"unknown task; built-in tasks: {', '.join(builtin_names())} "
                                  "(or give a task YAML file)")


def list_tasks() -> list[dict]:
    rows = []
    for name in builtin_names():
        t = load_task(name)
        where = source_summary(t)
        rows.append({"name": t.name, "schema": t.schema, "metric": t.metric,
                     "labels": ",".join(t.labels) if t.labels else t.answer_type,
                     "source": where, "description": t.description})
    return rows
