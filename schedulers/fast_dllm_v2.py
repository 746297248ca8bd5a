"""fast_dllm_v2: Fast-dLLM v2's sub-block threshold rule (NVlabs/Fast-dLLM v2, modeling.py generate;
generation_functions.py batch_sample).

The block is decoded in sub-blocks of `sub_block_length` (8) slots, left to right: each step works on
the first sub-block that still has a mask and commits its masked slots with confidence > `threshold`
(strictly; 0.9 in Fast-dLLM v2's eval) and always its most confident one. The model's logits are
token-shifted (slot j scored by slot j - 1's hidden state) by the engine for families that declare it.
"""
from __future__ import annotations

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers.base import Scheduler, best_slot

PARAMS = {"sub_block_length": Param(8, int, "fast_dllm_v2 scheduler: slots per sub-block, decoded left to right",
                                    range="[1, inf)")}


class FastDLLMv2(Scheduler):
    fixed = False

    def select(self, st):
        masked, L = st.masked, st.masked.shape[1]     # [B, block]
        sub = self.params.sub_block_length
        col = torch.arange(L, device=masked.device)
        first = torch.where(masked.any(-1), masked.int().argmax(-1), L)                    # [B]
        start = (first // sub * sub)[:, None]                       # the window is the block: sub-blocks at 0, sub, ..
        active = masked & (col[None] >= start) & (col[None] < start + sub)
        return (active & (st.scores > self.params.threshold)) | best_slot(st.scores, active)
