"""Continued pretraining: the masking statistics, TAPT/DAPT end to end on tiny models, the saved
result (a model folder or an adapter), exact resume through the masking RNG, and bad input."""

from __future__ import annotations

from conftest import run_cli

import json
from pathlib import Path

import pytest
import torch

from adaptlab.errors import UserError
from adaptlab.train.objectives import MaskedLM


def test_masking_is_15_percent_then_80_10_10_and_never_special(tiny_encoder):
    tok = tiny_encoder.tokenizer
    obj = MaskedLM(tok, torch.nn.Identity(), 64)
    words = "a great movie with a fine cast an awful boring film the battery is excellent".split()
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(words[int(i)] for i in torch.randint(len(words), (int(n),), generator=g))
             for n in torch.randint(3, 40, (6000,), generator=g)]
    feats = obj.featurize(texts)
    torch.manual_seed(0)
    chosen = real = masked = kept = special_hits = 0
    specials = set(tok.all_special_ids)
    for s in range(0, len(feats), 32):
        part = feats[s: s + 32]
        b = obj.collate(part)
        orig, _ = torch.full_like(b["input_ids"], tok.pad_token_id), None
        for i, f in enumerate(part):
            orig[i, : len(f["ids"])] = torch.tensor(f["ids"])
        sel = b["labels"] != -100
        is_special = torch.tensor([[t in specials for t in row] for row in orig.tolist()])
        special_hits += int((sel & is_special).sum())
        real += int((~is_special).sum())
        chosen += int(sel.sum())
        masked += int((b["input_ids"][sel] == tok.mask_token_id).sum())
        kept += int((b["input_ids"][sel] == orig[sel]).sum())
        assert torch.equal(b["labels"][sel], orig[sel])
    assert real > 100_000 and special_hits == 0
    assert abs(chosen / real - 0.15) < 0.01
    assert abs(masked / chosen - 0.80) < 0.01
    assert abs(kept / chosen - 0.10) < 0.01                         # (+ the 1/V of random picks that hit the same)
    assert abs(1 - (masked + kept) / chosen - 0.10) < 0.01


_cli = run_cli


def test_tapt_full_on_an_encoder_gives_a_model_folder_tune_takes(tiny_encoder_folder, tmp_path, capsys):
    from adaptlab.models import load_backbone
    from adaptlab.train import tune

    out = tmp_path / "tapt"
    assert _cli(["pretrain", "--task", "reviews", "--model", tiny_encoder_folder, "--out", str(out), "--max-steps", "30",
                 "--batch-size", "16", "--lr", "5e-3", "--json"]) == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert "no MLM head" in cap.err and doc["objective"] == "mlm" and doc["result"] == "model folder"
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["event"] == "train"]
    assert losses[-1] < losses[0]
    bb = load_backbone(str(out))
    assert bb.kind == "encoder"
    res = tune("reviews", "lora", str(out), out=str(tmp_path / "t"), sets={"max_steps": "2", "eval_limit": "4"},
               progress=False)
    assert res["steps"] == 2
    # a second round of pretraining finds the head the first one saved
    assert _cli(["pretrain", "--task", "reviews", "--model", str(out), "--out", str(tmp_path / "again"),
                 "--max-steps", "1"]) == 0
    assert "no MLM head" not in capsys.readouterr().err


def test_dapt_lora_on_a_decoder_is_folded_into_a_model_folder(tiny_decoder, tmp_path):
    from adaptlab.models import load_backbone
    from adaptlab.train.pretrain import write_model_folder
    from adaptlab.tuning import apply_method

    t = apply_method(tiny_decoder, "lora", {"r": 4}, None)
    with torch.no_grad():
        for n, p in t.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    (tmp_path / "m").mkdir()
    write_model_folder(tmp_path / "m", t, tiny_decoder.tokenizer)
    ids = torch.tensor([tiny_decoder.tokenizer("Review: a great movie")["input_ids"]])
    with torch.no_grad():
        want = t(input_ids=ids).logits
        got = load_backbone(str(tmp_path / "m")).model(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)
    assert not any(getattr(m, "merged", False) for m in t.modules())          # the tuned model is left unmerged


def test_dapt_from_a_text_file_and_an_adapter_result(tiny_encoder_folder, tmp_path):
    from adaptlab.train import tune
    from adaptlab.train.pretrain import pretrain

    f = tmp_path / "domain.txt"
    f.write_text("\n".join(["the battery is excellent", "", "an awful boring film", "a great movie"] * 30))
    res = pretrain(text=str(f), method="adapter", model=tiny_encoder_folder, out=str(tmp_path / "p"),
                   sets={"max_steps": "3"}, progress=False)
    assert res["result"] == "adapter folder" and res["texts"] + res["dev_texts"] == 90
    assert (tmp_path / "p" / "adapter_model.safetensors").exists()
    t = tune("reviews", "adapter", tiny_encoder_folder, out=str(tmp_path / "t"), init=str(tmp_path / "p"),
             sets={"max_steps": "1", "eval_limit": "4"}, progress=False)
    assert t["steps"] == 1


