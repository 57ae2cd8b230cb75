"""The LM interface over any OpenAI-compatible server (``--model openai:<base_url>``).

  score(contexts, options): ``POST /v1/completions`` with ``prompt = context + option``,
      ``echo=true, logprobs=0, max_tokens=1`` (lm-evaluation-harness' request); the option's
      log-probability is the sum of ``token_logprobs`` over the echoed tokens whose
      ``text_offset`` falls in the option's span. A server that cannot echo prompt log-probs
      (llama.cpp's server) is refused in one line.
  generate(prompts, n, ...): ``/v1/completions`` with n / temperature / top_p / stop / seed.

Requests run ``concurrency`` at a time; 429 and 5xx answers (and connection errors) are retried
with exponential backoff (honouring ``Retry-After``); ``cost`` adds up the ``usage`` fields.
The key comes from ``$ADAPTLAB_API_KEY`` or ``$OPENAI_API_KEY``.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from adaptlab.engine import Cost, OptionScore
from adaptlab.errors import ModelError

PREFIX = "openai:"


class OpenAILM:
    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 concurrency: int = 4, retries: int = 5, backoff: float = 0.5, timeout: float = 300.0,
                 progress=None, transport=None, **_):
        import httpx

        url = base_url[len(PREFIX):] if base_url.startswith(PREFIX) else base_url
        if not url.startswith(("http://", "https://")):
            raise ModelError(f"{base_url!r}: expected openai:http(s)://host:port[/v1]")
        url = url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        key = api_key or os.environ.get("ADAPTLAB_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.client = httpx.Client(timeout=timeout, transport=transport,
                                   headers={"Authorization": f"Bearer {key}"} if key else {})
        self.concurrency, self.retries, self.backoff = max(1, concurrency), retries, backoff
        self.cost = Cost()
        self.progress = progress
        self.finish_reasons: list[list[str]] = []
        self.model = model or self._first_model()

    # ------------------------------------------------------------------ transport
    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                r = self.client.request(method, self.base_url + path, json=body)
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise ModelError(f"{self.base_url}{path}: {type(e).__name__}: {e}") from None
                time.sleep(delay)
                delay *= 2
                continue
            if r.status_code == 429 or r.status_code >= 500:
                if attempt == self.retries:
                    break
                wait = r.headers.get("retry-after")
                time.sleep(float(wait) if wait and wait.replace(".", "", 1).isdigit() else delay)
                delay *= 2
                continue
            if r.status_code >= 400:
                raise ModelError(f"{self.base_url}{path}: HTTP {r.status_code}: {_message(r)}")
            return r.json()
        raise ModelError(f"{self.base_url}{path}: HTTP {r.status_code} after {self.retries + 1} tries: {_message(r)}")

    def _first_model(self) -> str:
        data = self._request("GET", "/models").get("data") or []
        if not data:
            raise ModelError(f"{self.base_url}/models: the server lists no model; give --set model=<name>")
        return data[0]["id"]

    def _map(self, fn, items: list) -> list:
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, items))

    def _count(self, doc: dict) -> None:
        u = doc.get("usage") or {}
        self.cost.prompt_tokens += int(u.get("prompt_tokens") or 0)
        self.cost.generated_tokens += int(u.get("completion_tokens") or 0)
        self.cost.forwards += 1

    # ------------------------------------------------------------------ LM interface
    def chat(self, text: str) -> str:
        return text                       # the server applies its own template on /v1/chat/completions

    def score(self, contexts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[OptionScore]]:
        t0 = time.perf_counter()
        pairs = [(c, o) for c, opts in zip(contexts, options) for o in opts]
        self.cost.calls += len(contexts)
        scores = iter(self._map(self._score_one, pairs))
        out = [[next(scores) for _ in opts] for opts in options]
        if self.progress:
            self.progress(len(contexts), len(contexts))
        self.cost.seconds += time.perf_counter() - t0
        return out

    def _score_one(self, pair: tuple[str, str]) -> OptionScore:
        context, option = pair
        doc = self._request("POST", "/completions", {"model": self.model, "prompt": context + option, "echo": True,
                                                      "logprobs": 0, "max_tokens": 1, "temperature": 0.0})
        self._count(doc)
        lp = ((doc.get("choices") or [{}])[0] or {}).get("logprobs") or {}
        vals, offs = lp.get("token_logprobs"), lp.get("text_offset")
        if not vals or not offs or len(vals) != len(offs) or all(v is None for v in vals[:-1]):
            raise ModelError(f"{self.base_url}: the server does not echo prompt log-probs (echo + logprobs on "
                             f"/v1/completions), so score-based strategies cannot run on it (llama.cpp's server "
                             f"is the known case); use a generation strategy")
        end = len(context) + len(option)
        keep = [v for v, o in zip(vals, offs) if len(context) <= o < end and v is not None]
        return OptionScore(logprob=float(sum(keep)), token_logprobs=[float(v) for v in keep])

    def generate(self, prompts: Sequence[str], n: int = 1, max_new_tokens: int = 64,
                 temperature: float = 0.0, stop: Sequence[str] | None = None,
                 top_p: float = 1.0, seed: int | None = None) -> list[list[str]]:
        t0 = time.perf_counter()
        self.cost.calls += len(prompts) * n
        body = {"model": self.model, "n": n, "max_tokens": max_new_tokens, "temperature": temperature,
                "top_p": top_p}
        if stop:
            body["stop"] = list(stop)[:4]
        if seed is not None:
            body["seed"] = seed

        def one(p: str):
            doc = self._request("POST", "/completions", {**body, "prompt": p})
            self._count(doc)
            ch = sorted(doc.get("choices") or [], key=lambda c: c.get("index", 0))
            return [c.get("text") or "" for c in ch], [c.get("finish_reason") or "length" for c in ch]

        res = self._map(one, list(prompts))
        if self.progress:
            self.progress(len(prompts), len(prompts))
        self.finish_reasons = [r for _, r in res]
        self.cost.seconds += time.perf_counter() - t0
        return [t for t, _ in res]


def _message(r) -> str:
    try:
        err = r.json().get("error")
        return str(err.get("message") if isinstance(err, dict) else err or r.text)[:300]
    except Exception:
        return r.text[:300]
