"""The HTTP front of `dllm serve`: a FastAPI app over an AsyncEngine.

GET /health, GET /metrics, GET /v1/models, POST /v1/completions, POST /v1/chat/completions. All
decoding decisions stay in the engine; this layer maps OpenAI bodies to requests (protocol.py),
streams each request's deltas as server-sent events (answers.py), and answers errors in OpenAI's
error body format. One access-log line per HTTP request goes to the `dllm.serve` logger.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from dllm.errors import DllmError
from dllm.sampling_params import SamplingParams
from dllm.serve.answers import Reply
from dllm.serve.async_engine import AsyncEngine, EngineFailure
from dllm.serve.metrics import CONTENT_TYPE, Metrics
from dllm.serve.protocol import ApiError, ModelInfo, parse_chat, parse_completion

log = logging.getLogger("dllm.serve")
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


@dataclass
class ServeConfig:
    model_name: str
    defaults: SamplingParams = dataclasses.field(default_factory=SamplingParams)
    api_key: str | None = None
    max_waiting: int = 256             # requests waiting for an engine slot before a 429
    max_body_bytes: int = 8 << 20      # larger bodies get a 413


def error_response(e: Exception, headers: dict | None = None) -> JSONResponse:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    status = e.status if isinstance(e, ApiError) else 500 if isinstance(e, EngineFailure) else 400
    return JSONResponse(error_body(e, status), status_code=status, headers=headers)


def error_body(e: Exception, status: int = 400) -> dict:
    return {"error": {"message": " ".join(str(e).split()), "type": _TYPES.get(status, "invalid_request_error"),
                      "param": getattr(e, "param", None), "code": getattr(e, "code", None)}}


def build_app(engine, config: ServeConfig) -> FastAPI:
    """engine: an LLMEngine (dllm.LLMEngine), owned by the app's engine thread from startup on."""
    front = AsyncEngine(engine)
    info = ModelInfo(config.model_name, engine.tokenizer, engine.max_seq_len, config.defaults)
    waiting = lambda: max(0, front.num_outstanding - engine.num_running)   # noqa: E731
    metrics = Metrics(running=lambda: engine.num_running, waiting=waiting)

    @asynccontextmanager
    async def lifespan(app):
        front.start()
        yield
        front.abort_all()
        app.state.engine_stopped = await asyncio.to_thread(front.stop, 5.0)

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.draining = False
    app.state.engine_stopped = False   # set at shutdown: whether the engine thread ended

    def drain(grace_s: float):
        """SIGTERM: refuse new requests now; abort the ones still running after grace_s seconds."""
        app.state.draining = True
        asyncio.get_running_loop().call_later(grace_s, front.abort_all)

    app.state.drain = drain

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):   # unknown route, wrong method: OpenAI's body too
        return JSONResponse(error_body(ApiError(str(exc.detail), exc.status_code), exc.status_code),
                            status_code=exc.status_code)

    @app.get("/health")
    async def health():
        return JSONResponse({"status": "draining" if app.state.draining else "ok"},
                            status_code=503 if app.state.draining else 200)

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request):
        try:
            _authorize(request, config.api_key)
        except ApiError as e:
            return error_response(e)
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": 0,
                                            "owned_by": "dllm", "max_model_len": engine.max_seq_len}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _handle(request, chat=True)

    async def _handle(request: Request, chat: bool):
        path = request.url.path
        try:
            _authorize(request, config.api_key)
            if app.state.draining:
                raise ApiError("the server is shutting down.", status=503)
            body = await _read_json(request, config.max_body_bytes)
            job = await asyncio.to_thread(parse_chat if chat else parse_completion, body, info)
            if waiting() >= config.max_waiting:
                raise ApiError(f"the waiting queue is full ({config.max_waiting} requests); retry later.",
                               status=429, code="rate_limit_exceeded")
            reply = Reply(chat, config.model_name, job, engine.tokenizer)
            sink: asyncio.Queue = asyncio.Queue()
            await front.add_all([(c.request_id, {"prompt_token_ids": job.prompts[c.index // job.n]},
                                  _sample_params(job, c.index % job.n)) for c in reply.choices], sink)
        except (DllmError, EngineFailure) as e:
            response = error_response(e, {"WWW-Authenticate": "Bearer"} if getattr(e, "status", 0) == 401 else None)
            _access(path, response.status_code, None, metrics, str(e))
            return response
        if job.stream:
            return StreamingResponse(_events(reply, sink, front, path, metrics), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _whole(request, reply, sink, front, path, metrics)

    return app


def _sample_params(job, j: int) -> SamplingParams:
    """Sample j of a prompt (n > 1) draws with seed + j, so that seeded samples differ yet reproduce."""
    p = job.params
    return dataclasses.replace(p, seed=p.seed + j) if j and p.seed is not None else p


def _authorize(request: Request, key: str | None):
    if key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError("a valid API key is needed: send 'Authorization: Bearer <key>'.", status=401,
                       code="invalid_api_key")


async def _read_json(request: Request, limit: int):
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(f"the request body is larger than {limit} bytes.", status=413)
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise ApiError(f"the request body is larger than {limit} bytes.", status=413)
        parts.append(part)
    try:
        return json.loads(b"".join(parts))
    except (ValueError, RecursionError):   # JSONDecodeError and bad UTF-8 are ValueErrors
        raise ApiError("the request body is not valid JSON.") from None


async def _events(reply: Reply, sink, front: AsyncEngine, path: str, metrics: Metrics):
    """Server-sent events: role chunks (chat), one chunk per output that made text final, usage, [DONE]."""
    status = 200
    try:
        for chunk in reply.role_chunks():
            yield _sse(chunk)
        while not reply.done:
            item = await sink.get()
            if isinstance(item, Exception):   # the engine failed
                status = 500
                yield _sse(error_body(item, 500))
                break
            choice, text, ids = reply.take(item)
            if choice.finished and not item.finished:
                front.abort(choice.request_id)   # cut at max_tokens: free its slot
            chunk = reply.chunk(choice, text, ids)
            if chunk is not None:
                yield _sse(chunk)
            if choice.error is not None:   # the request failed alone (e.g. unsatisfiable constraint)
                status = 400
                yield _sse(error_body(DllmError(choice.error)))
                break
        if reply.include_usage:
            yield _sse(reply.usage_chunk())
        yield "data: [DONE]\n\n"
    finally:   # also when the client went away (the response task is cancelled): abort what is left
        gone = not reply.done and status == 200
        for c in reply.choices:
            if not c.finished:
                front.abort(c.request_id)
        _access(path, 499 if gone else status, reply, metrics)


async def _whole(request: Request, reply: Reply, sink, front: AsyncEngine, path: str, metrics: Metrics):
    """A non-streamed answer; a client that disconnects first has its requests aborted."""
    async def collect():
        while not reply.done:
            item = await sink.get()
            if isinstance(item, Exception):
                raise item
            choice, _, _ = reply.take(item)
            if choice.finished and not item.finished:
                front.abort(choice.request_id)   # cut at max_tokens

    task, watch = asyncio.ensure_future(collect()), asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():   # the client left, or this handler was cancelled
            task.cancel()
            for c in reply.choices:
                front.abort(c.request_id)
    if not task.done() or task.cancelled():
        _access(path, 499, reply, metrics)
        return Response(status_code=499)
    try:
        task.result()
    except EngineFailure as e:
        return _failed(e, path, reply, metrics)
    failed = next((c for c in reply.choices if c.error is not None), None)
    if failed is not None:
        return _failed(DllmError(failed.error), path, reply, metrics)
    if any(c.finish_reason == "abort" for c in reply.choices):
        return _failed(ApiError("the server shut down before the answer was complete.", status=503), path,
                       reply, metrics)
    _access(path, 200, reply, metrics)
    return JSONResponse(reply.body())


def _failed(e: Exception, path: str, reply: Reply, metrics: Metrics) -> JSONResponse:
    response = error_response(e)
    _access(path, response.status_code, reply, metrics, str(e))
    return response


async def _disconnected(request: Request):
    """Returns when the client disconnects (the body has been read, so receive() waits for that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _sse(obj: dict) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def _access(path: str, status: int, reply: Reply | None, metrics: Metrics, error: str | None = None):
    """The access-log line and the metrics of one finished HTTP request."""
    metrics.http.labels(path, str(status)).inc()
    if reply is None:
        log.info("- %s %d error=%s", path, status, json.dumps(" ".join((error or "").split())))
        return
    elapsed = time.perf_counter() - reply.t0
    answer = sum(len(c.token_ids) for c in reply.choices)
    nfe = sum(c.nfe for c in reply.choices)
    metrics.latency.observe(elapsed)
    if reply.first_token_s is not None:
        metrics.ttft.observe(reply.first_token_s)
    for c in reply.choices:
        metrics.answer(c.finish_reason or "abort", c.prompt_tokens, len(c.token_ids), c.nfe)
    reasons = ",".join(sorted({c.finish_reason or "abort" for c in reply.choices}))
    log.info("%s %s %d prompt=%d answer=%d nfe=%d tok/s=%.1f finish=%s %.2fs%s", reply.id, path, status,
             reply.prompt_tokens, answer, nfe, answer / elapsed if elapsed > 0 else 0.0, reasons, elapsed,
             f" error={json.dumps(' '.join(error.split()))}" if error else "")
