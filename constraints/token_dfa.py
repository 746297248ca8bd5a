"""Byte DFA x vocabulary -> token DFA (stage 3 of constraints/regex.py), and TokenDFA, the result.

Every token's bytes are run from every byte state at once, walking a trie of the vocabulary level
by level with numpy (a (state, trie node) pair per live prefix; shared prefixes are walked once).
States that a token sequence cannot reach from the start, or from which no token sequence reaches
acceptance, are dropped. Tokens whose transition column is the same in every state form one class
(`token_class`), so `trans` is [n_states, n_classes] even for 150k-token vocabularies. Class 0 is
the dead class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dllm.constraints.budget import Budget
from dllm.constraints.byte_dfa import _ByteDFA
from dllm.constraints.regex_parse import _show
from dllm.constraints.vocab_trie import _Trie
from dllm.errors import ConstraintError

if TYPE_CHECKING:  # torch is imported only when a DFA is built: check_regex stays torch-free
    import torch

_PAIR_BUDGET = 1 << 20      # (state, trie node) pairs per walk level and origin chunk (bounds memory)


@dataclass(eq=False)
class TokenDFA:
    """A token-level DFA. States are live: each can still reach an accepting state."""
    n_states: int
    start: int
    token_class: torch.Tensor   # [vocab_size] int64; class 0 = dead from every state (specials, unknown ids)
    trans: torch.Tensor         # [n_states, n_classes] int64 next state, -1 = dead
    accept: torch.Tensor        # [n_states] bool: the text read so far is in the language
    dist: torch.Tensor          # [n_states] int64: fewest tokens to an accepting state (0 if accepting)

    def __post_init__(self):
        # numpy views (shared memory) for step/walk: indexing a torch tensor costs microseconds per call
        self._cls = self.token_class.cpu().numpy()
        self._trans = self.trans.cpu().numpy()
        self._accept = self.accept.cpu().numpy()

    @property
    def n_classes(self) -> int:
        return self.trans.shape[1]

    def step(self, state: int, token: int) -> int:
        """The state after `token`, or -1 when the text can no longer be completed."""
        if not (0 <= state < self.n_states and 0 <= token < len(self._cls)):
            return -1
        return int(self._trans[state, self._cls[token]])

    def walk(self, tokens, state: int | None = None) -> int:
        """The state after `tokens` from `state` (default: start), -1 when dead."""
        s = self.start if state is None else int(state)
        for t in tokens:
            s = self.step(s, int(t))
            if s < 0:
                return -1
        return s

    def matches(self, tokens) -> bool:
        """True iff the tokens' text full-matches the pattern."""
        s = self.walk(tokens)
        return s >= 0 and bool(self._accept[s])

    def __repr__(self):
        return (f"TokenDFA(n_states={self.n_states}, start={self.start}, n_classes={self.n_classes}, "
                f"vocab_size={len(self._cls)})")


def _expand(first: np.ndarray, count: np.ndarray):
    """For groups [first[i], first[i] + count[i]): (group index per element, element) flattened."""
    total = int(count.sum())
    group = np.repeat(np.arange(len(count)), count)
    within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    return group, first[group] + within


