"""Regular expression -> token-level DFA over a model's real vocabulary.

Semantics: the decoded answer must FULL-match the pattern (`re.fullmatch` on str). A token sequence
is accepted iff the concatenation of its tokens' bytes (constraints/token_bytes.py) is the UTF-8
encoding of a string in the language; byte strings that are not valid UTF-8 are rejected.

Pipeline (compile_regex):
  1. pattern -> character DFA with interegular (`parse_pattern(p).to_fsm()`). Its alphabet maps
     explicit characters to transition keys; `anything_else` stands for every other character.
  2. character DFA -> byte DFA: every character transition is expanded into UTF-8 byte sequences
     through intermediate states. Character sets are handled as code-point RANGES split on UTF-8
     lead/continuation bytes (never by listing code points), and intermediate states are
     hash-consed on their 64 continuation-byte successors, so `[^"]` costs a handful of states.
     Surrogates and overlong forms get no transition: only valid UTF-8 is spelled.
  3. byte DFA -> token DFA: every token's bytes are run from every byte state at once, walking a
     trie of the vocabulary level by level with numpy (a (state, trie node) pair per live prefix;
     shared prefixes are walked once). States that a token sequence cannot reach from the start, or
     from which no token sequence reaches acceptance, are dropped.
  4. tokens whose transition column is the same in every state form one class (`token_class`), so
     `trans` is [n_states, n_classes] even for 150k-token vocabularies. Class 0 is the dead class.

Exact: the language over token ids, given token_bytes; `dist` (shortest token distance to
acceptance). Differences from Python's `re` come from interegular's reading of the pattern:
`\\d`, `\\w`, `\\s` and `(?i)` follow ASCII rules (as under re.ASCII; `(?i)` does lower/upper
only). A leading `^` and a trailing `$` are dropped (redundant under fullmatch); anchors elsewhere,
`\\b`, `\\A`, `\\Z`, backreferences, lookbehinds, the `m` flag and `\\p{..}` are refused with a
ConstraintError, as are patterns whose repetitions unroll to more than _MAX_SIZE characters. Lazy
quantifiers are the same language as greedy ones under fullmatch. `\\uXXXX`, `\\UXXXXXXXX` and
`\\N{name}` are read as the character they name.

Compiled DFAs are cached in memory (pattern, tokenizer fingerprint, vocab_size) and on disk as .npz
(no pickle) under `cache_dir`, `$DLLM_CACHE` or ~/.cache/dllm/constraints.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import unicodedata
import weakref
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dllm.errors import ConstraintError, TokenizerError

if TYPE_CHECKING:  # torch is imported only when a DFA is built: check_regex stays torch-free
    import torch

FORMAT_VERSION = 1          # bump when the cached .npz layout or the compile semantics change
_MAX_SIZE = 5_000           # patterns unrolling to more character positions are refused (DFA size)
_PAIR_BUDGET = 1 << 20      # (state, trie node) pairs per walk level and origin chunk (bounds memory)
_MEMORY_CACHE_SIZE = 32
_SURROGATES = (0xD800, 0xE000)
_MAX_CP = 0x10FFFF


# ---- the public result --------------------------------------------------------------------------

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


# ---- pattern checks -----------------------------------------------------------------------------

def _show(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 80 else pattern[:77] + "...")


_QUANTIFIER = re.compile(r"\{(\d*)(,\d*)?\}")
_SIMPLE_ESCAPES = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_BIG_RANGE = 256            # class ranges wider than this reach interegular as a few representatives


def _char_escape(ch: str) -> str:
    """One character written so that interegular reads it literally, in or out of a class."""
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else ch   # non-ASCII characters are never special


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str | None, str, int]:
    """The escape at pattern[i] (a backslash) as Python reads it: (the one character it denotes, or
    None for a class such as \\d or an assertion; the text to hand interegular; the next index)."""
    nxt, j = pattern[i + 1], i + 2
    fixed = {"u": r"[0-9a-fA-F]{4}", "U": r"[0-9a-fA-F]{8}", "x": r"[0-9a-fA-F]{2}", "N": r"\{([^}]*)\}",
             "0": r"[0-7]{0,2}"}
    ch = None
    if nxt in fixed:
        m = re.compile(fixed[nxt]).match(pattern, j)
        if m:
            j = m.end()
            ch = (unicodedata.lookup(m.group(1)) if nxt == "N"
                  else chr(int(m.group(0) or "0", 8 if nxt == "0" else 16)))
    elif nxt in "1234567":                       # octal: in a class \1..\377, outside only 3 digits
        m = re.compile(r"[0-7]{0,2}" if in_class else r"[0-7]{2}").match(pattern, j)
        if m:
            j = m.end()
            ch = chr(int(nxt + m.group(0), 8))
    elif nxt in _SIMPLE_ESCAPES or (nxt == "b" and in_class):
        ch = _SIMPLE_ESCAPES.get(nxt, "\b")
    elif not nxt.isalnum():
        ch = nxt                                 # escaped punctuation or space
    if ch is None:                               # \d \w \s ..., \A \Z \b, backreferences: as written
        return None, pattern[i:j], j
    return ch, _char_escape(ch), j


def _normalise(pattern: str) -> tuple[str, dict[int, int]]:
    r"""Rewrite a pattern (already accepted by re.compile) into one interegular reads the way Python
    does, and keep huge character classes small. Returns (pattern for interegular, segments).

      * a leading `^` and a trailing unescaped `$` are redundant under fullmatch: dropped;
      * \uXXXX, \UXXXXXXXX, \N{name}, octal and \xHH escapes -> the character (interegular lacks some);
      * `]` first in a class is a literal in Python -> escaped;
      * `{` that does not start a quantifier (`a{`, `a{}`, `x{ 2}`) is a literal in Python -> `\{`;
      * a class range wider than _BIG_RANGE code points: interegular would list every code point.
        The code-point line is cut at every character and range end the pattern mentions (and at
        every ASCII character), so that every set the pattern uses holds each piece whole; such a
        range is then written as the first code point of each piece it covers, and `segments` maps
        that representative to the piece's last code point for the byte stage to widen it again.
    """
    pattern = pattern.removeprefix("^")
    if pattern.endswith("$") and (len(pattern) - 1 - len(pattern[:-1].rstrip("\\"))) % 2 == 0:
        pattern = pattern[:-1]
    pieces: list = []            # text, or (lo, hi) for a wide class range written out later
    cuts = set(range(129)) | {*_SURROGATES, 0x110000}
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            ch, text, i = _escape(pattern, i, in_class=False)
            pieces.append(text)
            if ch is not None:
                cuts.update((ord(ch), ord(ch) + 1))
        elif c == "[":
            j = i + 1 + (pattern[i + 1:i + 2] == "^")
            pieces.append(pattern[i:j])
            items = []           # (character or None, text, is an unescaped "-")
            while j < n and (pattern[j] != "]" or not items):
                if pattern[j] == "\\" and j + 1 < n:
                    ch, text, j = _escape(pattern, j, in_class=True)
                    items.append((ch, text, False))
                else:
                    items.append((pattern[j], _char_escape(pattern[j]), pattern[j] == "-"))
                    j += 1
            k = 0
            while k < len(items):
                ch, text, _ = items[k]
                if k + 2 < len(items) and items[k + 1][2] and ch is not None and items[k + 2][0] is not None:
                    lo, hi = ord(ch), ord(items[k + 2][0])      # a range, as Python's parser forms it
                    cuts.update((lo, hi + 1))
                    pieces.append((lo, hi) if hi - lo >= _BIG_RANGE else f"{text}-{items[k + 2][1]}")
                    k += 3
                    continue
                if ch is not None:
                    cuts.update((ord(ch), ord(ch) + 1))
                pieces.append(text)
                k += 1
            pieces.append("]")
            i = j + 1
        elif c == "{":
            m = _QUANTIFIER.match(pattern, i)
            quantifier = m is not None and m.group(0) != "{}"
            pieces.append(m.group(0) if quantifier else "\\{")
            i = m.end() if quantifier else i + 1
        else:
            pieces.append(c)
            cuts.update((ord(c), ord(c) + 1))
            i += 1
    cuts = sorted(cuts)
    segments: dict[int, int] = {}
    out = []
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
            continue
        lo, hi = p
        first = bisect_right(cuts, lo) - 1                      # cuts holds lo and hi + 1
        last = bisect_right(cuts, hi) - 1
        for a, b in zip(cuts[first:last + 1], cuts[first + 1:last + 2]):
            segments[a] = b - 1
            out.append(_char_escape(chr(a)))
    return "".join(out), segments


def _size(node) -> int:
    """A rough count of the character positions the pattern unrolls to ({m,n} multiplies): the
    DFA's size grows with it, so absurd patterns are refused before interegular builds them."""
    inner = sum(_size(c) for attr in ("options", "parts") for c in (getattr(node, attr, ()) or ()))
    for attr in ("base", "inner"):
        child = getattr(node, attr, None)
        if child is not None:
            inner += _size(child)
    if not hasattr(node, "min"):
        return max(inner, 1)
    return max(inner, 1) * max(node.min, node.max if node.max is not None else 1, 1)


