"""threshold (Fast-dLLM, arXiv 2505.22618): commit every masked slot of the block whose
confidence is >= `threshold` (0.9 by default), and always the most confident one, until the
block has no mask left."""
from __future__ import annotations

from dllm.schedulers.base import Scheduler, commit_best_and_above


class Threshold(Scheduler):
    fixed = False

    def begin_block(self, masked_counts, steps):
        pass

    def select(self, step, scores, masked, plan):
        return commit_best_and_above(scores, masked, self.params.threshold)
