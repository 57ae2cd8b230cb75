"""New tokens beside a method (tuning/tokens.py, vocab.py): mean-of-pieces initialisation, the
frozen rows untouched, peft's trainable-tokens layout loaded by peft itself, and bad input."""

from __future__ import annotations

from conftest import run_cli

import json

import pytest
import torch

from adaptlab.tasks import load_task
from adaptlab.tuning import apply_method
from adaptlab.tuning.io import load_adapter, save_adapter
from adaptlab.vocab import extend_tokenizer, pieces
from tuning_fixtures import load_tiny, tiny_dirs  # noqa: F401  (fixtures)

WORDS = ["bought", "warranty", "packaging"]
TEXT = "Review: I bought it for the warranty and the packaging\nSentiment:"


def _extended(bb, method="lora"):
    from adaptlab.tuning.tokens import extend

    tok = extend_tokenizer(bb.tokenizer, WORDS)
    n0 = bb.model.get_input_embeddings().weight.shape[0]
    ids = list(range(len(bb.tokenizer), len(tok)))
    t = apply_method(bb, method, {}, load_task("reviews"))
    before = t
    extend(t, ids, [pieces(bb.tokenizer, w) for w in WORDS])
    t.tokenizer = tok
    return t, tok, ids, n0, before


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_new_rows_start_as_the_mean_of_their_pieces(kind, load_tiny):
    bb = load_tiny(kind)
    t, tok, ids, n0, _ = _extended(bb)
    E = bb.model.get_input_embeddings().weight
    delta = t.adapter_state()[next(k for k in t.adapter_state() if k.endswith("trainable_tokens_delta"))]
    for w, row in zip(WORDS, delta):
        assert torch.allclose(row, E[pieces(bb.tokenizer, w)].mean(0))
    enc = tok(TEXT)["input_ids"]
    assert any(i in ids for i in enc) and len(enc) < len(bb.tokenizer(TEXT)["input_ids"])
    plain = apply_method(bb, "lora", {}, load_task("reviews"))
    old = torch.tensor([bb.tokenizer("Review: a great movie")["input_ids"]])
    with torch.no_grad():                                    # text without new tokens: the same outputs
        a, b = t(input_ids=old), plain(input_ids=old)
    key = "logits" if kind == "decoder" else "last_hidden_state"
    got, want = getattr(a, key), getattr(b, key)
    if kind == "decoder":
        assert got.shape[-1] == len(tok) and torch.allclose(got[..., :n0], want, atol=1e-6)
        h = t.body(input_ids=old)
        assert torch.allclose(got[..., ids], h @ delta.T, atol=1e-5)
    else:
        assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_peft_loads_lora_with_trainable_tokens(kind, load_tiny, tiny_dirs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM

    bb = load_tiny(kind)
    t, tok, ids, n0, _ = _extended(bb)
    with torch.no_grad():
        for n, p in t.named_parameters():
            if "lora_B" in n or "trainable_tokens_delta" in n:
                p.add_(torch.randn_like(p) * 0.2)
    save_adapter(tmp_path / "a", t)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["trainable_token_indices"] == ids
    base = (AutoModelForCausalLM if kind == "decoder" else AutoModel).from_pretrained(tiny_dirs[kind])
    base.resize_token_embeddings(len(tok))
    pm = PeftModel.from_pretrained(base, str(tmp_path / "a")).eval()
    x = torch.tensor([tok(TEXT)["input_ids"]])
    t.eval()
    with torch.no_grad():
        ours, theirs = t(input_ids=x), pm(input_ids=x)
    key = "logits" if kind == "decoder" else "last_hidden_state"
    assert torch.allclose(getattr(ours, key), getattr(theirs, key), atol=1e-4)
    _, back = load_adapter(tmp_path / "a")                   # and our own loader, with the adapter's tokenizer
    with torch.no_grad():
        assert torch.allclose(getattr(back(input_ids=x), key), getattr(ours, key), atol=1e-6)
    assert len(back.tokenizer) == len(tok)


_cli = run_cli


def test_vocab_command_and_tune_with_it(tiny_dirs, tmp_path, capsys):
    from adaptlab.train import tune

    out = tmp_path / "v"
    assert _cli(["vocab", "--task", "reviews", "--model", tiny_dirs["encoder"], "--vocab-size", "400",
                 "--extend", "5", "--out", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["fertility"]["new"] < rep["fertility"]["base"] and rep["fertility"]["extended"] < rep["fertility"]["base"]
    assert len(rep["added"]) == 5 and rep["most_fragmented"]
    res = tune("reviews", "lora", tiny_dirs["encoder"], out=str(tmp_path / "t"), vocab=str(out),
               sets={"max_steps": "2", "eval_limit": "4"}, progress=False)
    assert res["steps"] == 2
    assert _cli(["eval", "--task", "reviews", "--adapter", str(tmp_path / "t"), "--limit", "4"]) == 0


@pytest.mark.parametrize("args, words", [
    (["--extend", "100000"], "larger than the new vocabulary"),
    (["--extend", "300"], "only"),
])
def test_vocab_bad_extend_exit_2_nothing_written(args, words, tiny_dirs, tmp_path, capsys):
    out = tmp_path / "v"
    assert _cli(["vocab", "--task", "reviews", "--model", tiny_dirs["encoder"], "--vocab-size", "400", *args,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_vocab_bad_text_exit_2(tiny_dirs, tmp_path, capsys):
    f = tmp_path / "e.txt"
    f.write_text("\n \n")
    assert _cli(["vocab", "--text", str(f), "--model", tiny_dirs["encoder"], "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert ("empty" in err or "no usable text" in err) and not (tmp_path / "v").exists()
