"""The one text path: an over-long example is cut the same way by training featurisation and by
``adaptlab eval`` (the engine and the classification heads), on the task's ``truncate`` side."""

from __future__ import annotations

import json

import pytest

from adaptlab import text
from adaptlab.tasks import load_task_file

TASK = """name: longrev
schema: classification
labels: [negative, positive]
template: "Review: {{text}}\\nSentiment:"
splits: {{train: test, dev: test, test: test}}
truncate: {side}
"""
LONG = " ".join(f"word{i % 50} great movie awful film" for i in range(400))      # ~2,000+ tokens


def _setup(tmp_path, side):
    (tmp_path / "t.yaml").write_text(TASK.format(side=side))
    data = tmp_path / "data"
    data.mkdir()
    ex = {"text": "battery " + LONG + " price", "label": "positive"}
    (data / "test.jsonl").write_text(json.dumps(ex) + "\n")
    return load_task_file(tmp_path / "t.yaml"), str(data), ex


@pytest.mark.parametrize("side", ["left", "right"])
def test_decoder_training_rows_are_what_eval_scores(side, tmp_path, tiny_folder, monkeypatch):
    from adaptlab.engine.local import LocalLM
    from adaptlab.evaluate import run
    from adaptlab.models import load_backbone
    from adaptlab.train.objectives import LMTarget

    task, data, ex = _setup(tmp_path, side)
    seen = []
    real = LocalLM._split_prefix

    def spy(self, seqs, min_rest=1):                 # every row the engine scores, before batching
        seen.extend(list(s) for s in seqs)
        return real(self, seqs, min_rest)

    real_grouped = LocalLM._score_grouped

    def spy_grouped(self, rows, results):            # multi-token options of one context (grouped path)
        seen.extend(list(r) for r, _ in rows)
        return real_grouped(self, rows, results)

    monkeypatch.setattr(LocalLM, "_split_prefix", spy)
    monkeypatch.setattr(LocalLM, "_score_grouped", spy_grouped)
    res = run(str(tmp_path / "t.yaml"), tiny_folder, data=data, split="test", progress=False)
    assert res.cost["truncated"] == 1
    bb = load_backbone(tiny_folder)
    max_len = min(bb.model.config.max_position_embeddings, 2048)
    feat = LMTarget(bb.tokenizer, task, max_len).featurize([ex])[0]
    ids = feat["ids"]
    assert len(ids) == max_len
    # the engine's row for the gold option is the training row without its last token
    assert ids[:-1] in seen
    kept = bb.tokenizer.decode(ids[:-feat["n_target"]])
    assert ("price" in kept) == (side == "left") and ("battery" in kept) == (side == "right")


@pytest.mark.parametrize("side", ["left", "right"])
def test_head_training_inputs_are_what_eval_feeds(side, tmp_path, tiny_encoder, tiny_encoder_folder, monkeypatch):
    from adaptlab.engine.head import HeadLM
    from adaptlab.evaluate import run
    from adaptlab.models import load_backbone
    from adaptlab.train.objectives import HeadCE
    from adaptlab.tuning import apply_method
    from adaptlab.tuning.io import save_adapter

    task, data, ex = _setup(tmp_path, side)
    bb = load_backbone(tiny_encoder_folder)
    save_adapter(tmp_path / "ad", apply_method(bb, "head", {}, task))
    seen = []
    real = HeadLM._encode

    def spy(self, s):
        ids = real(self, s)
        seen.append(ids)
        return ids

    monkeypatch.setattr(HeadLM, "_encode", spy)
    res = run(str(tmp_path / "t.yaml"), adapter=str(tmp_path / "ad"), data=data, split="test", progress=False)
    assert res.metrics["n"] == 1
    max_len = min(bb.model.config.max_position_embeddings, 512)
    feat = HeadCE(bb.tokenizer, task, max_len, "encoder").featurize([ex])[0]
    assert seen == [feat["ids"]] and len(feat["ids"]) == max_len
    tok = bb.tokenizer
    assert feat["ids"][0] == tok.cls_token_id and feat["ids"][-1] == tok.sep_token_id
    kept = tok.decode(feat["ids"])
    assert ("price" in kept) == (side == "left") and ("battery" in kept) == (side == "right")


def test_fit_context_keeps_room_for_the_target():
    ids = list(range(10))
    assert text.fit_context(ids, 3, 8, "left") == [5, 6, 7, 8, 9]
    assert text.fit_context(ids, 3, 8, "right") == [0, 1, 2, 3, 4]
    assert text.fit_context(ids, 50, 8, "left") == [9]                 # the target keeps at most L - 1
    assert text.fit_context(ids[:4], 3, 8, "left") == ids[:4]
    with pytest.raises(ValueError):
        text.fit_context(ids, 0, 8, "middle")
