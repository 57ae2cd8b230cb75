import pytest

from adaptlab.errors import ConfigError, TaskError
from adaptlab.tasks import load_task
from adaptlab.tasks.mixture import build, builtin_mixtures, load_mixture, rates, render, select


def test_builtin_mixture_has_three_templates_per_task_and_some_phrase_options():
    m = load_mixture("flan-mini")
    assert "flan-mini" in builtin_mixtures()
    assert len(m.clusters) >= 7
    for t in m.tasks:
        assert len(t.templates) >= 3, t.task.name
        assert t.task.template not in t.templates        # the eval template stays unseen
    opt = [t for t in m.tasks if any("{options}" in s for s in t.templates)]
    plain = [t for t in m.tasks if any("{options}" not in s for s in t.templates)]
    assert len(opt) >= 5 and len(plain) == len(m.tasks)


def test_render_options():
    t = load_task("sst5")
    s = render(t, {"text": "ok film", "label": "neutral"}, "{text} {options}")
    assert s == "ok film terrible, bad, okay, good or great"


def _write(tmp_path, body, name="m.yaml"):
    p = tmp_path / name
    p.write_text(body)
    return str(p)


def test_user_task_joins_by_path_and_base(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nschema: classification\nlabels: [a, b]\ntemplate: 'X: {text}\\nY:'\n")
    p = _write(tmp_path, "name: m2\nbase: flan-mini\ntasks:\n  - task: mine.yaml\n    cluster: custom\n"
                         "    templates: ['{text} -> {options}?']\n")
    m = load_mixture(p)
    assert m.clusters[-1] == "custom" and m.tasks[-1].task.name == "mine"
    assert len(m.tasks) == len(load_mixture("flan-mini").tasks) + 1


@pytest.mark.parametrize("body,why", [
    ("name: m\ntasks:\n  - {task: nosuch, cluster: c, templates: ['{text}']}\n", "unknown task"),
    ("name: m\ntasks:\n  - {task: sst2, cluster: c, templates: ['{question}']}\n", "field {question}"),
    ("name: m\ntasks:\n  - {task: gsm8k, cluster: c, templates: ['{question} {options}']}\n", "field {options}"),
    ("name: m\nbogus: 1\ntasks:\n  - {task: sst2, cluster: c, templates: ['{text}']}\n", "unknown key 'bogus'"),
    ("name: m\nmixing: uniform\ntasks:\n  - {task: sst2, cluster: c, templates: ['{text}']}\n", "mixing"),
    ("name: m\ntasks:\n  - {task: sst2, cluster: c, templates: []}\n", "templates"),
    ("name: m\ntasks:\n  - {task: alpaca, cluster: c, templates: ['{instruction}']}\n", "instruction-schema"),
])
def test_bad_mixtures(tmp_path, body, why):
    with pytest.raises(TaskError, match=why.replace("{", r"\{").replace("}", r"\}")):
        load_mixture(_write(tmp_path, body))


def test_select_and_bad_clusters():
    m = load_mixture("flan-mini")
    tr = select(m, ["nli"])
    assert tr and all(t.cluster != "nli" for t in tr)
    assert {t.cluster for t in select(m, ["nli"], ["sentiment", "topic"])} == {"sentiment", "topic"}
    with pytest.raises(ConfigError, match="unknown cluster 'nope'"):
        select(m, ["nope"])
    with pytest.raises(ConfigError, match="both held out and in training"):
        select(m, ["nli"], ["nli", "topic"])


def test_mixing_rates_and_build_counts():
    m = load_mixture("flan-mini")
    assert rates(m, [100, 300]) == [0.25, 0.75]
    m.mixing, m.temperature = "temperature", 1e9
    assert rates(m, [100, 300]) == pytest.approx([0.5, 0.5])
    m.mixing = "proportional"
    entries = select(m, [], ["sentiment"])
    for e in entries:
        e.cap = 3
    pools = {e.task.name: [{"text": f"{e.task.name} {i}", "label": e.task.labels[i % 2]} for i in range(10)]
             for e in entries}
    out = build(m, entries, pools, seed=1)
    assert len(out) == 9 and {x.task for x in out} == {"sst2", "mr", "sst5"}
    assert [x.prompt for x in out] == [x.prompt for x in build(m, entries, pools, seed=1)]
    assert all(x.target.startswith(" ") for x in out)
