"""DINGO's dynamic program against brute force on a tiny hand-made token DFA."""
import itertools
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dllm.constraints.dingo import Lattice

# Language over characters: an even number of 'a's, any 'b's; words over tokens below.
# character DFA: state = parity of 'a' count; accepting: parity 0.
VOCAB = ["a", "b", "ab", "ba", "aa", "bb", "c", "aab"]      # "c": never valid
EOS, MASK = 8, 9
V = 10


@dataclass
class TinyDFA:
    n_states: int
    start: int
    token_class: torch.Tensor
    trans: torch.Tensor
    accept: torch.Tensor
    dist: torch.Tensor


def char_walk(state, text):
    for ch in text:
        if ch == "a":
            state ^= 1
        elif ch != "b":
            return -1
    return state


def tiny_dfa():
    cols = []
    for tok in range(V):
        if tok >= len(VOCAB):
            cols.append((-1, -1))
        else:
            cols.append(tuple(char_walk(s, VOCAB[tok]) for s in (0, 1)))
    classes = sorted(set(cols), key=lambda c: (c != (-1, -1), c))   # the all-dead column is class 0
    token_class = torch.tensor([classes.index(c) for c in cols])
    trans = torch.tensor(classes).T.contiguous()                     # [S, C]
    return TinyDFA(2, 0, token_class, trans, torch.tensor([True, False]), torch.tensor([0, 1]))


def valid_total(tokens, R):
    """tokens of the block (after a prefix in state 0): still completable with R free slots after."""
    state, ended = 0, False
    for t in tokens:
        if ended:
            if t != EOS:
                return False
            continue
        if t == EOS:
            if state != 0:
                return False
            ended = True
            continue
        if t >= len(VOCAB):
            return False
        state = char_walk(state, VOCAB[t])
        if state < 0:
            return False
    return ended or state == 0 or R >= 1


@settings(max_examples=80, deadline=None)
@given(L=st.integers(1, 3), seed=st.integers(0, 10_000), R=st.integers(0, 2), data=st.data())
def test_witness_is_the_best_valid_assignment(L, seed, R, data):
    g = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(torch.randn(1, L, V, generator=g) * 3, -1)
    masked = torch.tensor([data.draw(st.lists(st.booleans(), min_size=L, max_size=L))])
    fixed = torch.full((1, L), MASK)
    for i in range(L):   # committed slots hold tokens that keep the block completable on their own
        if not masked[0, i]:
            fixed[0, i] = data.draw(st.sampled_from([1, 4, 5]))   # "b", "aa", "bb": parity unchanged
    lat = Lattice(tiny_dfa(), {EOS}, "cpu")
    feasible = lat.feasible_free(R)[None]
    tokens, ok = lat.witness(logp, fixed, masked, torch.tensor([0]), feasible)
    best = None
    free = [i for i in range(L) if masked[0, i]]
    for choice in itertools.product(range(V), repeat=len(free)):
        t = fixed[0].tolist()
        for i, c in zip(free, choice):
            t[i] = c
        if MASK in t or not valid_total(t, R):
            continue
        val = sum(float(logp[0, i, t[i]]) for i in free)
        best = val if best is None else max(best, val)
    assert bool(ok[0]) == (best is not None)
    if best is not None:
        got = tokens[0].tolist()
        assert valid_total(got, R)
        assert [got[i] for i in range(L) if not masked[0, i]] == [fixed[0, i].item() for i in range(L) if not masked[0, i]]
        assert sum(float(logp[0, i, got[i]]) for i in free) == pytest.approx(best, abs=1e-5)


def test_end_token_only_from_accepting_states_and_then_forever():
    lat = Lattice(tiny_dfa(), {EOS}, "cpu")
    logp = torch.full((1, 3, V), -10.0)
    logp[0, :, EOS] = 0.0          # the model wants to stop right away...
    logp[0, 0, 0] = -1.0           # ...after an "a" it would also like
    tokens, ok = lat.witness(logp, torch.full((1, 3), MASK), torch.ones(1, 3, dtype=torch.bool),
                             torch.tensor([0]), lat.feasible_free(0)[None])
    assert ok.item() and tokens[0].tolist() == [EOS, EOS, EOS]
    # from the odd state an end token is not allowed until another 'a'
    tokens, ok = lat.witness(logp, torch.full((1, 3), MASK), torch.ones(1, 3, dtype=torch.bool),
                             torch.tensor([1]), lat.feasible_free(0)[None])
    assert ok.item() and tokens[0, 0].item() in (0, 3, 7) and tokens[0, 1:].tolist() == [EOS, EOS]


def test_no_witness_when_the_budget_is_too_small():
    lat = Lattice(tiny_dfa(), {EOS}, "cpu")
    logp = torch.log_softmax(torch.randn(1, 2, V), -1)
    # odd state, block full of committed "b"s, nothing after it: cannot reach even parity
    tokens, ok = lat.witness(logp, torch.tensor([[1, 1]]), torch.zeros(1, 2, dtype=torch.bool), torch.tensor([1]),
                             lat.feasible_free(0)[None])
    assert not ok.item()
