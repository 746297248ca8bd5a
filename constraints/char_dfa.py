"""interegular's parse tree -> character DFA, under a Budget (stage 1 of constraints/regex.py).

interegular parses the pattern; its own `to_fsm` is not used, because it has no bound: it builds
an FSM per sub-pattern and looks states up in a list (quadratic), and an exploding pattern such as
`(a|b)*a(a|b){18}` runs for minutes. Here the tree becomes one Thompson NFA over *keys* (classes
of characters that every character set of the pattern treats alike), then one subset
construction that charges every DFA state it makes to the Budget. Lookaheads, which need
intersection, are the only place where a sub-pattern is determinised alone: (?=X)R is R's DFA
intersected with X.Σ* (difference for (?!X)), as interegular defines them, then embedded back.

When the budget runs out the error names a part of the pattern: the smallest sub-pattern that
exceeds the budget on its own (found by determinising the failing node's children, each with a
small budget of its own), or the failing node itself when every child fits.

Semantics follow interegular's to_fsm: `.` excludes "\\n" unless (?s); (?i) adds the other case of
each character; lookbehinds and the `m` flag are refused; every lookaround must stay inside its
group (checked with interegular's own prefix_postfix).
"""
from __future__ import annotations

from dataclasses import dataclass

from interegular.fsm import anything_else
from interegular.patterns import _ALL_STAR, Pattern, _Concatenation, _NonCapturing, _Repeated

from dllm.constraints.budget import Budget, show
from dllm.constraints.pattern_tree import _children, _flags_of, _spec, render
from dllm.errors import ConstraintBudgetError, ConstraintError

_DIAGNOSE_SECONDS = 2.0      # time allowed to find the part of a pattern that blew the budget


@dataclass
class CharDFA:
    """What the byte stage reads (the fields interegular's FSM has): alphabet {character or
    anything_else: key}, map {state: {key: state}}, initial state, final states."""
    alphabet: dict
    map: dict
    initial: int
    finals: set


class _Alphabet:
    """Keys of the pattern: characters grouped by the sets of specs that accept them; characters
    no spec names share anything_else's key."""

    def __init__(self, tree):
        specs = {(frozenset(), True): 0}                     # "any character": lookaheads' X.Σ*
        stack = [(tree, 0)]
        while stack:
            node, flags = stack.pop()
            flags = _flags_of(node, flags)
            s = _spec(node, flags)
            if s is not None:
                specs.setdefault(s, len(specs))
            stack.extend((c, flags) for c in _children(node))
        chars = sorted({c for cs, _ in specs for c in cs})
        negated = frozenset(i for (cs, neg), i in specs.items() if neg)
        inside = {c: set() for c in chars}                   # spec ids whose char set holds c
        for (cs, _), i in specs.items():
            for c in cs:
                inside[c].add(i)
        # a character's signature: the specs that accept it (positive ones holding it, negated ones not)
        other = negated                                        # anything_else: only the negated specs
        keys = {other: 0}
        self.alphabet = {anything_else: 0}
        for c in chars:
            sig = frozenset(i for i in inside[c] if i not in negated) | (negated - inside[c])
            self.alphabet[c] = keys.setdefault(sig, len(keys))
        self.n_keys = len(keys)
        by_spec = {i: [] for i in specs.values()}
        for sig, k in keys.items():
            for i in sig:
                by_spec[i].append(k)
        self.spec_keys = {s: tuple(by_spec[i]) for s, i in specs.items()}   # spec -> accepted keys


# ---- Thompson NFA ----------------------------------------------------------------------------------

