"""Context-free grammar constraints for diffusion decoding: can a canvas with gaps still be completed?

The grammar is Lark text; lark compiles it and its BNF rules (after EBNF expansion) are used as
a CFG whose terminals are regular languages over bytes (each terminal's regex, preceded by any
number of %ignore terminals, through the byte DFA of constraints/regex.py). Lexing is free, as
in lark's Earley parser with lexer="dynamic_complete".

A partly decoded answer (fixed tokens, masked slots, end tokens) is a linear automaton over bytes,
positions 0..n:
  fixed token                      -> one transition per byte of the token
  k masked slots before fixed text -> k any-byte transitions, then a loop on every byte (a token
                                      has at least one byte, possibly many: Sigma^k Sigma*)
  masked slots at the end          -> a loop on every byte (the answer may end in them), plus a
                                      budget: the shortest completion must fit in one byte per slot
and the canvas is completable iff L(G) meets that automaton (Bar-Hillel), with the tail budget
met. Both approximations are the additive-infilling reduction of constrained-diffusion (arXiv
2508.10111) refined by slot counts: a middle gap may be granted more bytes than its tokens can
spell (an over-approximation: the runtime backtracks when that happens), and the tail is only
granted completions that single-byte tokens can spell (an under-approximation, so a canvas
that passes always has a completion and decoding never runs out of room).

The check is an Earley recogniser whose positions are the automaton's states; a loop at p lets
terminals span (p, p). Terminals are lexed lazily (only those predicted at a position) and a new
canvas reuses the chart of the previous one up to the first byte where they differ, so checking
a candidate token costs the part of the answer after it (and nothing when only the tail's budget
changed). At a gap's loop the predicted items are kept implicit (_Universe), and the tail budget is
tested by a shortest-completion search that stops at the budget. The grammar, its terminals and the
canvas's automaton are here; the chart (the recogniser and the search) is constraints/cfg_chart.py.
"""
from __future__ import annotations

import heapq
from functools import lru_cache

from dllm.constraints.budget import Budget
from dllm.errors import ConstraintBudgetError, ConstraintError

ANY = 256      # an any-byte transition in the linear automaton
INF = 1 << 30


class _Term:
    """One terminal's byte DFA, with cached transitions on sets of states."""

    def __init__(self, name: str, bd, budget=None):
        self.name = name
        n = bd.n
        rows = bd.table[:n].tolist()
        self.rows = rows
        self.accept = frozenset(int(s) for s in range(n) if bd.accept[s])
        self.start = frozenset([int(bd.start)])
        succ = [frozenset(t for t in set(r) if t != n) for r in rows]
        self.any = succ
        if budget is not None:
            budget.tick(f"terminal {name}")
        # closures (the states reachable from a set) are found on demand in close(): computing every
        # state's closure up front is O(states^2) and took ~50 s on gitlab-ci's largest terminals
        # dist[s]: fewest bytes from s to acceptance (BFS backwards)
        dist = [INF] * n
        preds = [[] for _ in range(n)]
        for s in range(n):
            for t in succ[s]:
                preds[t].append(s)
        frontier = [s for s in self.accept]
        for s in frontier:
            dist[s] = 0
        while frontier:
            nxt = []
            for t in frontier:
                for s in preds[t]:
                    if dist[s] == INF:
                        dist[s] = dist[t] + 1
                        nxt.append(s)
            frontier = nxt
        self.dist = dist
        self._step, self._close, self._acc = {}, {}, {}

    def step(self, S: frozenset, b: int) -> frozenset:
        key = (S, b)
        out = self._step.get(key)
        if out is None:
            if b == ANY:
                out = frozenset().union(*(self.any[s] for s in S))
            else:
                dead = len(self.rows)
                out = frozenset(t for t in (self.rows[s][b] for s in S) if t != dead)
            self._step[key] = out
        return out

    def close(self, S: frozenset) -> frozenset:
        out = self._close.get(S)
        if out is None:
            seen, todo = set(S), list(S)             # one search from all of S
            while todo:
                for t in self.any[todo.pop()]:
                    if t not in seen:
                        seen.add(t)
                        todo.append(t)
            out = self._close[S] = frozenset(seen)
        return out

    def accepts(self, S: frozenset) -> bool:
        out = self._acc.get(S)
        if out is None:
            out = self._acc[S] = not self.accept.isdisjoint(S)
        return out

    def remaining(self, S: frozenset) -> int:
        return min((self.dist[s] for s in S), default=INF)