def _walk_all(bd: _ByteDFA, trie: _Trie, budget: Budget | None = None, what: str = "the token stage"):
    """Run every token from every byte state. Returns the live results as a list of int32 triples
    (origin state [m], string u [m], end state [m]), one per chunk of origins; (state, u) pairs
    that appear nowhere are dead.

    Pairs (origin, current state, trie node) advance one trie level per iteration; a pair whose
    byte leads to the sink is dropped, so work is proportional to the live (state, prefix) pairs.
    Origins go in chunks so that one level holds at most ~_PAIR_BUDGET pairs (bounded memory).
    int32 throughout and states pre-multiplied by 256 (one add per lookup): this loop is the hot part."""
    n = bd.n
    shifted = (bd.table.astype(np.int32) << 8).ravel()        # [(n + 1) * 256]: next state * 256
    sink = np.int32(n << 8)
    first, n_children, byte, end = trie.first_child, trie.n_children, trie.byte, trie.end
    parts = []
    if end[0] >= 0:                                            # a token that decodes to b"": it stays put
        every = np.arange(n, dtype=np.int32)
        parts.append((every, np.full(n, end[0], np.int32), every))
    chunk = max(1, _PAIR_BUDGET // max(trie.widest, 1))
    for lo in range(0, n, chunk):
        out_o, out_u, out_q = [], [], []
        origin = np.arange(lo, min(n, lo + chunk), dtype=np.int32)
        cur = origin << 8                                      # current state * 256
        node = np.zeros(len(origin), np.int32)
        while origin.size:
            if budget is not None:
                budget.tick(what)
            count = n_children[node]
            total = int(count.sum())
            offset = np.repeat(first[node] - (np.cumsum(count, dtype=np.int32) - count), count)
            child = offset + np.arange(total, dtype=np.int32)  # every child of every pair's node
            origin, cur = np.repeat(origin, count), np.repeat(cur, count)
            nxt = shifted[cur + byte[child]]
            alive = nxt != sink
            origin, child, nxt = origin[alive], child[alive], nxt[alive]
            u = end[child]
            ended = u >= 0
            out_o.append(origin[ended])
            out_u.append(u[ended])
            out_q.append(nxt[ended] >> 8)
            more = n_children[child] > 0
            origin, cur, node = origin[more], nxt[more], child[more]
        parts.append((np.concatenate(out_o), np.concatenate(out_u), np.concatenate(out_q)))
    return parts


def _bfs(n: int, src: np.ndarray, dst: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """[n] int64 hop distance from the nearest source along edges src -> dst (-1: unreachable)."""
    order = np.argsort(src, kind="stable")
    dst_sorted = dst[order]
    indptr = np.searchsorted(src[order], np.arange(n + 1))
    dist = np.full(n, -1, np.int64)
    dist[sources] = 0
    frontier, d = np.unique(sources), 0
    while frontier.size:
        d += 1
        _, idx = _expand(indptr[frontier], indptr[frontier + 1] - indptr[frontier])
        nb = np.unique(dst_sorted[idx])
        nb = nb[dist[nb] < 0]
        dist[nb] = d
        frontier = nb
    return dist


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _slices(parts: list, size: int = 1 << 21, budget: Budget | None = None, what: str = ""):
    """The triples of `parts` in slices of at most `size`, so that int64 temporaries stay small."""
    for o, u, q in parts:
        for a in range(0, len(o), size):
            if budget is not None:
                budget.tick(what)
            yield o[a:a + size], u[a:a + size], q[a:a + size]


def _classes(parts: list, n: int, U: int, budget: Budget | None = None, what: str = ""):
    """Group the strings u by their transition column over the n byte states.

    parts: (o, u, q) triples from _walk_all (from state o, string u leads to q). Returns (class of
    each u [U], trans [n, n_classes] with -1 = dead); class 0 is the all-dead column. A column is
    hashed as sums of random 26-bit values (exact in float64, independent of order) folded into one
    64-bit key; the table built from the keys is then checked against every triple and every column
    count, so a hash collision can only cost time (the exact grouping below), never a wrong table.
    Works slice by slice, so that int64 temporaries stay small."""
    rng = np.random.default_rng(0x5EED)
    mult = rng.integers(1, 1 << 26, size=(2, 2, n + 1), dtype=np.int64)   # [round, (A, B), state]
    nnz = np.zeros(U, np.int64)
    sums = np.zeros((2, U))
    for o, u, q in _slices(parts, budget=budget, what=what):
        nnz += np.bincount(u, minlength=U)
        for k in range(2):        # r = A[o] * B[q] mod 2^26: a bilinear hash of the pair (o, q)
            r = ((mult[k, 0][o] * mult[k, 1][q]) & ((1 << 26) - 1)).astype(np.float64)
            sums[k] += np.bincount(u, weights=r, minlength=U)       # exact: n_states * 2^26 < 2^53
    with np.errstate(over="ignore"):
        key = _splitmix(_splitmix(nnz.astype(np.uint64) ^ sums[0].astype(np.uint64)) ^ sums[1].astype(np.uint64))
    key[nnz == 0] = 0                                                  # the dead column
    key = np.concatenate([[np.uint64(0)], key])                        # so that key 0 (class 0) always exists
    _, cls = np.unique(key, return_inverse=True)
    cls = cls.reshape(-1)[1:]
    trans = np.full((n, int(cls.max(initial=0)) + 1), -1, np.int64)
    for o, u, q in _slices(parts):
        trans[o, cls[u]] = q
    ok = all((trans[o, cls[u]] == q).all() for o, u, q in _slices(parts))
    if ok and ((trans >= 0).sum(axis=0)[cls] == nnz).all():
        return cls, trans
    # exact fallback: group by the sorted (state, next state) list of each string
    o, u, q = (np.concatenate(x) for x in zip(*parts))
    order = np.lexsort((o, u))
    o, u, q = o[order], u[order], q[order]
    bounds = np.searchsorted(u, np.arange(U + 1))
    cls = np.zeros(U, np.int64)
    seen: dict = {}
    for x in np.nonzero(nnz)[0]:
        a, b = bounds[x], bounds[x + 1]
        cls[x] = seen.setdefault(o[a:b].tobytes() + b"|" + q[a:b].tobytes(), len(seen) + 1)
    trans = np.full((n, len(seen) + 1), -1, np.int64)
    trans[o, cls[u]] = q
    return cls, trans


def _token_dfa(bd: _ByteDFA, trie: _Trie, pattern: str, budget: Budget | None = None) -> dict:
    """The token DFA's arrays (n_states, start, token_class, trans, accept, dist) of byte DFA bd."""
    parts = _walk_all(bd, trie, budget, f"running the vocabulary through {_show(pattern)}")
    cls, trans = _classes(parts, bd.n, trie.n_strings, budget, f"grouping the tokens of {_show(pattern)}")
    # The token-level graph on byte states, read off the small class table: keep the states that a
    # token sequence reaches from the start and that can still reach acceptance.
    src, c = np.nonzero(trans >= 0)
    dst = trans[src, c]
    fwd = _bfs(bd.n, src, dst, np.array([bd.start]))
    rev = _bfs(bd.n, dst, src, np.nonzero(bd.accept[:bd.n])[0])       # rev = fewest tokens to acceptance
    live = (fwd >= 0) & (rev >= 0)
    if not live[bd.start]:
        raise ConstraintError(f"no sequence of this vocabulary's tokens spells a string that the regex "
                              f"{_show(pattern)} matches.")
    old = np.nonzero(live)[0]
    old = np.concatenate([[bd.start], old[old != bd.start]])          # the start state is state 0
    new_id = np.full(bd.n + 1, -1, np.int64)                           # index -1 (dead) stays -1
    new_id[old] = np.arange(len(old))
    sub = new_id[trans[old]]                                           # [n_live, C]; moves into dropped states die
    # Pruning can make columns equal or all dead: group them again. The prepended all-dead column
    # sorts first (-1 is the smallest entry), so it becomes class 0.
    sub = np.concatenate([np.full((len(old), 1), -1, np.int64), sub], axis=1)
    cols, regroup = np.unique(sub, axis=1, return_inverse=True)
    regroup = regroup.reshape(-1)
    assert regroup[0] == 0 and (cols[:, 0] < 0).all()
    token_class = np.where(trie.token_u >= 0, regroup[1:][cls[np.maximum(trie.token_u, 0)]], 0)
    return {"n_states": np.int64(len(old)), "start": np.int64(0), "token_class": token_class,
            "trans": np.ascontiguousarray(cols), "accept": bd.accept[old], "dist": rev[old]}


def _to_dfa(arrays: dict) -> TokenDFA:
    import torch

    return TokenDFA(n_states=int(arrays["n_states"]), start=int(arrays["start"]),
                    token_class=torch.from_numpy(np.ascontiguousarray(arrays["token_class"], dtype=np.int64)),
                    trans=torch.from_numpy(np.ascontiguousarray(arrays["trans"], dtype=np.int64)),
                    accept=torch.from_numpy(np.ascontiguousarray(arrays["accept"], dtype=bool)),
                    dist=torch.from_numpy(np.ascontiguousarray(arrays["dist"], dtype=np.int64)))
