"""wino (WINO, arXiv 2507.18578): wide-in, narrow-out revocable decoding.

Each step's forward also runs a shadow of the active block: W extra mask slots at the block's
positions, where shadow slot i sees the whole canvas except block slot i (engine/windows.py shadow_row),
so its logits re-predict slot i without seeing it. Per step (Feng-Hong/WINO-DLLM LLaDA/decoding.py
:112-198), with p = softmax(float64 logits):
  c_i      = p_i[x0_i] on the block's masked slots (x0 the proposal)
  c_back_i = p_shadow_i[x_i] on the slots decoded in this block (x_i their current token)
  max_accept = min(max(int(0.7 * masked), 5), 20)
  commit {c > threshold} (tau1, strict; 0.7); more than max_accept: the max_accept best; none: the best
  if more than one slot is committed: re-mask R = {c_back < wino_remask_threshold} (tau2, 0.9), or,
      if |R| >= the previous step's commit count n_prev, the n_prev - 1 lowest c_back (n_prev = 30 at a
      block's first step); R is decided on the state before this step's commits
WINO revokes committed tokens, so it declares `revocable` and the engine honours it (the trace
records re-masked slots; end-of-text fills are redone; constraints only see re-masks, which keep
the answer completable, and recompute their witness). The net progress of a step can be negative,
so a guard the authors do not have: a row whose masked count has not reached a new low for
STALL_ROUNDS steps re-masks nothing until it does. LLaDA-style models only (the shadow is a
leave-one-out of slot i's own row, which Dream's logit shift does not have), no cache (every step
attends the whole canvas), no classifier-free guidance.
"""
from __future__ import annotations

from dllm._lazy import torch
from dllm.errors import UnsupportedError
from dllm.params import Param
from dllm.schedulers.base import Scheduler, best_slot


def _wino_ok(value, p):
    """WINO re-predicts the block against the whole canvas at every step, without guidance."""
    if p.scheduler != "wino":
        return None
    if p.cache != "none":
        return ("scheduler 'wino' re-predicts the block against the whole canvas at every step, so it needs "
                f"cache='none', got cache={p.cache!r}.")
    if p.cfg_scale:
        return "scheduler 'wino' does not support classifier-free guidance; set cfg_scale to 0."
    return None


PARAMS = {"wino_remask_threshold": Param(0.9, float, "wino scheduler: tau2, decoded slots whose leave-one-out "
                                                     "confidence is below it go back to mask", range="[0, 1]",
                                         check=_wino_ok)}
# tau1 is SamplingParams.threshold, whose default for wino is the paper's 0.7 (schedulers/__init__.py)
THRESHOLD = 0.7

STALL_ROUNDS = 8


class WINO(Scheduler):
    fixed = False
    shadow = True
    revocable = True

    def __init__(self, params, style, env=None):
        super().__init__(params, style, env)
        if self.dream_family:
            raise UnsupportedError("scheduler 'wino' needs a model without Dream's logit shift (LLaDA-style); "
                                   "its shadow block re-predicts each slot from that slot's own row.")

    def begin_block(self, masked_counts, steps):
        self.last = self.low = self.stall = None

    def select(self, st):
        p, masked, decoded = self.params, st.masked, st.decoded
        B, W = masked.shape
        dev = masked.device
        if self.last is None:                                   # per row, for this block
            self.last = torch.full((B,), 30, dtype=torch.long, device=dev)
            self.low = masked.sum(-1)
            self.stall = torch.zeros(B, dtype=torch.long, device=dev)
        prob = torch.softmax(st.logits.double(), -1)
        c = prob.gather(-1, st.tokens[..., None]).squeeze(-1).masked_fill(~masked, float("-inf"))
        back = torch.softmax(st.shadow_logits.double(), -1).gather(-1, st.current[..., None]).squeeze(-1)
        back = back.masked_fill(~decoded, float("inf"))
        n = masked.sum(-1)
        max_accept = (n * 0.7).int().clamp(min=5, max=20)      # float32 product, as the reference's tensor
        over = masked & (c > p.threshold)
        top = _lowest(-c, max_accept) & masked                  # the max_accept most confident
        count = over.sum(-1, keepdim=True)
        commit = torch.where(count > max_accept[:, None], top, torch.where(count == 0, best_slot(c, masked), over))
        accepted = commit.sum(-1)
        remask = decoded & (back < p.wino_remask_threshold)
        capped = _lowest(back, (self.last - 1).clamp(min=0)) & decoded
        remask = torch.where((remask.sum(-1) >= self.last)[:, None], capped, remask)
        remask &= (accepted > 1)[:, None] & (self.stall < STALL_ROUNDS)[:, None]
        self.last = accepted
        left = n - accepted + remask.sum(-1)                   # termination guard: progress to a new low
        self.stall = torch.where(left < self.low, 0, self.stall + 1)
        self.low = torch.minimum(self.low, left)
        st.revoke = remask
        return commit


def _lowest(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[B, W] bool: each row's k[b] lowest values (torch.topk(largest=False) order on ties)."""
    order = values.argsort(dim=-1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(values.shape[1], device=values.device).expand_as(order))
    return rank < k[:, None]
