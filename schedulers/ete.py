"""ete: a bits-per-round decoder after Explore-Then-Exploit (arXiv 2511.21103) -- written from the
paper's stated principle, not its code (neither its code nor its algorithm text was available).

The principle: a decode needs at least (the answer's information, in bits) / (bits committed per
round) rounds, so a rule that only commits near-certain tokens wastes rounds, and committing
across block boundaries lets confident tokens of the next block go early. The rule here:
  candidates = masked slots of the active block, and of the next block where this forward scored
               them (no cache, prefix cache; the dual cache scores only the block)
  s_i = -log2 p_i(token_i), the surprisal of the proposed token under the untransformed logits
  sort by s ascending; commit the longest prefix whose summed surprisal is <= ete_budget_bits
  (1 bit by default), and always the active block's least surprising slot.
A round therefore commits many near-certain tokens, or one or a few uncertain ones (the budget
spends the round's bits on exploring them), and never more information than the budget beyond
its forced slot. Under a constraint the next block is not reached into (the witness covers the
active block only).
"""
from __future__ import annotations

import math

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers.base import Scheduler, best_slot

PARAMS = {"ete_budget_bits": Param(1.0, float, "ete scheduler: bits of surprisal committed per forward (after "
                                               "Explore-Then-Exploit's principle)", range="[0, inf)")}


def surprisal_bits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """logits [B, W, V], tokens [B, W] -> -log2 p(token) [B, W] float32."""
    logp = torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1)
    return -logp / math.log(2)


class ExploreThenExploit(Scheduler):
    fixed = False
    commits_ahead = True

    def __init__(self, params, style, env=None):
        super().__init__(params, style, env)
        self.lookahead = params.block

    def select(self, st):
        masked = st.masked
        s = surprisal_bits(st.logits, st.tokens).masked_fill(~masked, float("inf"))      # [B, W]
        W = s.shape[1]
        if st.ahead_tokens is not None:
            ahead = surprisal_bits(st.ahead_logits, st.ahead_tokens).masked_fill(~st.ahead_masked, float("inf"))
            s = torch.cat([s, ahead], 1)                                                   # [B, W + A]
        s_sorted, order = s.sort(dim=-1, stable=True)
        spent = s_sorted.cumsum(-1)                                   # inf once the candidates run out
        take = torch.zeros_like(s, dtype=torch.bool).scatter_(1, order, spent <= self.params.ete_budget_bits)
        commit = (take[:, :W] & masked) | best_slot(-s[:, :W], masked)
        if st.ahead_tokens is not None:
            # only rows still decoding this block reach ahead (a row riding along has no round of its own)
            st.ahead_commit = take[:, W:] & st.ahead_masked & masked.any(-1, keepdim=True)
        return commit
