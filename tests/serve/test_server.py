"""A real ``adaptlab serve`` app under uvicorn on 127.0.0.1 (a free port), driven by the official
``openai`` client, adaptlab's own client engine and raw HTTP."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from adaptlab.engine import make_lm  # noqa: E402
from adaptlab.serve import ServeConfig  # noqa: E402
from adaptlab.serve.app import make_app  # noqa: E402
from adaptlab.serve.registry import Registry  # noqa: E402
from adaptlab.tuning import apply_method, make_config  # noqa: E402
from adaptlab.tuning.io import save_adapter  # noqa: E402
from tests.conftest import make_tiny_decoder  # noqa: E402
from tests.serve.harness import free_port, perturb, running_server  # noqa: E402

KEY = "sekrit"
# every decoder adapter type (non-zero init so that each changes the output)
METHODS = {"lora": {"r": 4}, "ia3": {}, "adapter": {}, "prefix": {"num_virtual_tokens": 4},
           "prompt-tuning": {"num_virtual_tokens": 4}, "p-tuning": {"num_virtual_tokens": 4},
           "p-tuning-v2": {"num_virtual_tokens": 4}}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    bb = make_tiny_decoder()
    local = {}
    for i, (m, vals) in enumerate(METHODS.items()):
        tuned = apply_method(bb, m, make_config(m, vals))
        perturb(tuned, i)
        tuned.eval()
        save_adapter(root / m, tuned)
        local[m] = tuned
    cfg = ServeConfig(adapters={m: str(root / m) for m in list(METHODS)[:-1]}, adapter_roots=[str(root)],
                      api_key=KEY, max_queue=32, max_batch=8)
    reg = Registry.load(cfg, backbone=bb)
    app = make_app(reg, cfg)
    with running_server(app) as url:
        yield {"url": url, "bb": bb, "local": local, "root": root, "reg": reg, "app": app}


def _client(s):
    return openai.OpenAI(base_url=s["url"] + "/v1", api_key=KEY, max_retries=0)


def test_model_list_names_base_and_adapters(served):
    ids = [m.id for m in _client(served).models.list().data]
    assert ids[0] == "tiny-llama" and set(list(METHODS)[:-1]) <= set(ids)


def test_completions_chat_streaming_with_openai_client(served):
    c = _client(served)
    r = c.completions.create(model="lora", prompt="the cat", max_tokens=5, temperature=0)
    assert r.choices[0].text and r.usage.prompt_tokens > 0
    text = "".join(ch.choices[0].text for ch in c.completions.create(model="lora", prompt="the cat", max_tokens=5,
                                                                       temperature=0, stream=True))
    assert text == r.choices[0].text
    chat = c.chat.completions.create(model="ia3", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                     temperature=0)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="ia3", messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0, stream=True))
    assert streamed == chat.choices[0].message.content
    r2 = c.completions.create(model="base", prompt="a dog", max_tokens=3, temperature=1.0, n=3, seed=1)
    assert len(r2.choices) == 3


def test_mixed_batch_equals_in_process(served):
    """Concurrent requests for every adapter type (and the base): greedy text identical and
    option log-probs within 1e-4 of the in-process engine."""
    from concurrent.futures import ThreadPoolExecutor

    from adaptlab.engine.openai_client import OpenAILM

    c = _client(served)
    bb = served["bb"]
    names = list(METHODS)[:-1] + ["base"]
    prompts = ["the cat sat on", "a dog ran to the"]

    def ask(name):
        return name, [c.completions.create(model=name, prompt=p, max_tokens=6, temperature=0).choices[0].text
                      for p in prompts]

    with ThreadPoolExecutor(8) as pool:
        got = dict(pool.map(ask, names))
    for name in names:
        lm = make_lm(bb) if name == "base" else make_lm(bb, model=served["local"][name])
        want = [g[0] for g in lm.generate(prompts, max_new_tokens=6, temperature=0.0)]
        assert got[name] == want, name
        remote = OpenAILM("openai:" + served["url"], model=name, api_key=KEY)
        ctx, opts = ["the cat sat on the"], [[" mat", " dog ran"]]
        a, b = remote.score(ctx, opts)[0], lm.score(ctx, opts)[0]
        for x, y in zip(a, b):
            assert abs(x.logprob - y.logprob) < 1e-4, name
            assert len(x.token_logprobs) == len(y.token_logprobs)


def test_runtime_load_unload_and_path_checks(served, tmp_path):
    h = {"Authorization": f"Bearer {KEY}"}
    url = served["url"]
    r = httpx.post(url + "/v1/load_lora_adapter", headers=h,
                   json={"lora_name": "pt2", "lora_path": str(served["root"] / "p-tuning-v2")})
    assert r.status_code == 200, r.text
    assert "pt2" in [m.id for m in _client(served).models.list().data]
    out = _client(served).completions.create(model="pt2", prompt="the cat", max_tokens=4, temperature=0)
    want = make_lm(served["bb"], model=served["local"]["p-tuning-v2"]).generate(["the cat"], max_new_tokens=4)
    assert out.choices[0].text == want[0][0]
    assert httpx.post(url + "/v1/unload_lora_adapter", headers=h, json={"lora_name": "pt2"}).status_code == 200
    r = httpx.post(url + "/v1/completions", headers=h, json={"model": "pt2", "prompt": "x"})
    assert r.status_code == 404 and "pt2" in r.json()["error"]["message"]
    for path in [str(tmp_path), str(served["root"] / ".." / "elsewhere")]:
        r = httpx.post(url + "/v1/load_lora_adapter", headers=h, json={"lora_name": "x", "lora_path": path})
        assert r.status_code == 400 and "outside the adapter roots" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/load_lora_adapter", headers=h, json={"lora_name": "../x", "lora_path": str(served["root"] / "lora")})
    assert r.status_code == 400
    bad = served["root"] / "pickled"
    bad.mkdir()
    (bad / "adapter_model.bin").write_bytes(b"\x80\x04")
    r = httpx.post(url + "/v1/load_lora_adapter", headers=h, json={"lora_name": "pk", "lora_path": str(bad)})
    assert r.status_code == 400 and "pickle" in r.json()["error"]["message"]


def test_auth_on_every_route_but_health(served):
    url = served["url"]
    assert httpx.get(url + "/health").status_code == 200
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                         ("POST", "/tokenize"), ("POST", "/detokenize"), ("GET", "/tokenizer_info"),
                         ("POST", "/v1/load_lora_adapter"), ("POST", "/v1/unload_lora_adapter")]:
        for h in [{}, {"Authorization": "Bearer wrong"}]:
            r = httpx.request(method, url + path, headers=h, json={})
            assert r.status_code == 401 and "API key" in r.json()["error"]["message"], path


def test_malformed_requests_are_4xx_json(served):
    url, h = served["url"], {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    cases = [(b"{not json", None), (None, {"prompt": "x", "model": "nope"}), (None, {"prompt": "x", "max_tokens": -1}),
             (None, {"prompt": "the " * 600, "max_tokens": 4}), (None, {"prompt": 5}), (None, {"prompt": "x", "n": "a"}),
             (None, {"prompt": [10 ** 9]}), (None, {})]
    for raw, body in cases:
        r = httpx.post(url + "/v1/completions", headers=h, content=raw) if raw else \
            httpx.post(url + "/v1/completions", headers=h, json=body)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert r.json()["error"]["message"]


def test_tokenizer_endpoints(served):
    url, h = served["url"], {"Authorization": f"Bearer {KEY}"}
    ids = httpx.post(url + "/tokenize", headers=h, json={"prompt": "the cat"}).json()["tokens"]
    assert ids == served["bb"].tokenizer("the cat")["input_ids"]
    back = httpx.post(url + "/detokenize", headers=h, json={"tokens": ids}).json()["prompt"]
    assert "the cat" in back
    info = httpx.get(url + "/tokenizer_info", headers=h).json()
    assert info["vocab_size"] == len(served["bb"].tokenizer)


def test_echo_logprobs_shape(served):
    c = _client(served)
    r = c.completions.create(model="prefix", prompt="the cat sat", max_tokens=1, echo=True, logprobs=2, temperature=0)
    lp = r.choices[0].logprobs
    assert lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:])
    assert len(lp.tokens) == len(lp.text_offset) == len(lp.top_logprobs)
    assert r.choices[0].text.startswith("the cat sat")


def test_adaptlab_eval_through_client_engine_matches_in_process(served, monkeypatch):
    """``adaptlab eval --model openai:<url> --set model=lora`` == in-process eval with that adapter."""
    from adaptlab.evaluate import evaluate, run
    from adaptlab.data import load_split
    from adaptlab.prompting import make_strategy
    from adaptlab.tasks import load_task

    monkeypatch.setenv("ADAPTLAB_API_KEY", KEY)
    for prompt in ["zero-shot"]:
        remote = run("reviews", "openai:" + served["url"], prompt=prompt, sets={"model": "lora"}, limit=8,
                     progress=False)
        spec = load_task("reviews")
        lm = make_lm(served["bb"], model=served["local"]["lora"], truncate=spec.truncate)
        local = evaluate(lm, spec, make_strategy(prompt, {}), load_split(spec, "test", None, 8), model_name="tiny")
        assert remote.metrics == local.metrics
        assert [r["prediction"] for r in remote.records] == [r["prediction"] for r in local.records]
        assert remote.cost["prompt_tokens"] > 0


def test_client_engine_refuses_server_without_echo_and_retries_429():
    from adaptlab.engine.openai_client import OpenAILM
    from adaptlab.errors import ModelError

    calls = {"n": 0}

    def no_echo(request):              # llama.cpp-like: completions without prompt log-probs
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        return httpx.Response(200, json={"choices": [{"text": "x", "logprobs": None}]})

    lm = OpenAILM("openai:http://127.0.0.1:9", transport=httpx.MockTransport(no_echo))
    with pytest.raises(ModelError, match="does not echo prompt log-probs"):
        lm.score(["a"], [["b"]])

    def busy_then_ok(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(429 if calls["n"] == 1 else 503, headers={"Retry-After": "0"}, json={"error": "busy"})
        return httpx.Response(200, json={"choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 1}})

    lm = OpenAILM("openai:http://127.0.0.1:9", model="m", transport=httpx.MockTransport(busy_then_ok), backoff=0.0)
    assert lm.generate(["p"]) == [["ok"]] and calls["n"] == 3 and lm.cost.prompt_tokens == 3
    calls["n"] = -100                  # always busy: gives up with one line after the retries
    lm = OpenAILM("openai:http://127.0.0.1:9", model="m", retries=2, backoff=0.0,
                  transport=httpx.MockTransport(lambda r: httpx.Response(503, json={"error": "down"})))
    with pytest.raises(ModelError, match="HTTP 503 after 3 tries"):
        lm.generate(["p"])


def test_full_queue_answers_429_with_retry_after(served):
    """A server whose queue holds one request: a burst gets 429 + Retry-After, never 5xx."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = ServeConfig(max_queue=1, max_batch=1)
    reg = Registry(served["bb"], cfg)
    with running_server(make_app(reg, cfg)) as url:
        def post(_):
            return httpx.post(f"{url}/v1/completions", timeout=60,
                              json={"prompt": "the cat", "max_tokens": 40, "temperature": 0})
        with ThreadPoolExecutor(12) as pool:
            rs = list(pool.map(post, range(12)))
        codes = [r.status_code for r in rs]
        assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
        assert all(r.headers.get("retry-after") for r in rs if r.status_code == 429)
        assert httpx.get(f"{url}/health").json()["queued"] == 0
        for _ in range(100):                           # bounded: the last rows leave the decode loop
            if httpx.get(f"{url}/health").json()["running"] == 0:
                break
            time.sleep(0.05)
        assert httpx.get(f"{url}/health").json()["running"] == 0


