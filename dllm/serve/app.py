"""The HTTP front of `dllm serve`: a FastAPI app over an AsyncEngine.

GET /health, GET /metrics, GET /v1/models, POST /v1/completions, POST /v1/chat/completions. All
decoding decisions stay in the engine; this layer maps OpenAI bodies to requests (protocol.py),
streams each request's deltas as server-sent events (handlers.py, answers.py), and answers errors in
OpenAI's error body format. One access-log line per HTTP request goes to the `dllm.serve` logger.
"""
from __future__ import annotations

import asyncio
import dataclasses
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from dllm.sampling_params import SamplingParams
from dllm.serve.handlers import Api, error_body, error_response
from dllm.serve.metrics import CONTENT_TYPE
from dllm.serve.protocol import ApiError


@dataclass
class ServeConfig:
    model_name: str
    defaults: SamplingParams = dataclasses.field(default_factory=SamplingParams)
    api_key: str | None = None
    max_waiting: int = 256             # requests waiting for an engine slot before a 429
    max_body_bytes: int = 8 << 20      # larger bodies get a 413


def build_app(engine, config: ServeConfig, home=None) -> FastAPI:
    """engine: an LLMEngine (dllm.LLMEngine), owned by the app's engine thread from startup on; home: the
    EngineThread (serve/async_engine.py) it was built on, which then steps it (a new thread when None).
    app.state.drain(grace_s) starts a drain (the server calls it on SIGTERM); after shutdown,
    app.state.engine_stopped says whether the engine loop ended."""
    api = Api(engine, config, home)

    @asynccontextmanager
    async def lifespan(app):
        api.front.start()
        yield
        api.front.abort_all()
        app.state.engine_stopped = await asyncio.to_thread(api.front.stop, 5.0)

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.drain, app.state.engine_stopped = api.drain, False

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):   # unknown route, wrong method: OpenAI's body too
        return JSONResponse(error_body(ApiError(str(exc.detail), exc.status_code), exc.status_code),
                            status_code=exc.status_code)

    @app.get("/health")
    async def health():
        return JSONResponse({"status": "draining" if api.draining else "ok"}, status_code=503 if api.draining else 200)

    @app.get("/metrics")
    async def metrics():
        return Response(api.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request):
        try:
            api.authorize(request)
        except ApiError as e:
            return error_response(e, {"WWW-Authenticate": "Bearer"})
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": 0,
                                            "owned_by": "dllm", "max_model_len": engine.max_seq_len}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await api.handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await api.handle(request, chat=True)

    return app
