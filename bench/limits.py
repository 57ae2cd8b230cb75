"""Resource bombs (docs/reliability.md, issue 25): peak RSS and seconds of ``adaptlab eval`` on
a 100 MB JSONL record (``--limit 1``), a 1M-row JSONL file (``--limit 10``) and /dev/zero given
as a data file, a task file and an adapter's weights and config. Each case is a fresh process;
its peak RSS comes from ``wait4``. Target: every case < 1 GB RSS and < 30 s, refused (exit 2,
one line) or evaluated (exit 0). Not a timed test: run it by hand.

    OMP_NUM_THREADS=1 python bench/limits.py [--model smollm2-135m-instruct]
"""

from __future__ import annotations

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROW = '{"text": "The price is great. I\'m keeping it.", "label": "positive"}\n'


def run(argv: list[str], env: dict) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "adaptlab", *argv], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line and "%|" not in line]
    return {"exit": os.waitstatus_to_exitcode(status), "rss_mb": round(usage.ru_maxrss / 1024, 1),
            "seconds": round(secs, 2), "stderr": lines[-1][:160] if lines else ""}


def make_adapter(root: Path, model: str, env: dict) -> Path:
    ad = root / "adapter"
    r = subprocess.run([sys.executable, "-m", "adaptlab", "tune", "--task", "reviews", "--method", "lora",
                        "--model", model, "--out", str(ad), "--max-steps", "1", "--train-limit", "4",
                        "--batch-size", "2", "--set", "r=2", "--set", "eval=false"], env=env, capture_output=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr.decode()[-500:])
    return ad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", default="bench/results/limits.json")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), TOKENIZERS_PARALLELISM="false")
    root = Path(tempfile.mkdtemp(prefix="adaptlab-limits-"))
    try:
        big = root / "big.jsonl"                      # one 100 MB record
        with open(big, "w") as f:
            f.write('{"text": "')
            for _ in range(100):
                f.write("a" * (1 << 20))
            f.write('", "label": "positive"}\n')
        rows = root / "rows.jsonl"                    # a million rows
        with open(rows, "w") as f:
            f.writelines(ROW for _ in range(1_000_000))
        zero_data = root / "zero.jsonl"
        zero_data.symlink_to("/dev/zero")
        zero_task = root / "zero.yaml"
        zero_task.symlink_to("/dev/zero")
        ad = make_adapter(root, args.model, env)
        zero_w, zero_c = root / "ad_w", root / "ad_c"
        for d, name in ((zero_w, "adapter_model.safetensors"), (zero_c, "adapter_config.json")):
            shutil.copytree(ad, d)
            (d / name).unlink()
            (d / name).symlink_to("/dev/zero")
        ev = ["eval", "--task", "reviews", "--model", args.model]
        cases = {
            "100 MB record, --limit 1": ev + ["--data", str(big), "--limit", "1"],
            "1M rows, --limit 10": ev + ["--data", str(rows), "--limit", "10"],
            "/dev/zero as --data": ev + ["--data", str(zero_data), "--limit", "1"],
            "/dev/zero as --task": ["eval", "--task", str(zero_task)],
            "/dev/zero as adapter weights": ["eval", "--task", "reviews", "--adapter", str(zero_w), "--limit", "1"],
            "/dev/zero as adapter config": ["eval", "--task", "reviews", "--adapter", str(zero_c), "--limit", "1"],
        }
        results = []
        print(f"{'case':32} {'exit':>4} {'RSS MB':>8} {'seconds':>8}  met  stderr")
        for name, argv in cases.items():
            r = run(argv, env)
            r["case"] = name
            r["met"] = r["rss_mb"] < 1024 and r["seconds"] < 30 and r["exit"] in (0, 2)
            results.append(r)
            print(f"{name:32} {r['exit']:>4} {r['rss_mb']:>8} {r['seconds']:>8}  {'yes' if r['met'] else 'NO ':3}  "
                  f"{r['stderr'][:90]}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"model": args.model, "date": time.strftime("%Y-%m-%d"),
                                              "results": results}, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
