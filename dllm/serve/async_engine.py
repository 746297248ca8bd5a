"""AsyncEngine: an LLMEngine on its own thread, fed and read from asyncio.

LLMEngine is not thread-safe, so exactly one thread (the engine thread) calls add_request, abort and
step. The asyncio side sends it commands through a queue; the thread drains the queue between steps,
steps while there is work, blocks on the queue while idle, and hands each RequestOutput back to the
event loop (loop.call_soon_threadsafe) into the asyncio queue of the HTTP request it belongs to.

An abort takes effect on the asyncio side at once (the request's queue is detached, or, with notify,
given a final finish_reason="abort" output), so a disconnect or a shutdown never waits for a step.

The engine thread is an EngineThread: `dllm serve` builds the engine on it too, so that one thread runs
every torch operation. PyTorch's CPU wheels use GNU OpenMP, which gives each thread that enters a
parallel region its own team and throttles the teams' spin-waiting once they hold more threads than
there are cores: a model loaded on the main thread and stepped on another ran 1.4-1.8x slower on a
2-core CPU than the same steps on one thread (README, "Serving benchmark").
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading

from dllm.errors import DllmError
from dllm.outputs import GenerationStats, RequestOutput

log = logging.getLogger("dllm.serve")


class EngineFailure(Exception):
    """The engine's step raised: every request it held is failed with this (HTTP 500)."""


class EngineThread:
    """One daemon thread that runs jobs in order: `call(fn)` runs fn there and returns its result (or
    raises its exception); `submit(fn)` returns a concurrent.futures.Future. A daemon, so an engine
    still inside a step never holds the interpreter's exit."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name="dllm-engine", daemon=True)
        self.thread.start()

    def submit(self, fn) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future

    def call(self, fn):
        return self.submit(fn).result()

    def _work(self):
        while True:
            fn, future = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as e:   # handed to the caller, which raises it
                    future.set_exception(e)


def _log_crash(loop: concurrent.futures.Future):
    """The engine loop itself raised (a bug: a failing step is caught inside it): say so, as a dying
    thread would have."""
    if not loop.cancelled() and loop.exception() is not None:
        e = loop.exception()
        log.error("the engine loop ended: %s: %s", type(e).__name__, e, exc_info=e)


class AsyncEngine:
    def __init__(self, engine, home: EngineThread | None = None):
        """home: the thread the engine was built on (its steps run there too); a new one when None."""
        self.engine = engine
        self.home = home or EngineThread()
        self._cmds: queue.SimpleQueue = queue.SimpleQueue()   # ("add", ...), ("abort", id), ("stop",)
        self._sinks: dict[str, asyncio.Queue] = {}            # request id -> its HTTP request's queue (loop thread)
        self._live: set[str] = set()                          # ids the engine holds (engine thread)
        self._loop = None
        self._running: concurrent.futures.Future | None = None

    # ---- asyncio side ---------------------------------------------------------------------------
    def start(self):
        self._loop = asyncio.get_running_loop()
        self._running = self.home.submit(self._run)
        self._running.add_done_callback(_log_crash)

    def stop(self, timeout: float = 5.0) -> bool:
        """Ends the engine loop after its current step; False if that step outlasts `timeout` seconds."""
        self._cmds.put(("stop",))
        if self._running is None:
            return True
        concurrent.futures.wait([self._running], timeout)
        return self._running.done()

    @property
    def num_outstanding(self) -> int:
        """Requests added and not yet finished, as the asyncio side sees them."""
        return len(self._sinks)

    async def add_all(self, requests, sink: asyncio.Queue):
        """requests: [(request_id, prompt, params)], whose outputs all go to `sink`. All are queued at
        once (the engine thread validates them between two steps); if the engine refuses one, every one
        is aborted and its error (a DllmError) raised."""
        waits = []
        for request_id, prompt, params in requests:
            self._sinks[request_id] = sink
            waits.append(self._loop.create_future())
            self._cmds.put(("add", request_id, prompt, params, waits[-1]))
        try:
            results = await asyncio.gather(*waits, return_exceptions=True)
        except BaseException:   # the HTTP request went away while waiting
            results = [asyncio.CancelledError()]
        error = next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            for request_id, _, _ in requests:
                self.abort(request_id)
            raise error

    def abort(self, request_id: str, notify: bool = False):
        """Stops a request. notify: its queue first gets a final finish_reason='abort' output."""
        sink = self._sinks.pop(request_id, None)
        if sink is None:
            return
        if notify:
            sink.put_nowait(RequestOutput(text="", token_ids=[], prompt_token_ids=[], stats=GenerationStats(),
                                          finish_reason="abort", request_id=request_id, finished=True))
        self._cmds.put(("abort", request_id))

    def abort_all(self):
        for request_id in list(self._sinks):
            self.abort(request_id, notify=True)

    def _deliver(self, outs):
        for out in outs:
            sink = self._sinks.get(out.request_id)
            if sink is None:
                continue   # aborted on this side already
            if out.finished:
                del self._sinks[out.request_id]
            sink.put_nowait(out)

    def _fail(self, ids, error: Exception):
        for request_id in ids:
            sink = self._sinks.pop(request_id, None)
            if sink is not None:
                sink.put_nowait(error)

    @staticmethod
    def _resolve(done, error):
        if not done.done():
            done.set_result(None) if error is None else done.set_exception(error)

    # ---- engine thread ------------------------------------------------------------------------
    def _run(self):
        engine = self.engine
        while True:
            cmd = self._cmds.get() if not engine.has_unfinished_requests() else self._next()
            while cmd is not None:
                if cmd[0] == "stop":
                    return
                self._apply(cmd)
                cmd = self._next()
            if not engine.has_unfinished_requests():
                continue
            try:
                outs = engine.step()
            except Exception as e:   # a bug or an exhausted device: fail what the engine holds, go on
                log.exception("engine step failed")
                self._recover(EngineFailure(f"the engine failed: {type(e).__name__}: {e}"))
                continue
            self._live.difference_update(o.request_id for o in outs if o.finished)
            if outs:
                self._loop.call_soon_threadsafe(self._deliver, outs)

    def _next(self):
        try:
            return self._cmds.get_nowait()
        except queue.Empty:
            return None

    def _apply(self, cmd):
        if cmd[0] == "abort":
            if cmd[1] in self._live:
                self.engine.abort(cmd[1])
            return
        _, request_id, prompt, params, done = cmd
        error = None
        try:
            self.engine.add_request(request_id, prompt, params)
            self._live.add(request_id)
        except DllmError as e:
            error = e
        except Exception as e:   # not the request's fault: answered as a server error
            log.exception("add_request failed")
            error = EngineFailure(f"the engine failed: {type(e).__name__}: {e}")
        self._loop.call_soon_threadsafe(self._resolve, done, error)

    def _recover(self, error: Exception):
        ids, self._live = list(self._live), set()
        for request_id in ids:
            try:
                self.engine.abort(request_id)
            except Exception:
                log.exception("abort after a failed step failed")
        self._loop.call_soon_threadsafe(self._fail, ids, error)
