"""The HTTP routes (OpenAI's and vLLM's names), auth and JSON errors.

Every route but ``/health`` needs ``Authorization: Bearer <key>`` when the server has a key (401
otherwise). Bad requests get a 4xx with ``{"error": {"message", "type", "code"}}`` naming the
problem: 400 for a bad body or value, 404 for an unknown adapter, 429 + ``Retry-After`` when the
queue is full.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from typing import Any, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from adaptlab import text as text_path
from adaptlab.errors import UserError
from adaptlab.serve.scheduler import Job, QueueFull, Scheduler


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


def _err(status: int, message: str, code: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": code, "code": status}}, status_code=status,
                        headers=headers)


class _Sampling(BaseModel):
    """The fields /v1/completions and /v1/chat/completions share (OpenAI's names and ranges)."""
    model: Optional[str] = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=64)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[dict] = None   # {"include_usage": true}: a last chunk with usage, no choices
    model_config = {"extra": "allow"}


class Completion(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: int = Field(16, ge=0)
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=20)


class Message(BaseModel):
    role: str
    content: str


class Chat(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=0)
    max_completion_tokens: Optional[int] = Field(None, ge=0)


class Tokenize(BaseModel):
    model: Optional[str] = None
    prompt: Optional[str] = None
    messages: Optional[list[Message]] = None
    add_special_tokens: bool = True


class Detokenize(BaseModel):
    model: Optional[str] = None
    tokens: list[int]


class LoadAdapter(BaseModel):
    lora_name: str
    lora_path: str


class UnloadAdapter(BaseModel):
    lora_name: str


