"""A real ``adaptlab serve`` app on 127.0.0.1 (a free port) for the serving tests, started in a
thread with a bounded wait and stopped at the end."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app):
    """Yields the base URL of ``app`` served by uvicorn on 127.0.0.1."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    for _ in range(200):                               # bounded wait for start-up
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(timeout=10)


def perturb(tuned, seed: int):
    """Move every trainable tensor off its initial value (seeded), so an adapter changes outputs."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return tuned.eval()


def perturbed(bb, specs) -> list:
    """One tuned model per (method, values) of ``specs``, each perturbed with seed i + 1."""
    from adaptlab.tuning import apply_method, make_config

    return [perturb(apply_method(bb, m, make_config(m, v)), i + 1) for i, (m, v) in enumerate(specs)]


def engines(bb, specs, seed: int = 0) -> tuple[list, list]:
    """(tuned models of ``specs``, their engines with the base's first), initial values seeded."""
    import torch

    from adaptlab.engine import make_lm

    torch.manual_seed(seed)
    tuned = perturbed(bb, specs)
    return tuned, [make_lm(bb, batch_size=16)] + [make_lm(bb, model=t, batch_size=16) for t in tuned]


def saved_adapters_app(bb, tuned: list, folder, max_batch: int, continuous: bool = True):
    """Each tuned model saved under ``folder/m<i>`` and loaded back through the registry (the
    server's own path): (app, registry, the model names with ``base`` last)."""
    from adaptlab.serve import ServeConfig
    from adaptlab.serve.app import make_app
    from adaptlab.serve.registry import Registry
    from adaptlab.tuning.io import save_adapter

    names = []
    for i, t in enumerate(tuned):
        save_adapter(folder / f"m{i}", t)
        names.append(f"m{i}")
    cfg = ServeConfig(adapters={n: str(folder / n) for n in names}, max_queue=64, max_batch=max_batch,
                      continuous=continuous)
    reg = Registry.load(cfg, backbone=bb)
    return make_app(reg, cfg), reg, names + ["base"]



def hold_worker(sched, record: list | None = None):
    """Hold the scheduler's worker at its next batch (a group run, or a join of the running decode
    loop) until the returned event is set; ``record`` gets each batch's job count."""
    gate = threading.Event()
    name = "join" if sched.continuous else "_run"
    owner = sched.batch if sched.continuous else sched
    real = getattr(owner, name)

    def held(jobs, *rest):
        gate.wait(10)
        if record is not None:
            record.append(len(jobs))
        return real(jobs, *rest)

    setattr(owner, name, held)
    return gate, lambda: setattr(owner, name, real)
