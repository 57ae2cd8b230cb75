"""Mixed adapters in one server vs the base alone vs one adapter at a time, side by side in one run.

  base      : R requests x T new tokens, all for the base, sent at once (concurrency R)
  mixed     : the same R requests spread round-robin over 8 adapters (lora, ia3, adapter, prefix,
              prompt-tuning, p-tuning, p-tuning-v2, lora r=4) plus the base, sent at once; every
              one of them mixes per row in one forward (serve.mixed; "mix per row" in the output
              lists them); ``--adapters weight``: 8 weight-side adapters instead (lora
              r=2/4/8/16, ia3 x2, bottleneck adapter x2) plus the base
  sequential: the mixed requests one at a time (per-request adapter switch)
  peft      : anchor -- peft's LoRA-only mixed batch (``generate(adapter_names=...)``) over 8 LoRA
              adapters, batches of 16, same prompts and T, in-process (no HTTP)
and, for the base at concurrency 1, 4, 16, streamed requests (``stream: true``): time to the first
text chunk (TTFT), the whole request's latency and streamed text chunks/s (a chunk per decode step with new text).

    OMP_NUM_THREADS=2 python bench/serve_mixed.py [--requests 64 --tokens 64 --model smollm2-135m-instruct]
        [--adapters all|weight] [--rounds 3]
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx  # noqa: E402
import torch  # noqa: E402

from _serve_common import METHODS, make_adapters, start_server, stop_server  # noqa: E402

# the weight-side types only (the default set adds the prompt types; all mix per row: serve.mixed)
WEIGHT = [("lora", {"r": 8}), ("ia3", {}), ("adapter", {}), ("lora", {"r": 4}), ("lora", {"r": 16}),
          ("ia3", {"target_modules": ["k_proj", "v_proj"], "feedforward_modules": []}),
          ("adapter", {"placement": "ffn", "m": 32}),
          ("lora", {"r": 2, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})]

PROMPTS = ["The capital of France is", "Once upon a time, a small dog", "The best way to learn a language is",
           "In 1969, the first person", "A recipe for bread needs", "The stock market today",
           "My favourite book is about", "Water boils at a temperature of"]


def timed(url, bodies, conc):
    client = httpx.Client(timeout=600)
    lat, toks = [], 0

    def one(b):
        t = time.perf_counter()
        r = client.post(url + "/v1/completions", json=b)
        r.raise_for_status()
        return time.perf_counter() - t, r.json()["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        for dt, n in pool.map(one, bodies):
            lat.append(dt)
            toks += n
    return time.perf_counter() - t0, toks, lat


def streamed(url, bodies, conc):
    """Streamed completions at concurrency ``conc``: (wall, completion chunks, TTFTs, latencies)."""
    client = httpx.Client(timeout=600)

    def one(b):
        t, first, chunks = time.perf_counter(), None, 0
        with client.stream("POST", url + "/v1/completions", json={**b, "stream": True}) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                if json.loads(line[6:])["choices"][0].get("text"):
                    chunks += 1
                    first = first or time.perf_counter() - t
        return first, time.perf_counter() - t, chunks

    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        rows = list(pool.map(one, bodies))
    return time.perf_counter() - t0, sum(r[2] for r in rows), [r[0] for r in rows], [r[1] for r in rows]


def stream_rows(url, bodies) -> dict:
    """Streamed base requests at concurrency 1, 4, 16: median TTFT, latency, text chunks/s."""
    bodies = bodies[:16]
    rows = {}
    for c in (1, 4, 16):
        wall, toks, ttft, lat = streamed(url, bodies[:max(c, 4)], c)
        lat.sort()
        ttft.sort()
        rows[c] = {"median_ttft_s": round(ttft[len(ttft) // 2], 3), "median_latency_s": round(lat[len(lat) // 2], 3),
                   "text_chunks_per_s": round(toks / wall, 1), "requests": len(lat)}
        print("concurrency", c, rows[c], flush=True)
    return rows


def peft_anchor(bb, prompts, T, n_adapters=8, batch=16):
    from peft import LoraConfig, get_peft_model

    import copy
    model = copy.deepcopy(bb.model)
    cfg = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    pm = get_peft_model(model, cfg, adapter_name="a0")
    for i in range(1, n_adapters):
        pm.add_adapter(f"a{i}", cfg)
    pm.eval()
    tok = bb.tokenizer
    tok.padding_side = "left"
    names = [f"a{i % n_adapters}" for i in range(len(prompts))]
    t0, n = time.perf_counter(), 0
    with torch.no_grad():
        for s in range(0, len(prompts), batch):
            enc = tok(prompts[s:s + batch], return_tensors="pt", padding=True)
            out = pm.generate(**enc, adapter_names=names[s:s + batch], max_new_tokens=T, do_sample=False,
                              pad_token_id=tok.pad_token_id or tok.eos_token_id)
            n += int((out[:, enc["input_ids"].shape[1]:] != (tok.pad_token_id or -1)).sum())
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--max-batch", type=int, default=16, help="the server's rows per forward (adaptlab serve's default 16)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the three phases; report each one's median")
    ap.add_argument("--adapters", choices=["all", "weight"], default="all")
    ap.add_argument("--grouped", action="store_true",
                    help="the server batches in groups (serve --no-continuous); the streamed rows are also "
                         "measured on a second server in the other mode either way")
    ap.add_argument("--out", default=None, help="default bench/results/serve_mixed[_weight].json")
    a = ap.parse_args()

    from adaptlab.models import load_backbone
    from adaptlab.serve import ServeConfig

    bb = load_backbone(a.model)
    root = Path(tempfile.mkdtemp())
    torch.manual_seed(0)              # the adapters' initial values (the 2026-12-03 runs were unseeded: each drew its own)
    adapters = make_adapters(bb, root, METHODS if a.adapters == "all" else WEIGHT)
    a.out = a.out or f"bench/results/serve_mixed{'' if a.adapters == 'all' else '_weight'}.json"
    url, server, th, reg = start_server(bb, ServeConfig(adapters=adapters, adapter_roots=[str(root)],
                                                      max_queue=1024, max_batch=a.max_batch,
                                                      continuous=not a.grouped))
    names = list(adapters) + ["base"]
    prompts = [PROMPTS[i % len(PROMPTS)] + f" (#{i})" for i in range(a.requests)]
    body = {"max_tokens": a.tokens, "temperature": 0}
    base_b = [{**body, "model": "base", "prompt": p} for p in prompts]
    mixed_b = [{**body, "model": names[i % len(names)], "prompt": p} for i, p in enumerate(prompts)]
    timed(url, base_b[:4], 4)                          # warm-up
    res, walls = {}, {}
    for rnd in range(a.rounds):       # phases interleaved, rounds repeated: the median of each phase
        for label, bodies, conc in [("base", base_b, a.requests), ("mixed", mixed_b, a.requests),
                                    ("sequential", mixed_b, 1)]:
            wall, toks, lat = timed(url, bodies, conc)
            walls.setdefault(label, []).append(round(wall, 2))
            med = sorted(walls[label])[len(walls[label]) // 2]
            res[label] = {"wall_s": med, "tokens": toks, "tokens_per_s": round(toks / med, 1),
                          "rounds_wall_s": walls[label]}
            print(f"round {rnd}", label, round(wall, 2), toks, flush=True)
    conc_rows = stream_rows(url, base_b)
    sched = server.config.app.state.scheduler
    mixer = getattr(sched, "mixer", None)          # None: a scheduler without per-row mixing
    mixable = sorted(n for n in names if mixer and mixer.mixable(reg.get(reg.resolve(n))))
    print("mix per row:", mixable, "| mixed-model builds:", mixer and mixer.builds, flush=True)
    stop_server(server, th)
    other = "grouped" if not a.grouped else "continuous"
    print("streamed rows on a second server:", other, flush=True)
    url, server, th, reg = start_server(bb, ServeConfig(adapters=adapters, adapter_roots=[str(root)],
                                                      max_queue=1024, max_batch=a.max_batch, continuous=a.grouped))
    timed(url, base_b[:4], 4)                          # warm-up
    other_rows = stream_rows(url, base_b)
    stop_server(server, th)
    wall, toks = peft_anchor(bb, prompts, a.tokens)
    res["peft_adapter_names"] = {"wall_s": round(wall, 2), "tokens": toks, "tokens_per_s": round(toks / wall, 1)}
    print("peft", res["peft_adapter_names"], flush=True)
    doc = {"model": a.model, "requests": a.requests, "tokens": a.tokens, "rounds": a.rounds, "max_batch": a.max_batch,
           "batching": "grouped" if a.grouped else "continuous", "adapters": len(adapters),
           "adapter_types": sorted({n.rsplit("-", 1)[0] for n in adapters}),
           "adapters_mixed_per_row": mixable, **res,
           "mixed_over_base": round(res["mixed"]["wall_s"] / res["base"]["wall_s"], 3),
           "sequential_over_mixed": round(res["sequential"]["wall_s"] / res["mixed"]["wall_s"], 3),
           "mixed_over_peft": round(res["mixed"]["wall_s"] / res["peft_adapter_names"]["wall_s"], 3),
           "mixed_over_base_by_round": [round(m / b, 3) for m, b in zip(walls["mixed"], walls["base"])],
           "sequential_over_mixed_by_round": [round(q / m, 3) for q, m in zip(walls["sequential"], walls["mixed"])],
           "by_concurrency_base": conc_rows, f"by_concurrency_base_{other}": other_rows}
    print(json.dumps(doc, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