def _parse(pattern: str):
    """Python's verdict on the syntax, then interegular's parse tree (raises ConstraintError)."""
    import interegular

    if not isinstance(pattern, str):
        raise ConstraintError(f"a regex must be a string, got {type(pattern).__name__}.")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConstraintError(f"the regex {_show(pattern)} is invalid: {exc}.") from None
    except (OverflowError, RecursionError):
        raise ConstraintError(f"the regex {_show(pattern)} is too large to compile.") from None
    try:
        text, segments = _normalise(pattern)
        parsed = interegular.parse_pattern(text)
        pre_post = parsed.prefix_postfix
    except Exception as exc:  # noqa: BLE001 (interegular's InvalidSyntax / Unsupported / parser errors)
        detail = str(exc) or type(exc).__name__
        raise ConstraintError(f"the regex {_show(pattern)} uses a feature that constraints do not "
                              f"support ({detail}).") from None
    if pre_post != (0, 0):
        raise ConstraintError(f"the regex {_show(pattern)} has a lookahead or lookbehind reaching past "
                              "its ends, which constraints do not support.")
    if _size(parsed) > _MAX_SIZE:
        raise ConstraintError(f"the regex {_show(pattern)} is too large for a constraint (its repetitions "
                              f"unroll to more than {_MAX_SIZE} characters).")
    return parsed, segments


