"""The vocabulary side of constraints/regex.py: every token's bytes, their fingerprint, and the trie
the token stage walks (built once per tokenizer and vocabulary size, memoised on the tokenizer)."""
from __future__ import annotations

import hashlib
import threading
import weakref
from dataclasses import dataclass

import numpy as np


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


def prepare_vocabulary(tokenizer, vocab_size: int) -> None:
    """Do the once-per-tokenizer work (token bytes, fingerprint, trie) ahead of the first compile."""
    _vocab(tokenizer, int(vocab_size)).trie()
