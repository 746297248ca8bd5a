"""dinfer: dInfer's threshold decoder as it runs LLaDA2.x (inclusionAI/dInfer
python/dinfer/decoding/parallel_strategy.py:263-312).

Slots whose proposal (argmax, or Gumbel-max when sampling: Step.banned_hit, the same draw before the
mask token's ban; under the "dream" sampler and under a constraint, the plain argmax) is the mask token
are not candidates;
every candidate with confidence >= `threshold` (0.9) is committed, else the most confident one and
any within 1e-5 of it. Confidence = softmax(logits)[token] in float32. When no masked slot has a
candidate (every argmax is the mask token) dInfer commits nothing and never finishes the block;
dllm commits the best non-mask proposal instead.
"""
from __future__ import annotations

from dllm.schedulers.base import Scheduler, best_slot, commit_near_best


class DInfer(Scheduler):
    fixed = False
    masked_only = True
    sees_banned = True

    def select(self, st):
        mask_id = self.env.mask_id if self.env is not None else -1
        if st.banned_hit is not None:      # sampling: the draw itself was the mask token
            cand = st.masked & ~st.banned_hit
        else:
            cand = st.masked if mask_id < 0 else st.masked & (st.logits.argmax(-1) != mask_id)
        commit = commit_near_best(st.scores, cand, self.params.threshold)
        stuck = st.masked.any(-1, keepdim=True) & ~cand.any(-1, keepdim=True)   # every proposal left is the mask token
        return commit | (stuck & best_slot(st.scores, st.masked))