def check_regex(pattern: str) -> None:
    """Syntax check only (fast, torch-free): raises ConstraintError for a pattern compile_regex refuses
    at parse time. An empty language is only found by compile_regex."""
    _parse(pattern)


def _char_fsm(pattern: str):
    """(interegular FSM, segments of _normalise)."""
    parsed, segments = _parse(pattern)
    try:
        return parsed.to_fsm(), segments
    except Exception as exc:  # noqa: BLE001 (Unsupported flags or lookbehinds, raised while building)
        detail = str(exc) or type(exc).__name__
        raise ConstraintError(f"the regex {_show(pattern)} uses a feature that constraints do not "
                              f"support ({detail}).") from None


# ---- character DFA -> byte DFA ------------------------------------------------------------------

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


def _byte_dfa(fsm, segments: dict[int, int], pattern: str) -> _ByteDFA:
    from interegular.fsm import anything_else

    live = _live_char_states(fsm)
    if fsm.initial not in live:
        raise ConstraintError(f"the regex {_show(pattern)} matches no string.")
    char_ids = {s: i for i, s in enumerate(sorted(live, key=lambda s: (s != fsm.initial, s)))}
    n_char = len(char_ids)

    # The code-point line split into intervals on which every state's transition is constant:
    # each explicit alphabet character is its own interval (a segment representative stands for
    # its whole segment, and characters inside a segment follow their representative), gaps take
    # the anything_else key; the surrogates and the UTF-8 length boundaries are edges too.
    if any(len(sym) != 1 for sym in fsm.alphabet if sym is not anything_else):
        raise ConstraintError(f"the regex {_show(pattern)} produced a non-character symbol.")
    explicit = sorted((ord(sym), key) for sym, key in fsm.alphabet.items() if sym is not anything_else)
    seg_lo = np.array(sorted(segments), dtype=np.int64)
    seg_hi = np.array([segments[a] for a in sorted(segments)], dtype=np.int64)
    cps = np.array([c for c, _ in explicit], dtype=np.int64)
    cp_key = np.array([k for _, k in explicit], dtype=np.int64)
    if len(seg_lo) and len(cps):
        j = np.searchsorted(seg_lo, cps, side="right") - 1
        inside = (j >= 0) & (cps <= seg_hi[np.maximum(j, 0)]) & (cps != seg_lo[np.maximum(j, 0)])
        cps, cp_key = cps[~inside], cp_key[~inside]
    cp_end = cps.copy()                                            # [n_explicit] last code point of each
    if len(seg_lo) and len(cps):
        j = np.searchsorted(seg_lo, cps)
        rep = (j < len(seg_lo)) & (seg_lo[np.minimum(j, len(seg_lo) - 1)] == cps)
        cp_end[rep] = seg_hi[j[rep]]
    else_key = fsm.alphabet[anything_else] if anything_else in fsm.alphabet else None  # noqa: SIM401 (not a dict)
    edges = np.unique(np.concatenate([[0, 0x80, 0x800, 0x10000, *_SURROGATES, _MAX_CP + 1], cps, cp_end + 1]))
    starts = edges[:-1]                                            # [n_intervals]
    pos = np.searchsorted(cps, starts, side="right") - 1
    is_explicit = (pos >= 0) & (starts <= cp_end[np.maximum(pos, 0)]) if len(cps) else np.zeros(len(starts), bool)
    is_surrogate = (starts >= _SURROGATES[0]) & (starts < _SURROGATES[1])
    n_keys = max([*cp_key.tolist(), -1, else_key if else_key is not None else -1]) + 2
    interval_key = np.where(is_explicit, cp_key[np.maximum(pos, 0)] if len(cps) else 0,
                            else_key if else_key is not None else n_keys - 1)
    interval_key[is_surrogate] = n_keys - 1                         # key n_keys-1: "no transition"
    ascii_interval = np.searchsorted(starts, np.arange(128), side="right") - 1

    nodes: list[tuple] = []            # intermediate states: their 64 successors (continuation bytes)
    interned: dict[tuple, int] = {}
    chains: dict[tuple, int] = {}

    def intern(kids: tuple) -> int:
        idx = interned.get(kids)
        if idx is None:
            idx = interned[kids] = n_char + len(nodes)
            nodes.append(kids)
        return idx

    def chain(t: int, k: int) -> int:
        """The state that accepts any k continuation bytes, then is at t (hash-consed)."""
        if k == 0 or t < 0:
            return t
        idx = chains.get((t, k))
        if idx is None:
            idx = chains[(t, k)] = intern((chain(t, k - 1),) * 64)
        return idx

    table_rows = np.full((n_char, 256), -1, dtype=np.int64)
    for s, cid in char_ids.items():
        row = fsm.map.get(s, {})
        key_target = np.full(n_keys, -1, dtype=np.int64)
        for key, t in row.items():
            if t in char_ids:
                key_target[key] = char_ids[t]
        targets = key_target[interval_key]                          # [n_intervals]
        table_rows[cid, :128] = targets[ascii_interval]
        if (targets[starts >= 0x80] < 0).all():
            continue                                                # nothing beyond ASCII
        keep = np.ones(len(targets), bool)
        keep[1:] = targets[1:] != targets[:-1]
        piece_start = starts[keep].tolist()                         # merged pieces of constant target
        piece_target = targets[keep].tolist()

        def uniform(lo: int, hi: int, piece_start=piece_start, piece_target=piece_target):
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
                    return chain(t, k)
            step = 64 ** (k - 1)
            kids = tuple(node(lo + i * step, lo + (i + 1) * step - 1, k - 1, vmin, vmax) for i in range(64))
            return -1 if max(kids) < 0 else intern(kids)

        for b in range(0xC2, 0xF5):                                 # C0, C1, F5..FF never lead valid UTF-8
            if b < 0xE0:
                lo, k, vmin, vmax = (b & 0x1F) << 6, 1, 0x80, 0x7FF
            elif b < 0xF0:
                lo, k, vmin, vmax = (b & 0x0F) << 12, 2, 0x800, 0xFFFF
            else:
                lo, k, vmin, vmax = (b & 0x07) << 18, 3, 0x10000, _MAX_CP
            table_rows[cid, b] = node(lo, lo + 64 ** k - 1, k, vmin, vmax)

    n = n_char + len(nodes)
    table = np.full((n + 1, 256), -1, dtype=np.int64)
    table[:n_char] = table_rows
    if nodes:
        table[n_char:n, 0x80:0xC0] = np.array(nodes, dtype=np.int64)
    table[table < 0] = n                                            # dead -> the sink row
    accept = np.zeros(n + 1, bool)
    for s in fsm.finals:
        if s in char_ids:
            accept[char_ids[s]] = True
    return _ByteDFA(table=table.astype(np.int32), accept=accept, start=char_ids[fsm.initial], n=n)


