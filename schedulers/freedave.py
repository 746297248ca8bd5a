"""freedave (FreeDave, arXiv 2510.00294): lossless parallel decoding by drafting the next states of
one-token-per-step greedy decoding and verifying them all with one forward.

Per block (cychomatica/FreeDave generation/core.py:700-1104, full attention; token_transfer
:189-302, draft_verification :313-367), with (x0, c) the proposal and confidence of the current
state, from its own forward (the block's first forward, or the accepted draft's):
  K' = min(K, masked slots);  if every row has <= 1 masked slot: commit the best one, no forward
  drafts D_k = x + the top-(k+1) masked slots by c, k < K'
      (FreeDave++: D_0 = x + every slot with c >= freedave_threshold, or the best one;
                   D_k = D_0 + the top-k of the rest)
  one forward over the K' drafts (B * K' rows, counted as one forward; the draft rows go to stats)
  T_k = one step from D_k with D_k's own proposal (top-1; FreeDave++: the threshold step)
  best = 0; repeat: best = the largest j > best whose committed slots all agree with T_best
  commit D_best; its forward's proposal is the next state's, so the next step needs no forward.
D_0 is exactly the next state of one-token-per-step decoding, and D_{j+1} can agree with T_j
only by equalling it, so every accepted draft lies on that trajectory: at temperature 0 FreeDave
returns the answer of scheduler="topk" with steps = max_new_tokens token for token (with a batch-
invariant forward, and the same cache scheme), in 1 + R forwards per block for R rounds instead of
one per slot. FreeDave++ is not lossless (it can accept a state between two threshold steps).
K: freedave_drafts (the authors' 4 for LLaDA, 8 for Dream). The Dream path of the authors also
forces the block's first slot from the block-start forward (AR-adapted models); dllm does not.
With a cache, the cache is refreshed only at block starts (refresh_every is refused).
"""
from __future__ import annotations

from typing import Optional

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers.base import Scheduler, commit_top


def _freedave_ok(value, p):
    """FreeDave's drafts share the block start's cache and run without guidance."""
    if p.scheduler != "freedave":
        return None
    if p.cfg_scale:
        return "scheduler 'freedave' does not support classifier-free guidance; set cfg_scale to 0."
    if p.refresh_every:
        return ("scheduler 'freedave' refreshes the cache only at block starts (its drafts share that cache); "
                "set refresh_every to 0.")
    return None


PARAMS = {
    "freedave_drafts": Param(None, Optional[int], "freedave scheduler: drafts verified per forward (default: 4 for "
                             "LLaDA, 8 for Dream)", range="[1, 64]"),
    "freedave_threshold": Param(None, Optional[float], "freedave scheduler: turns on FreeDave++, drafts from this "
                                "confidence threshold (not lossless)", range="[0, 1]", check=_freedave_ok),
}


class FreeDave(Scheduler):
    fixed = False
    drafts = True

    def __init__(self, params, style, env=None):
        super().__init__(params, style, env)
        self.K = params.freedave_drafts or (8 if self.dream_family else 4)
        self.drafts = self.K            # the engine keeps K scratch ranges for the draft rows
        self.tau = params.freedave_threshold

    def _step(self, scores, masked):
        """One step of the base trajectory: top-1, or FreeDave++'s threshold step (top-1 if none). The
        top-1 is torch.topk's, as `topk` one slot per step picks it (the same slot among equal scores)."""
        top1 = commit_top(scores, masked, [1] * scores.shape[0])
        if self.tau is None:
            return top1
        return torch.where((masked & (scores >= self.tau)).any(-1, keepdim=True), masked & (scores >= self.tau), top1)

    def select(self, st):
        masked = st.masked
        first = self._step(st.scores, masked)
        n = int(masked.sum(-1).max())
        if n <= 1 or self.K == 1 or st.draft is None:
            return first
        K = min(self.K, n)
        drafts = self._drafts(st, first, K)                                      # [B, K, W] bool: filled
        state = torch.where(drafts, st.tokens[:, None], st.current[:, None])     # [B, K, W] token ids
        logits, tokens, scores = st.draft(state)
        dmask = masked[:, None] & ~drafts                                        # each draft's masked slots
        B, W = masked.shape
        new = self._step(scores.reshape(B * K, W), dmask.reshape(B * K, W)).view(B, K, W)
        best = verify(state, torch.where(new, tokens, state), dmask)            # targets T_k as token ids
        rows = torch.arange(B, device=masked.device)
        st.carry, st.carry_state = logits[rows, best], state[rows, best]
        return drafts[rows, best] & masked

    def _drafts(self, st, first, K):
        """[B, K, W] bool: the slots each draft fills (beyond the committed ones): D_0 = the base step,
        D_k = D_{k-1} + the next top-1 of the stale scores, i.e. the slots the base trajectory would
        take if the confidences stayed as they are. With distinct confidences this is the authors'
        top-(k+1) (FreeDave) and D_0 + top-k (FreeDave++); among equal ones it is torch.topk's own
        top-1 choice, the one `topk` makes, so drafts are not rejected for a tie."""
        masked = st.masked
        B = masked.shape[0]
        cur, out = first, [first]
        for _ in range(K - 1):
            cur = cur | commit_top(st.scores, masked & ~cur, [1] * B)
            out.append(cur)
        return torch.stack(out, 1)


def verify(drafts: torch.Tensor, targets: torch.Tensor, dmask: torch.Tensor) -> torch.Tensor:
    """The subset rule (core.py:313-367): drafts, targets [B, K, W] token ids, dmask [B, K, W] the
    drafts' masked slots -> [B] index of the accepted draft: from 0, repeatedly the largest j > best
    whose non-masked slots all equal T_best's, until a fixed point."""
    B, K, _ = drafts.shape
    agree = ((drafts[:, None] == targets[:, :, None]) | dmask[:, None]).all(-1)    # [B, i, j]
    agree &= torch.ones(K, K, dtype=torch.bool, device=drafts.device).triu(1)
    idx = torch.arange(K, device=drafts.device).expand(B, K)
    best = torch.zeros(B, dtype=torch.long, device=drafts.device)
    for _ in range(K - 1):
        row = agree.gather(1, best.view(B, 1, 1).expand(B, 1, K)).squeeze(1)       # [B, K]
        cand = torch.where(row, idx, -1).max(-1).values
        best = torch.maximum(best, cand)
    return best
