"""Task mixtures for instruction tuning (FLAN, Wei et al. 2022, "Finetuned Language Models Are
Zero-Shot Learners"; T0, Sanh et al. 2022): many tasks, each phrased by several hand-written
instruction templates, grouped in clusters; one cluster is held out whole and the model is
evaluated zero-shot on it.

A mixture is a strict YAML file (unknown or duplicate keys are errors):

    name: flan-mini
    base: other-mixture          # optional: start from a built-in mixture (name) or a file, add tasks
    cap: 1000                    # per-task example cap (FLAN: 30k; a CPU-sized default)
    mixing: proportional         # proportional (examples-proportional with cap) | temperature
    temperature: 1.0             # mixing: temperature only
    tasks:
      - task: sst2               # a built-in task name or a task YAML path (relative to this file)
        cluster: sentiment
        cap: 500                 # optional per-task override
        templates:               # >= 1; fields of the task's schema, plus {options} for tasks with options
          - "{text}\\nIs the sentiment of this review {options}?\\nAnswer:"

Mixing (FLAN section 2.4; T5, Raffel et al. 2020, section 3.5.2): with n_i = min(|D_i|, cap_i),
examples-proportional draws task i at rate r_i = n_i / sum_j n_j; temperature mixing at
r_i ∝ n_i^(1/T) (T=1 is proportional; larger T flattens toward uniform). A training set of
sum_i n_i examples takes round(r_i * sum_j n_j) of task i (its capped subset cycled where that
is more than n_i). Each example gets one of its task's templates, drawn with the run's seed; the
task's own YAML template is never in the mixture, so zero-shot evaluation uses an unseen one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from adaptlab.config import load_yaml
from adaptlab.errors import ConfigError, TaskError
from adaptlab.tasks import TEMPLATE_FIELDS, Task, _template_names, load_task

MIXTURE_DIR = Path(__file__).parent / "mixtures"
MIXING = ("proportional", "temperature")
_KEYS = {"name", "base", "cap", "mixing", "temperature", "tasks"}
_TASK_KEYS = {"task", "cluster", "cap", "templates"}


@dataclass
class MixTask:
    task: Task
    cluster: str
    templates: list[str]
    cap: int


@dataclass
class Mixture:
    name: str
    tasks: list[MixTask]
    cap: int = 1000
    mixing: str = "proportional"
    temperature: float = 1.0
    path: str = ""

    @property
    def clusters(self) -> list[str]:
        return list(dict.fromkeys(t.cluster for t in self.tasks))

    def to_dict(self) -> dict:
        return {"name": self.name, "cap": self.cap, "mixing": self.mixing, "temperature": self.temperature,
                "tasks": [{"task": t.task.name, "cluster": t.cluster, "cap": t.cap, "templates": t.templates}
                          for t in self.tasks]}


def options_text(task: Task, example: dict) -> str:
    """``{options}``: the answer words, "a, b or c"."""
    words = task.answers(example)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def has_options(task: Task) -> bool:
    return task.is_classification or task.schema == "multiple_choice"


def render(task: Task, example: dict, template: str) -> str:
    fields = task.fields(example)
    if has_options(task):
        fields["options"] = options_text(task, example)
    return template.format(**fields)


def _check_template(where: str, task: Task, template) -> None:
    if not isinstance(template, str) or not template.strip():
        raise TaskError(where, f"task {task.name}: a template must be non-empty text")
    try:
        names = _template_names(template)
    except ValueError as e:
        raise TaskError(where, f"task {task.name}: {e}") from None
    allowed = TEMPLATE_FIELDS[task.schema] | ({"options"} if has_options(task) else set())
    bad = sorted(names - allowed)
    if bad:
        raise TaskError(where, f"task {task.name}: template names field {{{bad[0]}}}, which the {task.schema} "
                               f"task lacks (it has: {', '.join(sorted(allowed))})")


def _int(where: str, key: str, v, lo: int = 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise TaskError(where, f"{key}: expected an integer >= {lo}, got {v!r}")
    return v


def mixture_from_dict(raw, path: str) -> Mixture:
    if not isinstance(raw, dict):
        raise TaskError(path, "a mixture must be a mapping of keys to values")
    for k in raw:
        if k not in _KEYS:
            raise TaskError(path, f"unknown key {k!r}; known keys: {', '.join(sorted(_KEYS))}")
    if "name" not in raw or not isinstance(raw["name"], str):
        raise TaskError(path, "missing required key 'name' (text)")
    base = load_mixture(raw["base"], relative_to=path) if "base" in raw else None
    cap = _int(path, "cap", raw.get("cap", base.cap if base else 1000))
    mixing = raw.get("mixing", base.mixing if base else "proportional")
    if mixing not in MIXING:
        raise TaskError(path, f"mixing {mixing!r}: must be one of {', '.join(MIXING)}")
    temp = raw.get("temperature", base.temperature if base else 1.0)
    if isinstance(temp, bool) or not isinstance(temp, (int, float)) or temp <= 0:
        raise TaskError(path, f"temperature: expected a number > 0, got {temp!r}")
    if "temperature" in raw and mixing != "temperature":
        raise TaskError(path, "temperature: only with mixing: temperature")
    entries = raw.get("tasks", [])
    if not isinstance(entries, list) or (not entries and base is None):
        raise TaskError(path, "tasks: expected a non-empty list")
    tasks = list(base.tasks) if base else []
    here = Path(path).parent
    for i, e in enumerate(entries):
        where = f"{path}: tasks[{i}]"
        if not isinstance(e, dict):
            raise TaskError(where, "expected a mapping with task, cluster, templates")
        for k in e:
            if k not in _TASK_KEYS:
                raise TaskError(where, f"unknown key {k!r}; known keys: {', '.join(sorted(_TASK_KEYS))}")
        for k in ("task", "cluster", "templates"):
            if k not in e:
                raise TaskError(where, f"missing required key {k!r}")
        name = e["task"]
        if not isinstance(name, str):
            raise TaskError(where, "task: expected a built-in task name or a task YAML path")
        local = here / name
        try:
            task = load_task(str(local) if name.endswith((".yaml", ".yml")) and local.exists() else name)
        except TaskError as err:
            raise TaskError(where, f"task {name!r}: {err.why}") from None
        if task.schema == "instruction":
            raise TaskError(where, f"task {task.name}: an instruction-schema task is SFT data, not a mixture task "
                                   "(use 'adaptlab instruct --data FILE')")
        if not isinstance(e["cluster"], str) or not e["cluster"].strip():
            raise TaskError(where, "cluster: expected a non-empty name")
        if not isinstance(e["templates"], list) or not e["templates"]:
            raise TaskError(where, "templates: expected a non-empty list of templates")
        for t in e["templates"]:
            _check_template(where, task, t)
        if any(t.task.name == task.name for t in tasks):
            raise TaskError(where, f"task {task.name} is already in the mixture")
        tasks.append(MixTask(task, e["cluster"], list(e["templates"]), _int(where, "cap", e.get("cap", cap))))
    return Mixture(raw["name"], tasks, cap, mixing, float(temp), str(path))


def builtin_mixtures() -> list[str]:
    return sorted(p.stem for p in MIXTURE_DIR.glob("*.yaml"))


def load_mixture(name_or_path: str, relative_to: str | None = None) -> Mixture:
    """A built-in mixture by name, or a mixture YAML file by path."""
    p = Path(name_or_path)
    if relative_to and not p.is_absolute() and (Path(relative_to).parent / p).exists():
        p = Path(relative_to).parent / p
    if not (p.suffix in (".yaml", ".yml") or p.exists()):
        p = MIXTURE_DIR / f"{name_or_path}.yaml"
        if not p.exists():
            raise TaskError(name_or_path, f"unknown mixture; built-in mixtures: {', '.join(builtin_mixtures())} "
                                          "(or give a mixture YAML file)")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError:
        raise TaskError(p, "mixture file not found or unreadable") from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as e:
        raise TaskError(p, f"invalid YAML: {getattr(e, 'problem', None) or str(e).splitlines()[0]}") from None
    return mixture_from_dict(raw, str(p))


def select(mix: Mixture, hold_out: list[str], clusters: list[str] | None = None) -> list[MixTask]:
    """The training tasks: the ``clusters`` given (default: all) minus ``hold_out``. An unknown
    cluster, or a held-out cluster also named for training, is an error."""
    known = mix.clusters
    for c in list(hold_out) + list(clusters or []):
        if c not in known:
            raise ConfigError(f"mixture {mix.name}: unknown cluster {c!r}; its clusters: {', '.join(known)}")
    both = sorted(set(hold_out) & set(clusters or []))
    if both:
        raise ConfigError(f"cluster {both[0]!r} is both held out and in training; a held-out cluster must be unseen")
    keep = set(clusters) if clusters else set(known)
    out = [t for t in mix.tasks if t.cluster in keep and t.cluster not in hold_out]
    if not out:
        raise ConfigError(f"mixture {mix.name}: no training cluster is left after holding out {', '.join(hold_out)}")
    return out


def rates(mix: Mixture, sizes: list[int]) -> list[float]:
    """r_i of every task from its capped size n_i (see the module docstring)."""
    w = [float(n) if mix.mixing == "proportional" else float(n) ** (1.0 / mix.temperature) for n in sizes]
    s = sum(w)
    return [x / s for x in w]


@dataclass
class MixExample:
    task: str
    cluster: str
    prompt: str
    target: str
    chat: bool = False
    source: dict = field(default_factory=dict)


def build(mix: Mixture, entries: list[MixTask], pools: dict[str, list[dict]], seed: int) -> list[MixExample]:
    """The training examples of ``entries`` (each task's train records in ``pools``), mixed and
    templated as the module docstring says; in a seeded shuffled order."""
    rng = random.Random(seed)
    capped = []
    for e in entries:
        pool = list(pools[e.task.name])
        if not pool:
            raise ConfigError(f"mixture {mix.name}: task {e.task.name} has no training examples")
        random.Random(seed).shuffle(pool)
        capped.append(pool[: e.cap])
    total = sum(len(c) for c in capped)
    out = []
    for e, pool, r in zip(entries, capped, rates(mix, [len(c) for c in capped])):
        for j in range(max(1, round(r * total))):
            ex = pool[j % len(pool)]
            out.append(MixExample(e.task.name, e.cluster, render(e.task, ex, rng.choice(e.templates)),
                                  e.task.target_text(ex), e.task.chat, ex))
    rng.shuffle(out)
    return out
