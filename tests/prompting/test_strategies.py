"""Every strategy on a tiny random decoder (a matrix: adding a strategy adds a row), plus
scripted fake LMs for the control flow of the multi-stage ones."""

import pytest

from adaptlab.engine import Cost, OptionScore, make_lm
from adaptlab.evaluate import evaluate
from adaptlab.prompting import STRATEGIES, make_strategy
from adaptlab.tasks import load_task

SST = [{"text": t, "label": lab} for t, lab in [
    ("a great movie with a fine cast", "positive"), ("an awful boring film", "negative"),
    ("fine and great", "positive"), ("boring, awful", "negative"), ("great", "positive"),
    ("awful", "negative"), ("a fine film", "positive"), ("a boring cast", "negative")]]
MATH = [{"question": f"Tom has {a} apples and buys {b} more. How many apples?", "answer": str(a + b)}
        for a, b in [(3, 4), (2, 5), (1, 1), (6, 2), (9, 9), (4, 4), (7, 1), (5, 5)]]
COIN = [{"question": 'A coin is heads up. Ann flips the coin. Is the coin still heads up? Note that "flip" here '
                     'means "reverse".', "answer": "no"}] * 4

MATRIX = [  # strategy, --set values, task, examples
    ("zero-shot", {}, "sst2", SST),
    ("instruction", {}, "sst2", SST),
    ("few-shot", {"k": "2"}, "sst2", SST),
    ("few-shot", {"k": "2", "per_input": "true", "labels": "flipped", "p": "0.5"}, "sst2", SST),
    ("few-shot", {"k": "2"}, "multiarith", MATH),
    ("direct", {"k": "2"}, "multiarith", MATH),
    ("cot", {"k": "2", "max_new_tokens": "8"}, "multiarith", MATH),
    ("cot", {"k": "2", "max_new_tokens": "8"}, "coin_flip", COIN),
    ("zero-shot-cot", {"reasoning_tokens": "8", "answer_tokens": "4"}, "multiarith", MATH),
    ("zero-shot-cot", {"reasoning_tokens": "8"}, "sst2", SST),
    ("self-consistency", {"k": "1", "n": "3", "max_new_tokens": "8"}, "multiarith", MATH),
    ("self-consistency", {"k": "1", "n": "2", "max_new_tokens": "6", "weighting": "probability"}, "coin_flip", COIN),
    ("least-to-most", {"decompose_tokens": "12", "answer_tokens": "6", "max_subquestions": "2"}, "last_letters",
     [{"question": 'Take the last letters of each words in "Ann Bo" and concatenate them.', "answer": "no"}] * 4),
    ("ape", {"n_demo_sets": "2", "per_set": "2", "demos": "2", "dev_size": "4", "keep": "1", "resample": "1",
             "max_new_tokens": "6"}, "sst2", SST),
    ("calculator", {"k": "2", "max_new_tokens": "10", "max_calls": "2"}, "multiarith", MATH),
]


def test_matrix_covers_every_strategy():
    assert {row[0] for row in MATRIX} == set(STRATEGIES)


@pytest.mark.parametrize("name,sets,task_name,examples", MATRIX, ids=[f"{r[0]}-{r[2]}" for r in MATRIX])
def test_strategy_runs_and_records(tiny_decoder, name, sets, task_name, examples):
    task = load_task(task_name)
    strategy = make_strategy(name, sets)
    lm = make_lm(tiny_decoder)
    res = evaluate(lm, task, strategy, examples[:4], pool=examples, model_name="tiny")
    assert res.metrics["n"] == 4 and res.cost["calls"] > 0
    for rec, ex in zip(res.records, examples):
        assert rec["prompt"] and task.render(ex) in rec["prompt"] or name == "least-to-most"
        if task.schema == "qa":
            assert "raw" in rec
        else:
            assert rec["prediction"] in task.labels
        if name == "zero-shot-cot":     # the closed label set is scored, a number decoded
            assert rec["answer_by"] == ("decoding" if task.schema == "qa" else "scoring")
    # render shows the exact prompt the model got (single-stage strategies)
    if name in ("zero-shot", "instruction", "few-shot", "cot", "direct", "self-consistency", "calculator", "ape"):
        assert strategy.render(task, examples[0]) == res.records[0]["prompt"]
    if name == "ape":
        assert res.records[0]["ape_search_calls"] > 0 and strategy.search_cost["calls"] > 0


# --------------------------------------------------------------------------- scripted LMs
class ScriptLM:
    """A fake LM: generate() answers from a function of the prompt; score() prefers option 0."""

    def __init__(self, reply, reasons=None):
        self.reply, self.reasons, self.cost, self.prompts = reply, reasons, Cost(), []

    def generate(self, prompts, n=1, max_new_tokens=64, temperature=0.0, stop=None, top_p=1.0, seed=None):
        self.prompts.append(list(prompts))
        self.cost.calls += len(prompts) * n
        outs = [[self.reply(p, j) for j in range(n)] for p in prompts]
        self.finish_reasons = [[self.reasons(p, o) if self.reasons else "eos" for o in row] for p, row in zip(prompts, outs)]
        return outs

    def score(self, contexts, options):
        self.cost.calls += len(contexts)
        return [[OptionScore(-1.0 - j, [-1.0 - j]) for j in range(len(o))] for o in options]

    def chat(self, text):
        return text