# ---- the vocabulary: token bytes, fingerprint, trie ---------------------------------------------

@dataclass
class _Trie:
    """The vocabulary's distinct byte strings and the trie they form (built on the first compile)."""
    token_u: np.ndarray      # [vocab_size] int64: index of the token's byte string in the sorted unique list, -1 if None
    n_strings: int           # U distinct byte strings (b"" included when some token decodes to nothing)
    # trie over the U strings; node 0 is the root (the empty prefix), nodes are numbered depth by depth
    first_child: np.ndarray  # [n_nodes] int32: the children of a node are contiguous
    n_children: np.ndarray   # [n_nodes] int32
    byte: np.ndarray         # [n_nodes] int32: the byte on the edge into the node (root: 0)
    end: np.ndarray          # [n_nodes] int32: the string u that ends at this node, -1 if none
    widest: int              # the most nodes at one depth (bounds the walk's arrays)


class _Vocab:
    """token_bytes of (tokenizer, vocab_size) and their fingerprint; the trie is built on first use,
    so that a process that only loads DFAs from the disk cache never builds it."""

    def __init__(self, tb: list, vocab_size: int):
        self.tb = tb
        self.vocab_size = vocab_size
        self.fingerprint = _fingerprint(tb, vocab_size)
        self._trie: _Trie | None = None

    def trie(self) -> _Trie:
        if self._trie is None:
            self._trie = _build_trie(self.tb)
        return self._trie