class _NFA:
    """States 0..n-1; edges[s] = [(keys tuple, target)], eps[s] = [target]."""

    def __init__(self, alpha: _Alphabet, budget: Budget, pattern: str):
        self.alpha, self.budget, self.pattern = alpha, budget, pattern
        self.edges: list = []
        self.eps: list = []

    def new(self) -> int:
        self.edges.append([])
        self.eps.append([])
        return len(self.edges) - 1

    def build(self, node, flags) -> tuple[int, int]:
        """A fragment (start, end) for node; end has no outgoing edge yet."""
        flags = _flags_of(node, flags)
        spec = _spec(node, flags)
        if spec is not None:
            s, e = self.new(), self.new()
            keys = self.alpha.spec_keys[spec]
            if keys:
                self.edges[s].append((keys, e))
            return s, e
        if isinstance(node, Pattern):
            frags = [self.build(o, flags) for o in node.options]
            if len(frags) == 1:
                return frags[0]
            s, e = self.new(), self.new()
            for fs, fe in frags:
                self.eps[s].append(fs)
                self.eps[fe].append(e)
            return s, e
        if isinstance(node, _Concatenation):
            if any(type(p) is _NonCapturing for p in node.parts):
                return self._lookaround(node, flags)
            return self._chain([self.build(p, flags) for p in node.parts])
        if isinstance(node, _Repeated):
            return self._repeat(node, flags)
        s = self.new()                                        # the empty pattern (and flag-only groups)
        return s, s

    def _chain(self, frags) -> tuple[int, int]:
        if not frags:
            s = self.new()
            return s, s
        for (_, a_end), (b_start, _) in zip(frags, frags[1:]):
            self.eps[a_end].append(b_start)
        return frags[0][0], frags[-1][1]

    def _repeat(self, node, flags) -> tuple[int, int]:
        frags = [self.build(node.base, flags) for _ in range(node.min)]
        if node.max is None:                                  # x* after the mandatory copies
            s, e = self.new(), self.new()
            bs, be = self.build(node.base, flags)
            self.eps[s] += [bs, e]
            self.eps[be].append(s)
            frags.append((s, e))
        elif node.max > node.min:                             # nested optionals: (x(x(x)?)?)?
            e = self.new()
            s = prev = self.new()
            for i in range(node.max - node.min):
                bs, be = self.build(node.base, flags)
                self.eps[prev] += [bs, e]
                prev = be
            self.eps[prev].append(e)
            frags.append((s, e))
        return self._chain(frags)

    def _lookaround(self, node, flags) -> tuple[int, int]:
        """A concatenation with lookaheads: seg0 . ((seg1 . (...)) & X1.Σ*), interegular's reading."""
        if node.prefix_postfix != (0, 0):
            raise ConstraintError(f"the regex {show(self.pattern)} has a lookahead or lookbehind reaching past "
                                  "its group, which constraints do not support.")
        segments, looks = [[]], []
        for p in node.parts:
            if isinstance(p, _NonCapturing):
                if p.backwards:
                    raise ConstraintError(f"the regex {show(self.pattern)} has a lookbehind, which constraints "
                                          "do not support.")
                looks.append(p)
                segments.append([])
            else:
                segments[-1].append(p)
        rest = _Concatenation(tuple(segments[-1]))
        dfa = self.sub_dfa(rest, flags)
        for look, seg in zip(reversed(looks), reversed(segments[:-1])):
            cond = self.sub_dfa(_Concatenation((look.inner, _ALL_STAR)), flags)
            dfa = _product(dfa, cond, negate=look.negate, budget=self.budget, what=lambda: show(render(node)))
            if seg:
                dfa = self.sub_dfa(_Concatenation(tuple(seg)), flags, then=dfa)
        return self.embed(dfa)

    def sub_dfa(self, node, flags, then: CharDFA | None = None) -> CharDFA:
        """The DFA of node (followed by the DFA `then`), built alone in this NFA's alphabet."""
        s, e = self.build(node, flags)
        if then is not None:
            ts, te = self.embed(then)
            self.eps[e].append(ts)
            e = te
        return determinise(self, s, e, lambda: show(render(node)))

    def embed(self, dfa: CharDFA) -> tuple[int, int]:
        """A DFA as an NFA fragment: its states, plus an end reached by epsilon from its finals."""
        ids = {q: self.new() for q in dfa.map}
        end = self.new()
        for q, row in dfa.map.items():
            by_target: dict = {}
            for k, t in row.items():
                by_target.setdefault(t, []).append(k)
            self.edges[ids[q]] = [(tuple(ks), ids[t]) for t, ks in by_target.items()]
        for q in dfa.finals:
            self.eps[ids[q]].append(end)
        return ids[dfa.initial], end


