"""Hand-written exemplars for the reasoning tasks whose data carry no rationales (coin_flip,
last_letters, multiarith and other arithmetic word problems). Written by us in the style of
Wei et al. 2022 (chain of thought) and Zhou et al. 2022 (least-to-most); the questions follow
each dataset's wording but the names, words and numbers are our own.

Rationales carry GSM8K's calculator annotations ``<<expr=result>>`` (Cobbe et al. 2021); the
plain chain-of-thought prompts show them stripped (``strip_calc``)."""

from __future__ import annotations

import re

from adaptlab.tasks import Task

_NOTE = 'Note that "flip" here means "reverse".'

# task -> [(question, rationale, answer)]
COT: dict[str, list[tuple[str, str, str]]] = {
    "coin_flip": [
        (f"A coin is heads up. Mona flips the coin. Ravi does not flip the coin. Elsa flips the coin. "
         f"Tomas does not flip the coin. Is the coin still heads up? {_NOTE}",
         "Mona and Elsa flip the coin, so it was flipped <<1+1=2>>2 times. 2 is even (<<2%2=0>>0 left over), "
         "and an even number of flips leaves the coin as it started, heads up.", "yes"),
        (f"A coin is heads up. Ana does not flip the coin. Lee flips the coin. Priya does not flip the coin. "
         f"Omar does not flip the coin. Is the coin still heads up? {_NOTE}",
         "Only Lee flips the coin, so it was flipped 1 time. 1 is odd (<<1%2=1>>1 left over), and an odd "
         "number of flips turns the coin over, to tails up.", "no"),
        (f"A coin is heads up. Kofi flips the coin. Jun flips the coin. Sara flips the coin. Ivo does not "
         f"flip the coin. Is the coin still heads up? {_NOTE}",
         "Kofi, Jun and Sara flip the coin, so it was flipped <<1+1+1=3>>3 times. 3 is odd (<<3%2=1>>1 left "
         "over), and an odd number of flips turns the coin over, to tails up.", "no"),
        (f"A coin is heads up. Noor does not flip the coin. Eli does not flip the coin. Mia does not flip "
         f"the coin. Raj does not flip the coin. Is the coin still heads up? {_NOTE}",
         "Nobody flips the coin, so it was flipped 0 times. 0 is even, and an even number of flips leaves "
         "the coin as it started, heads up.", "yes"),
    ],
    "last_letters": [
        ('Take the last letters of each words in "Mona Ravi Elsa Tomas" and concatenate them.',
         'The last letter of "Mona" is "a". The last letter of "Ravi" is "i". The last letter of "Elsa" is '
         '"a". The last letter of "Tomas" is "s". Concatenating them gives "aias".', "aias"),
        ('Take the last letters of each words in "Kofi Jun Sara Ivo" and concatenate them.',
         'The last letter of "Kofi" is "i". The last letter of "Jun" is "n". The last letter of "Sara" is '
         '"a". The last letter of "Ivo" is "o". Concatenating them gives "inao".', "inao"),
        ('Take the last letters of each words in "Noor Eli Mark Beth" and concatenate them.',
         'The last letter of "Noor" is "r". The last letter of "Eli" is "i". The last letter of "Mark" is '
         '"k". The last letter of "Beth" is "h". Concatenating them gives "rikh".', "rikh"),
        ('Take the last letters of each words in "Ana Lee Priya Omar" and concatenate them.',
         'The last letter of "Ana" is "a". The last letter of "Lee" is "e". The last letter of "Priya" is '
         '"a". The last letter of "Omar" is "r". Concatenating them gives "aear".', "aear"),
    ],
    "math": [
        ("Sam had 9 marbles. He gave 3 to his friend and then found 5 more. How many marbles does Sam have now?",
         "Sam gave away 3, so he had 9 - 3 = <<9-3=6>>6 marbles. Then he found 5 more, so he has "
         "6 + 5 = <<6+5=11>>11 marbles.", "11"),
        ("A baker made 4 trays of cookies with 12 cookies on each tray. She sold 30 cookies. How many cookies "
         "are left?",
         "She made 4 * 12 = <<4*12=48>>48 cookies. After selling 30, 48 - 30 = <<48-30=18>>18 are left.", "18"),
        ("A teacher shares 36 pencils equally among 4 groups. Each group then loses 2 pencils. How many pencils "
         "does each group have?",
         "Each group got 36 / 4 = <<36/4=9>>9 pencils. After losing 2, each has 9 - 2 = <<9-2=7>>7 pencils.", "7"),
        ("Lisa picked 15 apples and her brother picked 3 times as many. They used 20 apples for pies. How many "
         "apples do they have left?",
         "Her brother picked 3 * 15 = <<3*15=45>>45 apples. Together they had 15 + 45 = <<15+45=60>>60 apples. "
         "After the pies, 60 - 20 = <<60-20=40>>40 are left.", "40"),
    ],
}

