"""Zero-shot and instruction prompting.

Zero-shot (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"): the task
is posed by its template alone and the answer read off the LM,

    y* = argmax_y  log P_LM( verbalizer(y) | template(x) )          (scored tasks)
    y* = extract( greedy_decode( template(x) ) )                     (qa)

Instruction: the same, with an explicit instruction naming the label set and the output format
placed before the input (seed 004; Mishra et al. 2022, "Cross-Task Generalization via Natural
Language Crowdsourcing Instructions"). ``text_file`` reads the instruction from a file, or from the
``prompt.txt`` of an adapter folder (a prompt learned by ``adaptlab tune --method bdpl``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adaptlab.prompting.common import Prediction, by_generation, by_options, with_chat
from adaptlab.tasks import Task


@dataclass
class ZeroShot:
    name = "zero-shot"
    normalize: Literal["sum", "mean"] = "sum"   # option score: summed or per-token log-prob
    chat: bool | None = None                    # wrap in the model's chat template (default: the task's)

    def instruction(self, task: Task) -> str:
        return ""

    def render(self, task: Task, example: dict, lm=None) -> str:
        text = task.render(example)
        head = self.instruction(task)
        prompt = f"{head}\n\n{text}" if head else text
        return with_chat(lm, task, prompt, self.chat) if lm is not None else prompt

    def predict(self, lm, task: Task, examples: list[dict]) -> list[Prediction]:
        prompts = [self.render(task, ex, lm) for ex in examples]
        if task.schema == "qa":
            return by_generation(lm, task, prompts, examples)
        return by_options(lm, task, prompts, examples, self.normalize)


@dataclass
class Instruction(ZeroShot):
    name = "instruction"
    text: str = ""                              # override the task's instruction
    text_file: str = ""                         # ... with a file's text (a folder: its prompt.txt)

    def __post_init__(self):
        if self.text_file:
            from pathlib import Path

            from adaptlab.errors import ConfigError

            p = Path(self.text_file).expanduser()
            p = p / "prompt.txt" if p.is_dir() else p
            try:
                self.text = p.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"text_file={self.text_file}: cannot read {p} ({type(e).__name__})") from None

    def instruction(self, task: Task) -> str:
        if self.text:
            return self.text
        if task.instruction:
            return task.instruction
        if task.is_classification:
            words = ", ".join(task.word(lab) for lab in task.labels)
            return f"Answer with one of: {words}."
        if task.schema == "multiple_choice":
            return "Choose the correct answer."
        return "Answer the question."
