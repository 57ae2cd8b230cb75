"""The thread policy (adaptlab.threads): precedence, the auto rule, bad values, and that the CLI
applies it before torch starts and reports it."""

import json
import os
import subprocess
import sys

import pytest

from adaptlab import threads
from adaptlab.errors import ConfigError


@pytest.fixture
def clean_env(monkeypatch):
    for k in ("ADAPTLAB_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(threads, "_affinity", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: None)
    return monkeypatch


def test_auto_takes_the_free_cores(clean_env):
    clean_env.setattr(threads, "busy_cores", lambda cpus, s: 0.1)
    assert threads.choose()["threads"] == 4
    clean_env.setattr(threads, "busy_cores", lambda cpus, s: 2.2)     # another job on two cores
    doc = threads.choose()
    assert doc["threads"] == 2 and doc["source"] == "auto" and doc["busy"] == 2.2
    clean_env.setattr(threads, "busy_cores", lambda cpus, s: 4.0)     # all busy: still one thread
    assert threads.choose()["threads"] == 1


def test_precedence_flag_env_omp(clean_env):
    clean_env.setattr(threads, "busy_cores", lambda cpus, s: 0.0)
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose()["threads"] == 3
    clean_env.setenv("ADAPTLAB_THREADS", "2")
    assert threads.choose()["source"] == "ADAPTLAB_THREADS" and threads.choose()["threads"] == 2
    assert threads.choose(1) == {**threads.choose(1), "threads": 1, "source": "--threads"}
    assert threads.choose("torch")["threads"] == "torch default"


def test_processes_split_the_cores(clean_env):
    clean_env.setattr(threads, "busy_cores", lambda cpus, s: 0.0)
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.choose()["threads"] == 2
    clean_env.setattr(threads, "_cgroup_cpus", lambda: 1.5)           # a container quota of 1.5 cores
    clean_env.setenv("LOCAL_WORLD_SIZE", "1")
    assert threads.choose()["threads"] == 2 and threads.choose()["cpus"] == 2


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", ""])
def test_bad_values_are_refused(clean_env, bad):
    if bad == "":
        assert threads.choose(None, sample_s=0)["source"] == "auto"    # unset means auto
        return
    with pytest.raises(ConfigError, match="whole number of threads"):
        threads.choose(bad)


def test_busy_cores_reads_proc_stat():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat")
    b = threads.busy_cores(threads._affinity(), 0.05)
    assert 0.0 <= b <= len(threads._affinity()) + 0.01


def test_apply_sets_openmp_before_torch_and_torch_after():
    code = ("import os; from adaptlab import threads; d = threads.apply(1); import torch; "
            "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'], d['source']); "
            "threads.apply(2); print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "ADAPTLAB_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["1", "PASSIVE", "--threads", "2"]


def test_cli_reports_the_choice(tiny_folder, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ADAPTLAB_THREADS")}
    r = subprocess.run([sys.executable, "-m", "adaptlab", "eval", "--task", "reviews", "--model", tiny_folder,
                        "--limit", "2", "--json", "--threads", "1"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["threads"]["threads"] == 1 and doc["threads"]["source"] == "--threads"
    r = subprocess.run([sys.executable, "-m", "adaptlab", "eval", "--task", "reviews", "--model", tiny_folder,
                        "--limit", "2", "--threads", "0"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --threads='0': expected a whole number of threads >= 1, 'auto' or 'torch'"]
