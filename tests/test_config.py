from dataclasses import dataclass, field
from typing import Literal

import pytest

from adaptlab.config import atomic_write_json, build_config, check, load_yaml, parse_sets
from adaptlab.errors import ConfigError


@dataclass
class Cfg:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    init: Literal["random", "vocab", "text"] = "random"
    fan_in_fan_out: bool = False
    text: str | None = None

    def __post_init__(self):
        check(self.r > 0, f"r={self.r}: must be positive")


def test_parse_sets_and_build():
    vals = parse_sets(["r=4", "alpha=8", "target-modules=q_proj,k_proj", "init=vocab", "fan_in_fan_out=true"])
    cfg = build_config(Cfg, vals)
    assert cfg == Cfg(r=4, alpha=8.0, target_modules=["q_proj", "k_proj"], init="vocab", fan_in_fan_out=True)
    assert build_config(Cfg, {"text": "none"}).text is None


@pytest.mark.parametrize("sets, words", [
    (["nope=1"], "unknown key 'nope'"),
    (["r=abc"], "expected an integer"),
    (["r=1.5"], "expected an integer"),
    (["r=0"], "must be positive"),
    (["r=-3"], "must be positive"),
    (["alpha=x"], "expected a number"),
    (["init=zeros"], "must be one of"),
    (["fan_in_fan_out=maybe"], "expected true or false"),
])
def test_bad_values(sets, words):
    with pytest.raises(ConfigError, match=words):
        build_config(Cfg, parse_sets(sets))


@pytest.mark.parametrize("item", ["r", "=3", ""])
def test_parse_sets_malformed(item):
    with pytest.raises(ConfigError):
        parse_sets([item])


def test_parse_sets_duplicate():
    with pytest.raises(ConfigError, match="twice"):
        parse_sets(["r=1", "r=2"])


def test_strict_yaml_duplicates_and_no_tags():
    import yaml

    assert load_yaml("a: 1\nb: [1, 2]") == {"a": 1, "b": [1, 2]}
    with pytest.raises(yaml.YAMLError, match="duplicate key"):
        load_yaml("a: 1\na: 2")
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: !!python/object/apply:os.system ['true']")


def test_atomic_write_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "x.json"
    atomic_write_json(p, {"a": 1})
    assert p.read_text().strip().startswith("{")
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]


def test_atomic_write_follows_the_umask(tmp_path):
    """Output files get 0666 less the umask, like open() (issue 26), not mkstemp's 0600."""
    import os

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"a": 1})
        os.umask(0o077)
        atomic_write_json(tmp_path / "b.json", {"b": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
