"""lm-evaluation-harness ``local-completions`` against a real ``adaptlab serve`` on 127.0.0.1, with
the server's tokenizer endpoints (``tokenizer_backend=remote``): a loglikelihood task and a
generation task give the same accuracy as adaptlab's in-process engine on the same examples.

lm-eval is an oracle only (the ``serve-oracle`` extra; never imported by adaptlab): the test is
skipped where it is not installed."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install '.[serve-oracle]')")

from adaptlab.engine import make_lm  # noqa: E402
from adaptlab.serve import ServeConfig  # noqa: E402
from adaptlab.serve.app import make_app  # noqa: E402
from adaptlab.serve.registry import Registry  # noqa: E402
from adaptlab.tuning import apply_method, make_config  # noqa: E402
from adaptlab.tuning.io import save_adapter  # noqa: E402
from tests.conftest import make_tiny_decoder  # noqa: E402
from tests.serve.harness import running_server  # noqa: E402

UNTIL = json.dumps(["\n"])                    # a JSON string is a YAML double-quoted scalar: a real newline
KEY = "sekrit"
WORDS = ["the cat", "a dog", "the price", "an awful film", "a great movie", "the battery", "Tom has 3 apples",
         "the answer is", "Review: a fine cast", "Question: how many"]


def _tasks(folder, ll_docs, gen_docs) -> None:
    """Two lm-eval tasks over local jsonl files (offline): multiple choice and generate-until."""
    for name, docs in [("ll", ll_docs), ("gen", gen_docs)]:
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = "dataset_path: json\ntest_split: test\nnum_fewshot: 0\n"
    (folder / "adaptlab_ll.yaml").write_text(
        "task: adaptlab_ll\n" + common + f"dataset_kwargs:\n  data_files:\n    test: {folder / 'll.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n")
    (folder / "adaptlab_gen.yaml").write_text(
        "task: adaptlab_gen\n" + common + f"dataset_kwargs:\n  data_files:\n    test: {folder / 'gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n"
        f"generation_kwargs:\n  until: {UNTIL}\n  max_gen_toks: 8\n  do_sample: false\n"
        "  temperature: 0\n"
        "metric_list:\n  - metric: exact_match\n")


def test_lm_eval_local_completions_matches_in_process(tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    bb = make_tiny_decoder()
    tuned = apply_method(bb, "lora", make_config("lora", {"r": 4}))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    tuned.eval()
    save_adapter(tmp_path / "lora", tuned)
    lm = make_lm(bb, model=tuned)

    # loglikelihood task: 3 options each; generation task: half the targets are what greedy
    # decoding gives in process (so both sides must produce those exact strings), half are not
    ll = [{"context": f"{w}:", "choices": ["positive", "negative", "yes"], "label": i % 3} for i, w in enumerate(WORDS)]
    greedy = [t[0] for t in lm.generate([w for w in WORDS], max_new_tokens=8, temperature=0.0, stop=["\n"])]
    gen = [{"question": w, "answer": greedy[i] if i % 2 == 0 else "no such text"} for i, w in enumerate(WORDS)]
    _tasks(tmp_path, ll, gen)

    scores = lm.score([d["context"] for d in ll], [[" " + c for c in d["choices"]] for d in ll])
    local_ll = [max(range(3), key=lambda j: s[j].logprob) for s in scores]
    local_acc_ll = 100 * sum(p == d["label"] for p, d in zip(local_ll, ll)) / len(ll)
    local_acc_gen = 100 * sum(t == d["answer"] for t, d in zip(greedy, gen)) / len(gen)

    cfg = ServeConfig(adapters={"lora": str(tmp_path / "lora")}, api_key=KEY, max_batch=8)
    reg = Registry.load(cfg, backbone=bb)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)          # lm-eval's completions requests
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with running_server(make_app(reg, cfg)) as url:
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"base_url={url}/v1/completions,model=lora,tokenizer_backend=remote,"
                       f"auth_token={KEY},max_retries=1,num_concurrent=1,max_length=512",
            tasks=["adaptlab_ll", "adaptlab_gen"], task_manager=TaskManager(include_path=str(tmp_path),
                                                                             include_defaults=False),
            log_samples=True, bootstrap_iters=0)
    res = out["results"]
    acc_ll, acc_gen = 100 * res["adaptlab_ll"]["acc,none"], 100 * res["adaptlab_gen"]["exact_match,none"]
    print(f"\nloglikelihood acc: lm-eval via server {acc_ll:.1f}, in-process {local_acc_ll:.1f}; "
          f"generation exact match: lm-eval via server {acc_gen:.1f}, in-process {local_acc_gen:.1f} "
          f"({len(WORDS)} examples each)")
    assert abs(acc_ll - local_acc_ll) <= 0.5 and abs(acc_gen - local_acc_gen) <= 0.5
    assert local_acc_gen >= 50                          # the generation check is not vacuous
    # per example: the same option log-probs (1e-4) and the same generated text
    for s in out["samples"]["adaptlab_ll"]:
        i = s["doc_id"]
        for j, (lp, _greedy) in enumerate(s["filtered_resps"]):
            assert abs(lp - scores[i][j].logprob) < 1e-4, (i, j)
    for s in out["samples"]["adaptlab_gen"]:
        assert s["filtered_resps"][0] == greedy[s["doc_id"]]
