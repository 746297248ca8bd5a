"""The two forwards that declared scheduler capabilities need besides BlockRunner's block step.

draft_forward (capability `drafts`, FreeDave): K candidate states of the block per request, run as
    B * K rows of ONE forward (FreeDave's batch_expanding mode): every draft row is the canvas with
    the block replaced by the draft; with a cache, the cached columns are the request's own, repeated
    for its drafts (a copy, as the authors' batch_repeat_interleave), and the window is a cached
    step's. The main cache is not written, so the next draft round sees the block start's keys/values.
shadow_forward (capability `shadow`, WINO): the canvas plus W shadow slots (masks at the block's
    positions) in one sequence [canvas | shadow], with a per-query mask: canvas rows never see the
    shadow; shadow slot i sees the whole canvas except block slot i, and every shadow slot. The
    shadow's logits at i are a leave-one-out re-prediction of block slot i. Only the block's and
    the shadow's rows reach the LM head (an index query). No cache: every step sees the whole canvas.
"""
from __future__ import annotations

import torch


def draft_forward(runner, x, valid, pos, blk: slice, drafts: torch.Tensor) -> torch.Tensor:
    """x, valid, pos [B, L]; drafts [B, K, W] token ids of the block -> logits [B * K, W, V]."""
    B, K, W = drafts.shape
    xd = x.repeat_interleave(K, 0)
    xd[:, blk] = drafts.reshape(B * K, W)
    vd, pd = valid.repeat_interleave(K, 0), pos.repeat_interleave(K, 0)
    key_mask = vd if runner.canvas.padded else None
    if runner.cache is None:
        return runner.model(xd, pd, None, slice(blk.start, blk.stop), key_mask)
    start, stop = runner.window(blk, x.shape[1])
    cache = runner.cache.repeated(K)
    cache.start = start
    q = slice(blk.start - start, blk.stop - start)
    return runner.model(xd[:, start:stop], pd[:, start:stop], cache, q, key_mask)


def shadow_forward(runner, x, valid, pos, blk: slice) -> torch.Tensor:
    """-> logits [B, 2W, V]: rows 0..W-1 the block's slots, W..2W-1 their shadow (leave-one-out) slots.
    A model that is not a transformer may compute these itself (`leave_one_out`, the evals' oracle)."""
    if hasattr(runner.model, "leave_one_out"):
        return runner.model.leave_one_out(x, valid if runner.canvas.padded else None, blk)
    B, L = x.shape
    W = blk.stop - blk.start
    dev = x.device
    mask_id = runner.canvas.mask_id
    ids = torch.cat([x, torch.full((B, W), mask_id, dtype=x.dtype, device=dev)], 1)          # [B, L + W]
    positions = torch.cat([pos, pos[:, blk]], 1)
    keys = torch.cat([valid, torch.ones(B, W, dtype=torch.bool, device=dev)], 1)              # [B, L + W]
    allow = keys[:, None, :].repeat(1, L + W, 1)                                              # [B, q, k]
    allow[:, :L, L:] = False                                  # the canvas never attends to the shadow
    own = torch.arange(W, device=dev)
    allow[:, L + own, blk.start + own] = False                # shadow i does not see block slot i
    rows = torch.cat([torch.arange(blk.start, blk.stop, device=dev), L + own])
    return runner.model(ids, positions, None, rows, allow)