def test_cli_serve_subprocess_health_auth_and_sigterm(tmp_path, served):
    """``adaptlab serve`` as a real process: refuses a pickle adapter (exit 2); serves; SIGTERM ends it."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import save_tiny

    from adaptlab.models import load_backbone

    folder = save_tiny(served["bb"], tmp_path / "tiny")
    save_adapter(tmp_path / "lora", apply_method(load_backbone(folder), "lora", make_config("lora", {})))
    bad = tmp_path / "pk"
    bad.mkdir()
    (bad / "adapter_model.bin").write_bytes(b"\x80\x04")
    r = subprocess.run([sys.executable, "-m", "adaptlab", "serve", "--model", folder, "--adapter", f"pk={bad}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pickle" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "adaptlab", "serve", "--model", folder, "--port", str(port),
                          "--adapter", f"lora={tmp_path / 'lora'}"],
                         env={**os.environ, "ADAPTLAB_API_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(600):                         # bounded: up to ~60 s for start-up
            if p.poll() is not None:
                break
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert p.poll() is None, p.communicate()[1][-2000:]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        ids = [m["id"] for m in httpx.get(f"http://127.0.0.1:{port}/v1/models",
                                          headers={"Authorization": f"Bearer {KEY}"}).json()["data"]]
        assert "lora" in ids
        p.send_signal(signal.SIGTERM)             # uvicorn shuts down gracefully, then re-raises the signal
        assert p.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _gated_decode(monkeypatch, lm, gate_at: int | None = None, gate=None, delay: float = 0.0):
    """Count the engine's decode steps; at step ``gate_at`` wait (bounded) for ``gate``."""
    seen = {"steps": 0, "gate_open": None}
    real = lm._decode

    def step(**kw):
        seen["steps"] += 1
        if gate is not None and seen["steps"] == gate_at:
            seen["gate_open"] = gate.wait(timeout=10)
        if delay:
            time.sleep(delay)
        return real(**kw)

    monkeypatch.setattr(lm, "_decode", step)
    return seen


