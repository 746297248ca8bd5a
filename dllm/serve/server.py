"""Running the app under uvicorn, with a drain on SIGTERM / SIGINT and exit status 0 afterwards."""
from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading

import uvicorn


class Server(uvicorn.Server):
    """uvicorn's server, whose SIGTERM / SIGINT also starts the app's drain (app.state.drain). uvicorn
    stops accepting, lets open requests finish and closes; it re-raises the signal after shutting down,
    which would end the process by the signal, so this server does not: a drained server exits 0."""

    def __init__(self, config: uvicorn.Config, grace_s: float):
        super().__init__(config)
        self.grace_s, self.loop = grace_s, None

    async def startup(self, sockets=None):
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def handle_exit(self, sig, frame):
        if not self.should_exit and self.loop is not None:
            self.loop.call_soon_threadsafe(self.config.app.state.drain, self.grace_s)
        super().handle_exit(sig, frame)


def run(app, sock: socket.socket, grace_s: float):
    """Serves `app` on the bound socket until a signal has drained it. uvicorn's own access log is off:
    the app writes one line per request (logger dllm.serve)."""
    config = uvicorn.Config(app, log_level="info", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=int(grace_s) + 5)
    Server(config, grace_s).run(sockets=[sock])
