"""DINGO (arXiv 2505.23061): the most probable constraint-satisfying assignment of a block.

The language is a token-level DFA (constraints/regex.py: live states, token classes). One
absorbing state E = S is added for "the answer has ended": an end token moves an accepting
state (or E) to E, and only end tokens leave E. With the block's log-probabilities, a Viterbi
dynamic program over (slot, state) gives, for each row,

    max  sum_i log p_i(t_i)   over t_i of the masked slots (committed slots are fixed)
    s.t. the walk from the block's start state stays live and ends in a state from which the
         rest of the answer can still be completed (`feasible`),

in O(block * S * C) with C token classes: per masked slot and class only the class's best
token can be on an optimal path. Any subset of this witness can be committed and the answer
stays completable (the rest of the witness completes it), so every scheduler composes with it.
"""
from __future__ import annotations

import torch

NEG = float("-inf")


def class_best(logp: torch.Tensor, token_class: torch.Tensor, n_classes: int) -> torch.Tensor:
    """logp [B, L, V] -> best log-probability per token class [B, L, C] (one scatter pass)."""
    B, L, V = logp.shape
    best = torch.full((B, L, n_classes), NEG, dtype=logp.dtype, device=logp.device)
    return best.scatter_reduce_(2, token_class.view(1, 1, V).expand(B, L, V), logp, reduce="amax")


def best_in_class(logp: torch.Tensor, token_class: torch.Tensor, cls: torch.Tensor, k: int = 8) -> torch.Tensor:
    """The most probable token of class cls[b, i] at each slot: logp [B, L, V], cls [B, L] -> [B, L].

    Usually one of the slot's k most probable tokens is in the chosen class (the first such is
    the class's best); the rare slots where none is fall back to a masked argmax over V.
    """
    top = logp.topk(min(k, logp.shape[-1]), dim=-1).indices                 # [B, L, k], descending
    hit = token_class[top] == cls[..., None]
    first = hit.int().argmax(-1, keepdim=True)
    tok = top.gather(-1, first).squeeze(-1)
    miss = ~hit.any(-1)
    if bool(miss.any()):
        b, i = miss.nonzero(as_tuple=True)
        rows = logp[b, i].masked_fill(token_class[None, :] != cls[b, i, None], NEG)
        tok[b, i] = rows.argmax(-1)
    return tok


