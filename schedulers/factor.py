"""factor (Fast-dLLM, arXiv 2505.22618): sort the block's masked confidences
c(1) >= c(2) >= ...; commit the largest n such that c(j) >= 1 - factor / (j + 1) for every
2 <= j <= n (the top-1 always), until the block has no mask left.

(The paper's condition (n + 1)(1 - c(n)) < factor, applied to every prefix. Fast-dLLM's
get_transfer_index_dynamic also commits the whole block when only its last slot fails;
this follows the stated rule.)
"""
from __future__ import annotations

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers.base import Scheduler

PARAMS = {"factor": Param(1.0, float, "factor scheduler: commit the top n with c(j) >= 1 - factor/(j+1)",
                          range="(0, inf)")}


class Factor(Scheduler):
    fixed = False

    def select(self, st):
        masked = st.masked
        ranked = st.scores.masked_fill(~masked, float("-inf"))
        conf, order = ranked.sort(-1, descending=True)                  # [B, L]
        j = torch.arange(1, conf.shape[1] + 1, device=conf.device)      # 1-based rank
        ok = conf >= 1 - self.params.factor / (j + 1)
        ok[:, 0] = True
        n = ok.int().cumprod(-1).sum(-1, keepdim=True)                  # longest passing prefix
        take = j[None, :] <= n
        return torch.zeros_like(masked).scatter_(1, order, take) & masked
