"""Shared set-up of the serving benches: a backbone, adapters of several types saved under one
root, and an in-process uvicorn server on 127.0.0.1 (a free port)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = [("lora", {"r": 8}), ("ia3", {}), ("adapter", {}), ("prefix", {"num_virtual_tokens": 8}),
           ("prompt-tuning", {"num_virtual_tokens": 8}), ("p-tuning", {"num_virtual_tokens": 8}),
           ("p-tuning-v2", {"num_virtual_tokens": 8}), ("lora", {"r": 4})]


def make_adapters(bb, root: Path, methods=METHODS) -> dict[str, str]:
    from adaptlab.tuning import apply_method, make_config
    from adaptlab.tuning.io import save_adapter

    out = {}
    for i, (m, vals) in enumerate(methods):
        t = apply_method(bb, m, make_config(m, vals))
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in t.parameters():
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=g) * 0.02)
        name = f"{m}-{i}"
        save_adapter(root / name, t)
        out[name] = str(root / name)
    return out


def start_server(bb, cfg):
    import uvicorn

    from adaptlab.serve.app import make_app
    from adaptlab.serve.registry import Registry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg = Registry.load(cfg, backbone=bb)
    server = uvicorn.Server(uvicorn.Config(make_app(reg, cfg), host="127.0.0.1", port=port, log_level="error"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    for _ in range(600):
        if server.started:
            break
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, th, reg


def stop_server(server, th) -> None:
    server.should_exit = True
    th.join(timeout=30)