def make_app(reg, cfg) -> FastAPI:
    app = FastAPI(title="adaptlab serve")
    sched = Scheduler(cfg.max_queue, cfg.max_batch, cfg.continuous)
    app.state.registry, app.state.scheduler = reg, sched
    tok = reg.backbone.tokenizer
    max_len = reg.lms["base"].max_length

    @app.on_event("shutdown")
    def _shutdown():
        sched.close()

    # ------------------------------------------------------------------ auth and errors
    @app.middleware("http")
    async def auth(request: Request, call_next):
        if cfg.api_key and request.url.path != "/health":
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {cfg.api_key}".encode()):
                return _err(401, "missing or wrong API key (Authorization: Bearer <key>)", "authentication_error")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def _api(_, e: ApiError):
        return _err(e.status, e.message, e.code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, e: RequestValidationError):
        parts = []
        for d in e.errors()[:3]:
            if d.get("type") == "json_invalid":
                parts.append(f"body: not valid JSON ({d.get('ctx', {}).get('error', d.get('msg'))})")
                continue
            loc = ".".join(str(x) for x in d.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {d.get('msg')}")
        return _err(400, "; ".join(parts) or "invalid request", "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, e: StarletteHTTPException):
        return _err(e.status_code, str(e.detail), "invalid_request_error")

    @app.exception_handler(UserError)
    async def _user(_, e: UserError):
        return _err(400, str(e), "invalid_request_error")

    # ------------------------------------------------------------------ helpers
    def engine(model: str | None):
        try:
            return reg.get(reg.resolve(model))
        except KeyError:
            raise ApiError(404, f"model {model!r} is not loaded (GET /v1/models lists them)", "model_not_found") from None

    def encode(p) -> list[int]:
        if isinstance(p, str):
            return text_path.encode(tok, p)
        if any((not isinstance(t, int)) or t < 0 or t >= len(tok) for t in p):
            raise ApiError(400, f"prompt: token ids must be integers in [0, {len(tok)})")
        return list(p)

    def prompts_of(prompt) -> list:
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise ApiError(400, "prompt: must not be empty")
        if all(isinstance(x, int) for x in prompt):
            return [prompt]
        return list(prompt)

    def stops(stop) -> tuple:
        s = [stop] if isinstance(stop, str) else list(stop or [])
        if len(s) > 4:
            raise ApiError(400, "stop: at most 4 sequences")
        return tuple(s)

    def submit(job: Job):
        """Queue ``job`` for the worker: (its future, that future awaitable here); a full queue is a
        429 with Retry-After."""
        try:
            fut = sched.submit(job)
            return fut, asyncio.wrap_future(fut)
        except QueueFull:
            raise ApiError(429, f"server busy: {cfg.max_queue} requests queued; retry later", "rate_limit_exceeded",
                           headers={"Retry-After": str(cfg.retry_after)}) from None

    async def run(job: Job, request: Request):
        fut, wrapped = submit(job)
        while True:
            done, _ = await asyncio.wait({wrapped}, timeout=0.25)
            if done:
                return wrapped.result()
            if await request.is_disconnected():
                fut.cancel()          # a queued job is skipped; a running one finishes and is dropped
                job.gone.set()        # ... or stops at its next token if no one else waits on its batch
                raise ApiError(499, "client disconnected")

    def check_len(ids: list[int], max_tokens: int) -> None:
        if len(ids) + max_tokens > max_len:
            raise ApiError(400, f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) is over the "
                                f"model's context ({max_len} tokens)", "context_length_exceeded")
        if max_tokens > cfg.max_tokens_cap:
            raise ApiError(400, f"max_tokens={max_tokens}: at most {cfg.max_tokens_cap}")

    def usage(p: int, c: int) -> dict:
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def offsets(ids: list[int]) -> tuple[list[str], list[int]]:
        toks, offs, prev = [], [], ""
        for i in range(len(ids)):
            cur = tok.decode(ids[: i + 1], skip_special_tokens=False)
            offs.append(len(prev))
            toks.append(cur[len(prev):] if cur.startswith(prev) else tok.decode([ids[i]]))
            prev = cur if cur.startswith(prev) else prev + toks[-1]
        return toks, offs

    def streamed(job: Job, request: Request, choices: list, delta, prelude, finish, tail) -> StreamingResponse:
        """Stream a generate job as the decode loop draws its tokens (server-sent events).

        ``choices``: one ``_Text`` per (prompt, sample), in choice order (prompt-major);
        ``delta(index, text)`` / ``finish(index, text, why)`` make a chunk, ``prelude()`` the
        chunks sent before any token, ``tail(result)`` those after every choice's last one.
        A client that goes away marks the job gone: the worker stops its decode loop."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        n = job.params[0]
        job.on_token = lambda r, j, t: loop.call_soon_threadsafe(q.put_nowait, (r * n + j, t))
        fut, wrapped = submit(job)
        wrapped.add_done_callback(lambda _: q.put_nowait(None))   # after every token (FIFO on the loop)

        async def gen():
            try:
                for c in prelude():
                    yield f"data: {json.dumps(c)}\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(q.get(), timeout=0.25)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        continue
                    if item is None:
                        break
                    i, t = item
                    d = choices[i].add(t)
                    if d:
                        yield f"data: {json.dumps(delta(i, d))}\n\n"
                try:
                    result = wrapped.result()
                except Exception as e:             # the model call failed after the stream began
                    yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error', 'code': 500}})}\n\n"
                    yield "data: [DONE]\n\n"
                    return
                flat = [x for g in result for x in g]
                for i, (t, why) in enumerate(flat):
                    d = choices[i].finish(t)
                    if d:
                        yield f"data: {json.dumps(delta(i, d))}\n\n"
                    yield f"data: {json.dumps(finish(i, t, why))}\n\n"
                for c in tail(result):
                    yield f"data: {json.dumps(c)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                job.gone.set()                     # normal end: harmless; early close: stops the decode loop
                fut.cancel()
        return StreamingResponse(gen(), media_type="text/event-stream")

    def include_usage(req) -> bool:
        return bool((req.stream_options or {}).get("include_usage"))

    def sse(chunks):
        async def gen():
            for c in chunks:
                yield f"data: {json.dumps(c)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(gen(), media_type="text/event-stream")

    # ------------------------------------------------------------------ routes
    @app.get("/health")
    def health():
        return {"status": "ok", "queued": sched.pending(), "running": sched.running()}

    @app.get("/v1/models")
    def models():
        now = int(time.time())
        data = [{"id": n, "object": "model", "created": now, "owned_by": "adaptlab",
                 "root": reg.base_name, "parent": None if n == reg.base_name else reg.base_name,
                 "adapter_type": reg.kinds.get("base" if n == reg.base_name else n)} for n in reg.names()]
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    async def completions(req: Completion, request: Request):
        lm = engine(req.model)
        ps = prompts_of(req.prompt)
        if len(ps) * req.n > 64:
            raise ApiError(400, "prompt: at most 64 prompts x n per request")
        ids = [encode(p) for p in ps]
        for r in ids:
            check_len(r, req.max_tokens)
        texts = [p if isinstance(p, str) else tok.decode(p, skip_special_tokens=True) for p in ps]
        st = stops(req.stop)
        cid, now, model = f"cmpl-{uuid.uuid4().hex[:16]}", int(time.time()), req.model or reg.base_name
        if req.stream and req.logprobs is None and req.max_tokens > 0:
            job = Job("generate", lm, texts, (req.n, req.max_tokens, req.temperature, req.top_p, st, req.seed))
            head = {"id": cid, "object": "text_completion", "created": now, "model": model}

            def chunk(i, text, why=None):
                return {**head, "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": why}]}

            def tail(result):
                if not include_usage(req):
                    return []
                n_out = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for g in result for t, _ in g if t)
                return [{**head, "choices": [], "usage": usage(sum(len(r) for r in ids), n_out)}]

            return streamed(job, request, [_Text(tok, st) for _ in range(len(ps) * req.n)], chunk,
                            lambda: [chunk(i * req.n + j, texts[i]) for i in range(len(ps)) for j in range(req.n)]
                            if req.echo else [],
                            lambda i, t, why: chunk(i, "", "stop" if why in ("eos", "stop") or why in st else "length"),
                            tail)
        gens: list = [[("", "length")] * req.n for _ in ps]
        drawn: dict = {}                          # (prompt, sample) -> the token ids the decode loop drew
        if req.max_tokens > 0:
            job = Job("generate", lm, texts, (req.n, req.max_tokens, req.temperature, req.top_p, st, req.seed))
            if req.logprobs is not None:
                job.on_token = lambda r, j, t: drawn.setdefault((r, j), []).append(t)
            gens = await run(job, request)
        choices, n_out = [], 0
        lp_rows = []
        if req.logprobs is not None:
            # the generated tokens themselves (EOS included, as OpenAI and vLLM give it: lm-eval's
            # echo + max_tokens=1 scoring drops the last position); cut at a stop string: its text's tokens
            rows = []
            for i, (r, g) in enumerate(zip(ids, gens)):
                for j, (t, why) in enumerate(g):
                    if why in ("eos", "length"):
                        ext = drawn.get((i, j), []) + ([tok.eos_token_id] if why == "eos" else [])
                    else:
                        ext = tok(t, add_special_tokens=False)["input_ids"] if t else []
                    rows.append(r + ext)
            lp_rows = await run(Job("logprobs", lm, rows, (req.logprobs,)), request)
        k = 0
        for i, (r, g) in enumerate(zip(ids, gens)):
            for t, why in g:
                n_out += len(tok(t, add_special_tokens=False)["input_ids"]) if t else 0
                c: dict[str, Any] = {"index": len(choices), "text": (texts[i] + t) if req.echo else t,
                                     "finish_reason": "stop" if why in ("eos", "stop") or why in st else "length",
                                     "logprobs": None}
                if req.logprobs is not None:
                    vals, tops = lp_rows[k]
                    full = rows[k]
                    start = 0 if req.echo else len(r)
                    toks, offs = offsets(full)
                    c["logprobs"] = {
                        "tokens": toks[start:], "token_logprobs": vals[start:],
                        "top_logprobs": [None if d is None else {tok.decode([a]): b for a, b in d.items()}
                                         for d in (tops[start:] if req.logprobs else [None] * (len(full) - start))],
                        "text_offset": [o - (0 if req.echo else offs[len(r)] if len(r) < len(offs) else 0)
                                        for o in offs[start:]]}
                k += 1
                choices.append(c)
        body = {"id": cid, "object": "text_completion", "created": now, "model": model, "choices": choices,
                "usage": usage(sum(len(r) for r in ids), n_out)}
        if req.stream:
            return sse([{**{k2: v for k2, v in body.items() if k2 != "usage"}, "choices": [c]} for c in choices])
        return body

    @app.post("/v1/chat/completions")
    async def chat(req: Chat, request: Request):
        lm = engine(req.model)
        msgs = [m.model_dump() for m in req.messages]
        prompt = chat_prompt(tok, msgs)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else (req.max_tokens or 64)
        ids = text_path.encode(tok, prompt)
        check_len(ids, max_tokens)
        st = stops(req.stop)
        cid, now, model = f"chatcmpl-{uuid.uuid4().hex[:16]}", int(time.time()), req.model or reg.base_name
        job = Job("generate", lm, [prompt], (req.n, max_tokens, req.temperature, req.top_p, st, req.seed))
        if req.stream:
            head = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model}

            def chunk(i, delta, why=None):
                return {**head, "choices": [{"index": i, "delta": delta, "finish_reason": why}]}

            def tail(result):
                if not include_usage(req):
                    return []
                n_out = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t, _ in result[0] if t)
                return [{**head, "choices": [], "usage": usage(len(ids), n_out)}]

            return streamed(job, request, [_Text(tok, st) for _ in range(req.n)],
                            lambda i, text: chunk(i, {"content": text}),
                            lambda: [chunk(i, {"role": "assistant", "content": ""}) for i in range(req.n)],
                            lambda i, t, why: chunk(i, {}, "stop" if why in ("eos", "stop") or why in st else "length"),
                            tail)
        [g] = await run(job, request)
        fin = ["stop" if why in ("eos", "stop") or why in st else "length" for _, why in g]
        n_out = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t, _ in g)
        return {"id": cid, "object": "chat.completion", "created": now, "model": model,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": fin[i]}
                            for i, (t, _) in enumerate(g)],
                "usage": usage(len(ids), n_out)}

    @app.post("/tokenize")
    def tokenize(req: Tokenize):
        if (req.prompt is None) == (req.messages is None):
            raise ApiError(400, "give exactly one of prompt or messages")
        text = req.prompt if req.prompt is not None else chat_prompt(tok, [m.model_dump() for m in req.messages])
        ids = text_path.encode(tok, text) if req.add_special_tokens else tok(text, add_special_tokens=False)["input_ids"]
        return {"tokens": ids, "count": len(ids), "max_model_len": max_len}

    @app.post("/detokenize")
    def detokenize(req: Detokenize):
        if any(t < 0 or t >= len(tok) for t in req.tokens):
            raise ApiError(400, f"tokens: ids must be in [0, {len(tok)})")
        return {"prompt": tok.decode(req.tokens)}

    @app.get("/tokenizer_info")
    def tokenizer_info():
        return {"tokenizer_class": type(tok).__name__, "vocab_size": len(tok), "max_model_len": max_len,
                "bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
                "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                "chat_template": getattr(tok, "chat_template", None)}

    @app.post("/v1/load_lora_adapter")
    async def load_adapter(req: LoadAdapter):
        kind = await asyncio.to_thread(reg.add, req.lora_name, req.lora_path)
        return {"status": "loaded", "name": req.lora_name, "adapter_type": kind}

    @app.post("/v1/unload_lora_adapter")
    def unload_adapter(req: UnloadAdapter):
        reg.remove(req.lora_name)
        return {"status": "unloaded", "name": req.lora_name}

    return app


def chat_prompt(tok, messages: list[dict]) -> str:
    """The model's chat template over the messages (plain ``role: content`` lines without one)."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


class _Text:
    """The streamed text of one choice, token by token: only what can no longer change is sent.

    The tokens so far are decoded whole (a byte-level token may end inside a character: a trailing
    U+FFFD is held back for up to 3 tokens, as a UTF-8 character has at most 4 bytes); with stop strings, a tail that could still become a stop string is held
    back and the text ends before the first stop string, as ``LocalLM.generate`` cuts it. At the
    end ``finish`` sends whatever the final text has beyond what was sent."""

    def __init__(self, tok, stop: tuple):
        self.tok, self.stop, self.ids, self.sent, self.cut, self.waited = tok, stop, [], "", False, 0

    def add(self, token: int) -> str:
        if self.cut:
            return ""
        self.ids.append(token)
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        hits = [text.find(s) for s in self.stop if s in text]
        if hits:
            text, self.cut = text[:min(hits)], True
        else:
            if text.endswith("\ufffd") and self.waited < 3:
                self.waited += 1
                text = text.rstrip("\ufffd")
            else:
                self.waited = 0
            hold = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            text = text[:len(text) - hold]
        if not text.startswith(self.sent):
            return ""
        d, self.sent = text[len(self.sent):], text
        return d

    def finish(self, final: str) -> str:
        if not final.startswith(self.sent):
            return ""
        d, self.sent = final[len(self.sent):], final
        return d
