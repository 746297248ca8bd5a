"""eb (EB-Sampler, arXiv 2505.24857): an entropy budget per step.

Per step, over the masked slots M of the active block: e_i = entropy of softmax(z_i), computed in
the logits' dtype as torch's Categorical does (-sum p * log p with log p = z - logsumexp z);
sort M by e ascending; commit the first k, where k = the number of prefixes whose entropy sum
minus their largest entropy is <= eb_gamma (0.01), at least 1. Sorted ascending, the largest is
the last element, so a prefix passes when all but its last slot together hold <= gamma nats:
every step also admits one slot beyond the near-certain ones. gamma = 0 commits one slot per
step, the lowest-entropy one. Tokens are the engine's proposal (argmax, Gumbel-max sample, or
the constraint's witness). The paper decodes the whole answer as one block; with block_length
the rule runs on the active block's masked slots.
"""
from __future__ import annotations

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers.base import Scheduler

PARAMS = {"eb_gamma": Param(0.01, float, "eb scheduler: entropy budget (nats) of the slots committed before the "
                                         "last one of a step", range="[0, inf)")}


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """[..., V] -> [...] entropy in nats, in the logits' dtype (torch.distributions.Categorical's formula)."""
    logp = logits - logits.logsumexp(-1, keepdim=True)       # normalised, then probs = softmax(logp)
    return -(logp.clamp(min=torch.finfo(logits.dtype).min) * torch.softmax(logp, -1)).sum(-1)


class EBSampler(Scheduler):
    fixed = False

    def select(self, st):
        masked = st.masked
        e = entropy(st.logits).masked_fill(~masked, float("inf"))           # [B, W]
        e_sorted, order = e.sort(dim=-1, stable=True)                           # ascending, unmasked last
        finite = torch.isfinite(e_sorted)
        e0 = e_sorted.masked_fill(~finite, 0)
        spent = e0.cumsum(-1) - e0.cummax(-1).values                        # all but the prefix's last
        k = ((spent <= self.params.eb_gamma) & finite).sum(-1, keepdim=True)
        k = torch.minimum(k.clamp(min=1), masked.sum(-1, keepdim=True))
        take = torch.arange(e.shape[1], device=e.device)[None, :] < k
        return torch.zeros_like(masked).scatter_(1, order, take) & masked