def _fingerprint(tb: list, vocab_size: int) -> str:
    lengths = np.array([-1 if b is None else len(b) for b in tb], dtype=np.int64)
    h = hashlib.sha256(f"dllm-token-bytes|{vocab_size}|".encode())
    h.update(lengths.tobytes())
    h.update(b"".join(b for b in tb if b is not None))
    return h.hexdigest()


def _build_trie(tb: list) -> _Trie:
    strings = sorted({b for b in tb if b is not None})
    index = {s: u for u, s in enumerate(strings)}
    token_u = np.array([-1 if b is None else index[b] for b in tb], dtype=np.int64)
    U = len(strings)
    lens = np.array([len(s) for s in strings], dtype=np.int64)
    buf = np.frombuffer(b"".join(strings), dtype=np.uint8)
    offset = np.concatenate([[0], np.cumsum(lens)[:-1]]) if U else np.zeros(0, np.int64)

    # Level by level: the strings of length >= d (in sorted order) sharing a d-byte prefix are
    # contiguous, so a new node starts wherever (parent node, d-th byte) changes.
    parents, bytes_, ends = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)], [np.full(1, -1, np.int64)]
    if U and lens[0] == 0:
        ends[0][0] = 0                                              # b"" ends at the root
    nid = np.zeros(U, np.int64)                                     # current node of every string
    active = np.nonzero(lens > 0)[0]
    next_id, d = 1, 1
    while active.size:
        b = buf[offset[active] + d - 1].astype(np.int64)
        parent = nid[active]
        new = np.ones(active.size, bool)
        new[1:] = (parent[1:] != parent[:-1]) | (b[1:] != b[:-1])
        ids = next_id + np.cumsum(new) - 1
        count = int(new.sum())
        end = np.full(count, -1, np.int64)
        done = lens[active] == d
        end[ids[done] - next_id] = active[done]
        parents.append(parent[new])
        bytes_.append(b[new])
        ends.append(end)
        nid[active] = ids
        next_id += count
        active = active[~done]
        d += 1
    parent = np.concatenate(parents)
    n_nodes = next_id
    n_children = np.bincount(parent[1:], minlength=n_nodes).astype(np.int64)
    # children were created in parent order, so node parent[1:] is sorted and each block is contiguous
    first_child = np.searchsorted(parent[1:], np.arange(n_nodes), side="left") + 1
    i32 = (lambda x: np.ascontiguousarray(x, dtype=np.int32))
    return _Trie(token_u=token_u, n_strings=U, first_child=i32(first_child), n_children=i32(n_children),
                 byte=i32(np.concatenate(bytes_)), end=i32(np.concatenate(ends)),
                 widest=max(len(e) for e in ends))


