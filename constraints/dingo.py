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
        flat = torch.arange(S * self.C, device=device)
        self.edge_code = (flat // self.C) * (self.C + 1) + flat % self.C     # backpointer code s * (C + 1) + c
        self.states = torch.arange(S + 1, device=device)
        self.dfa = dfa

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
        score = torch.full((B, S1), NEG, device=dev)
        ok_start = start >= 0
        score[ok_start, start[ok_start]] = 0.0
        back = torch.empty((B, L, S1), dtype=torch.long, device=dev)        # masked: s * (C + 1) + c (c = C: end token)
        rows = torch.arange(B, device=dev)
        has_fixed = (~masked).any(0).tolist()                               # one host sync per call
        tgt = self.edge_tgt.expand(B, -1)
        for i in range(L):
            m_score = m_back = None
            if not has_fixed[i] or bool(masked[:, i].any()):
                # masked slot: every class edge s -c-> t from live states, plus end tokens into E
                cand = (score[:, :self.S, None] + best[:, i, None, :]).reshape(B, -1)   # [B, S * C]
                m_score = torch.full((B, S1 + 2), NEG, device=dev).scatter_reduce_(1, tgt, cand, reduce="amax")
                end_best, end_src = (torch.where(self.can_end, score, NEG) + eos_val[:, i, None]).max(1)
                is_best = (cand == m_score.gather(1, tgt)) & (cand > NEG)
                m_back = torch.full((B, S1 + 2), -1, dtype=torch.long, device=dev).scatter_reduce_(
                    1, tgt, torch.where(is_best, self.edge_code, -1), reduce="amax")
                use_end = (end_best >= m_score[:, self.E]) & (end_best > NEG)
                m_score[:, self.E] = torch.maximum(m_score[:, self.E], end_best)
                m_back[:, self.E] = torch.where(use_end, end_src * (C + 1) + C, m_back[:, self.E])
                m_score, m_back = m_score[:, :S1], m_back[:, :S1]
            if has_fixed[i]:
                # committed slot: every state follows the slot's token
                nxt = self.step_token(self.states.repeat(B), fixed[:, i].repeat_interleave(S1)).view(B, S1)
                nxt = torch.where(nxt < 0, S1, nxt)
                f_score = torch.full((B, S1 + 1), NEG, device=dev).scatter_reduce_(1, nxt, score, reduce="amax")
                f_is = (score == f_score.gather(1, nxt)) & (score > NEG)
                f_back = torch.full((B, S1 + 1), -1, dtype=torch.long, device=dev).scatter_reduce_(
                    1, nxt, torch.where(f_is, self.states * (C + 1), -1), reduce="amax")
                f_score, f_back = f_score[:, :S1], f_back[:, :S1]
                if m_score is None:
                    score, back[:, i] = f_score, f_back
                    continue
                m = masked[:, i, None]
                score, back[:, i] = torch.where(m, m_score, f_score), torch.where(m, m_back, f_back)
            else:
                score, back[:, i] = m_score, m_back
        final = torch.where(feasible, score, NEG)
        best_end, state = final.max(1)
        ok = best_end > NEG
        state = torch.where(ok, state, 0)
        cls = torch.empty((B, L), dtype=torch.long, device=dev)
        for i in range(L - 1, -1, -1):                                       # backtrack: class per slot
            code = back[rows, i, state].clamp(min=0)
            state, cls[:, i] = code // (C + 1), code % (C + 1)
        is_end = cls == C
        t = torch.where(is_end, eos_tok, best_in_class(logp, self.token_class, cls.clamp(max=C - 1)))
        return torch.where(masked & ok[:, None], t, fixed), ok
