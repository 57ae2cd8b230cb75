"""Load and faults for ``adaptlab serve``: N requests at concurrency C, a share of them malformed
(bad JSON, unknown adapter, negative max_tokens, prompt over the context, wrong types), plus a
client that disconnects mid-stream and an adapter unloaded mid-traffic.

Prints and writes (bench/results/serve_load.json): responses by status, 5xx count, whether every
malformed request got a 4xx JSON error naming the problem, every well-formed one a 200, the
queue after the run, and RSS after warm-up vs after the run.

    OMP_NUM_THREADS=1 python bench/serve_load.py [--requests 1000 --concurrency 16 --model tiny]
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx  # noqa: E402

from _serve_common import make_adapters, start_server, stop_server  # noqa: E402


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--malformed", type=float, default=0.05)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--model", default="tiny", help="'tiny' (the test decoder) or a model name")
    ap.add_argument("--out", default="bench/results/serve_load.json")
    a = ap.parse_args()

    from adaptlab.serve import ServeConfig

    if a.model == "tiny":
        from tests.conftest import make_tiny_decoder
        bb = make_tiny_decoder()
    else:
        from adaptlab.models import load_backbone
        bb = load_backbone(a.model)
    root = Path(tempfile.mkdtemp())
    adapters = make_adapters(bb, root)
    cfg = ServeConfig(adapters=adapters, adapter_roots=[str(root)], max_queue=256, max_batch=16)
    url, server, th, reg = start_server(bb, cfg)
    names = ["base"] + list(adapters)
    rng = random.Random(0)
    bad_bodies = [("bad JSON", b"{oops"), ("unknown adapter", {"model": "nope", "prompt": "x"}),
                  ("negative max_tokens", {"prompt": "x", "max_tokens": -3}),
                  ("prompt over the context", {"prompt": "the " * 5000, "max_tokens": 4}),
                  ("wrong types", {"prompt": {"a": 1}, "n": "two"})]
    jobs = []
    for i in range(a.requests):
        if rng.random() < a.malformed:
            jobs.append(("bad",) + bad_bodies[i % len(bad_bodies)])
        else:
            name = rng.choice(names)          # the same name in the record and the body (the 404 count below)
            jobs.append(("good", name, {"model": name, "prompt": f"the cat {i} sat on",
                                        "max_tokens": a.max_tokens, "temperature": 0}))
    client = httpx.Client(timeout=120)

    def send(job):
        kind, what, body = job
        if isinstance(body, bytes):
            r = client.post(url + "/v1/completions", content=body, headers={"content-type": "application/json"})
        else:
            r = client.post(url + "/v1/completions", json=body)
        try:
            msg = r.json().get("error", {}).get("message") if r.status_code >= 400 else None
        except ValueError:
            msg = None
        return kind, what, r.status_code, msg

    # warm-up, then RSS
    list(ThreadPoolExecutor(a.concurrency).map(send, [j for j in jobs if j[0] == "good"][:64]))
    rss_warm = rss_mb()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.concurrency) as pool:
        futs = [pool.submit(send, j) for j in jobs[: len(jobs) // 2]]
        # mid-traffic: a stream dropped by its client, and an adapter unloaded then loaded again
        with httpx.stream("POST", url + "/v1/completions", json={"prompt": "x", "max_tokens": 32, "stream": True},
                          timeout=60) as s:
            s.close()
        victim = list(adapters)[0]
        unload = client.post(url + "/v1/unload_lora_adapter", json={"lora_name": victim}).status_code
        reload = client.post(url + "/v1/load_lora_adapter",
                             json={"lora_name": victim, "lora_path": adapters[victim]}).status_code
        futs += [pool.submit(send, j) for j in jobs[len(jobs) // 2:]]
        res = [f.result() for f in futs]
    wall = time.perf_counter() - t0
    for _ in range(100):                              # bounded: the queue drains
        if client.get(url + "/health").json()["queued"] == 0 and reg is not None:
            break
        time.sleep(0.05)
    queued = client.get(url + "/health").json()["queued"]
    rss_after = rss_mb()
    stop_server(server, th)

    by_status: dict[int, int] = {}
    for _, _, code, _ in res:
        by_status[code] = by_status.get(code, 0) + 1
    bad = [r for r in res if r[0] == "bad"]
    good = [r for r in res if r[0] == "good"]
    # a good request whose adapter was unloaded for a moment may get 404: counted apart
    good_ok = sum(1 for r in good if r[2] == 200)
    good_404_unload = sum(1 for r in good if r[2] == 404 and r[1] == victim)
    doc = {"requests": a.requests, "concurrency": a.concurrency, "max_tokens": a.max_tokens, "model": a.model,
           "adapters": len(adapters), "by_status": by_status, "n_5xx": sum(v for k, v in by_status.items() if k >= 500),
           "malformed": len(bad), "malformed_4xx_json": sum(1 for r in bad if 400 <= r[2] < 500 and r[3]),
           "wellformed": len(good), "wellformed_200": good_ok, "wellformed_404_during_unload": good_404_unload,
           "unload_status": unload, "reload_status": reload, "queued_after": queued,
           "rss_warm_mb": round(rss_warm, 1), "rss_after_mb": round(rss_after, 1),
           "rss_ratio": round(rss_after / rss_warm, 3), "wall_s": round(wall, 1),
           "malformed_messages": sorted({f"{r[1]}: {r[3]}"[:120] for r in bad})}
    print(json.dumps(doc, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
