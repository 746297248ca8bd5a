"""The grammar route: a schema's grammar (ir.py) built straight into constraints/cfg.py's Grammar, the
CFG that the Earley check of grammar_mode="cfg" runs (no Lark text in between: a schema's grammar has
thousands of rules and terminals, and Lark's loader and interegular would take seconds on them).

Terminals: literal fragments (keys with their ": ", punctuation, enum values; adjacent ones joined into
one) get a byte chain directly, and an alternation of literals only (an enum of more than 32 values)
one byte trie; the other fragments (strings, numbers, patterns) go through the same regex -> byte DFA
path as any cfg terminal. Shared or recursive parts, alternations and repetitions
become nonterminals; an unbounded repetition is left-recursive (R -> | R x).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from dllm.constraints.cfg import ANY, INF, _Term
from dllm.constraints.json_schema.ir import _shared, productive
from dllm.constraints.json_schema.text import _SPECIAL
from dllm.errors import ConstraintError

CHAIN = 4       # a bounded repetition of up to this many optional copies is a chain; longer ones use up_to


def _unlit(rx: str) -> str | None:
    """The text a regex fragment matches when it is a plain literal (as text.py's _lit writes them)."""
    out, i = [], 0
    while i < len(rx):
        c = rx[i]
        if c == "\\":
            nxt = rx[i + 1:i + 2]
            if nxt == "x" and len(rx) >= i + 4:
                out.append(chr(int(rx[i + 2:i + 4], 16)))
                i += 4
                continue
            if nxt and nxt in _SPECIAL:
                out.append(nxt)
                i += 2
                continue
            return None
        if c in _SPECIAL:
            return None
        out.append(c)
        i += 1
    return "".join(out)


class _LiteralTerm:
    """A literal terminal (a key with its ": ", punctuation, an enum value): the byte chain 0 -> 1 ->
    ... -> len, with constraints/cfg.py _Term's interface (step, close, accepts, remaining, start,
    dist) but no [len + 1, 256] table: a schema has thousands of literals (azure-pipelines 3,615),
    and building their tables and rows took a second."""

    def __init__(self, name: str, text: str):
        b = text.encode("utf-8")
        self.name, self.data, self.n = name, b, len(b)
        self.start, self.accept = frozenset([0]), frozenset([len(b)])
        self.dist = list(range(len(b), -1, -1))          # fewest bytes from state s to the end: n - s
        self._step = {}

    def step(self, S: frozenset, b: int) -> frozenset:
        key = (S, b)
        out = self._step.get(key)
        if out is None:
            data, n = self.data, self.n
            out = self._step[key] = frozenset(s + 1 for s in S if s < n and (b == ANY or data[s] == b))
        return out

    def close(self, S: frozenset) -> frozenset:
        return frozenset(range(min(S), self.n + 1)) if S else S     # any bytes: every later state

    def accepts(self, S: frozenset) -> bool:
        return self.n in S

    def remaining(self, S: frozenset) -> int:
        return self.n - max(S) if S else INF


def _literal_term(name: str, text: str):
    return _LiteralTerm(name, text)


class _LiteralSetTerm(_Term):
    """Several literals as one terminal (a long enum's values): constraints/cfg.py's _Term over their byte
    trie instead of a [states, 256] table (a 50,000-value enum's trie has ~55,000 nodes). One terminal
    per value made the Earley scan try every value at every position: a 5,000-value enum took 17 s of
    constraint work for a 16-token answer on dllm-tiny, 50,000 values nearly 3 minutes; the trie steps
    only the nodes alive, whatever the number of values. States are trie nodes (0 the root; a child's
    id exceeds its parent's); accept: the nodes that end a value. _Term's closures, acceptance,
    distances and ANY steps read `any`, `accept` and `dist`; only a byte's step reads the trie."""

    def __init__(self, name: str, texts):
        kids: list[dict] = [{}]                           # node -> {byte: child}
        accept = set()
        for text in texts:
            s = 0
            for b in text.encode("utf-8"):
                nxt = kids[s].get(b)
                if nxt is None:
                    nxt = kids[s][b] = len(kids)
                    kids.append({})
                s = nxt
            accept.add(s)
        self.name, self.kids = name, kids
        self.any = [frozenset(k.values()) for k in kids]  # successors on any byte
        self.start, self.accept = frozenset([0]), frozenset(accept)
        dist = [INF] * len(kids)                          # fewest bytes from a node to a value's end
        for s in range(len(kids) - 1, -1, -1):           # children first: they have the larger ids
            dist[s] = 0 if s in accept else min((dist[c] + 1 for c in kids[s].values()), default=INF)
        self.dist = dist
        self._step, self._close, self._acc = {}, {}, {}

    def step(self, S: frozenset, b: int) -> frozenset:
        if b == ANY:
            return super().step(S, b)
        key = (S, b)
        out = self._step.get(key)
        if out is None:
            out = self._step[key] = frozenset(c for c in (self.kids[s].get(b) for s in S) if c is not None)
        return out


_TERMS: OrderedDict = OrderedDict()     # regex -> _Term, shared by every schema of the process
_TERMS_MAX = 512
_TERMS_LOCK = threading.Lock()


def _regex_term(name: str, rx: str):
    """The terminal of a regex fragment, built once per process: the JSON string, number and key
    terminals recur in every schema. A _Term is a pure function of its regex (its step/closure memos
    only grow), so grammars share it; the name is the first builder's."""
    with _TERMS_LOCK:
        hit = _TERMS.get(rx)
        if hit is not None:
            _TERMS.move_to_end(rx)
            return hit
    from dllm.constraints.regex import _byte_dfa, _char_fsm

    term = _Term(name, _byte_dfa(*_char_fsm(rx), rx))
    with _TERMS_LOCK:
        term = _TERMS.setdefault(rx, term)
        while len(_TERMS) > _TERMS_MAX:
            _TERMS.popitem(last=False)
    return term


def clear_terminal_cache() -> None:
    """Forget the shared terminals (benchmarks time cold compiles)."""
    with _TERMS_LOCK:
        _TERMS.clear()


class _Builder:
    def __init__(self, rules: dict):
        self.src = rules
        self.live = productive(rules)
        self.terms: list = []
        self.term_of: dict = {}                       # ("lit", text) / ("rx", regex) -> terminal index
        self.lit_text: dict = {}                      # terminal index -> its text, for literals
        self.rules: list = []                         # (lhs, rhs tuple)
        self.n = 0                                    # nonterminals so far
        self.nt_of: dict = {}                         # rule key / id of a shared tuple -> nonterminal

    def new_nt(self) -> int:
        self.n += 1
        return self.n - 1

    def term(self, rx: str) -> int:
        text = _unlit(rx)
        key = ("lit", text) if text is not None else ("rx", rx)
        if key not in self.term_of:
            name = f"T{len(self.terms)}"
            self.term_of[key] = len(self.terms)
            self.terms.append(_literal_term(name, text) if text is not None else _regex_term(name, rx))
            if text is not None:
                self.lit_text[len(self.terms) - 1] = text
        return self.term_of[key]

    def define(self, nt: int, alts):
        for a in alts:
            self.rules.append((nt, tuple(a)))

    def nonterminal(self, n) -> int | None:
        """A nonterminal deriving n (None: empty language)."""
        alts = self.alternatives(n)
        if not alts:
            return None
        nt = self.new_nt()
        self.define(nt, alts)
        return nt

    def literal_set(self, texts: list) -> int:
        """One terminal for an alternation of literals (their trie)."""
        key = ("set", tuple(sorted(set(texts))))
        if key not in self.term_of:
            self.term_of[key] = len(self.terms)
            self.terms.append(_LiteralSetTerm(f"T{len(self.terms)}", key[1]))
        return self.term_of[key]

    def alternatives(self, n) -> list:
        if isinstance(n, tuple) and n[0] == "alt":
            texts = [_unlit(p) if isinstance(p, str) else None for p in n[1]]
            if len(texts) > 1 and None not in texts:      # literals only (a long enum): one trie terminal
                return [[~self.literal_set(texts)]]
            out = []
            for p in n[1]:
                s = self.symbols(p)
                if s is not None and s not in out:
                    out.append(s)
            return out
        s = self.symbols(n, top=True)
        return [] if s is None else [s]

    def symbols(self, n, top: bool = False) -> list | None:
        """A sequence of symbols deriving n, or None for the empty language."""
        if n is None:
            return None
        if isinstance(n, str):
            return [~self.term(n)]
        kind = n[0]
        if kind == "ref":
            key = n[1]
            if key not in self.live:
                return None
            if key not in self.nt_of:
                self.nt_of[key] = nt = self.new_nt()
                self.define(nt, self.alternatives(self.src[key]))
            return [self.nt_of[key]]
        if not top and id(n) in self.shared:
            if id(n) not in self.nt_of:
                self.nt_of[id(n)] = self.nonterminal(n)
            nt = self.nt_of[id(n)]
            return None if nt is None else [nt]
        if kind == "seq":
            out: list = []
            for p in n[1]:
                s = self.symbols(p)
                if s is None:
                    return None
                for x in s:                             # adjacent literals become one terminal
                    if out and x < 0 and out[-1] < 0 and ~x in self.lit_text and ~out[-1] in self.lit_text:
                        from dllm.constraints.json_schema.text import _lit
                        out[-1] = ~self.term(_lit(self.lit_text[~out[-1]] + self.lit_text[~x]))
                    else:
                        out.append(x)
            return out
        if kind == "alt":
            nt = self.nonterminal(n)
            return None if nt is None else [nt]
        x, lo, hi = self.symbols(n[1]), n[2], n[3]
        if x is None:
            return [] if lo == 0 else None
        out = x * lo
        if hi is None:                                  # R -> | R x
            r = self.new_nt()
            self.define(r, [[], [r] + x])
            return out + [r]
        if hi - lo > CHAIN:
            return out + self.up_to(x, hi - lo)
        tail: list = []
        for _ in range(hi - lo):                        # O -> | x O
            o = self.new_nt()
            self.define(o, [[], x + tail])
            tail = [o]
        return out + tail

    def up_to(self, x: list, m: int) -> list:
        """Symbols deriving 0..m copies of x, in O(log m) nonterminals: P0 -> | x derives x{0,1},
        P(i) -> P(i-1) P(i-1) derives x{0,2^i}, and x{0,m} is the concatenation of the P(i) of m's set
        bits (x{0,a} x{0,b} = x{0,a+b}). The chain O -> | x O takes m nonterminals, and an Earley set
        at a gap predicts every one of them: dependabot's 16 arrays of maxItems 100 were 70% of its
        grammar's items (the language is the same; the new rules are ambiguous, which a recogniser
        does not mind)."""
        p = self.new_nt()
        self.define(p, [[], x])
        out, k = [], 1
        while True:
            if m & k:
                out.append(p)
            if 2 * k > m:
                return out
            q = self.new_nt()
            self.define(q, [[p, p]])
            p, k = q, 2 * k


def build_grammar(node, rules: dict):
    """cfg.Grammar of the language of node (a plan's grammar)."""
    from dllm.constraints.cfg import Grammar

    b = _Builder(rules)
    b.shared = _shared([node] + list(rules.values()))
    start = b.nonterminal(node)
    if start is None:
        raise ConstraintError("the JSON schema admits no value that can be written in the supported subset.")
    return Grammar.from_parts(b.terms, b.rules, b.n, start)
