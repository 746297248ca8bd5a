"""Admits waiting requests whose canvas fits the KV pool and retires finished ones (first come, first
served: a request that does not fit now blocks the ones behind it, so none starves)."""
from __future__ import annotations

from collections import deque

from dllm.engine.request import Request, Status


class RequestScheduler:
    def __init__(self, pools: dict, max_num_seqs: int):
        self.pools = pools                      # model key -> KVPool ("main", and APD's checkers)
        self.max_num_seqs = max_num_seqs
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    def add(self, req: Request):
        self.waiting.append(req)

    def admit(self, now: float) -> list[Request]:
        """Move waiting requests to running while their pool columns fit; return those that can never
        fit (more columns than a pool's budget), for the engine to fail."""
        never = []
        while self.waiting and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            needs = req.decoder.needs()
            if any(n > self.pools[key].capacity for key, n in needs):
                never.append(self.waiting.popleft())
                continue
            allocs = self._alloc(needs)
            if allocs is None:
                break
            self.waiting.popleft()
            req.allocs, req.status, req.started = allocs, Status.RUNNING, now
            req.decoder.bind([lo for _, lo, _ in allocs])
            self.running.append(req)
        return never

    def _alloc(self, needs):
        got = []
        for key, n in needs:
            pool = self.pools[key]
            if not pool.fits(n):
                for k, lo, m in got:
                    self.pools[k].release(lo, m)
                return None
            got.append((key, pool.alloc(n), n))
        return got

    def retire(self, req: Request):
        """Free a finished or aborted request's columns (they are reused at once)."""
        for key, lo, n in req.allocs:
            self.pools[key].release(lo, n)
        req.allocs = []
        req.status = Status.FINISHED
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
