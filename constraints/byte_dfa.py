"""Character DFA -> UTF-8 byte DFA (stage 2 of constraints/regex.py).

Every character transition is expanded into UTF-8 byte sequences through intermediate states.
Character sets are handled as code-point RANGES split on UTF-8 lead/continuation bytes (never by
listing code points), and intermediate states are hash-consed on their 64 continuation-byte
successors, so `[^"]` costs a handful of states. Surrogates and overlong forms get no transition:
only valid UTF-8 is spelled.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from dllm.constraints.budget import Budget
from dllm.constraints.regex_parse import _SURROGATES, _show
from dllm.errors import ConstraintError

_MAX_CP = 0x10FFFF


@dataclass
class _ByteDFA:
    table: np.ndarray    # [n + 1, 256] int32; row n is the dead sink (every entry n)
    accept: np.ndarray   # [n + 1] bool
    start: int
    n: int               # live byte states (character states + intermediate UTF-8 states)


def _live_char_states(fsm) -> set:
    """Character-DFA states from which a final state is reachable."""
    rev: dict = {}
    for s, row in fsm.map.items():
        for t in row.values():
            rev.setdefault(t, []).append(s)
    live, todo = set(fsm.finals), list(fsm.finals)
    while todo:
        for p in rev.get(todo.pop(), ()):
            if p not in live:
                live.add(p)
                todo.append(p)
    return live


def _byte_dfa(fsm, segments: dict[int, int], pattern: str, budget: Budget | None = None) -> _ByteDFA:
    """The byte DFA of the character DFA `fsm` (constraints/char_dfa.py CharDFA, or any object with
    its fields); charges the intermediate UTF-8 states to `budget`."""
    budget = budget or Budget()
    live = _live_char_states(fsm)
    if fsm.initial not in live:
        raise ConstraintError(f"the regex {_show(pattern)} matches no string.")
    char_ids = {s: i for i, s in enumerate(sorted(live, key=lambda s: (s != fsm.initial, s)))}
    n_char = len(char_ids)
    iv = _Intervals(fsm, segments, pattern)
    nodes = _Utf8Nodes(n_char)
    table_rows = np.full((n_char, 256), -1, dtype=np.int32)
    spent = 0
    for s, cid in char_ids.items():
        budget.spend(len(nodes.kids) - spent, f"the UTF-8 expansion of {_show(pattern)}")
        spent = len(nodes.kids)
        key_target = np.full(iv.n_keys, -1, dtype=np.int64)
        for key, t in fsm.map.get(s, {}).items():
            if t in char_ids:
                key_target[key] = char_ids[t]
        targets = key_target[iv.key]                                # [n_intervals] target per interval
        table_rows[cid, :128] = targets[iv.ascii]
        if (targets[iv.starts >= 0x80] < 0).all():
            continue                                                # nothing beyond ASCII
        nodes.fill_lead_bytes(table_rows[cid], iv.starts, targets)

    budget.spend(len(nodes.kids) - spent, f"the UTF-8 expansion of {_show(pattern)}")
    n = n_char + len(nodes.kids)
    table = np.full((n + 1, 256), -1, dtype=np.int32)
    table[:n_char] = table_rows
    if nodes.kids:
        table[n_char:n, 0x80:0xC0] = np.array(nodes.kids, dtype=np.int64)
    table[table < 0] = n                                            # dead -> the sink row
    accept = np.zeros(n + 1, bool)
    for s in fsm.finals:
        if s in char_ids:
            accept[char_ids[s]] = True
    return _ByteDFA(table=table.astype(np.int32), accept=accept, start=char_ids[fsm.initial], n=n)


class _Intervals:
    """The code-point line split into intervals on which every state's transition is constant: each
    explicit alphabet character is its own interval (a segment representative stands for its whole
    segment, and characters inside a segment follow their representative), gaps take the
    anything_else key; the surrogates and the UTF-8 length boundaries are edges too.
      starts [n_intervals]  first code point of each interval
      key    [n_intervals]  its alphabet key (n_keys - 1: no transition, e.g. surrogates)
      ascii  [128]          the interval of each ASCII code point"""

    def __init__(self, fsm, segments: dict[int, int], pattern: str):
        from interegular.fsm import anything_else

        if any(len(sym) != 1 for sym in fsm.alphabet if sym is not anything_else):
            raise ConstraintError(f"the regex {_show(pattern)} produced a non-character symbol.")
        explicit = sorted((ord(sym), key) for sym, key in fsm.alphabet.items() if sym is not anything_else)
        cps = np.array([c for c, _ in explicit], dtype=np.int64)
        cp_key = np.array([k for _, k in explicit], dtype=np.int64)
        cps, cp_key, cp_end = self._segment_ends(segments, cps, cp_key)
        else_key = fsm.alphabet[anything_else] if anything_else in fsm.alphabet else None  # noqa: SIM401 (not a dict)
        edges = np.unique(np.concatenate([[0, 0x80, 0x800, 0x10000, *_SURROGATES, _MAX_CP + 1], cps, cp_end + 1]))
        starts = edges[:-1]
        pos = np.searchsorted(cps, starts, side="right") - 1
        is_explicit = (pos >= 0) & (starts <= cp_end[np.maximum(pos, 0)]) if len(cps) else np.zeros(len(starts), bool)
        is_surrogate = (starts >= _SURROGATES[0]) & (starts < _SURROGATES[1])
        self.n_keys = max([*cp_key.tolist(), -1, else_key if else_key is not None else -1]) + 2
        key = np.where(is_explicit, cp_key[np.maximum(pos, 0)] if len(cps) else 0,
                       else_key if else_key is not None else self.n_keys - 1)
        key[is_surrogate] = self.n_keys - 1
        self.starts, self.key = starts, key
        self.ascii = np.searchsorted(starts, np.arange(128), side="right") - 1

    @staticmethod
    def _segment_ends(segments, cps, cp_key):
        """Drop explicit characters inside a segment (they follow its representative); -> (cps, keys,
        last code point each stands for: its segment's end for a representative, itself otherwise)."""
        seg_lo = np.array(sorted(segments), dtype=np.int64)
        seg_hi = np.array([segments[a] for a in sorted(segments)], dtype=np.int64)
        if len(seg_lo) and len(cps):
            j = np.searchsorted(seg_lo, cps, side="right") - 1
            inside = (j >= 0) & (cps <= seg_hi[np.maximum(j, 0)]) & (cps != seg_lo[np.maximum(j, 0)])
            cps, cp_key = cps[~inside], cp_key[~inside]
        cp_end = cps.copy()
        if len(seg_lo) and len(cps):
            j = np.searchsorted(seg_lo, cps)
            rep = (j < len(seg_lo)) & (seg_lo[np.minimum(j, len(seg_lo) - 1)] == cps)
            cp_end[rep] = seg_hi[j[rep]]
        return cps, cp_key, cp_end


class _Utf8Nodes:
    """The intermediate states, hash-consed on their 64 successors (one per continuation byte
    0x80..0xBF); numbered from `first` (after the character states)."""

    def __init__(self, first: int):
        self.first = first
        self.kids: list[tuple] = []
        self.interned: dict[tuple, int] = {}
        self.chains: dict[tuple, int] = {}

    def intern(self, kids: tuple) -> int:
        idx = self.interned.get(kids)
        if idx is None:
            idx = self.interned[kids] = self.first + len(self.kids)
            self.kids.append(kids)
        return idx

    def chain(self, t: int, k: int) -> int:
        """The state that accepts any k continuation bytes, then is at t."""
        if k == 0 or t < 0:
            return t
        idx = self.chains.get((t, k))
        if idx is None:
            idx = self.chains[(t, k)] = self.intern((self.chain(t, k - 1),) * 64)
        return idx

    def fill_lead_bytes(self, row, starts, targets) -> None:
        """row [256]: the state after each valid UTF-8 lead byte, for a character state whose target on
        the interval beginning at starts[i] is targets[i] (-1: none)."""
        keep = np.ones(len(targets), bool)
        keep[1:] = targets[1:] != targets[:-1]
        piece_start, piece_target = starts[keep].tolist(), targets[keep].tolist()   # runs of one target

        def uniform(lo: int, hi: int):
            """The target of every code point in [lo, hi] if they share one, else None."""
            i = bisect_right(piece_start, lo) - 1
            end = piece_start[i + 1] - 1 if i + 1 < len(piece_start) else _MAX_CP
            return piece_target[i] if hi <= end else None

        def node(lo: int, hi: int, k: int, vmin: int, vmax: int) -> int:
            """State after a prefix whose completions are the code points [lo, hi], k bytes to go;
            only [vmin, vmax] is valid for this sequence length (no overlong forms, <= U+10FFFF)."""
            if hi < vmin or lo > vmax:
                return -1
            if lo >= vmin and hi <= vmax:
                t = uniform(lo, hi)
                if t is not None:
                    return self.chain(t, k)
            step = 64 ** (k - 1)
            kids = tuple(node(lo + i * step, lo + (i + 1) * step - 1, k - 1, vmin, vmax) for i in range(64))
            return -1 if max(kids) < 0 else self.intern(kids)

        for b in range(0xC2, 0xF5):                                 # C0, C1, F5..FF never lead valid UTF-8
            if b < 0xE0:
                lo, k, vmin, vmax = (b & 0x1F) << 6, 1, 0x80, 0x7FF
            elif b < 0xF0:
                lo, k, vmin, vmax = (b & 0x0F) << 12, 2, 0x800, 0xFFFF
            else:
                lo, k, vmin, vmax = (b & 0x07) << 18, 3, 0x10000, _MAX_CP
            row[b] = node(lo, lo + 64 ** k - 1, k, vmin, vmax)
