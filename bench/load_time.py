"""Default decoder load time: the first load (dequantize the GGUF, write the safetensors cache)
vs a second load (read the cache), in one run with a fresh temporary cache folder. The machine's
speed varies from minute to minute, so the second load is also printed as a ratio to the first,
measured side by side (the target, 3 s, came with a first load of ~20 s).

    python bench/load_time.py
    python bench/load_time.py --model gemma3-270m     (the base decoder: join 4 chunks + dequantize, then the cache)
"""

from adaptlab import threads

threads.apply()    # the thread policy (adaptlab.threads), before torch starts its pools

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CODE = ("import time; t0=time.perf_counter(); import torch, transformers; "
        "from transformers import AutoModelForCausalLM, AutoTokenizer; from adaptlab.models import load_backbone; "
        "{preimport}"
        "t=time.perf_counter(); b=load_backbone('{model}'); t1=time.perf_counter(); "
        "print(f'{t1-t:.2f} {t-t0:.2f}')")


# transformers imports its modeling code lazily, on first use; this makes it eager, to split the second
# load into "import transformers' Llama modules" and "read and build the model"
PREIMPORT = {"smollm2-135m-instruct": "import transformers.models.llama.modeling_llama, "
                                      "transformers.models.llama.configuration_llama; ",
             "gemma3-270m": "import transformers.models.gemma3.modeling_gemma3, "
                            "transformers.models.gemma3.configuration_gemma3; "}
MODEL = "smollm2-135m-instruct"


def timed_load(cache: str, preimport: str = "") -> tuple[float, float]:
    """(seconds in load_backbone, seconds importing before it), in a fresh process."""
    env = dict(os.environ, ADAPTLAB_CACHE=cache)
    code = CODE.replace("{preimport}", preimport).replace("{model}", MODEL)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    load, imports = out.stdout.strip().splitlines()[-1].split()
    return float(load), float(imports)


def main() -> None:
    global MODEL
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="second loads timed (each in a new process)")
    ap.add_argument("--model", default=MODEL, choices=sorted(PREIMPORT))
    args = ap.parse_args()
    MODEL, n = args.model, args.repeats
    with tempfile.TemporaryDirectory() as cache:
        first, _ = timed_load(cache)
        runs = [timed_load(cache) for _ in range(n)]
        eager = [timed_load(cache, PREIMPORT[MODEL]) for _ in range(n)]
    seconds = [r[0] for r in runs]
    second = min(seconds)
    print(f"{MODEL}: first load (dequantize + cache): {first:.2f} s")
    print(f"second load (from cache), best of {n}: {second:.2f} s, median {statistics.median(seconds):.2f} s"
          f"  (all: {', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"python imports before it (torch + transformers), best of {n}: {min(r[1] for r in runs):.2f} s")
    print(f"second load with transformers' modules of the model imported beforehand, best of {n}: "
          f"{min(r[0] for r in eager):.2f} s (those imports: {min(r[1] for r in eager):.2f} s)")
    median = statistics.median(seconds)
    print(f"ratio second/first: best {second / first:.3f}, median {median / first:.3f}"
          f" (the target's 3 s against its ~20 s first load: {3.0 / 20.0:.3f})")
    print("target: second load <= 3 s -> best:", "MET" if second <= 3.0 else "MISSED",
          "/ median:", "MET" if median <= 3.0 else "MISSED",
          "/ median ratio:", "MET" if median / first <= 3.0 / 20.0 else "MISSED")


if __name__ == "__main__":
    main()
