"""What the diffusion loop does for the capabilities schedulers declare (schedulers/base.py), kept out
of the loop so that each shows there as one call: variable blocks (AdaBlock), draft rounds
(FreeDave), and revocable slots with end-of-text prediction (WINO). None of these branch on a
scheduler's name.
"""
from __future__ import annotations

import torch

from dllm.engine.special_forwards import draft_forward


def plan_blocks(sched, runner, x, valid, pos, P: int, N: int, starts: list[int]):
    """variable_blocks: one forward (the round's first, a cache refresh) scores each row's next
    sched.plan_span slots; the scheduler picks each row's block length.

    starts: each row's next block start (answer offset). Returns (blk, in_block, first, ends):
    blk the batch's window (the union of the rows' blocks), in_block [B, W] bool (None when every
    row's block is the whole window), first = (logits, lo) of that forward for the round's first
    step, ends the rows' block ends (answer offsets). Sets runner.row_blocks for cached steps."""
    lo_col = P + min(starts)
    hi_col = min(P + N, P + max(starts) + max(sched.plan_span, 1))
    logits, lo = runner(x, valid, pos, slice(lo_col, hi_col))
    left = [N - s for s in starts]
    lengths = sched.block_lengths(logits, lo, [P + s for s in starts], left)
    assert all(1 <= n <= m for n, m in zip(lengths, left)), "a block must hold 1..remaining slots"
    ends = [s + n for s, n in zip(starts, lengths)]
    blk = slice(P + min(starts), P + max(ends))
    dev = x.device
    cols = torch.arange(blk.start, blk.stop, device=dev)[None, :]
    lo_t = torch.tensor([P + s for s in starts], device=dev)[:, None]
    hi_t = torch.tensor([P + e for e in ends], device=dev)[:, None]
    in_block = (cols >= lo_t) & (cols < hi_t)
    uniform = bool(in_block.all())
    runner.row_blocks = None if uniform else (lo_t, hi_t)
    return blk, None if uniform else in_block, (logits, lo), ends


def draft_round(runner, x, valid, pos, blk, constraint, propose, on_forward):
    """-> Step.draft for drafts schedulers: D [B, K, W] -> (logits [B, K, W, V], tokens, scores [B, K, W]),
    one counted forward over the B * K draft states (on_forward(K) counts it), each draft proposed
    on its own logits (under a constraint, the witness for that draft's canvas)."""
    mask_id = runner.canvas.mask_id

    def draft(D):
        B, K, W = D.shape
        logits = draft_forward(runner, x, valid, pos, blk, D)                 # [B * K, W, V]
        on_forward(K)
        flat = D.reshape(B * K, W)
        if constraint is not None:
            rows = torch.arange(B, device=D.device).repeat_interleave(K)
            tokens, scores = constraint.restrict(logits, flat, flat == mask_id, propose, rows=rows)
        else:
            tokens, scores = propose(logits.clone())
        return logits.view(B, K, W, -1), tokens.view(B, K, W), scores.view(B, K, W)
    return draft


def refill_after_stop(x, P: int, stop, mask_id: int, filled):
    """End-of-text prediction for revocable schedulers: the slots an earlier fill wrote go back to mask
    (their stop token may have been revoked), then the fill is redone. filled [B, N] bool (None at
    first) -> the slots this fill wrote."""
    from dllm.engine.diffusion import _fill_after_stop

    ans = x[:, P:]
    if filled is not None:
        ans.masked_fill_(filled, mask_id)
    before = ans == mask_id
    _fill_after_stop(x, P, stop, mask_id)
    return before & (x[:, P:] != mask_id)
