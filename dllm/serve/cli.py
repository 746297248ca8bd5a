"""`dllm serve`: the OpenAI-compatible server (FastAPI + uvicorn, the optional `dllm[serve]` extra).

Building the parser imports neither torch nor FastAPI. The model loads before the server accepts
connections (the port is bound first, so a port in use fails fast). SIGTERM (or Ctrl-C) drains:
no new requests, the running ones finish or are aborted after --grace-period seconds, exit 0.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from dllm.errors import DllmError


def _memory(text: str):
    """--kv-cache-memory: a fraction of the device memory (<= 1) or a number of bytes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] or a number of bytes, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value if value <= 1 else int(value)


def add_parser(sub) -> None:
    from dllm.cli import _add_sampling_flags, add_model_flags

    sv = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API",
                        description="Serve a model over HTTP: /v1/completions, /v1/chat/completions, /v1/models, "
                                    "/health, /metrics. The sampling flags set the defaults that each request's "
                                    "fields override. Needs the serve extra: pip install 'dllm[serve]'.")
    add_model_flags(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks a free one (default: 8000)")
    sv.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on /v1 routes "
                                                     "(default: $DLLM_API_KEY, else no key)")
    sv.add_argument("--served-model-name", metavar="NAME", help="the model's name in the API (default: the model "
                                                                "directory's name)")
    sv.add_argument("--max-num-seqs", type=int, metavar="N", help="most requests the engine decodes at once")
    sv.add_argument("--kv-cache-memory", type=_memory, metavar="X", help="KV cache pool: a fraction of the device "
                                                                         "memory, or bytes (engine default if unset)")
    sv.add_argument("--max-waiting", type=int, default=256, metavar="N",
                    help="requests that may wait for an engine slot; more get HTTP 429 (default: 256)")
    sv.add_argument("--grace-period", type=float, default=30.0, metavar="S",
                    help="on SIGTERM, seconds running requests get to finish before they are aborted (default: 30)")
    _add_sampling_flags(sv)
    sv.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    try:
        from dllm.serve.app import ServeConfig, build_app
        from dllm.serve.server import run
    except ImportError as e:
        raise DllmError(f"dllm serve needs FastAPI and uvicorn ({e.name} is missing): pip install 'dllm[serve]'.") from None
    from dllm.cli import _sampling_params
    from dllm.default_model import resolve_model

    if not 0 <= args.port <= 65535:
        raise DllmError(f"--port must be in 0..65535, got {args.port}.")
    if args.max_waiting < 1 or args.grace_period < 0:
        raise DllmError("--max-waiting must be >= 1 and --grace-period >= 0.")
    defaults = _sampling_params(args)   # validated before the (slow) model load
    sock = _listen(args.host, args.port)
    model = resolve_model(args.model)
    from dllm import LLMEngine
    from dllm.serve.async_engine import EngineThread

    # built on the thread that will step it: one thread runs every torch operation (async_engine.py says why)
    home = EngineThread()
    engine = home.call(lambda: LLMEngine(model, device=args.device, dtype=args.dtype, graphs=args.graphs,
                                         pack=args.pack, kv_cache_memory=args.kv_cache_memory,
                                         max_num_seqs=args.max_num_seqs))
    name = args.served_model_name or Path(model).name
    config = ServeConfig(model_name=name, defaults=defaults, api_key=args.api_key or os.environ.get("DLLM_API_KEY"),
                         max_waiting=args.max_waiting)
    app = build_app(engine, config, home)
    _log_to_stderr()
    host, port = sock.getsockname()[:2]
    print(f"dllm serve: {name} on http://{_url_host(host)}:{port} (OpenAI API under /v1)", file=sys.stderr, flush=True)
    run(app, sock, args.grace_period)
    if not app.state.engine_stopped:
        # the engine thread is still inside a step (it cannot be interrupted): leave without
        # finalizing the interpreter under it, which can abort the process inside torch
        print("dllm serve: the engine was still running a step; exiting without waiting for it",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(0)
    return 0


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        raise DllmError(f"cannot listen on {host}:{port} ({e.strerror or e}).") from None
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _log_to_stderr():
    log = logging.getLogger("dllm.serve")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