_VOCABS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _vocab(tokenizer, vocab_size: int) -> _Vocab:
    """The prepared vocabulary of (tokenizer, vocab_size), memoised on the tokenizer object."""
    from dllm.constraints.token_bytes import token_bytes

    with _LOCK:
        try:
            per_tok = _VOCABS.get(tokenizer)
        except TypeError:            # not weak-referenceable: no memo
            per_tok = None
        if per_tok is not None and vocab_size in per_tok:
            return per_tok[vocab_size]
    vocab = _Vocab(token_bytes(tokenizer, vocab_size), vocab_size)
    with _LOCK:
        try:
            _VOCABS.setdefault(tokenizer, {})[vocab_size] = vocab
        except TypeError:
            pass
    return vocab


# ---- byte DFA x vocabulary -> token DFA ---------------------------------------------------------

def _expand(first: np.ndarray, count: np.ndarray):
    """For groups [first[i], first[i] + count[i]): (group index per element, element) flattened."""
    total = int(count.sum())
    group = np.repeat(np.arange(len(count)), count)
    within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    return group, first[group] + within


def _walk_all(bd: _ByteDFA, trie: _Trie):
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


def _slices(parts: list, size: int = 1 << 21):
    """The triples of `parts` in slices of at most `size`, so that int64 temporaries stay small."""
    for o, u, q in parts:
        for a in range(0, len(o), size):
            yield o[a:a + size], u[a:a + size], q[a:a + size]


def _classes(parts: list, n: int, U: int):
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
    for o, u, q in _slices(parts):
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


def _token_dfa(bd: _ByteDFA, trie: _Trie, pattern: str) -> dict:
    cls, trans = _classes(_walk_all(bd, trie), bd.n, trie.n_strings)  # trans [n_byte_states, C]
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


# ---- caches and the entry point -----------------------------------------------------------------

_DFAS: OrderedDict[tuple, TokenDFA] = OrderedDict()