def test_resume_through_the_masking_rng_is_bitwise(tiny_encoder, tmp_path):
    from adaptlab.train import Hooks, TrainConfig, train
    from adaptlab.train.steppers import AdamW
    from adaptlab.tuning import apply_method

    texts = ["a great movie with a fine cast", "an awful boring film", "the battery is excellent"] * 20
    cfg = TrainConfig(epochs=2, batch_size=8, save_every=1, seed=3)

    class Killed(Exception):
        pass

    def run(out, kill=None, resume=False):
        torch.manual_seed(0)
        t = apply_method(tiny_encoder, "lora", {}, None)
        head = torch.nn.Linear(32, len(tiny_encoder.tokenizer))

        def on_step(step, loss):
            if step == kill:
                raise Killed
        train(t, texts, MaskedLM(tiny_encoder.tokenizer, head, 32), AdamW(5e-3), cfg, Hooks(on_step=on_step),
              out=out, resume=resume, progress=False)
        return t.trainable_state() | {f"head.{k}": v for k, v in head.state_dict().items()}

    ref = run(tmp_path / "ref")
    with pytest.raises(Killed):
        run(tmp_path / "cut", kill=5)
    got = run(tmp_path / "cut", resume=True)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize("case", ["empty", "latin1", "blank", "mlm-decoder", "clm-encoder", "no-source"])
def test_bad_input_one_line_exit_2_nothing_written(case, tiny_folder, tiny_encoder_folder, tmp_path, capsys):
    f = tmp_path / "t.txt"
    model = tiny_encoder_folder
    extra = []
    if case == "empty":
        f.write_bytes(b"")
    elif case == "latin1":
        f.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    elif case == "blank":
        f.write_text("\n   \n\n")
    else:
        f.write_text("some text\n")
        if case == "mlm-decoder":
            model, extra = tiny_folder, ["--set", "objective=mlm"]
        elif case == "clm-encoder":
            extra = ["--set", "objective=clm"]
    src = [] if case == "no-source" else ["--text", str(f)]
    out = tmp_path / "out"
    assert _cli(["pretrain", *src, "--model", model, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert not out.exists()
    with pytest.raises(UserError):
        from adaptlab.train.pretrain import pretrain

        pretrain(text=None if case == "no-source" else str(f), model=model, out=str(out),
                 sets=dict(x.split("=") for x in extra[1::2]))


def test_head_only_warm_up_leaves_the_body_and_saves_the_head(tiny_encoder_folder, tiny_folder, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "warm"
    assert _cli(["pretrain", "--task", "reviews", "--method", "head", "--model", tiny_encoder_folder, "--out", str(out),
                 "--max-steps", "5", "--lr", "1e-2"]) == 0
    capsys.readouterr()
    base = load_file(str(Path(tiny_encoder_folder) / "model.safetensors"))
    got = load_file(str(out / "model.safetensors"))
    body = {k.removeprefix("bert."): v for k, v in got.items() if k.startswith("bert.")}
    assert all(torch.equal(body[k], v) for k, v in base.items() if k in body) and len(body) >= len(base) - 2
    assert any(k.startswith("cls.") for k in got)
    assert _cli(["pretrain", "--task", "reviews", "--model", str(out), "--out", str(tmp_path / "full"),
                 "--max-steps", "1"]) == 0
    assert "no MLM head" not in capsys.readouterr().err
    assert _cli(["pretrain", "--task", "reviews", "--method", "head", "--model", tiny_folder,
                 "--out", str(tmp_path / "dec")]) == 2
    assert "MLM head" in capsys.readouterr().err and not (tmp_path / "dec").exists()


def test_pretraining_names_its_dev_loss_in_the_progress(tiny_encoder_folder, tmp_path, capsys, monkeypatch):
    import adaptlab.progress
    from adaptlab.train.pretrain import pretrain

    monkeypatch.setenv("ADAPTLAB_PROGRESS", "lines")
    monkeypatch.setattr(adaptlab.progress, "QUIET_SECONDS", 0.0)     # a tiny run is over before the quiet 5 s
    f = tmp_path / "domain.txt"
    f.write_text("\n".join(["the battery is excellent", "an awful boring film", "a great movie"] * 30))
    capsys.readouterr()
    pretrain(text=str(f), method="full", model=tiny_encoder_folder, out=str(tmp_path / "p"), sets={"max_steps": "2"})
    err = capsys.readouterr().err
    assert "dev loss pretrain full: " in err and "pretrain mlm full: 2/2" in err, err
