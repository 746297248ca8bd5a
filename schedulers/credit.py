"""credit (CreditDecoding, arXiv 2510.06133, as inclusionAI/dInfer runs it).

Per block a credit matrix C [B, block, V] in float32, zero at the block's first step.
Each step (C <- beta * C first, except on the block's first step):
  p = softmax(logits) in float32;  C[i, argmax p_i] += p_i(top1)^gamma  at masked slots i
  fused = logits + alpha * log(1 + C)
The fused logits then give the tokens and confidences, and every masked slot whose fused
confidence is >= min(max fused confidence - 1e-5, threshold) is committed (so the most
confident one always is). Defaults alpha 0.7, gamma 0.2, beta 0.8, threshold 0.9.
"""
from __future__ import annotations

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers.base import Scheduler, commit_near_best

PARAMS = {
    "credit_alpha": Param(0.7, float, "credit scheduler: weight of log(1 + credit) added to the logits", range="[0, inf)"),
    "credit_gamma": Param(0.2, float, "credit scheduler: exponent of the top-1 probability added as credit",
                          range="[0, inf)"),
    "credit_beta": Param(0.8, float, "credit scheduler: per-step decay of the credit", range="[0, 1]"),
}


class Credit(Scheduler):
    fixed = False

    def begin_block(self, masked_counts, steps):
        self.first = True

    def transform(self, logits, masked):
        p = self.params
        B, L, V = logits.shape
        C = getattr(self, "credit", None)
        if self.first or C is None or C.shape != (B, L, V):
            if C is None or C.shape != (B, L, V):   # one buffer, reused by every block of the call
                C = self.credit = torch.zeros(B, L, V, dtype=torch.float32, device=logits.device)
            else:
                C.zero_()
            self.first = False
        else:
            C.mul_(p.credit_beta)
        l32 = logits.float()
        lse = torch.logsumexp(l32, -1, keepdim=True)
        top, idx = l32.max(-1, keepdim=True)                      # top-1 of p = softmax(logits)
        boost = (top - lse).exp().pow_(p.credit_gamma) * masked[..., None]
        C.scatter_add_(2, idx, boost)
        return l32 + p.credit_alpha * torch.log1p(C)

    def select(self, st):
        return commit_near_best(st.scores, st.masked, self.params.threshold)