def default_cache_dir() -> Path:
    env = os.environ.get("DLLM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dllm" / "constraints"


def clear_memory_cache(vocabularies: bool = True) -> None:
    """Forget the in-memory DFAs (and the prepared vocabularies): benchmarks time cold compiles."""
    with _LOCK:
        _DFAS.clear()
        if vocabularies:
            _VOCABS.clear()


def prepare_vocabulary(tokenizer, vocab_size: int) -> None:
    """Do the once-per-tokenizer work (token bytes, fingerprint, trie) ahead of the first compile."""
    _vocab(tokenizer, int(vocab_size)).trie()


def _disk_path(cache_dir, pattern: str, vocab: _Vocab) -> Path | None:
    if cache_dir is False:
        return None
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    key = hashlib.sha256(f"v{FORMAT_VERSION}|{vocab.fingerprint}|{vocab.vocab_size}|".encode()
                         + pattern.encode("utf-8", "surrogatepass")).hexdigest()
    return root / f"regex-{key[:40]}.npz"


_FIELDS = ("n_states", "start", "token_class", "trans", "accept", "dist")


def _load(path: Path | None, vocab_size: int) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in _FIELDS}
    except Exception:  # noqa: BLE001 (a corrupt or foreign file: compile again and overwrite it)
        return None
    ok = (arrays["token_class"].shape == (vocab_size,) and arrays["trans"].ndim == 2
          and arrays["trans"].shape[0] == int(arrays["n_states"]) == len(arrays["accept"]) == len(arrays["dist"]))
    return arrays if ok else None


def _save(path: Path | None, arrays: dict) -> None:
    if path is None:
        return
    small = dict(arrays)
    small["token_class"] = arrays["token_class"].astype(np.int32)
    small["trans"] = arrays["trans"].astype(np.int32)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **small)
        os.replace(tmp, path)                     # atomic: readers see the old file or the new one
    except OSError:                               # a read-only or full disk only costs the cache
        tmp.unlink(missing_ok=True)


def _to_dfa(arrays: dict) -> TokenDFA:
    import torch

    return TokenDFA(n_states=int(arrays["n_states"]), start=int(arrays["start"]),
                    token_class=torch.from_numpy(np.ascontiguousarray(arrays["token_class"], dtype=np.int64)),
                    trans=torch.from_numpy(np.ascontiguousarray(arrays["trans"], dtype=np.int64)),
                    accept=torch.from_numpy(np.ascontiguousarray(arrays["accept"], dtype=bool)),
                    dist=torch.from_numpy(np.ascontiguousarray(arrays["dist"], dtype=np.int64)))


def compile_regex(pattern: str, tokenizer, vocab_size: int, *, cache_dir=None) -> TokenDFA:
    """The token DFA of `pattern` (full match) over ids 0..vocab_size-1 of `tokenizer`.

    tokenizer: a dllm Tokenizer (or a raw `tokenizers.Tokenizer`). cache_dir: where compiled DFAs
    are kept on disk (None: $DLLM_CACHE or ~/.cache/dllm/constraints; False: no disk cache).
    Raises ConstraintError for an invalid or unsupported pattern, an empty language, or one that no
    token sequence of this vocabulary spells. The same (pattern, vocabulary) returns the same object.
    """
    if not isinstance(pattern, str):
        raise ConstraintError(f"a regex must be a string, got {type(pattern).__name__}.")
    if tokenizer is None:
        raise TokenizerError("a regex constraint needs the model's tokenizer, and this model has none.")
    # Only patterns that compiled are cached (memory or disk), so a hit needs no parse.
    vocab = _vocab(tokenizer, int(vocab_size))
    key = (pattern, vocab.fingerprint, vocab.vocab_size)
    with _LOCK:
        hit = _DFAS.get(key)
        if hit is not None:
            _DFAS.move_to_end(key)
            return hit
    path = _disk_path(cache_dir, pattern, vocab)
    arrays = _load(path, vocab.vocab_size)
    if arrays is None:
        arrays = _token_dfa(_byte_dfa(*_char_fsm(pattern), pattern), vocab.trie(), pattern)
        _save(path, arrays)
    dfa = _to_dfa(arrays)
    with _LOCK:
        dfa = _DFAS.setdefault(key, dfa)
        _DFAS.move_to_end(key)
        while len(_DFAS) > _MEMORY_CACHE_SIZE:
            _DFAS.popitem(last=False)
    return dfa
