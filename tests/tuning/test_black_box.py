"""The gradient-free methods (bbt, bbtv2, bdpl) and prompt transfer (spot): batched population
scoring equals scoring each candidate alone, CMA-ES resumes exactly by replay, a BBT adapter
loads in peft with the same option scores, REINFORCE finds the prompt a scorer rewards through
``score`` alone, SPoT retrieves the most similar source prompt, and bad input fails before
anything is written."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from adaptlab.tasks import load_task
from adaptlab.train import TrainConfig
from adaptlab.tuning import apply_method
from adaptlab.tuning.io import load_adapter, save_adapter
from tuning_fixtures import load_tiny, tiny_dirs  # noqa: F401,E402  (fixtures)

TASK = "reviews"


def _batch(bb, task, n=6):
    from adaptlab.data import load_split
    from adaptlab.train.objectives import Verbalizer

    obj = Verbalizer(bb.tokenizer, task, 64)
    feats = obj.featurize(load_split(task, "train", limit=n))
    return obj, obj.collate(feats)


@pytest.mark.parametrize("method", ["bbt", "bbtv2"])
def test_population_in_one_forward_equals_one_at_a_time(method, load_tiny):
    bb = load_tiny("decoder")
    task = load_task(TASK)
    tuned = apply_method(bb, method, {"d": 16, "num_virtual_tokens": 4, "max_rows": 7}, task)   # 7: chunks cut candidates
    tuned.eval()
    obj, batch = _batch(bb, task)
    p = tuned.prompt
    X = np.random.default_rng(0).normal(size=(5, 16)) * 2.0
    block = p.blocks - 1
    with torch.no_grad():
        p.set_population(block, X)
        together, _ = obj.loss(tuned, batch)                     # [5] from 5 x 6 rows
        p.set_population(block, None)
        alone = []
        for x in X:
            p.set_population(block, x[None])
            alone.append(obj.loss(tuned, batch)[0][0])
            p.set_population(block, None)
    assert together.shape == (5,)
    assert torch.allclose(together, torch.stack(alone), atol=1e-5)
    assert together.std() > 1e-4                                 # the candidates really differ


def test_cmaes_resume_replays_to_the_same_state(load_tiny):
    from adaptlab.train.loop import _Loss
    from adaptlab.train.steppers import CMAES

    bb = load_tiny("decoder")
    task = load_task(TASK)
    obj, batch = _batch(bb, task, 4)

    class Accel:
        device = torch.device("cpu")
        num_processes = 1

    def run(steps, resume_from=None):
        torch.manual_seed(0)
        tuned = apply_method(bb, "bbt", {"d": 8, "num_virtual_tokens": 2, "popsize": 4}, task)
        mod = _Loss(tuned, obj)
        st = CMAES(4, 1.0, seed=3)
        st.setup(mod, steps)
        if resume_from is not None:
            z, values = resume_from
            tuned.prompt.set(0, z)
            st.load({}, json.loads(json.dumps(values)))           # through JSON, as a checkpoint holds it
        for _ in range(steps):
            st.step(Accel(), mod, [batch])
        return tuned.prompt.get(0), st

    z4, st4 = run(4)
    z2, st2 = run(2)
    z_resumed, st_r = run(2, resume_from=(z2, st2.state()[1]))
    assert np.allclose(z4, z_resumed) and np.array_equal(st4.es[0].mean, st_r.es[0].mean)
    assert st4.es[0].sigma == st_r.es[0].sigma and st4.history == st_r.history
    assert not np.array_equal(st4.es[0].mean, st2.es[0].mean)


def test_bbt_adapter_loads_in_peft_with_the_same_option_scores(load_tiny, tiny_dirs, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from adaptlab.engine.local import LocalLM

    bb = load_tiny("decoder")
    task = load_task(TASK)
    tuned = apply_method(bb, "bbt", {"d": 20, "num_virtual_tokens": 5, "init": "zero"}, task)
    tuned.prompt.set(0, np.random.default_rng(1).normal(size=20) * 3)
    save_adapter(tmp_path / "a", tuned)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    meta = json.loads((tmp_path / "a" / "adaptlab.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and meta["method_state"]["d"] == 20 and len(meta["method_state"]["z"]) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dirs["decoder"]),
                                            str(tmp_path / "a")).eval()
    tuned.eval()
    lm = LocalLM(bb, model=tuned)
    ctx, opts = "Review: a great movie\nSentiment:", [" positive", " negative"]
    ours = [o.logprob for o in lm.score([ctx], [opts])[0]]
    theirs, plain = [], []
    for o in opts:
        c, t = lm._encode_pair(ctx, o)
        ids = torch.tensor([c + t])
        with torch.no_grad():
            for model, out in ((pm, theirs), (bb.model, plain)):
                logp = torch.log_softmax(model(input_ids=ids).logits[0, -ids.shape[1]:].float(), -1)
                out.append(sum(float(logp[len(c) - 1 + j, tok]) for j, tok in enumerate(t)))
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1e-4
    assert max(abs(a - b) for a, b in zip(ours, plain)) > 1e-3          # the prompt does something
    _, loaded = load_adapter(tmp_path / "a")                             # and back into adaptlab: the same z
    assert torch.equal(loaded.prompt.z, tuned.prompt.z)


class RewardsMagic:
    """A scorer (any engine): the gold option wins where the context holds the word 'magic'."""

    def __init__(self, task):
        from adaptlab.engine import Cost

        self.cost, self.task = Cost(), task

    def chat(self, text):
        return text

    def score(self, contexts, options):
        from adaptlab.engine import OptionScore

        self.cost.calls += len(contexts)
        self.cost.forwards += 1
        out = []
        for c, opts in zip(contexts, options):
            good = "magic" in c.split("\n\n")[0]
            gold = "positive" if "great" in c or "excellent" in c or "love" in c else None
            out.append([OptionScore(logprob=(0.0 if (good and self.task.word(o.strip()) == gold) else -1.0))
                        for o in opts])
        return out


def test_bdpl_policy_gradient_finds_the_rewarded_word_through_score_alone(load_tiny):
    from adaptlab.train.loop import _Loss
    from adaptlab.train.objectives import ScoreLoss
    from adaptlab.train.steppers import Reinforce

    bb = load_tiny("decoder")
    task = load_task(TASK)
    exs = [{"text": "a great movie", "label": "positive"}, {"text": "I love it", "label": "positive"}]
    tuned = apply_method(bb, "bdpl", {"prompt_length": 2, "candidates": "dull,magic,plain,grey", "samples": 6}, task)
    lm = RewardsMagic(task)
    obj = ScoreLoss(lm, task)
    feats = obj.featurize(exs)
    mod = _Loss(tuned, obj)
    st = Reinforce(lr=5.0, samples=6, seed=0)
    st.setup(mod, 40)

    class Accel:
        num_processes = 1

    for _ in range(40):
        st.step(Accel(), mod, [obj.collate(feats)])
    assert "magic" in tuned.prompt.text().split()
    assert st.cost([]) == (12, 1) and lm.cost.calls == 40 * 12


def test_pmi_vocabulary_ranks_label_words_first():
    from adaptlab.tuning.bdpl import pmi_vocabulary

    task = load_task(TASK)
    exs = ([{"text": "wonderful film the plot", "label": "positive"}] * 3
           + [{"text": "dreadful film the plot", "label": "negative"}] * 3)
    words = pmi_vocabulary(task, exs, 2, 2)
    assert set(words) == {"wonderful", "dreadful"}


def test_bdpl_prompt_saved_as_text_and_read_by_instruction(load_tiny, tmp_path):
    from adaptlab.prompting import make_strategy

    bb = load_tiny("decoder")
    task = load_task(TASK)
    tuned = apply_method(bb, "bdpl", {"prompt_length": 3, "candidates": "alpha,beta,gamma"}, task)
    with torch.no_grad():
        tuned.prompt.alpha[:, 1] = 1.0
    save_adapter(tmp_path / "a", tuned)
    assert (tmp_path / "a" / "prompt.txt").read_text().strip() == "beta beta beta"
    s = make_strategy("instruction", {"text_file": str(tmp_path / "a")})
    assert s.render(task, {"text": "fine"}).startswith("beta beta beta\n\n")


def test_kshot_draws_k_per_label_with_the_seed():
    from adaptlab.data import load_split
    from adaptlab.train.tune import kshot

    task = load_task(TASK)
    exs = load_split(task, "train")
    a, b = kshot(exs, task, 2, 0), kshot(exs, task, 2, 1)
    assert sorted(task.gold(e) for e in a) == sorted(task.gold(e) for e in b) == ["negative"] * 2 + ["positive"] * 2
    assert a != b


def test_spot_retrieves_the_most_similar_source(load_tiny, tmp_path):
    from adaptlab.tuning.spot import rank_sources

    bb = load_tiny("decoder")
    target = torch.randn(4, 32)
    for name, P in (("near", target + 0.1 * torch.randn(4, 32)), ("far", torch.randn(4, 32)),
                    ("reviews", target.clone())):
        t = apply_method(bb, "prompt-tuning", {"num_virtual_tokens": 4}, load_task(TASK))
        with torch.no_grad():
            t.prompt.prompt_embeddings.copy_(P)
        save_adapter(tmp_path / "lib" / name, t)
        meta = json.loads((tmp_path / "lib" / name / "adaptlab.json").read_text())
        meta["task"]["name"] = name
        (tmp_path / "lib" / name / "adaptlab.json").write_text(json.dumps(meta))
    ranking = rank_sources(target, tmp_path / "lib", exclude="reviews")
    assert [r["source"] for r in ranking] == ["near", "far"]


# --------------------------------------------------------------------------- through the command line


def _cli(args):
    from adaptlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code


def _tune(tiny_dirs, out, method, *sets, extra=()):
    return ["tune", "--task", TASK, "--method", method, "--model", tiny_dirs["decoder"], "--out", str(out),
            *[a for s in sets for a in ("--set", s)], *extra]


def test_black_box_tune_runs_and_counts_calls(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "bbt"
    code = _cli(_tune(tiny_dirs, out, "bbt", "d=8", "num_virtual_tokens=2", "popsize=4", "budget=40",
                      "shots_per_class=2", "dev_every=16", "eval_limit=4", extra=["--json"]))
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["steps"] == 2 and doc["train_calls"] == 2 * 4 * 4 and doc["train_forwards"] == 2
    assert doc["trainable_params"] == 8 and len(doc["dev_per_epoch"]) == 2
    assert (out / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("sets,why", [
    (("d=0",), "d=0"),
    (("d=100000", "shots_per_class=2"), "larger than n x D"),
    (("popsize=1",), "popsize=1"),
    (("budget=10", "shots_per_class=2"), "smaller than one generation"),
])
def test_bbt_bad_input_exit_2_nothing_written(sets, why, tiny_dirs, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(_tune(tiny_dirs, out, "bbt", *sets)) == 2
    err = capsys.readouterr().err.strip()
    assert why in err and len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("method", ["bbt", "bbtv2"])
def test_missing_cma_is_one_line_naming_the_extra(method, tiny_dirs, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cma" else real(name, *a))
    out = tmp_path / "run"
    assert _cli(_tune(tiny_dirs, out, method)) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'adaptlab[bbt]'" in err and len(err.splitlines()) == 1 and not out.exists()


def test_bdpl_empty_vocabulary_exit_2(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(_tune(tiny_dirs, out, "bdpl", "min_count=100000")) == 2
    err = capsys.readouterr().err.strip()
    assert "candidate vocabulary is empty" in err and len(err.splitlines()) == 1 and not out.exists()


def test_spot_init_from_other_method_or_other_base_exit_2(tiny_dirs, tmp_path, capsys, load_tiny):
    from conftest import make_tiny_decoder

    bb = load_tiny("decoder")
    lora = apply_method(bb, "lora", {}, load_task(TASK))
    save_adapter(tmp_path / "lora", lora)
    other = make_tiny_decoder(seed=1)                      # same shapes, other weights: another base model
    pt = apply_method(other, "prompt-tuning", {"num_virtual_tokens": 20}, load_task(TASK))
    save_adapter(tmp_path / "other", pt)
    for init, why in ((tmp_path / "lora", "this one is lora"), (tmp_path / "other", "same base model")):
        out = tmp_path / f"run-{init.name}"
        assert _cli(_tune(tiny_dirs, out, "spot", extra=["--init", str(init)])) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and len(err.splitlines()) == 1 and not out.exists()


def test_spot_best_source_end_to_end(tiny_dirs, tmp_path, capsys):
    from adaptlab.tuning.spot import build_library

    lib = tmp_path / "lib"
    from adaptlab.models import load_backbone

    bb = load_backbone(tiny_dirs["decoder"])
    build_library(["reviews"], library=str(lib), backbone=bb, train_limit=8, max_steps=2, batch_size=4,
                  num_virtual_tokens=4)
    # a second source: the same prompt under another task name
    import shutil

    shutil.copytree(lib / "reviews", lib / "other")
    meta = json.loads((lib / "other" / "adaptlab.json").read_text())
    meta["task"]["name"] = "other"
    (lib / "other" / "adaptlab.json").write_text(json.dumps(meta))
    out = tmp_path / "run"
    code = _cli(_tune(tiny_dirs, out, "spot", "num_virtual_tokens=4", f"library={lib}", "probe_steps=1",
                      extra=["--init", "best-source", "--max-steps", "1", "--train-limit", "8"]))
    assert code == 0
    cfg = json.loads((out / "tune_config.json").read_text())
    assert cfg["init_pick"]["ranking"][0]["source"] == "other"        # its own task is excluded