class Lattice:
    """The DFA with the end state, as dense tensors on the model's device."""

    def __init__(self, dfa, stop_ids, device):
        S = dfa.n_states
        self.S, self.E, self.C = S, S, dfa.trans.shape[1]
        self.trans = dfa.trans.to(device)                     # [S, C], -1 dead
        self.token_class = dfa.token_class.to(device)         # [V]
        self.accept = torch.cat([dfa.accept, torch.tensor([True])]).to(device)   # E counts as accepting
        self.dist = torch.cat([dfa.dist, torch.tensor([0])]).to(device)
        self.stop = torch.tensor(sorted(stop_ids), device=device)
        self.can_end = self.accept.clone()                    # states an end token may leave from (incl. E)
        # flat edge list of the class transitions: source s, class c -> target (dead -> dump S + 1)
        tgt = self.trans.clone()
        tgt[tgt < 0] = S + 1
        self.edge_tgt = tgt.reshape(-1)                      # [S * C]
        self.states = torch.arange(S + 1, device=device)
        # the class edges grouped by target state (CSR, on the host): the backtrack reads only the
        # edges into the state it is in
        src = torch.arange(S).repeat_interleave(self.C)
        cls = torch.arange(self.C).repeat(S)
        t = dfa.trans.reshape(-1).cpu()
        keep = t >= 0
        order = torch.argsort(t[keep], stable=True)
        self._in_src, self._in_cls = src[keep][order], cls[keep][order]
        counts = torch.bincount(t[keep], minlength=S + 1)
        self._in_off = [0] + torch.cumsum(counts, 0).tolist()
        self._can_end_c = self.can_end.cpu()

    def next_states(self, token: torch.Tensor) -> torch.Tensor:
        """token [B] -> [B, S + 1] next state of every state on that token (dead -> S + 1)."""
        B = token.shape[0]
        S1 = self.S + 1
        nxt = self.step_token(self.states.repeat(B), token.repeat_interleave(S1)).view(B, S1)
        return torch.where(nxt < 0, S1, nxt)

    def step_token(self, state: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """state [B] (E = S, dead = -1), token [B] -> next state [B]."""
        is_stop = torch.isin(token, self.stop)
        live = (state >= 0) & (state < self.S)
        nxt = torch.where(live, self.trans[state.clamp(0, self.S - 1), self.token_class[token]], -1)
        ended = torch.where((state >= 0) & self.can_end[state.clamp(min=0)], self.E, -1)
        return torch.where(is_stop, ended, torch.where(state == self.E, -1, nxt))

    def feasible_free(self, remaining: int) -> torch.Tensor:
        """[S + 1] bool: states from which `remaining` free slots can finish the answer."""
        return self.dist <= remaining

    def witness(self, logp: torch.Tensor, fixed: torch.Tensor, masked: torch.Tensor, start: torch.Tensor,
                feasible: torch.Tensor):
        """Viterbi over one block.

        logp [B, L, V] float32 log-probabilities (possibly perturbed); fixed [B, L] committed
        tokens; masked [B, L] bool; start [B] states; feasible [B, S + 1] bool allowed end states.
        -> (tokens [B, L]: the witness, committed slots unchanged; ok [B] bool: a witness exists).
        """
        B, L, V = logp.shape
        S1, C, dev = self.S + 1, self.C, logp.device
        best = class_best(logp, self.token_class, C)                        # [B, L, C]
        stop_lp = logp[..., self.stop]                                       # [B, L, n_stop]
        eos_val, eos_arg = stop_lp.max(-1)
        eos_tok = self.stop[eos_arg]                                         # [B, L]
        # the DP is many small tensor ops: on the CPU one thread runs them fastest (a parallel
        # region per 10^4-element op costs more than the op, and far more on a loaded machine)
        threads = torch.get_num_threads()
        if dev.type == "cpu" and threads > 1:
            torch.set_num_threads(1)
        try:
            cls = self._viterbi(best, eos_val, fixed, masked, start, feasible)
        finally:
            torch.set_num_threads(threads)
        ok = cls[:, 0] >= 0
        cls = cls.clamp(min=0)
        is_end = cls == C
        t = torch.where(is_end, eos_tok, best_in_class(logp, self.token_class, cls.clamp(max=C - 1)))
        return torch.where(masked & ok[:, None], t, fixed), ok

    def _viterbi(self, best, eos_val, fixed, masked, start, feasible) -> torch.Tensor:
        """-> cls [B, L]: the witness's class per slot (C = end token); all -1 for rows without one."""
        B, L, C = best.shape
        S1, dev = self.S + 1, best.device
        score = torch.full((B, S1), NEG, device=dev)
        ok_start = start >= 0
        score[ok_start, start[ok_start]] = 0.0
        hist = torch.empty((L, B, S1), device=dev)                           # score before slot i
        has_fixed = (~masked).any(0).tolist()                               # one host sync per call
        tgt = self.edge_tgt.expand(B, -1)
        for i in range(L):
            hist[i] = score
            m_score = None
            if not has_fixed[i] or bool(masked[:, i].any()):
                # masked slot: best over class edges s -c-> t, and end tokens into E
                cand = (score[:, :self.S, None] + best[:, i, None, :]).reshape(B, -1)   # [B, S * C]
                m_score = torch.full((B, S1 + 2), NEG, device=dev).scatter_reduce_(1, tgt, cand, reduce="amax")
                end_best = (torch.where(self.can_end, score, NEG) + eos_val[:, i, None]).max(1).values
                m_score[:, self.E] = torch.maximum(m_score[:, self.E], end_best)
                m_score = m_score[:, :S1]
            if has_fixed[i]:
                # committed slot: every state follows the slot's token
                nxt = self.next_states(fixed[:, i])
                f_score = torch.full((B, S1 + 1), NEG, device=dev).scatter_reduce_(1, nxt, score, reduce="amax")[:, :S1]
                score = f_score if m_score is None else torch.where(masked[:, i, None], m_score, f_score)
            else:
                score = m_score
        final = torch.where(feasible, score, NEG)
        best_end, state = final.max(1)
        ok = best_end > NEG
        # backtrack on the host, per row: recompute only the edges into the chosen state
        cls = torch.full((B, L), C, dtype=torch.long)
        hist_c, best_c, eos_c = hist.cpu(), best.cpu(), eos_val.cpu()
        masked_c, fixed_c, states_c = masked.cpu(), fixed.cpu(), state.cpu()
        for b in range(B):
            if not ok[b]:
                continue
            t = int(states_c[b])
            for i in range(L - 1, -1, -1):
                prev = hist_c[i, b]
                if masked_c[b, i]:
                    if t == self.E:   # only end tokens enter E
                        src = torch.where(self._can_end_c, prev, NEG)
                        t = int((src + eos_c[b, i]).argmax())
                        continue
                    lo, hi = self._in_off[t], self._in_off[t + 1]
                    e_src, e_cls = self._in_src[lo:hi], self._in_cls[lo:hi]
                    k = int((prev[e_src] + best_c[b, i, e_cls]).argmax())
                    cls[b, i], t = e_cls[k], int(e_src[k])
                else:
                    nxt = self.next_states(fixed[b:b + 1, i])[0].cpu()
                    t = int(torch.where(nxt == t, prev, NEG).argmax())
        cls[~ok.cpu()] = -1
        return cls.to(dev)
