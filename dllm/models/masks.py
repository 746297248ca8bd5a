"""Attention patterns a family declares, as boolean masks for the forward's per-query attn_mask."""
from __future__ import annotations

import torch


def block_causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, block: int, k_valid: torch.Tensor | None = None):
    """Block-causal attention (SDAR, LLaDA2.x, Fast-dLLM v2): a query sees every key of its own block
    (both directions) and of every earlier block; blocks are aligned to absolute position 0.

    q_pos [B, T] or [T], k_pos [B, S] or [S]: absolute positions (per row, so left padding and ragged
    rows are fine); k_valid [B, S] bool or None: False on padding keys.
    -> [B, T, S] bool (B = 1 when neither position tensor has a batch dimension), True = attend:
       k_pos // block <= q_pos // block  (and k_valid).
    """
    qb = (q_pos if q_pos.dim() == 2 else q_pos[None]) // block          # [B|1, T]
    kb = (k_pos if k_pos.dim() == 2 else k_pos[None]) // block          # [B|1, S]
    mask = kb[:, None, :] <= qb[:, :, None]                             # [B, T, S]
    if k_valid is not None:
        mask = mask & k_valid[:, None, :]
    return mask
