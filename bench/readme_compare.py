"""The README's main command, timed (issue 27): ``adaptlab compare`` with its defaults, on this
machine's cores, (a) idle with an empty model cache, (b) idle with a warm cache and (c) beside one
competing CPU-bound process, side by side in one run.

What the README's "about five minutes" assumes: the install already done (pip's time is the
network's), 2 idle CPU cores, and either cache state (the first run dequantizes the shipped GGUF
into ``$ADAPTLAB_CACHE``, 10-20 s). The competitor is the worst neighbour bench/busy_cpu.py uses:
an 8-shot eval of the demo task (offline, like the measured command), looped, with torch's own default threads (one spinning thread per core),
started and warmed before the measured run.

    python bench/readme_compare.py [--cases cold,warm,competitor] [--out bench/results/readme_compare.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

COMPETITOR = ["eval", "--task", "reviews", "--split", "test", "--limit", "200", "--prompt",
              "few-shot", "--set", "k=8", "--set", "selection=first", "--set", "order=fixed",
              "--threads", "torch", "--json"]
WARMUP_S = 12.0


def _env(cache: str) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "ADAPTLAB_THREADS", "KMP_BLOCKTIME"):
        env.pop(k, None)
    env["ADAPTLAB_CACHE"] = cache
    return env


def _competitor(env: dict) -> subprocess.Popen:
    one = " ".join([sys.executable, "-m", "adaptlab", *COMPETITOR])
    return subprocess.Popen(["bash", "-c", f"while true; do {one} > /dev/null 2>&1; done"],
                            env=env, start_new_session=True)


def _compare(out: str, env: dict) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "adaptlab", "compare", "--out", out, "--json"],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"adaptlab compare failed (rc={r.returncode}): {r.stderr[-2000:]}")
    doc = json.loads(r.stdout)
    rows = doc.get("rows") or []
    return {"wall_s": round(wall, 1), "threads": doc.get("threads"), "runs": len(rows), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="cold,warm,competitor")
    ap.add_argument("--out", default="bench/results/readme_compare.jsonl")
    args = ap.parse_args()
    cases = args.cases.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")            # empty: the first case dequantizes into it
        results = []
        for case in cases:
            env = _env(cache)
            comp = _competitor(env) if case == "competitor" else None
            if comp:
                time.sleep(WARMUP_S)
            try:
                res = _compare(os.path.join(tmp, f"compare-{case}"), env)
            finally:
                if comp:
                    os.killpg(comp.pid, signal.SIGKILL)
                    comp.wait()
            res.update(case=case, cores=len(os.sched_getaffinity(0)),
                       date=time.strftime("%Y-%m-%d"), host=platform.node())
            print(json.dumps(res), flush=True)
            results.append(res)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "a") as f:
        for res in results:
            f.write(json.dumps(res) + "\n")
    by = {r["case"]: r["wall_s"] for r in results}
    print("| case | seconds | minutes |\n| --- | --- | --- |")
    for case, s in by.items():
        print(f"| {case} | {s} | {s / 60:.1f} |")


if __name__ == "__main__":
    main()
