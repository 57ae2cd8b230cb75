"""docs/methods.md is what docs/make_methods.py prints, and every method and strategy in it shows
its formula (an indented block from its module's docstring), not only the paper's title."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_methods_doc_is_current_and_shows_each_formula():
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "make_methods.py")], capture_output=True,
                         text=True, check=True).stdout
    assert out == (ROOT / "docs" / "methods.md").read_text(), "run: python docs/make_methods.py > docs/methods.md"
    sections = re.split(r"^### ", out, flags=re.M)[1:]
    assert len(sections) >= 20
    for sec in sections:
        name = sec.split("\n", 1)[0]
        assert re.search(r"\n\n    \S", sec), f"{name}: no formula block in docs/methods.md"
