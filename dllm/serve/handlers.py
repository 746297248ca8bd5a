"""The work behind POST /v1/completions and /v1/chat/completions: one Api object per server.

handle(): auth, body, mapping (protocol.py), admission (429), adding the requests to the engine; then
either a stream of server-sent events (events) or one JSON answer (whole). Both abort the requests a
client leaves behind, and both end in one access-log line and the request's metrics.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import time

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from dllm.errors import DllmError
from dllm.sampling_params import SamplingParams
from dllm.serve.answers import Reply
from dllm.serve.async_engine import AsyncEngine, EngineFailure
from dllm.serve.metrics import Metrics
from dllm.serve.protocol import ApiError, ModelInfo, parse_chat, parse_completion

log = logging.getLogger("dllm.serve")
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


def error_response(e: Exception, headers: dict | None = None) -> JSONResponse:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    status = e.status if isinstance(e, ApiError) else 500 if isinstance(e, EngineFailure) else 400
    return JSONResponse(error_body(e, status), status_code=status, headers=headers)


def error_body(e: Exception, status: int = 400) -> dict:
    return {"error": {"message": sentence(e), "type": _TYPES.get(status, "invalid_request_error"),
                      "param": getattr(e, "param", None), "code": getattr(e, "code", None)}}


MAX_MESSAGE = 1000   # characters of an error sentence sent or logged


def sentence(e) -> str:
    """An error's sentence on one line, its middle elided past MAX_MESSAGE characters: messages quote the
    value they refuse, and a body may carry megabytes of it, which would go back out and into the log."""
    text = " ".join(str(e).split())
    if len(text) <= MAX_MESSAGE:
        return text
    half = (MAX_MESSAGE - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


class Api:
    def __init__(self, engine, config, home=None):
        self.engine, self.config = engine, config
        self.front = AsyncEngine(engine, home)
        self.info = ModelInfo(config.model_name, engine.tokenizer, engine.max_seq_len, config.defaults)
        self.metrics = Metrics(running=lambda: engine.num_running, waiting=self.waiting)
        self.draining = False

    def waiting(self) -> int:
        """Requests accepted and not yet running in the engine."""
        return max(0, self.front.num_outstanding - self.engine.num_running)

    def drain(self, grace_s: float):
        """SIGTERM: refuse new requests now; abort the ones still running after grace_s seconds."""
        self.draining = True
        asyncio.get_running_loop().call_later(grace_s, self.front.abort_all)

    def authorize(self, request: Request):
        key = self.config.api_key
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError("a valid API key is needed: send 'Authorization: Bearer <key>'.", status=401,
                           code="invalid_api_key")

    async def handle(self, request: Request, chat: bool):
        path = request.url.path
        try:
            self.authorize(request)
            if self.draining:
                raise ApiError("the server is shutting down.", status=503)
            body = await _read_json(request, self.config.max_body_bytes)
            job = await asyncio.to_thread(parse_chat if chat else parse_completion, body, self.info)
            if self.waiting() >= self.config.max_waiting:
                raise ApiError(f"the waiting queue is full ({self.config.max_waiting} requests); retry later.",
                               status=429, code="rate_limit_exceeded")
            reply = Reply(chat, self.config.model_name, job, self.engine.tokenizer)
            sink: asyncio.Queue = asyncio.Queue()
            await self.front.add_all([(c.request_id, {"prompt_token_ids": job.prompts[c.index // job.n]},
                                       _sample_params(job.params, c.index % job.n)) for c in reply.choices], sink)
        except (DllmError, EngineFailure) as e:
            response = error_response(e, {"WWW-Authenticate": "Bearer"} if getattr(e, "status", 0) == 401 else None)
            self.access(path, response.status_code, None, str(e))
            return response
        except ClientDisconnect:   # gone before its body arrived: nobody to answer
            self.access(path, 499, None, "the client disconnected before sending its whole body.")
            return Response(status_code=499)
        if job.stream:
            return StreamingResponse(self.events(reply, sink, path), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await self.whole(request, reply, sink, path)

    async def events(self, reply: Reply, sink, path: str):
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
                    self.front.abort(choice.request_id)   # cut at max_tokens: free its slot
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
                    self.front.abort(c.request_id)
            self.access(path, 499 if gone else status, reply)

    async def whole(self, request: Request, reply: Reply, sink, path: str):
        """A non-streamed answer; a client that disconnects first has its requests aborted."""
        async def collect():
            while not reply.done:
                item = await sink.get()
                if isinstance(item, Exception):
                    raise item
                choice, _, _ = reply.take(item)
                if choice.finished and not item.finished:
                    self.front.abort(choice.request_id)   # cut at max_tokens

        task, watch = asyncio.ensure_future(collect()), asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not task.done():   # the client left, or this handler was cancelled
                task.cancel()
                for c in reply.choices:
                    self.front.abort(c.request_id)
        if not task.done() or task.cancelled():
            self.access(path, 499, reply)
            return Response(status_code=499)
        try:
            task.result()
        except EngineFailure as e:
            return self.failed(e, path, reply)
        failed = next((c for c in reply.choices if c.error is not None), None)
        if failed is not None:
            return self.failed(DllmError(failed.error), path, reply)
        if any(c.finish_reason == "abort" for c in reply.choices):
            return self.failed(ApiError("the server shut down before the answer was complete.", status=503), path,
                               reply)
        self.access(path, 200, reply)
        return JSONResponse(reply.body())

    def failed(self, e: Exception, path: str, reply: Reply) -> JSONResponse:
        response = error_response(e)
        self.access(path, response.status_code, reply, str(e))
        return response

    def access(self, path: str, status: int, reply: Reply | None, error: str | None = None):
        """The access-log line and the metrics of one finished HTTP request."""
        self.metrics.http.labels(path, str(status)).inc()
        if reply is None:
            log.info("- %s %d error=%s", path, status, json.dumps(sentence(error or "")))
            return
        elapsed = time.perf_counter() - reply.t0
        answer = sum(len(c.token_ids) for c in reply.choices)
        nfe = sum(c.nfe for c in reply.choices)
        self.metrics.latency.observe(elapsed)
        if reply.first_token_s is not None:
            self.metrics.ttft.observe(reply.first_token_s)
        for c in reply.choices:
            self.metrics.answer(c.finish_reason or "abort", c.prompt_tokens, len(c.token_ids), c.nfe)
        reasons = ",".join(sorted({c.finish_reason or "abort" for c in reply.choices}))
        log.info("%s %s %d prompt=%d answer=%d nfe=%d tok/s=%.1f finish=%s %.2fs%s", reply.id, path, status,
                 reply.prompt_tokens, answer, nfe, answer / elapsed if elapsed > 0 else 0.0, reasons, elapsed,
                 f" error={json.dumps(sentence(error))}" if error else "")


def _sample_params(p: SamplingParams, j: int) -> SamplingParams:
    """Sample j of a prompt (n > 1) draws with seed + j, so that seeded samples differ yet reproduce."""
    return dataclasses.replace(p, seed=p.seed + j) if j and p.seed is not None else p


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


async def _disconnected(request: Request):
    """Returns when the client disconnects (the body has been read, so receive() waits for that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _sse(obj: dict) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"