class Grammar:
    """A Lark grammar compiled for the check. Symbols: nonterminal i >= 0, terminal t as ~t (< 0)."""

    def __init__(self, text: str, start: str = "start", budget: Budget | None = None):
        from dllm.constraints.grammar import load_lark
        from dllm.constraints.regex import _byte_dfa, _char_fsm

        budget = budget or Budget()
        self.max_items = budget.states       # Earley items one check may build (Chart)
        parser, regex, ignore = load_lark(text, start)
        skip = f"(?:{ignore})*" if ignore else ""

        def term(name, pattern):
            fsm, segments = _char_fsm(pattern, budget)
            try:
                return _Term(name, _byte_dfa(fsm, segments, pattern, budget), budget)
            except ConstraintBudgetError:
                raise
            except ConstraintError:
                raise ConstraintError(f"terminal {name} matches no string.") from None

        names = sorted(regex)
        self.terms = [term(n, f"{skip}(?:{regex[n]})") for n in names]
        tid = {n: i for i, n in enumerate(names)}
        nts = sorted({r.origin.name for r in parser.rules})
        if start not in nts:
            raise ConstraintError(f"the grammar has no {start!r} rule.")
        nid = {n: i for i, n in enumerate(nts)}
        self.root = len(nts)                                   # root -> start [trailing ignores]
        self.rules = [(nid[r.origin.name], tuple(~tid[s.name] if s.is_term else nid[s.name] for s in r.expansion))
                      for r in parser.rules]
        self.rules.append((self.root, (nid[start],)))
        if ignore:
            self.terms.append(term("%ignore", f"(?:{ignore})+"))
            self.rules.append((self.root, (nid[start], ~(len(self.terms) - 1))))
        self._index(len(nts), budget)

    @classmethod
    def from_parts(cls, terms: list, rules: list, n_nonterminals: int, start: int,
                   budget: Budget | None = None) -> "Grammar":
        """A grammar built without lark (constraints/json_schema/grammar.py): terms (_Term), rules
        [(lhs, rhs tuple)] over nonterminals 0..n-1 with terminal t written ~t, and the start symbol."""
        self = cls.__new__(cls)
        budget = budget or Budget()
        self.max_items = budget.states
        self.terms = list(terms)
        self.root = n_nonterminals
        self.rules = list(rules) + [(self.root, (start,))]
        self._index(n_nonterminals, budget)
        return self

    def _index(self, n_nts: int, budget: Budget | None = None):
        """Rules by left-hand side, fewest bytes per symbol and per rule suffix (shared by both builders)."""
        self.by_lhs = [[] for _ in range(n_nts + 1)]
        for i, (lhs, _) in enumerate(self.rules):
            self.by_lhs[lhs].append(i)
        self.root_rules = frozenset(self.by_lhs[self.root])
        self.tmin = [t.remaining(t.start) for t in self.terms]
        self.minlen = self._minlen(n_nts + 1, budget or Budget())
        if self.minlen[self.root] >= INF:
            raise ConstraintError("the grammar derives no finite string.")
        # at a loop position every productive symbol spans (k, k): rule r's items there are its dots
        # 0..maxdot[r] (up to its first unproductive symbol); mentions[X]: the nonterminals X's rules
        # wait on at those dots (what predicting X at a loop predicts in turn)
        prod = lambda s: (self.tmin[~s] if s < 0 else self.minlen[s]) < INF     # noqa: E731
        self.maxdot = [next((d for d, s in enumerate(rhs) if not prod(s)), len(rhs)) for _, rhs in self.rules]
        self.mentions = [set() for _ in range(n_nts + 1)]
        for r, (lhs, rhs) in enumerate(self.rules):
            self.mentions[lhs].update(s for s in rhs[:self.maxdot[r] + 1] if s >= 0)
        self._universes: dict = {}
        # suffix minima of every rule: tail[r][d] = fewest bytes rhs[d:] derives
        self.tail = []
        for _, rhs in self.rules:
            acc = [0] * (len(rhs) + 1)
            for d in range(len(rhs) - 1, -1, -1):
                s = rhs[d]
                acc[d] = min(INF, acc[d + 1] + (self.tmin[~s] if s < 0 else self.minlen[s]))
            self.tail.append(acc)

    def universe(self, preds: frozenset) -> "_Universe":
        """The items predicted at a loop position whose predicted nonterminals are preds (memoised: the
        loops of one canvas mostly predict the same, nearly whole, grammar)."""
        u = self._universes.get(preds)
        if u is None:
            if len(self._universes) >= 16:       # each holds O(grammar) pairs
                self._universes.clear()
            u = self._universes[preds] = _Universe(self, preds)
        return u

    def _minlen(self, n: int, budget: Budget) -> list:
        """Fewest bytes each nonterminal derives (INF: unproductive), by Knuth's generalisation of
        Dijkstra (1977; a rule's cost is a sum of non-negative parts): a nonterminal is final when
        popped with the least candidate; a rule offers a candidate once all its nonterminals are final.
        O(total rule length x log): the earlier worklist re-summed long rules (renovate's objects of
        300 entries) every time one symbol dropped, 90 million additions."""
        minlen = [INF] * n
        users = [[] for _ in range(n)]                 # nonterminal -> [(rule, occurrences in its rhs)]
        need, part = [], []                            # per rule: nonterminal occurrences not final; sum so far
        heap = []
        for i, (lhs, rhs) in enumerate(self.rules):
            counts: dict = {}
            total = 0
            for x in rhs:
                if x >= 0:
                    counts[x] = counts.get(x, 0) + 1
                else:
                    total = min(INF, total + self.tmin[~x])
            for x, c in counts.items():
                users[x].append((i, c))
            need.append(sum(counts.values()))
            part.append(total)
            if not counts and total < INF:
                heap.append((total, lhs))
        heapq.heapify(heap)
        final = [False] * n
        steps = 0
        while heap:
            v, a = heapq.heappop(heap)
            if final[a]:
                continue
            final[a], minlen[a] = True, v
            steps += 1
            if steps % 4096 == 0:
                budget.tick("the grammar's shortest derivations")
            for i, c in users[a]:
                part[i] = min(INF, part[i] + c * v)
                need[i] -= c
                if need[i] == 0 and part[i] < INF and not final[self.rules[i][0]]:
                    heapq.heappush(heap, (part[i], self.rules[i][0]))
        return minlen


