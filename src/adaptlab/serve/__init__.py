"""``adaptlab serve``: one base model and many adapters behind an OpenAI-compatible HTTP API.

Layout: ``registry.py`` (the loaded adapters, by name; paths confined to the adapter roots),
``scheduler.py`` (a bounded queue and one worker that batches compatible requests),
``continuous.py`` (the running decode loop requests join and leave between steps), ``mixed.py``
(rows of one forward with different adapters),
``app.py`` (the FastAPI routes, auth, JSON errors). The request's ``model`` field picks the
adapter (the base model's own name, or ``base``, picks the base).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from adaptlab.config import check


@dataclass
class ServeConfig:
    model: str | None = None                # the base: default name, HF id or model folder
    adapters: dict[str, str] = field(default_factory=dict)     # name -> adapter folder
    adapter_roots: list[str] = field(default_factory=list)     # runtime loads must stay inside these
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None              # or ADAPTLAB_API_KEY; None: no auth
    max_queue: int = 64                     # pending requests beyond this get 429 + Retry-After
    max_batch: int = 16                     # rows per forward
    continuous: bool = True                 # generate requests join the running decode loop (serve.continuous)
    max_tokens_cap: int = 2048              # largest max_tokens accepted
    retry_after: int = 1                    # seconds, sent with 429

    def __post_init__(self):
        check(1 <= self.max_queue <= 100_000, f"max_queue={self.max_queue}: must be in [1, 100000]")
        check(1 <= self.max_batch <= 1024, f"max_batch={self.max_batch}: must be in [1, 1024]")
        check(0 <= self.port <= 65535, f"port={self.port}: must be in [0, 65535]")
        if self.api_key is None:
            self.api_key = os.environ.get("ADAPTLAB_API_KEY") or None


def serve(cfg: ServeConfig) -> None:
    """Load everything, then run uvicorn until SIGINT/SIGTERM (uvicorn drains in-flight requests)."""
    import uvicorn

    from adaptlab.serve.app import make_app
    from adaptlab.serve.registry import Registry

    reg = Registry.load(cfg)
    app = make_app(reg, cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=30)
