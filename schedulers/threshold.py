"""threshold (Fast-dLLM, arXiv 2505.22618): commit every masked slot of the block whose
confidence is >= `threshold` (0.9 by default), and always the most confident one, until the
block has no mask left."""
from __future__ import annotations

from dllm.schedulers.base import Scheduler, commit_best_and_above


class Threshold(Scheduler):
    fixed = False
    masked_only = True

    def select(self, st):
        return commit_best_and_above(st.scores, st.masked, self.params.threshold)