# task -> [(question, [sub-questions, the last one the question itself], [sub-answers])]
LEAST_TO_MOST: dict[str, list[tuple[str, list[str], list[str]]]] = {
    "coin_flip": [
        (COT["coin_flip"][0][0],
         ["Is the coin heads up after Mona's turn?", "Is the coin heads up after Ravi's turn?",
          "Is the coin heads up after Elsa's turn?", "Is the coin still heads up after Tomas's turn?"],
         ["It was heads up and Mona flips it, so it is tails up. The answer is no.",
          "It was tails up and Ravi does not flip it, so it stays tails up. The answer is no.",
          "It was tails up and Elsa flips it, so it is heads up. The answer is yes.",
          "It was heads up and Tomas does not flip it, so it stays heads up. The answer is yes."]),
        (COT["coin_flip"][1][0],
         ["Is the coin heads up after Ana's turn?", "Is the coin heads up after Lee's turn?",
          "Is the coin heads up after Priya's turn?", "Is the coin still heads up after Omar's turn?"],
         ["It was heads up and Ana does not flip it, so it stays heads up. The answer is yes.",
          "It was heads up and Lee flips it, so it is tails up. The answer is no.",
          "It was tails up and Priya does not flip it, so it stays tails up. The answer is no.",
          "It was tails up and Omar does not flip it, so it stays tails up. The answer is no."]),
    ],
    "last_letters": [
        (COT["last_letters"][0][0],
         ['What is the concatenation of the last letters of "Mona Ravi"?',
          'What is the concatenation of the last letters of "Mona Ravi Elsa"?',
          'What is the concatenation of the last letters of "Mona Ravi Elsa Tomas"?'],
         ['"Mona" ends with "a" and "Ravi" ends with "i", so it is "ai". The answer is ai.',
          '"Mona Ravi" gives "ai" and "Elsa" ends with "a", so it is "aia". The answer is aia.',
          '"Mona Ravi Elsa" gives "aia" and "Tomas" ends with "s", so it is "aias". The answer is aias.']),
        (COT["last_letters"][1][0],
         ['What is the concatenation of the last letters of "Kofi Jun"?',
          'What is the concatenation of the last letters of "Kofi Jun Sara"?',
          'What is the concatenation of the last letters of "Kofi Jun Sara Ivo"?'],
         ['"Kofi" ends with "i" and "Jun" ends with "n", so it is "in". The answer is in.',
          '"Kofi Jun" gives "in" and "Sara" ends with "a", so it is "ina". The answer is ina.',
          '"Kofi Jun Sara" gives "ina" and "Ivo" ends with "o", so it is "inao". The answer is inao.']),
    ],
    "math": [
        (COT["math"][0][0],
         ["How many marbles did Sam have after giving 3 away?", "How many marbles does Sam have now?"],
         ["He had 9 - 3 = 6 marbles. The answer is 6.", "He has 6 + 5 = 11 marbles. The answer is 11."]),
        (COT["math"][3][0],
         ["How many apples did her brother pick?", "How many apples did they pick together?",
          "How many apples do they have left?"],
         ["He picked 3 * 15 = 45 apples. The answer is 45.", "They picked 15 + 45 = 60 apples. The answer is 60.",
          "They have 60 - 20 = 40 apples left. The answer is 40."]),
    ],
}

_CALC = re.compile(r"<<[^<>]*>>")


def strip_calc(text: str) -> str:
    """Remove GSM8K calculator annotations: '48/2 = <<48/2=24>>24' -> '48/2 = 24'."""
    return _CALC.sub("", text)


def family(task: Task) -> str | None:
    """Which hand-written set fits ``task``: its own, 'math' for numeric qa, else None."""
    if task.name in COT:
        return task.name
    if task.schema == "qa" and task.answer_type == "number":
        return "math"
    return None


def cot_exemplars(task: Task, pool: list[dict], k: int, seed: int = 0) -> list[tuple[dict, str, str]]:
    """(example, rationale, answer) demonstrations: the pool's own rationales when it has them
    (GSM8K train), else our hand-written ones."""
    import random

    with_rat = [ex for ex in pool if ex.get("rationale")]
    if with_rat:
        picked = random.Random(seed).sample(with_rat, min(k, len(with_rat)))
        return [(ex, ex["rationale"].strip(), task.answer_text(ex)) for ex in picked]
    fam = family(task)
    if fam is None:
        raise_missing(task, "chain-of-thought")
    return [({"question": q}, r, a) for q, r, a in COT[fam][:k]]


def raise_missing(task: Task, what: str):
    from adaptlab.errors import ConfigError

    raise ConfigError(f"task {task.name}: no {what} exemplars: its train pool has no 'rationale' field "
                      f"and adaptlab ships hand-written ones only for {', '.join(sorted(COT))} and numeric qa")
