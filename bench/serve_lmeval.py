"""lm-evaluation-harness ``local-completions`` against ``adaptlab serve`` vs adaptlab in process.

One run: a LoRA adapter over the default decoder is served on 127.0.0.1 (a free port, uvicorn in
this process, the server's tokenizer endpoints: ``tokenizer_backend=remote``); lm-eval scores a
loglikelihood task (SST-2 test, "Review: {text}\\nSentiment:" + " negative"/" positive", acc) and
a generation task (coin flip test, "Question: {question}\\nAnswer (yes or no):", greedy until "\\n",
4 tokens, exact match ignoring case, whitespace and full stops) through it; adaptlab's engine scores the same prompts and options in
process with the same adapter. Prints both accuracies per task, the largest per-option log-prob
difference and the number of generations that differ.

    pip install '.[serve-oracle]'        # lm-eval: an oracle only
    ADAPTLAB_DATA_DIR=bench-data python bench/serve_lmeval.py [--limit 100] [--model smollm2-135m-instruct]
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serve_common import make_adapters, start_server, stop_server  # noqa: E402

UNTIL = json.dumps(["\n"])                    # a JSON string is a YAML double-quoted scalar: a real newline
KEY = "bench-key"


def rows(path: Path, n: int) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def write_tasks(folder: Path, ll: list[dict], gen: list[dict]) -> None:
    for name, docs in [("ll", ll), ("gen", gen)]:
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = "dataset_path: json\ntest_split: test\nnum_fewshot: 0\n"
    (folder / "serve_ll.yaml").write_text(
        "task: serve_ll\n" + common + f"dataset_kwargs:\n  data_files:\n    test: {folder / 'll.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n")
    (folder / "serve_gen.yaml").write_text(
        "task: serve_gen\n" + common + f"dataset_kwargs:\n  data_files:\n    test: {folder / 'gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n"
        # JSON strings are YAML double-quoted scalars: a real newline, real regex backslashes
        f"generation_kwargs:\n  until: {UNTIL}\n  max_gen_toks: 4\n  do_sample: false\n"
        f"  temperature: 0\nmetric_list:\n  - metric: exact_match\n    ignore_case: true\n"
        f"    regexes_to_ignore: {json.dumps(IGNORE)}\n")


IGNORE = [r"\s", r"\."]                     # exact match ignoring whitespace, full stops and case


def norm(s: str) -> str:                    # lm-eval's exact_match with the options above
    for r in IGNORE:
        s = re.sub(r, "", s)
    return s.lower()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    a = ap.parse_args()

    import lm_eval
    from lm_eval.tasks import TaskManager

    from adaptlab.engine import make_lm
    from adaptlab.models import load_backbone
    from adaptlab.serve import ServeConfig
    from adaptlab.tuning.io import load_adapter

    data = Path(os.environ.get("ADAPTLAB_DATA_DIR", "bench-data"))
    labels = ["negative", "positive"]
    ll = [{"context": f"Review: {r['text']}\nSentiment:", "choices": labels, "label": labels.index(r["label"])}
          for r in rows(data / "sst2" / "test.jsonl", a.limit)]
    gen = [{"question": f"Question: {r['question']}\nAnswer (yes or no):", "answer": r["answer"]}
           for r in rows(data / "coin_flip" / "test.jsonl", a.limit)]

    bb = load_backbone(a.model)
    tmp = Path(tempfile.mkdtemp(prefix="serve_lmeval_"))
    adapters = make_adapters(bb, tmp / "adapters", [("lora", {"r": 8})])
    name = next(iter(adapters))
    write_tasks(tmp, ll, gen)

    # in process: the same adapter, the same prompts and options
    t0 = time.perf_counter()
    _, tuned = load_adapter(adapters[name], backbone=bb)
    lm = make_lm(bb, model=tuned)
    scores = lm.score([d["context"] for d in ll], [[" " + c for c in d["choices"]] for d in ll])
    local_ll = [max(range(len(s)), key=lambda j: s[j].logprob) for s in scores]
    local_gen = [t[0] for t in lm.generate([d["question"] for d in gen], max_new_tokens=4, temperature=0.0,
                                           stop=["\n"])]
    t_local = time.perf_counter() - t0
    acc_ll_local = 100 * sum(p == d["label"] for p, d in zip(local_ll, ll)) / len(ll)
    acc_gen_local = 100 * sum(norm(t) == norm(d["answer"]) for t, d in zip(local_gen, gen)) / len(gen)

    cfg = ServeConfig(adapters=adapters, api_key=KEY, max_batch=16)
    url, server, th, _ = start_server(bb, cfg)
    os.environ["OPENAI_API_KEY"] = KEY
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    try:
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"base_url={url}/v1/completions,model={name},tokenizer_backend=remote,auth_token={KEY},"
                       f"num_concurrent=4,max_retries=1",
            tasks=["serve_ll", "serve_gen"], task_manager=TaskManager(include_path=str(tmp), include_defaults=False),
            log_samples=True, bootstrap_iters=0)
    finally:
        stop_server(server, th)
    t_server = time.perf_counter() - t0
    res = out["results"]
    acc_ll, acc_gen = 100 * res["serve_ll"]["acc,none"], 100 * res["serve_gen"]["exact_match,none"]
    dlp = max(abs(lp - scores[s["doc_id"]][j].logprob)
              for s in out["samples"]["serve_ll"] for j, (lp, _) in enumerate(s["filtered_resps"]))
    diff = [(s["filtered_resps"][0], local_gen[s["doc_id"]]) for s in out["samples"]["serve_gen"]
            if s["filtered_resps"][0] != local_gen[s["doc_id"]]]
    ngen_diff = len(diff)
    doc = {"model": a.model, "adapter": name, "limit": a.limit, "lm_eval": lm_eval.__version__,
           "loglikelihood_acc": {"lm_eval_via_server": round(acc_ll, 2), "in_process": round(acc_ll_local, 2)},
           "generation_exact_match": {"lm_eval_via_server": round(acc_gen, 2), "in_process": round(acc_gen_local, 2)},
           "max_option_logprob_diff": dlp, "generations_differing": ngen_diff,
           "first_differing (lm-eval, in-process)": diff[:3],
           "seconds": {"lm_eval_via_server": round(t_server, 1), "in_process": round(t_local, 1)}}
    print(json.dumps(doc, indent=1))
    ok = abs(acc_ll - acc_ll_local) <= 0.5 and abs(acc_gen - acc_gen_local) <= 0.5
    print(f"SST-2 acc: lm-eval via server {acc_ll:.1f} vs in-process {acc_ll_local:.1f}; coin-flip exact match: "
          f"{acc_gen:.1f} vs {acc_gen_local:.1f} ({a.limit} examples each) -> {'met' if ok else 'MISSED'} (±0.5 point)")


if __name__ == "__main__":
    main()