def determinise(nfa: _NFA, start: int, end: int, what) -> CharDFA:
    """Subset construction from `start`, accepting where `end` is reached; charges nfa.budget.

    A DFA state is the set of *kernel* NFA states (those with a character edge, and `end`) reachable
    by epsilon moves: the epsilon closure of each NFA state is computed once, and a move's target is
    the union of its targets' closures."""
    edges, eps = nfa.edges, nfa.eps
    kernel: dict = {}

    def eclose(s: int) -> frozenset:
        out = kernel.get(s)
        if out is None:
            seen, todo = {s}, [s]
            while todo:
                for t in eps[todo.pop()]:
                    if t not in seen:
                        seen.add(t)
                        todo.append(t)
            out = kernel[s] = frozenset(q for q in seen if edges[q] or q == end)
        return out

    states = _Numbering(eclose(start), nfa.budget, what)
    dmap, finals, budget, i = {}, set(), nfa.budget, 0
    while i < len(states.order):
        S = states.order[i]
        if i % 64 == 0:
            budget.tick(what)
        if end in S:
            finals.add(i)
        moves: dict = {}
        for s in S:
            for keys, t in edges[s]:
                for k in keys:
                    moves.setdefault(k, set()).add(t)
        row = {}
        for k, targets in moves.items():
            row[k] = states.id(frozenset().union(*map(eclose, targets)))
        dmap[i] = row
        i += 1
    return CharDFA(nfa.alpha.alphabet, dmap, 0, finals)


class _Numbering:
    """The states of a worklist construction, numbered in discovery order (state i is order[i]); each new
    state spends one unit of the compile budget."""

    def __init__(self, first, budget: Budget, what: str):
        self.ids, self.order, self.budget, self.what = {first: 0}, [first], budget, what

    def id(self, key) -> int:
        j = self.ids.get(key)
        if j is None:
            j = self.ids[key] = len(self.order)
            self.order.append(key)
            self.budget.spend(1, self.what)
        return j


def _product(a: CharDFA, b: CharDFA, negate: bool, budget: Budget, what: str) -> CharDFA:
    """a & b (negate: a minus b) over the same keys; b's missing transitions go to its dead state."""
    states = _Numbering((a.initial, b.initial), budget, what)
    dmap, finals, i = {}, set(), 0
    while i < len(states.order):
        p, q = states.order[i]
        b_acc = q is not None and q in b.finals
        if p in a.finals and (b_acc != negate):
            finals.add(i)
        row = {}
        brow = b.map.get(q, {}) if q is not None else {}
        for k, p2 in a.map[p].items():
            q2 = brow.get(k)
            if q2 is None and not negate:
                continue                                   # b is dead: nothing more is in a & b
            row[k] = states.id((p2, q2))
        dmap[i] = row
        i += 1
    return CharDFA(a.alphabet, dmap, 0, finals)


# ---- the entry point and the diagnosis ---------------------------------------------------------------

def char_dfa(tree, pattern: str, budget: Budget) -> CharDFA:
    """The character DFA of interegular's parse tree `tree` of `pattern`."""
    alpha = _Alphabet(tree)
    nfa = _NFA(alpha, budget, pattern)
    late = budget.left() <= 0        # the compile's clock ran out before this pattern began: no diagnosis
    try:
        s, e = nfa.build(tree, 0)
        return determinise(nfa, s, e, lambda: show(pattern))
    except ConstraintBudgetError:
        culprit = pattern if late else _culprit(tree, 0, alpha, budget)
        need = (f"needs more than {budget.states:,} DFA states" if budget.exceeded == "states"
                else f"takes more than {budget.seconds:g} s")
        raise ConstraintBudgetError(
            f"the regex {show(pattern)} {need} to compile, in the part {show(culprit)}; simplify that part (nested "
            "or overlapping repetitions multiply states) or raise DLLM_CONSTRAINT_STATES / "
            "DLLM_CONSTRAINT_SECONDS.") from None


def _culprit(node, flags, alpha: _Alphabet, budget: Budget) -> str:
    """The smallest sub-pattern along one path from node that alone still exceeds the budget."""
    probe = Budget(positions=budget.positions, states=budget.states, seconds=_DIAGNOSE_SECONDS, own_clock=True)
    flags = _flags_of(node, flags)
    while True:
        for child in _children(node):
            nfa = _NFA(alpha, Budget(positions=budget.positions, states=budget.states,
                                     seconds=max(probe.left(), 1e-3), own_clock=True), "")
            try:
                s, e = nfa.build(child, flags)
                determinise(nfa, s, e, "a part")
            except ConstraintBudgetError:
                if probe.left() <= 0:
                    return render(child)
                node, flags = child, _flags_of(child, flags)
                break
            except ConstraintError:
                continue
        else:
            return render(node)
