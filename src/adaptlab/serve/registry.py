"""The adapters a server holds: name -> local engine over a tuned copy of the one base.

Every adapter shares the base's weight storage (``TunedModel.wrap``), so a hundred small adapters
cost their own tensors only. Names are ``[A-Za-z0-9._-]`` (1-64 chars); a runtime load must name a
folder inside one of the configured adapter roots (symlinks resolved first), and an adapter folder
holding pickle weights is refused by ``tuning.io.read_adapter`` as in the CLI. Unloading removes the
name only: requests already queued hold their engine and finish on it.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from adaptlab.errors import AdapterError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
BASE = "base"


class Registry:
    def __init__(self, backbone, cfg):
        from adaptlab.engine import make_lm

        self.backbone = backbone
        self.cfg = cfg
        self.base_name = backbone.name
        self.roots = [Path(r).expanduser().resolve() for r in cfg.adapter_roots]
        self.lms = {BASE: make_lm(backbone, batch_size=cfg.max_batch)}
        self.kinds = {BASE: "base"}
        self.lock = threading.Lock()

    @classmethod
    def load(cls, cfg, backbone=None) -> "Registry":
        from adaptlab.models import load_backbone

        reg = cls(backbone if backbone is not None else load_backbone(cfg.model), cfg)
        for name, path in cfg.adapters.items():
            reg.add(name, path, check_root=False)     # adapters given at start-up are the operator's
        return reg

    # ------------------------------------------------------------------ names
    def resolve(self, model: str | None) -> str:
        """The registry key for a request's ``model`` (None, the base's name or ``base``: the base)."""
        if model in (None, "", BASE, self.base_name):
            return BASE
        if model not in self.lms:
            raise KeyError(model)
        return model

    def names(self) -> list[str]:
        with self.lock:
            return [self.base_name] + [n for n in self.lms if n != BASE]

    def get(self, name: str):
        with self.lock:
            return self.lms[name]

    # ------------------------------------------------------------------ load / unload
    def check_name(self, name: str) -> None:
        if not isinstance(name, str) or not NAME.match(name) or name in (BASE, self.base_name):
            raise AdapterError(f"adapter name {name!r}: use 1-64 of [A-Za-z0-9._-], not {BASE!r} or the base's name")

    def check_path(self, path: str) -> Path:
        p = Path(path).expanduser().resolve()
        if not self.roots:
            raise AdapterError("runtime adapter loading is off: start the server with --adapter-root DIR")
        if not any(p == r or r in p.parents for r in self.roots):
            raise AdapterError(f"{path}: outside the adapter roots ({', '.join(map(str, self.roots))})")
        return p

    def add(self, name: str, path: str, check_root: bool = True) -> str:
        from adaptlab.engine import make_lm
        from adaptlab.tuning.io import load_adapter

        self.check_name(name)
        p = self.check_path(path) if check_root else Path(path).expanduser()
        with self.lock:
            if name in self.lms:
                raise AdapterError(f"adapter {name!r} is already loaded; unload it first")
        backbone, tuned = load_adapter(p, backbone=self.backbone)
        if backbone.kind != "decoder":
            raise AdapterError(f"{p}: the server serves decoders only")
        lm = make_lm(backbone, model=tuned, batch_size=self.cfg.max_batch)
        with self.lock:
            self.lms[name] = lm
            self.kinds[name] = tuned.method
        return tuned.method

    def remove(self, name: str) -> None:
        with self.lock:
            if name in (BASE, self.base_name) or name not in self.lms:
                raise AdapterError(f"adapter {name!r} is not loaded")
            del self.lms[name]
            del self.kinds[name]
