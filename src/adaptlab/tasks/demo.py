"""The project's own demo task, ``reviews``: product reviews generated here from word lists, so
the main job runs offline on a fresh machine with no downloaded data.

Each review mixes aspect remarks ("The battery is not reliable.") with one overall verdict
("I'm returning it."). The label is the verdict's polarity alone; the aspect remarks are
distractors, often of the opposite polarity and sometimes negated, so a model that counts
sentiment words is wrong often, while one that learns the task finds the verdict. Zero-shot
prompting of a small LM stays well below 100%; tuning can learn the rule.

``python -m adaptlab.tasks.demo`` rewrites ``tasks/data/reviews/{train,dev,test}.jsonl``; a test
checks the shipped files equal what this generator makes.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

PRODUCTS = ["headphones", "blender", "laptop", "backpack", "coffee maker", "phone case", "desk lamp",
            "vacuum", "keyboard", "tent", "kettle", "monitor", "camera", "jacket", "mattress", "router",
            "toaster", "drill", "speaker", "office chair"]
ASPECTS = ["battery", "price", "design", "sound", "build quality", "setup", "customer service", "screen",
           "fit", "delivery", "manual", "noise level", "packaging", "warranty", "color", "weight"]
GOOD = ["excellent", "great", "reliable", "impressive", "solid", "superb", "sturdy", "fantastic",
        "pleasant", "flawless", "decent", "lovely"]
BAD = ["awful", "flimsy", "disappointing", "terrible", "poor", "noisy", "useless", "frustrating",
       "mediocre", "unreliable", "annoying", "clumsy"]
NEGATORS = ["not", "hardly", "far from", "never"]
VERDICT_POS = ["Overall, I would recommend it.", "I'm keeping it.", "Worth every penny.", "I'd buy it again.",
               "Five stars from me.", "In the end, I'm glad I bought the {p}.", "I can't say I regret buying it.",
               "My verdict: a keeper.", "I would happily order another {p}.", "Despite that, it does the job well."]
VERDICT_NEG = ["Overall, I would not recommend it.", "I'm returning it.", "Not worth the money.",
               "I wouldn't buy it again.", "One star from me.", "In the end, I regret buying the {p}.",
               "I can't say I'm happy with it.", "My verdict: send it back.", "I would never order another {p}.",
               "Despite that, it fails at its one job."]
OPENERS = ["I bought this {p} last month.", "Got the {p} as a gift.", "We have used this {p} for a few weeks.",
           "Ordered the {p} on sale.", ""]


def _remark(rng: random.Random, polarity: str) -> str:
    """An aspect remark whose *surface* polarity is ``polarity`` (negation flips the word)."""
    aspect = rng.choice(ASPECTS)
    if rng.random() < 0.3:  # negated: "not great" reads negative
        word = rng.choice(BAD if polarity == "positive" else GOOD)
        return f"The {aspect} is {rng.choice(NEGATORS)} {word}."
    word = rng.choice(GOOD if polarity == "positive" else BAD)
    return f"The {aspect} is {word}."


def make_review(rng: random.Random) -> dict:
    label = rng.choice(["negative", "positive"])
    other = "negative" if label == "positive" else "positive"
    p = rng.choice(PRODUCTS)
    n_remarks = rng.choice([1, 2, 2, 3])
    # distractors: most remarks disagree with the verdict
    remarks = [_remark(rng, other if rng.random() < 0.65 else label) for _ in range(n_remarks)]
    verdict = rng.choice(VERDICT_POS if label == "positive" else VERDICT_NEG).format(p=p)
    opener = rng.choice(OPENERS).format(p=p)
    first = rng.random() >= 0.75 and not verdict.startswith(("Despite", "In the end"))
    parts = [verdict] + remarks if first else remarks + [verdict]
    text = " ".join(([opener] if opener else []) + parts)
    return {"text": text, "label": label}


SPLITS = {"train": (1000, 1), "dev": (200, 2), "test": (300, 3)}


def generate(split: str) -> list[dict]:
    n, seed = SPLITS[split]
    rng = random.Random(1000 + seed)
    return [make_review(rng) for _ in range(n)]


def write_all(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines = [json.dumps(r, ensure_ascii=False) for r in generate(split)]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data" / "reviews"
    write_all(target)
    print(f"wrote {target}")
