"""A compiled regex constraint applied to one request: its DFA state and the DINGO witness.

The engine calls begin_block at each block start (walks the newly committed columns, finds
the states from which the rest of the answer can be completed) and witness at each step (the
witness replaces the proposed tokens of the masked slots); see constraints/base.py.
"""
from __future__ import annotations

import torch

from dllm.constraints.dingo import Lattice


class ConstrainedRows:
    def __init__(self, dfa, stop_ids, canvas, temperature: float, generator, remasking: str = "low_confidence"):
        x = canvas.x
        self.lat = Lattice(dfa, stop_ids, x.device)
        self.P, self.L = canvas.prompt_len, x.shape[1]
        self.temperature, self.generator, self.remasking = temperature, generator, remasking
        self.state = torch.full((x.shape[0],), dfa.start, dtype=torch.long, device=x.device)
        self.col = self.P                     # canvas column the states have been walked up to
        self.mask_id = canvas.mask_id

    def completable(self, x) -> torch.Tensor:
        """[B] bool: the answer (masks = free slots, anything else fixed) can still satisfy the constraint."""
        feas = self._feasible_from(x, self.col)
        return feas.gather(1, self.state.clamp(min=0)[:, None]).squeeze(1) & (self.state >= 0)

    def begin_block(self, x, blk: slice):
        for c in range(self.col, blk.start):  # committed columns since the last block
            self.state = self.lat.step_token(self.state, x[:, c])
        self.col = blk.start
        self.feasible = self._feasible_from(x, blk.stop)

    def _feasible_from(self, x, col: int) -> torch.Tensor:
        """[B, S + 1] bool: states at column `col` from which columns col.. can be completed."""
        lat = self.lat
        B = x.shape[0]
        tail = x[:, col:]
        fixed = tail != self.mask_id
        if not bool(fixed.any()):                 # only free slots: the shortest distance decides
            return lat.feasible_free(tail.shape[1]).expand(B, -1)
        S1 = lat.S + 1
        live = lat.trans >= 0                                                    # [S, C]
        nxt = torch.where(live, lat.trans, 0)
        no_end = torch.zeros(B, 1, dtype=torch.bool, device=x.device)
        feas = lat.accept.expand(B, -1).clone()
        for c in range(tail.shape[1] - 1, -1, -1):
            # free slot: some class edge or an end token leads into a feasible state
            via_class = (feas[:, nxt] & live).any(-1)                            # [B, S]
            free = torch.cat([via_class, no_end], 1) | (lat.can_end & feas[:, lat.E:lat.E + 1])
            # fixed slot: its own token (next_states marks dead as S + 1)
            step = lat.next_states(tail[:, c])                                   # [B, S + 1]
            fix = torch.where(step < S1, feas.gather(1, step.clamp(max=S1 - 1)), False)
            feas = torch.where(fixed[:, c, None], fix, free)
        return feas

    def witness(self, logits, xblk, masked, propose, keep: bool = True):
        """-> (tokens, scores): the witness in the masked slots, scored by its own probability
        (low_confidence) or by `propose()`'s score of the slot (other remasking rules). Several rows of
        one request (FreeDave's draft canvases, keep=False) share its state."""
        l32 = logits.float()
        logp = torch.log_softmax(l32 / self.temperature if self.temperature > 0 else l32, -1)
        if self.temperature > 0:   # perturb-and-MAP: Gumbel noise on the tempered log-probabilities
            u = torch.rand(logp.shape, generator=self.generator, device=logp.device).clamp_(min=1e-20)
            search = logp - torch.log(-torch.log(u))
        else:
            search = logp
        state, feasible = self.state, self.feasible
        if logits.shape[0] != state.shape[0]:
            state, feasible = state.expand(logits.shape[0]), feasible.expand(logits.shape[0], -1)
        witness, ok = self.lat.witness(search, xblk, masked, state, feasible)
        if not bool(ok.all()):
            raise AssertionError("constrained decoding lost its witness")   # commits only ever come from witnesses
        if self.remasking == "low_confidence":
            if self.temperature > 0:
                logp = torch.log_softmax(l32, -1)
            scores = logp.gather(-1, witness[..., None]).squeeze(-1).exp()
        else:
            scores = propose(logits)[1]
        return torch.where(masked, witness, xblk), scores

    def check(self, commit, tokens, scores, x, blk):
        """Nothing to vet: every proposed token is the witness's, and any subset of it is valid."""
        return commit, tokens

    def finish_block(self, x, blk):
        """Nothing to do: every commit came from a witness, so a block's masks are its schedule's."""

    def complete(self, logits, x, col: int, rows=None):
        """Early commit: logits [B, W, V] of canvas columns col.. (the active block's start to the
        end) -> the witness for all of them (masked ones filled)."""
        xcols = x[:, col:]
        logp = torch.log_softmax(logits.float(), -1)
        feas = self.lat.accept.expand(xcols.shape[0], -1)
        witness, ok = self.lat.witness(logp, xcols, xcols == self.mask_id, self.state, feas)
        assert bool(ok.all()), "constrained decoding lost its witness"
        return witness


class TokenMask:
    """The same compiled DFA on the autoregressive path, for one request.

    Before answer token i of N: allowed = tokens whose class leads to a state that can still
    reach acceptance within the N - i - 1 tokens left, plus end tokens from accepting states.
    """

    def __init__(self, dfa, stop_ids, answer_len: int, device):
        self.lat = Lattice(dfa, stop_ids, device)
        self.N = answer_len
        self.state = torch.full((1,), dfa.start, dtype=torch.long, device=device)
        self.col = 0

    def allowed(self, generated, i: int) -> torch.Tensor:
        """generated [i]: the answer tokens chosen so far -> [V] bool."""
        lat = self.lat
        for c in range(self.col, i):                 # the tokens chosen since the last call
            self.state = lat.step_token(self.state, generated[c:c + 1])
        self.col = i
        s = self.state.clamp(0, lat.S - 1)
        nxt = lat.trans[s]                                                    # [1, C]
        ok = (nxt >= 0) & (lat.dist[nxt.clamp(min=0)] <= self.N - i - 1) & (self.state < lat.S)[:, None]
        allowed = ok[:, lat.token_class]                                      # [1, V]
        allowed[:, lat.stop] = lat.can_end[self.state.clamp(min=0)][:, None]
        return allowed[0]
