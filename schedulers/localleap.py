"""localleap (LocalLeap, arXiv 2510.07081): Fast-dLLM's threshold rule with a relaxed threshold
next to confident anchors.

Per step, over the masked slots M of the active block with confidences c:
  anchors A = {i in M : c_i >= threshold}                   (this step's, they do not propagate)
  N = union over a in A of [a - radius, a + radius]         (slot index distance)
  commit the most confident slot; every other slot i commits iff
      c_i >= localleap_relaxed_threshold  when A is non-empty and i in N,
      c_i >= threshold                    otherwise.
Defaults threshold 0.9, relaxed 0.75, radius 4 (the authors' main()). With the relaxed threshold
equal to threshold this is exactly `threshold`.
"""
from __future__ import annotations

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers.base import Scheduler, best_slot

PARAMS = {
    "localleap_relaxed_threshold": Param(0.75, float, "localleap scheduler: threshold of slots within the radius "
                                         "of an anchor (confidence >= threshold)", range="[0, 1]"),
    "localleap_radius": Param(4, int, "localleap scheduler: slots either side of an anchor that are relaxed",
                              range="[0, inf)"),
}


class LocalLeap(Scheduler):
    fixed = False

    def select(self, st):
        p = self.params
        masked, c = st.masked, st.scores
        anchor = masked & (c >= p.threshold)                                     # [B, W]
        r = p.localleap_radius
        # near[b, i]: some anchor within r slots of i (a max-pool of width 2r + 1 over the anchors)
        near = torch.nn.functional.max_pool1d(anchor[:, None].float(), 2 * r + 1, stride=1, padding=r)[:, 0] > 0 if r else anchor
        cut = torch.where(near, p.localleap_relaxed_threshold, p.threshold)   # near is empty when A is
        return (masked & (c >= cut)) | best_slot(c, masked)
