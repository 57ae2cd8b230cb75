"""Thread policy: how many threads torch (and its OpenMP pool) may use, chosen once, before torch
starts its pools.

Why: torch's default is one intra-op thread per core, and its OpenMP threads spin while they
wait for work. Beside one other CPU-bound process on 2 cores, an 8-shot SST-2 eval took 195 s of
eval time with torch's default and 45 s with one thread (the same forwards and accuracy; the
cores were spinning, not working). So the policy is:

    n = --threads N  >  ADAPTLAB_THREADS  >  OMP_NUM_THREADS set by the user  >  auto
    auto:  cpus  = |sched_getaffinity(0)|, capped by the cgroup quota (cpu.max)
           cpus /= local processes (LOCAL_WORLD_SIZE under torchrun / accelerate launch)
           busy  = round(cores' busy time over a 0.2 s sample of /proc/stat, those cpus only)
           n     = max(1, cpus - busy)

and OpenMP waits passively (``OMP_WAIT_POLICY=PASSIVE``, ``KMP_BLOCKTIME=0``) unless the user set
a policy: a thread that has nothing to do sleeps instead of burning a core another process needs.
``ADAPTLAB_THREADS=torch`` leaves everything as torch would have it.

The CLI applies this in one place (each heavy command's ``--threads`` option, parsed before any
command body imports torch); benches call :func:`apply` at the top; Python API users may call
:func:`apply` themselves (importing adaptlab changes nothing). The choice is printed in ``--json``
output and in the report's settings (:func:`describe`).
"""

from __future__ import annotations

import math
import os
import sys
import time

from adaptlab.errors import ConfigError

SAMPLE_S = 0.2       # how long /proc/stat is watched to see what else runs on our cores
_CHOICE: dict | None = None


def _affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):          # macOS, Windows
        return list(range(os.cpu_count() or 1))


def _cgroup_cpus() -> float | None:
    """The cgroup v2 quota in cores (``cpu.max`` = "quota period"), None when unlimited."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(float(quota) / float(period), 1.0)
    except (ValueError, ZeroDivisionError):
        return None


def _cpu_times(cpus: list[int]) -> dict[int, tuple[int, int]] | None:
    """{cpu: (busy jiffies, total jiffies)} from /proc/stat, or None off Linux."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    wanted, out = set(cpus), {}
    for line in lines:
        name, *vals = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            i, nums = int(name[3:]), [int(v) for v in vals]
        except ValueError:
            continue
        if i in wanted and len(nums) >= 5:
            idle = nums[3] + nums[4]                 # idle + iowait
            total = sum(nums[:8])                    # user nice system idle iowait irq softirq steal
            out[i] = (total - idle, total)
    return out or None


def busy_cores(cpus: list[int], sample_s: float = SAMPLE_S) -> float:
    """How many of ``cpus`` other processes keep busy, measured over ``sample_s`` seconds."""
    a = _cpu_times(cpus)
    if a is None:
        return 0.0
    time.sleep(sample_s)
    b = _cpu_times(cpus) or {}
    busy = 0.0
    for i, (busy0, total0) in a.items():
        busy1, total1 = b.get(i, (busy0, total0))
        if total1 > total0:
            busy += (busy1 - busy0) / (total1 - total0)
    return busy


def _parse(value: str, where: str) -> int | str:
    v = str(value).strip().lower()
    if v in ("auto", "torch"):
        return v
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{where}={value!r}: expected a whole number of threads >= 1, 'auto' or 'torch'")
    return n


def choose(threads: int | str | None = None, sample_s: float = SAMPLE_S) -> dict:
    """The policy's decision, without applying it: {threads, source, cpus, busy, wait}."""
    if threads is not None:
        want, source = _parse(threads, "--threads"), "--threads"
    elif os.environ.get("ADAPTLAB_THREADS"):
        want, source = _parse(os.environ["ADAPTLAB_THREADS"], "ADAPTLAB_THREADS"), "ADAPTLAB_THREADS"
    elif os.environ.get("OMP_NUM_THREADS"):
        want, source = _parse(os.environ["OMP_NUM_THREADS"], "OMP_NUM_THREADS"), "OMP_NUM_THREADS"
    else:
        want, source = "auto", "auto"
    cpu_list = _affinity()
    cpus = len(cpu_list)
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    procs = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    share = max(1, cpus // max(procs, 1))             # torchrun/accelerate: split the cores
    wait = os.environ.get("OMP_WAIT_POLICY", "PASSIVE").upper()
    doc = {"threads": None, "source": source, "cpus": cpus, "processes": procs, "busy": None, "wait": wait}
    if want == "torch":
        doc.update(threads="torch default", wait=os.environ.get("OMP_WAIT_POLICY", "torch default"))
        return doc
    if want == "auto":
        busy = busy_cores(cpu_list, sample_s) if sample_s > 0 else 0.0
        # our own share of the machine's other work: what runs on all our cpus, split like the cores
        busy_share = busy * share / max(cpus, 1)
        doc.update(busy=round(busy, 2), threads=max(1, share - int(round(busy_share))))
    else:
        doc["threads"] = want
    return doc


def apply(threads: int | str | None = None, sample_s: float = SAMPLE_S) -> dict:
    """Choose and apply the policy once per process (later calls with no explicit value return the
    first choice). Sets the OpenMP/MKL environment before torch starts its pools, and torch's own
    setting when torch is already imported."""
    global _CHOICE
    if _CHOICE is not None and threads is None:
        return _CHOICE
    doc = choose(threads, sample_s)
    n = doc["threads"]
    if isinstance(n, int):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(n)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # sleep, do not spin, when idle
        os.environ.setdefault("KMP_BLOCKTIME", "0")           # the same for Intel's OpenMP
        if "torch" in sys.modules:
            import torch

            torch.set_num_threads(n)
    _CHOICE = doc
    return doc


def describe() -> dict | None:
    """The choice this process applied (None when nothing applied one), for --json and reports."""
    return _CHOICE


def summary(doc: dict | None = None) -> str:
    doc = doc or _CHOICE
    if not doc:
        return "torch default"
    if not isinstance(doc["threads"], int):
        return "torch default (ADAPTLAB_THREADS=torch)"
    why = doc["source"]
    if why == "auto":
        why = f"auto: {doc['cpus']} cpus, {doc['busy']} busy"
        if doc["processes"] > 1:
            why += f", {doc['processes']} processes"
    return f"{doc['threads']} ({why}; OpenMP wait {doc['wait'].lower()})"
