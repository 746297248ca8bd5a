"""One request's state: its decoder (canvas, block position, scheduler and constraint state, statistics),
its text stream and its place in the engine (waiting, running, finished).

A decoder (engine/diffusion.py, autoregressive.py, apd.py) is the request's own step machine:
  needs()        pool columns it must hold while running: [(model key, columns), ...]
  bind(bases)    the first pool column of each of those ranges, once admitted
  plan()         the forward rows it needs this step ([] = none: it finished, or waits on nothing)
  advance(lgts)  consume the logits of those rows: commit, stop rules
  done           finished; `answer()` the N answer slots, `final_len()` how many leading slots are final
Requests never share state, so a request's answer does not depend on what else runs.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Decoder:
    """What every decoder shares: the canvas (prompt | answer slots), stop ids and statistics."""
    done: bool = False

    def __init__(self, prompt: list[int], answer_init: list[int] | None, n: int, fill: int, stop_ids, device):
        self.P, self.N = len(prompt), n
        self.x = torch.tensor(prompt + (answer_init if answer_init is not None else [fill] * n),
                              dtype=torch.long, device=device)                         # [P + N] the canvas
        self.stop = frozenset(int(s) for s in stop_ids)
        self.nfe = self.steps = 0
        self.trace: list = []
        self.bases: list[int] = []

    @property
    def L(self) -> int:
        return self.P + self.N

    def bind(self, bases: list[int]):
        self.bases = list(bases)

    def answer(self) -> list[int]:
        return self.x[self.P:].tolist()

    def final_len(self) -> int:
        """Leading answer slots that can no longer change (all N once done)."""
        raise NotImplementedError


def upto_stop(slots: list[int], stop) -> tuple[list[int], bool]:
    """The answer up to (excluding) its first stop token, and whether there was one."""
    for i, t in enumerate(slots):
        if t in stop:
            return slots[:i], True
    return slots, False


@dataclass(eq=False)
class Request:
    id: str
    prompt_ids: list[int]
    params: object                       # SamplingParams
    decoder: Decoder
    stream: object                       # engine/streaming.py TextStream
    arrival: float = field(default_factory=time.perf_counter)
    status: Status = Status.WAITING
    finish_reason: str | None = None     # "eos" | "stop" | "length" | "abort" | "error"
    error: str | None = None
    allocs: list = field(default_factory=list)   # [(pool key, first column, columns)]
    first_token_s: float | None = None   # seconds from arrival to the first final text
    started: float | None = None         # admission time
    finished_at: float | None = None
    stream_deltas: bool = True           # compute deltas every step (False: only the finished output)
    pool_bytes: int = 0                  # KV pool bytes the request held (kept after it leaves)
    exc: Exception | None = None         # the DllmError that failed it
    last_canvas: list | None = None      # the canvas last reported (traced requests)
    stop_checked: int = 0                # final tokens searched for stop strings (non-streaming requests)