def test_streaming_is_incremental_and_equals_the_full_text(served, monkeypatch):
    """The first streamed chunk arrives while the decode loop is still running (the loop waits at
    its 2nd step until the client has a chunk); the streamed text equals the non-streamed greedy
    text, for completions and chat, with and without a stop string (held back, never sent)."""
    import json

    c = _client(served)
    lm = served["reg"].lms["lora"]
    full = c.completions.create(model="lora", prompt="the cat", max_tokens=12, temperature=0)
    assert full.choices[0].finish_reason == "length" and len(full.choices[0].text) > 4
    gate = threading.Event()
    seen = _gated_decode(monkeypatch, lm, gate_at=2, gate=gate)
    parts, steps_at_first, fins = [], None, []
    for ch in c.completions.create(model="lora", prompt="the cat", max_tokens=12, temperature=0, stream=True):
        if ch.choices and ch.choices[0].text and steps_at_first is None:
            steps_at_first = seen["steps"]
            gate.set()
        parts += [x.text for x in ch.choices]
        fins += [x.finish_reason for x in ch.choices if x.finish_reason]
    assert seen["gate_open"] is True and steps_at_first is not None and steps_at_first < 11
    assert "".join(parts) == full.choices[0].text and fins == ["length"]

    stop = full.choices[0].text[3:6]                       # a stop string inside the greedy text
    cut = c.completions.create(model="lora", prompt="the cat", max_tokens=12, temperature=0, stop=[stop])
    got = "".join(x.text for ch in c.completions.create(model="lora", prompt="the cat", max_tokens=12,
                                                         temperature=0, stop=[stop], stream=True) for x in ch.choices)
    assert got == cut.choices[0].text and stop not in got

    # chat as raw server-sent events: data: {...} lines, finish_reason and usage last, then [DONE]
    msgs = [{"role": "user", "content": "hi"}]
    want = c.chat.completions.create(model="base", messages=msgs, max_tokens=8, temperature=0)
    assert want.choices[0].message.content.strip("\ufffd")
    gate2 = threading.Event()
    seen = _gated_decode(monkeypatch, served["reg"].lms["base"], gate_at=2, gate=gate2)
    events, first_at = [], None
    with httpx.stream("POST", served["url"] + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60, json={"model": "base", "messages": msgs, "max_tokens": 8, "temperature": 0,
                                        "stream": True, "stream_options": {"include_usage": True}}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            events.append(line[6:])
            if line[6:] != "[DONE]" and json.loads(line[6:])["choices"] and \
                    json.loads(line[6:])["choices"][0]["delta"].get("content") and first_at is None:
                first_at = seen["steps"]
                gate2.set()
    assert events[-1] == "[DONE]" and first_at is not None and first_at < 7 and seen["gate_open"] is True
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == want.choices[0].message.content
    assert chunks[-2]["choices"][0]["finish_reason"] == want.choices[0].finish_reason
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == want.usage.model_dump(exclude_none=True)

    # 2 prompts x n=2 (seeded sampling): each streamed choice index concatenates to that choice
    kw = dict(model="adapter", prompt=["the cat", "a dog ran"], max_tokens=6, temperature=0.8, n=2, seed=5)
    full = c.completions.create(**kw)
    texts: dict[int, str] = {}
    fins: dict[int, str] = {}
    for ch in c.completions.create(**kw, stream=True):
        for x in ch.choices:
            texts[x.index] = texts.get(x.index, "") + x.text
            if x.finish_reason:
                fins[x.index] = x.finish_reason
    assert texts == {x.index: x.text for x in full.choices}
    assert fins == {x.index: x.finish_reason for x in full.choices}


def test_stream_client_gone_stops_the_decode_loop(served, monkeypatch):
    """A client that drops a stream after its first chunk: the batch stops well before max_tokens
    and the slot is free for the next request."""
    lm = served["reg"].lms["ia3"]
    seen = _gated_decode(monkeypatch, lm, delay=0.02)
    with httpx.stream("POST", served["url"] + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60, json={"model": "ia3", "prompt": "the cat", "max_tokens": 300, "temperature": 0,
                                        "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break
    for _ in range(400):                               # bounded: up to ~20 s for the worker to stop
        h = httpx.get(served["url"] + "/health").json()
        if h["queued"] == 0 and h["running"] == 0 and seen["steps"]:
            break
        time.sleep(0.05)
    assert httpx.get(served["url"] + "/health").json()["running"] == 0 and seen["steps"] < 250, seen
    out = _client(served).completions.create(model="ia3", prompt="the cat", max_tokens=3, temperature=0)
    assert out.choices[0].finish_reason in ("length", "stop")

