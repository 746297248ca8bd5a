"""The serve engine thread (dllm/serve/async_engine.py): the engine is built on an EngineThread and every
engine call (add_request, step, abort) then runs on that same thread, so that a single OS thread enters
PyTorch's OpenMP regions (GNU OpenMP throttles its teams once more threads hold them than there are
cores; README "Serving benchmark"). A stand-in engine records the thread of each call."""
from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("fastapi")

from dllm.errors import DllmError  # noqa: E402
from dllm.outputs import GenerationStats, RequestOutput  # noqa: E402
from dllm.serve.async_engine import AsyncEngine, EngineThread  # noqa: E402


class Recorder:
    """Finishes each request after `steps` steps; records (call, thread id) of every engine call."""

    def __init__(self, steps: int = 3):
        self.built_on = threading.get_ident()
        self.calls: list[tuple[str, int]] = []
        self.left: dict[str, int] = {}
        self.steps = steps
        self.tokenizer, self.max_seq_len = None, 64

    def _rec(self, name):
        self.calls.append((name, threading.get_ident()))

    def add_request(self, request_id, prompt, params):
        self._rec("add")
        if prompt == "bad":
            raise DllmError("the prompt is bad.")
        self.left[request_id] = self.steps

    def abort(self, request_id):
        self._rec("abort")
        self.left.pop(request_id, None)

    def has_unfinished_requests(self):
        return bool(self.left)

    @property
    def num_running(self):
        return len(self.left)

    def step(self):
        self._rec("step")
        outs = []
        for rid in list(self.left):
            self.left[rid] -= 1
            done = self.left[rid] == 0
            if done:
                del self.left[rid]
            outs.append(RequestOutput(text="x", token_ids=[1], prompt_token_ids=[], stats=GenerationStats(),
                                      finish_reason="length" if done else None, request_id=rid, finished=done))
        return outs


def test_engine_thread_runs_jobs_in_order_and_returns_or_raises():
    home = EngineThread()
    assert home.thread.daemon and home.thread.is_alive()
    seen = []
    futures = [home.submit(lambda i=i: seen.append((i, threading.get_ident())) or i) for i in range(5)]
    assert [f.result(5) for f in futures] == list(range(5))
    assert [i for i, _ in seen] == list(range(5)) and {t for _, t in seen} == {home.thread.ident}
    assert home.call(threading.get_ident) == home.thread.ident != threading.get_ident()

    def fail():
        raise DllmError("the model directory has no config.json.")

    with pytest.raises(DllmError, match="no config.json"):
        home.call(fail)
    assert home.call(lambda: 7) == 7                  # a failed job leaves the thread serving


def test_async_engine_steps_on_the_thread_that_built_the_engine():
    home = EngineThread()
    engine = home.call(Recorder)
    assert engine.built_on == home.thread.ident

    async def main():
        front = AsyncEngine(engine, home)
        front.start()
        sink: asyncio.Queue = asyncio.Queue()
        await front.add_all([("a", "p", None), ("b", "p", None)], sink)
        finished = set()
        while len(finished) < 2:
            out = await asyncio.wait_for(sink.get(), 10)
            if out.finished:
                finished.add(out.request_id)
        with pytest.raises(DllmError, match="prompt is bad"):
            await front.add_all([("c", "bad", None)], asyncio.Queue())
        long = asyncio.Queue()
        engine.steps = 10 ** 6
        await front.add_all([("d", "p", None)], long)
        await asyncio.wait_for(long.get(), 10)          # it runs ...
        front.abort("d", notify=True)                   # ... and is aborted mid-way
        while not (out := await asyncio.wait_for(long.get(), 10)).finished:
            pass
        assert out.finish_reason == "abort"
        return await asyncio.to_thread(front.stop, 5.0)

    assert asyncio.run(main()) is True
    names = {name for name, _ in engine.calls}
    assert {"add", "step", "abort"} <= names
    assert {t for _, t in engine.calls} == {home.thread.ident}


def test_async_engine_without_a_home_makes_its_own_thread():
    engine = Recorder()

    async def main():
        front = AsyncEngine(engine)
        front.start()
        sink: asyncio.Queue = asyncio.Queue()
        await front.add_all([("a", "p", None)], sink)
        while not (await asyncio.wait_for(sink.get(), 10)).finished:
            pass
        return front, await asyncio.to_thread(front.stop, 5.0)

    front, stopped = asyncio.run(main())
    assert stopped and {t for _, t in engine.calls} == {front.home.thread.ident} != {threading.get_ident()}


def test_a_crash_of_the_engine_loop_is_logged(caplog):
    class Broken(Recorder):
        def has_unfinished_requests(self):
            raise RuntimeError("boom")

    async def main():
        front = AsyncEngine(Broken())
        front.start()
        stopped = await asyncio.to_thread(front.stop, 5.0)
        front.home.call(lambda: None)   # jobs run in order: the loop's job, its callbacks included, is over
        return stopped

    with caplog.at_level("ERROR", logger="dllm.serve"):
        assert asyncio.run(main()) is True
    assert any("engine loop ended: RuntimeError: boom" in r.getMessage() for r in caplog.records)
