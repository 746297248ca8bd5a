"""sdar: SDAR's remasking strategies within one block (JetAstra/SDAR generate.py:147-196).

Per step a quota q[s] comes from the block length B and `denoising_steps` S (B // S, +1 for the
first B % S steps; generate.py:49-54), clamped to the masks left (SDAR itself takes the top q even
when fewer slots are masked and so overwrites committed ones, a bug dllm does not reproduce):
  low_confidence_static   the q most confident masked slots
  low_confidence_dynamic  every masked slot with confidence > sdar_threshold (strictly) if there are
                          at least q of them, else the q most confident (the default, threshold 0.85)
  sequential              q slots from the leftmost masked one on
  entropy_bounded         the EB-sampler: masked slots by ascending entropy H of the sampling
                          distribution, the k whose prefix sums of H stay below eb_threshold (0.35),
                          1 <= k <= masked (SDAR's own branch is broken: docs/specs/block-diffusion.md section 2)
Confidence = the probability of the drawn token under softmax(top-p(top-k(logits / T))) (the family's
"dream" sampler; T = 0: argmax, softmax probability).
"""
from __future__ import annotations

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers.base import Scheduler, commit_top

PARAMS = {
    "sdar_remasking": Param("low_confidence_dynamic", str, "sdar scheduler: low_confidence_dynamic, "
                            "low_confidence_static, sequential or entropy_bounded",
                            choices=("low_confidence_dynamic", "low_confidence_static", "sequential", "entropy_bounded")),
    "sdar_threshold": Param(0.85, float, "sdar scheduler: confidence threshold (strict >) of low_confidence_dynamic",
                            range="[0, inf)"),
    "eb_threshold": Param(0.35, float, "sdar scheduler: entropy bound of entropy_bounded", range="[0, inf)"),
}


def quota(block: int, steps: int, step: int) -> int:
    """Step `step`'s entry of SDAR's get_num_transfer_tokens(block, steps): block // steps, +1 for the
    first block % steps steps (steps past the last count as the last)."""
    step = min(step, steps - 1)
    return block // steps + (1 if step < block % steps else 0)


class SDAR(Scheduler):
    fixed = False

    def begin_block(self, masked_counts, steps):
        self.steps, self.step = steps, 0

    def select(self, st):
        p, masked = self.params, st.masked                                     # masked [B, block]
        left = masked.sum(-1)                                                  # [B]
        q = quota(masked.shape[1], self.steps, self.step)
        self.step += 1
        counts = [max(1, min(q, n)) if n else 0 for n in left.tolist()]      # clamp: never a committed slot
        rule = p.sdar_remasking
        if rule == "low_confidence_static":
            return commit_top(st.scores, masked, counts)
        if rule == "low_confidence_dynamic":
            high = masked & (st.scores > p.sdar_threshold)
            enough = high.sum(-1, keepdim=True) >= torch.tensor(counts, device=masked.device)[:, None]
            return torch.where(enough, high, commit_top(st.scores, masked, counts))
        if rule == "sequential":
            seen = masked.int().cumsum(-1)                                     # 1.. from the leftmost mask on
            first = torch.where(masked.any(-1), masked.int().argmax(-1), masked.shape[1])
            col = torch.arange(masked.shape[1], device=masked.device)
            span = (col[None] >= first[:, None]) & (col[None] < first[:, None] + torch.tensor(counts, device=col.device)[:, None])
            return masked & span & (seen > 0)
        return self._entropy_bounded(st, left)

    def _entropy_bounded(self, st, left):
        from dllm.engine.sampling import filtered

        p = self.params
        l32 = st.logits.float()
        if p.temperature > 0:
            l32 = l32 / p.temperature
        l32 = filtered(l32, p.top_k, p.top_p)
        prob = l32.softmax(-1).clamp_min(1e-12)
        ent = (-(prob * prob.log()).sum(-1)).masked_fill(~st.masked, float("inf"))  # [B, L] entropy per slot
        ent_sorted, order = ent.sort(-1)
        below = (ent_sorted.cumsum(-1) < p.eb_threshold).sum(-1)              # searchsorted(right=False)
        k = torch.minimum(below.clamp(min=1), left)
        take = torch.arange(ent.shape[1], device=ent.device)[None] < k[:, None]
        return torch.zeros_like(st.masked).scatter_(1, order, take) & st.masked
