"""The scheduler interface: which masked slots of the active block to commit at each step.

The engine calls, per block: begin_block(masked_counts, steps); then, for fixed-count
schedulers (fixed = True), while not block_done(step): plan(step) gives host-side commit
counts per row; for adaptive ones (fixed = False) it steps until the block has no mask
(one host check per step, which those methods need). Each step is one forward and
select(step, scores, masked, plan) -> commit mask [B, L]. State is per request row; the
engine only drops finished rows between blocks.
"""
from __future__ import annotations

import torch


class Scheduler:
    #: "llada" | "dream": which published definition of the proposal and its score to use
    style: str = "llada"
    #: True: a fixed number of steps per block with counts known in advance (no host sync)
    fixed: bool = True

    def __init__(self, params, style: str):
        self.params, self.style = params, style

    def begin_block(self, masked_counts: list[int], steps: int) -> None:
        raise NotImplementedError

    def block_done(self, step: int) -> bool:
        raise NotImplementedError   # fixed schedulers only

    def plan(self, step: int) -> list[int] | None:
        return None

    def select(self, step: int, scores: torch.Tensor, masked: torch.Tensor, plan) -> torch.Tensor:
        raise NotImplementedError


def commit_top(scores: torch.Tensor, masked: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Commit the counts[r] highest-scoring masked slots of each row r. scores, masked [B, L]."""
    ranked = scores.masked_fill(~masked, float("-inf"))
    commit = torch.zeros_like(masked)
    if len(set(counts)) == 1:
        # one torch.topk over the batch, as the reference generate functions call it
        k = counts[0]
        if k:
            commit.scatter_(1, torch.topk(ranked, k, dim=-1).indices, True)
        return commit
    for r, k in enumerate(counts):  # rows at different counts (e.g. infill canvases)
        if k:
            commit[r, torch.topk(ranked[r], k).indices] = True
    return commit


def commit_best_and_above(scores: torch.Tensor, masked: torch.Tensor, threshold: float) -> torch.Tensor:
    """Every masked slot scoring >= threshold, and always each row's best masked slot."""
    ranked = scores.masked_fill(~masked, float("-inf"))
    commit = masked & (ranked >= threshold)
    best = ranked.argmax(-1, keepdim=True)
    return commit.scatter_(1, best, masked.gather(1, best))
