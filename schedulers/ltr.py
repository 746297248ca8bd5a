"""ltr: one slot per step, left to right - autoregressive order on a diffusion model (the
quality ceiling ParallelBench compares parallel decoding against). Steps are ignored: a block
of n masked slots takes n forwards."""
from __future__ import annotations

from dllm.schedulers.base import Scheduler


class LeftToRight(Scheduler):
    fixed = False

    def select(self, st):
        return st.masked & (st.masked.cumsum(-1) == 1)        # the leftmost masked slot of each row