def test_self_consistency_majority_vote():
    task = load_task("multiarith")
    replies = ["so 7. The answer is 7.", "The answer is 8.", "The answer is 7.0", "no idea"]
    lm = ScriptLM(lambda p, j: replies[j])
    s = make_strategy("self-consistency", {"n": "4"})
    s.prepare(lm, task, [])
    [pred] = s.predict(lm, task, MATH[:1])
    assert pred.prediction == "7" and pred.extra["answers"] == ["7", "8", "7", None]
    assert pred.extra["votes"] == [["7", 2.0], ["8", 1.0]]
    assert lm.cost.calls == 4 and len(lm.prompts) == 1     # one call, n samples


def test_zero_shot_cot_two_stages():
    task = load_task("multiarith")
    lm = ScriptLM(lambda p, j: "He has 3 + 4 = 7 apples." if p.endswith("step by step.") else " 7.")
    [pred] = make_strategy("zero-shot-cot").predict(lm, task, MATH[:1])
    first, second = lm.prompts
    assert first[0].endswith("Answer: Let's think step by step.")
    assert second[0].endswith("He has 3 + 4 = 7 apples.\nTherefore, the answer (arabic numerals) is")
    assert pred.prediction == "7" and pred.extra["reasoning"] == "He has 3 + 4 = 7 apples."
    assert pred.extra["answer_by"] == "decoding" and lm.cost.calls == 2      # an open answer: decoded


def test_zero_shot_cot_scores_yes_no_on_tiny_decoder(tiny_decoder):
    # the random model's stage-2 decode says neither yes nor no (" is is is is"): decoding left every
    # answer unparsed; scoring the closed set after the trigger predicts one of its options every time
    task = load_task("coin_flip")
    examples = [dict(COIN[0], answer=a) for a in ("no", "yes", "no", "yes")]
    lm = make_lm(tiny_decoder)
    res = evaluate(lm, task, make_strategy("zero-shot-cot", {"reasoning_tokens": "8", "answer_tokens": "4"}),
                   examples, model_name="tiny")
    assert [r["prediction"] for r in res.records if r["prediction"] not in ("yes", "no")] == []
    for rec in res.records:
        assert rec["answer_by"] == "scoring" and len(rec["scores"]) == 2 and "raw" not in rec
        assert rec["prompt"].endswith("\nTherefore, the answer (Yes or No) is")
    # honest cost: 4 reasoning generations + 4 scoring requests; only the reasoning generates tokens
    assert res.cost["calls"] == 8 and res.cost["generated_tokens"] <= 4 * 8


def test_zero_shot_cot_closed_set_is_scored_not_decoded():
    task = load_task("coin_flip")
    lm = ScriptLM(lambda p, j: "The coin was flipped once." if p.endswith("step by step.") else " maybe")
    [pred] = make_strategy("zero-shot-cot").predict(lm, task, COIN[:1])
    assert len(lm.prompts) == 1                                    # stage 2 generated nothing
    assert pred.prediction == "yes" and pred.scores == [-1.0, -2.0]   # ScriptLM prefers option 0 (" Yes")
    assert pred.extra["answer_by"] == "scoring" and pred.raw is None and lm.cost.calls == 2


def test_least_to_most_answers_subquestions_in_order():
    task = load_task("multiarith")

    def reply(p, j):
        if p.endswith("Sub-questions:\n1."):
            return " How many did he buy?\n2. How many apples now?"
        return " He bought 4. The answer is 4." if p.endswith("buy?\nA:") else " 3 + 4 = 7. The answer is 7."

    lm = ScriptLM(reply)
    [pred] = make_strategy("least-to-most").predict(lm, task, MATH[:1])
    assert pred.extra["subquestions"] == ["How many did he buy?", "How many apples now?"]
    assert pred.prediction == "7"
    # stage 2's second step sees the first sub-answer
    assert "Q: How many did he buy?\nA: He bought 4. The answer is 4.\nQ: How many apples now?\nA:" in lm.prompts[2][0]


def test_calculator_fills_results_and_continues():
    task = load_task("multiarith")

    def reply(p, j):
        if p.endswith("=24>>"):
            return "24 clips. The answer is 24."
        return " She sold <<48/2"          # stops at '='

    lm = ScriptLM(reply, reasons=lambda p, o: "=" if o.endswith("<<48/2") else "eos")
    s = make_strategy("calculator", {"k": "1"})
    [pred] = s.predict(lm, task, MATH[:1])
    assert pred.raw == " She sold <<48/2=24>>24 clips. The answer is 24."
    assert pred.prediction == "24" and pred.extra["calculator_calls"] == 1


def test_calculator_refused_expression_lets_the_model_continue():
    task = load_task("multiarith")
    lm = ScriptLM(lambda p, j: "1>> The answer is 1." if p.endswith("=") else " <<9**9**9",
                  reasons=lambda p, o: "=" if o.endswith("9**9**9") else "eos")
    [pred] = make_strategy("calculator", {"k": "1"}).predict(lm, task, MATH[:1])
    assert pred.raw == " <<9**9**9=1>> The answer is 1." and pred.extra["calculator_calls"] == 0
