"""early_commit (Prophet, arXiv 2508.19982): decode with a base schedule and stop early once
the answer has settled.

After each forward: gap = mean over the monitored slots of (top-1 logit - top-2 logit);
progress = forwards so far (this one included) / steps; the phase threshold is
early_commit_thresholds[0 | 1 | 2] for progress < 0.33 | < 0.67 | otherwise. A row whose gap
reaches it has every masked answer slot filled with its current argmax (sampled at T > 0)
and is finished; other rows take the base step.

Monitored slots: the answer positions `early_commit_positions` when given (Prophet's
answer-region check; logits for them come from one more, counted, forward when the cache
did not compute them); otherwise every still-masked slot this forward scored (the whole
rest of the answer without a cache or with the prefix cache, the active block with the
dual cache, which keeps the check free).
"""
from __future__ import annotations

from typing import Optional

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers import SCHEDULERS, get_scheduler
from dllm.schedulers.base import Scheduler


def _base_ok(v, p):
    others = sorted(set(SCHEDULERS) - {"early_commit"})
    return None if v in others else f"early_commit_base must be another scheduler ({', '.join(others)}), got {v!r}."


def _positions_ok(v, p):
    if v is not None and (not v or not all(0 <= i < p.max_new_tokens for i in v)):
        return f"early_commit_positions must be answer positions in [0, {p.max_new_tokens}), got {v!r}."
    return None


def _thresholds_ok(v, p):
    if len(v) != 3 or not all(t >= 0 for t in v):
        return f"early_commit_thresholds must be three numbers >= 0 (early, middle, late), got {v!r}."
    return None


PARAMS = {
    "early_commit_base": Param("topk", str, "early_commit scheduler: the schedule it runs until it commits early",
                               check=_base_ok),
    "early_commit_positions": Param(None, Optional[tuple], "early_commit scheduler: answer positions whose logit "
                                    "gap is watched (default: every slot still masked)", items=int, check=_positions_ok),
    "early_commit_thresholds": Param((7.5, 5.0, 2.5), tuple, "early_commit scheduler: gap thresholds for the early, "
                                     "middle and late phase", items=float, check=_thresholds_ok),
}


class EarlyCommit(Scheduler):
    wide = True

    def __init__(self, params, style, env=None):
        super().__init__(params, style, env)
        self.base = get_scheduler(params.early_commit_base)(params, style, env)
        self.fixed = self.base.fixed

    def begin_block(self, masked_counts, steps):
        self.base.begin_block(masked_counts, steps)

    def block_done(self, step):
        return self.base.block_done(step)

    def plan(self, step):
        return self.base.plan(step)

    def transform(self, logits, masked):
        return self.base.transform(logits, masked)

    def select(self, st):
        return self.base.select(st)

    def threshold(self, forwards: int) -> float:
        progress = forwards / self.params.total_steps
        early, middle, late = self.params.early_commit_thresholds
        return early if progress < 0.33 else middle if progress < 0.67 else late

    def finish(self, st):
        """-> [B] bool: rows whose mean top-2 logit gap reaches the phase threshold."""
        if self.params.early_commit_positions is not None:
            cols = [st.answer_start + i for i in self.params.early_commit_positions]
            logits, start = st.wide, st.wide_start
            if logits is None or min(cols) < start:
                logits, start = st.extra(min(cols))      # one more forward, counted by the engine
            idx = torch.tensor(cols, device=logits.device) - start
            top2 = logits[:, idx].float().topk(2, dim=-1).values
            gap = (top2[..., 0] - top2[..., 1]).mean(-1)
            return gap >= self.threshold(st.forwards)
        if st.wide is not None:
            logits, monitored = st.wide, st.wide_masked
        else:
            logits, monitored = st.logits, st.masked
        top2 = logits.float().topk(2, dim=-1).values
        gap = (top2[..., 0] - top2[..., 1]) * monitored
        n = monitored.sum(-1)
        mean = gap.sum(-1) / n.clamp(min=1)
        return (n > 0) & (mean >= self.threshold(st.forwards))
