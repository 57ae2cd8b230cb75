"""Answer extraction: one table of (text, kind, expected)."""

import pytest

from adaptlab.extract import answers_equal, extract

WORDS = ["negative", "positive"]
SST5 = ["very negative", "negative", "neutral", "positive", "very positive"]

CASES = [
    # numbers: plain, commas, decimals, fractions, currency, units, percent, negative, triggers
    ("42", "number", {}, "42"),
    ("The answer is 1,234.", "number", {}, "1234"),
    ("It costs $1,234.50 in total.", "number", {}, "1234.5"),
    ("She runs 3.75 km a day", "number", {}, "3.75"),
    ("half is 1/2 of it", "number", {}, "0.5"),
    ("It takes 45 minutes.", "number", {}, "45"),
    ("growth of 12%", "number", {}, "12"),
    ("The temperature is -7 degrees", "number", {}, "-7"),
    ("5-3 = 2 so the answer is 2.", "number", {}, "2"),
    ("48 / 2 = 24 clips. 24 + 48 = 72. The answer is 72 clips.", "number", {}, "72"),
    ("First 3, then 5, so 8", "number", {"which": "last"}, "8"),
    ("First 3, then 5, so 8", "number", {}, "3"),
    ("Therefore, the answer (arabic numerals) is 18.", "number", {}, "18"),
    ("The answer is 10. Question: 5 apples", "number", {}, "10"),
    ("1,000,000 people", "number", {}, "1000000"),
    ("no numbers here", "number", {}, None),
    ("", "number", {}, None),
    (".5 of a cup", "number", {}, "0.5"),
    # yes / no
    ("Yes, it is.", "yesno", {}, "yes"),
    ("no", "yesno", {}, "no"),
    ("There are no flips left ... So the answer is yes.", "yesno", {}, "yes"),
    ("Nothing decisive", "yesno", {}, None),
    ("Nobody knows. yes", "yesno", {}, "yes"),          # 'Nobody' is not 'no'
    # choice letters
    ("(B)", "choice", {"n_choices": 5}, 1),
    ("The answer is C.", "choice", {"n_choices": 5}, 2),
    ("Therefore, among A through E, the answer is (e)", "choice", {"n_choices": 5}, 4),
    ("D. a dog", "choice", {"n_choices": 5}, 3),
    ("F", "choice", {"n_choices": 5}, None),
    # label words
    (" positive", "label", {"words": WORDS}, 1),
    ("Negative.", "label", {"words": WORDS}, 0),
    ("It seems positive, but the answer is negative", "label", {"words": WORDS}, 0),
    ("very negative", "label", {"words": SST5}, 0),
    ("positively", "label", {"words": WORDS}, None),
    ("neutral and then positive", "label", {"words": SST5}, 2),
    # free text
    ('The answer is "yajo".', "text", {}, "yajo"),
    ("abcd\nmore", "text", {}, "abcd"),
    ("  ", "text", {}, None),
    ("So the answer is jump twice.", "text", {}, "jump twice"),
]


@pytest.mark.parametrize("text,kind,kw,want", CASES)
def test_extract_table(text, kind, kw, want):
    assert extract(text, kind, **kw) == want


@pytest.mark.parametrize("pred,gold,ok", [
    ("1,000", "1000", True), ("1000.0", "1000", True), ("0.5", "1/2", True), ("72", "72", True),
    ("71", "72", False), (None, "1", False), ("Yajo", "yajo", True), ("yes", "no", False),
])
def test_answers_equal(pred, gold, ok):
    assert answers_equal(pred, gold, "number" if gold[0].isdigit() else "text") is ok
