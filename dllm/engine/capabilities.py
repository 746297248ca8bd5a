"""What a diffusion request does for the capabilities its scheduler declares (schedulers/base.py), kept out
of the decoder's step so that each shows there as one call. None of these branch on a scheduler's name.

  lookahead / commits_ahead (KLASS, ETE)  the logits of the slots after the block, where the step's window
                                          computed them, and commits there
  variable_blocks (AdaBlock)              a block's first forward scores plan_span slots from its start and
                                          the scheduler sizes the block; the same forward is its first step
  drafts (FreeDave)                       select() asks for the logits of K draft states (Step.draft): the
                                          request's next forward is those K rows (engine/windows.py), counted
                                          once, and select() runs again on the same Step with them
  revocable (WINO)                        decoded slots may go back to mask; end-of-text fills are redone
"""
from __future__ import annotations

import torch


class NeedDrafts(Exception):
    """Raised by Step.draft(D): the logits of draft states D [1, K, W] come from the request's next forward."""

    def __init__(self, drafts: torch.Tensor):
        super().__init__(tuple(drafts.shape))
        self.drafts = drafts


def ahead_fields(st, lookahead: int, logits, lo: int, x, blk: slice, mask_id: int, propose):
    """Step.ahead_*: raw logits of the answer slots after the active block, up to `lookahead` of them, that
    the forward scored (logits [Q, V] of canvas columns lo..); proposals for commits_ahead schedulers
    (propose None: under a constraint the witness covers the active block only)."""
    hi = max(min(blk.stop + lookahead, lo + logits.shape[0]), blk.stop)
    st.ahead_logits = logits[blk.stop - lo:hi - lo][None]                     # [1, A, V]
    st.ahead_masked = (x[blk.stop:hi] == mask_id)[None]                       # [1, A]
    if propose is not None and hi > blk.stop:
        st.ahead_tokens = propose(st.ahead_logits.clone())[0]


def commit_ahead(st, x, blk: slice):
    """commits_ahead: the masked slots past the block that select() chose take their proposals."""
    if st.ahead_commit is None or st.ahead_tokens is None:
        return
    ahead = slice(blk.stop, blk.stop + st.ahead_commit.shape[1])
    x[ahead] = torch.where(st.ahead_commit[0] & st.ahead_masked[0], st.ahead_tokens[0], x[ahead])


def size_block(sched, logits, lo: int, start: int, remaining: int) -> int:
    """variable_blocks: the block starting at canvas column `start` from its first forward's logits [Q, V]
    of columns lo.. -> its length (1..remaining)."""
    n = sched.block_lengths(logits[None], lo, [start], [remaining])[0]
    assert 1 <= n <= remaining, "a block must hold 1..remaining slots"
    return n


def draft_canvases(x, blk: slice, drafts: torch.Tensor) -> torch.Tensor:
    """x [L], drafts [1, K, W] block states -> [K, L] canvases with the block replaced."""
    xd = x[None].repeat(drafts.shape[1], 1)
    xd[:, blk] = drafts[0]
    return xd


def revoke(st, x, blk: slice, commit, decoded, mask_id: int):
    """revocable: decoded slots select() sent back (Step.revoke) are masks again -> the block's decoded slots
    [W] after this step (commit [W])."""
    if st.revoke is None:
        return decoded | commit
    back = st.revoke[0] & decoded & ~commit
    x[blk] = x[blk].masked_fill(back, mask_id)
    return (decoded | commit) & ~back


def refill_after_stop(decoder, filled):
    """End-of-text prediction for revocable schedulers: the slots an earlier fill wrote go back to mask (their
    stop token may have been revoked), then the fill is redone. filled [N] bool (None at first) -> the slots
    this fill wrote."""
    ans = decoder.x[decoder.P:]
    if filled is not None:
        ans.masked_fill_(filled, decoder.mask_id)
    before = ans == decoder.mask_id
    decoder._fill_after_stop()
    return before & (decoder.x[decoder.P:] != decoder.mask_id)