def compile_grammar(text: str, start: str = "start", budget: Budget | None = None) -> Grammar:
    """The compiled grammar (memoised per text and start); ConstraintBudgetError past the budget."""
    b = budget or Budget()
    return _compile_grammar(text, start, b.positions, b.states, b.seconds)


@lru_cache(maxsize=64)
def _compile_grammar(text: str, start: str, positions: int, states: int, seconds: float) -> Grammar:
    return Grammar(text, start, Budget(positions=positions, states=states, seconds=seconds))


class Text:
    """The linear automaton of one canvas: sym[i] (byte or ANY) from position i to i + 1,
    loop[i] (a loop on every byte at i), budget (bytes the tail may add; None: no tail)."""
    __slots__ = ("sym", "loop", "budget")

    def __init__(self, sym: list, loop: list, budget):
        self.sym, self.loop, self.budget = sym, loop, budget


def canvas_text(slots, mask_id: int, stops: frozenset, tb: list) -> Text | None:
    """Answer slots (token ids) -> Text, or None when the canvas is already invalid (a token
    without bytes, or fixed text after an end token)."""
    N = len(slots)
    end = next((i for i, t in enumerate(slots) if t in stops), N)
    if any(t != mask_id and t not in stops for t in slots[end:]):
        return None
    last = max((i for i in range(end) if slots[i] != mask_id), default=-1)
    sym, loop = [], [False]
    i = 0
    while i <= last:
        t = slots[i]
        if t == mask_id:
            j = i
            while slots[j] == mask_id:
                j += 1
            sym.extend([ANY] * (j - i))
            loop.extend([False] * (j - i))
            loop[-1] = True
            i = j
            continue
        b = tb[t] if 0 <= t < len(tb) else None
        if not b:
            return None
        sym.extend(b)
        loop.extend([False] * len(b))
        i += 1
    budget = end - last - 1 if last < end - 1 else None
    if budget is not None:
        loop[-1] = True
    return Text(sym, loop, budget)


class _Universe:
    """The items (r, d, k) that a loop position k predicts, kept implicit: with a loop every productive
    symbol spans (k, k), so predicting X there yields every rule of every nonterminal X reaches, at every
    dot up to maxdot. On a JSON grammar that is the whole grammar at each gap (dependabot: 6,600 items
    per gap of 12-14k), and only the few that fixed text after the gap advances need to exist.
    nts[X] / terms[t]: the (r, d) of those items that wait on nonterminal X / terminal t."""
    __slots__ = ("preds", "nts", "terms")

    def __init__(self, g: Grammar, preds: frozenset):
        self.preds = preds
        nts: dict = {}
        terms: dict = {}
        for x in preds:
            for r in g.by_lhs[x]:
                rhs = g.rules[r][1]
                for d in range(min(g.maxdot[r] + 1, len(rhs))):
                    s = rhs[d]
                    if s >= 0:
                        nts.setdefault(s, []).append((r, d))
                    else:
                        terms.setdefault(~s, []).append((r, d))
        self.nts, self.terms = nts, terms
