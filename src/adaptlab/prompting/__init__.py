"""Generalist strategies: each is a small dataclass with ``render(task, example)`` (the exact
prompt, before any model call) and ``predict(lm, task, examples) -> [Prediction]``, talking
only to the LM interface (``adaptlab.engine``). Register a strategy by adding it to
``STRATEGIES``; the CLI's ``--prompt`` choices are this dict's keys."""

from __future__ import annotations

from adaptlab.config import build_config
from adaptlab.errors import ConfigError
from adaptlab.prompting.ape import APE
from adaptlab.prompting.calculator import Calculator
from adaptlab.prompting.common import Prediction
from adaptlab.prompting.cot import CoT, Direct
from adaptlab.prompting.few_shot import FewShot
from adaptlab.prompting.least_to_most import LeastToMost
from adaptlab.prompting.self_consistency import SelfConsistency
from adaptlab.prompting.zero_shot import Instruction, ZeroShot
from adaptlab.prompting.zero_shot_cot import ZeroShotCoT

STRATEGIES: dict[str, type] = {
    "zero-shot": ZeroShot,
    "instruction": Instruction,
    "few-shot": FewShot,
    "direct": Direct,
    "cot": CoT,
    "zero-shot-cot": ZeroShotCoT,
    "self-consistency": SelfConsistency,
    "least-to-most": LeastToMost,
    "ape": APE,
    "calculator": Calculator,
}


def make_strategy(name: str, values: dict | None = None):
    if name not in STRATEGIES:
        raise ConfigError(f"unknown prompting strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return build_config(STRATEGIES[name], values, where=f"--prompt {name}")


__all__ = ["STRATEGIES", "Prediction", "make_strategy"]
