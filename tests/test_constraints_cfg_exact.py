"""The CFG check's shortcuts keep it exact: on random grammars and gapped canvases, Chart.ok (fresh, and
built incrementally on the previous canvas's chart) equals a reference recogniser written from the
definition, and the bounded shortest-completion search equals the unbounded one wherever it answers.

The reference is the Bar-Hillel product (Bar-Hillel, Perles and Shamir 1961) computed as a plain fixed
point: span[X] = the (p, q) such that X derives a string that takes the canvas automaton from p to q.
A tail of k slots is k extra any-byte transitions after the fixed text, any of whose ends may finish
the answer (the check's "the shortest completion fits the budget", stated as a language question)."""
import random

import pytest

from dllm.constraints.cfg import ANY, Grammar, Text, canvas_text
from dllm.constraints.cfg_chart import Chart
from dllm.constraints.json_schema.grammar import _literal_term, _regex_term
from dllm.errors import ConstraintError

ALPHA = b"ab{}"
LITERALS = ["a", "b", "ab", "{", "}", "ba"]
REGEXES = ["[ab]+", "b*a", "\\{[ab]*"]


def _dfa(term):
    """(start state, delta(state, byte) -> state or None, accepting states) of a terminal."""
    if hasattr(term, "rows"):                               # a table-built _Term
        dead = len(term.rows)

        def delta(s, b):
            t = term.rows[s][b]
            return None if t == dead else t
        return next(iter(term.start)), delta, term.accept
    data = term.data                                        # a literal: the byte chain

    def delta(s, b):
        return s + 1 if s < len(data) and data[s] == b else None
    return 0, delta, {len(data)}


def _term_spans(term, sym, loop):
    """{(p, q)}: the terminal reads some string from position p to q (BFS over position x DFA state)."""
    start, delta, accept = _dfa(term)
    n, out = len(sym), set()
    for p in range(n + 1):
        seen, todo = {(p, start)}, [(p, start)]
        while todo:
            i, s = todo.pop()
            if s in accept:
                out.add((p, i))
            moves = [(i, b) for b in range(256)] if loop[i] else []
            if i < n:
                moves += [(i + 1, b) for b in (range(256) if sym[i] == ANY else [sym[i]])]
            for j, b in moves:
                t = delta(s, b)
                if t is not None and (j, t) not in seen:
                    seen.add((j, t))
                    todo.append((j, t))
    return out


def reference_ok(g: Grammar, text: Text) -> bool:
    sym, loop = list(text.sym), list(text.loop)
    n = len(sym)
    finals = {n}
    if text.budget is not None:                             # the tail: budget any-bytes, stop anywhere
        loop[n] = False
        sym += [ANY] * text.budget
        loop += [False] * text.budget
        finals = set(range(n, n + text.budget + 1))
    tspan = [_term_spans(t, sym, loop) for t in g.terms]
    span = [set() for _ in range(g.root + 1)]
    changed = True
    while changed:
        changed = False
        for lhs, rhs in g.rules:
            cur = {(p, p) for p in range(len(sym) + 1)}
            for x in rhs:
                sp = tspan[~x] if x < 0 else span[x]
                cur = {(p, r) for p, q in cur for q2, r in sp if q2 == q}
            if not cur <= span[lhs]:
                span[lhs] |= cur
                changed = True
    return any((0, q) in span[g.root] for q in finals)


def random_grammar(rng: random.Random) -> Grammar | None:
    """3 to 5 nonterminals, 1 to 3 alternatives of 0 to 3 symbols each (nonterminals or terminals)."""
    names = LITERALS + REGEXES
    terms = [_literal_term(f"T{i}", s) if i < len(LITERALS) else _regex_term(f"T{i}", s)
             for i, s in enumerate(names)]
    n = rng.randint(3, 5)
    rules = []
    for lhs in range(n):
        for _ in range(rng.randint(1, 3)):
            rhs = tuple(rng.randrange(n) if rng.random() < 0.4 else ~rng.randrange(len(terms))
                        for _ in range(rng.randint(0, 3)))
            rules.append((lhs, rhs))
    try:
        return Grammar.from_parts(terms, rules, n, 0)
    except ConstraintError:                                 # no finite string
        return None


def random_canvas(rng: random.Random):
    """Answer slots over a one-byte vocabulary (ALPHA, then mask, then stop): masks make gaps and tails,
    a stop ends the answer (canvas_text refuses fixed text after it)."""
    mask, stop = len(ALPHA), len(ALPHA) + 1
    slots = [rng.choice([mask, mask, stop] + list(range(len(ALPHA)))) for _ in range(rng.randint(1, 8))]
    return slots, mask, stop


TB = [bytes([b]) for b in ALPHA] + [None, None]


@pytest.mark.parametrize("seed", range(12))
def test_chart_matches_the_reference_on_random_grammars_and_canvases(seed):
    rng = random.Random(seed)
    checked = 0
    while checked < 200:
        g = random_grammar(rng)
        if g is None:
            continue
        prev = None
        for _ in range(6):
            slots, mask, stop = random_canvas(rng)
            text = canvas_text(slots, mask, frozenset([stop]), TB)
            if text is None:
                continue
            want = reference_ok(g, text)
            fresh = Chart(g, text)
            assert fresh.ok == want, (g.rules, slots, fresh.ok, want)
            inc = Chart(g, text, base=prev)                 # shares a prefix with an unrelated canvas
            assert inc.ok == want, (g.rules, slots, "incremental")
            prev = inc
            checked += 1


@pytest.mark.parametrize("seed", range(6))
def test_a_canvas_that_only_moves_its_end_reuses_the_chart_exactly(seed):
    """Committing end tokens in the tail shrinks the budget and leaves the automaton alone: the chart is
    carried over whole, and ok must follow the new budget (down and back up)."""
    rng = random.Random(100 + seed)
    mask, stop = len(ALPHA), len(ALPHA) + 1
    done = 0
    while done < 20:
        g = random_grammar(rng)
        if g is None:
            continue
        head = [rng.randrange(len(ALPHA)) if rng.random() < 0.7 else mask for _ in range(rng.randint(1, 4))]
        head[-1] = rng.randrange(len(ALPHA))
        prev = None
        for budget in rng.sample(range(0, 6), 4):
            text = canvas_text(head + [mask] * budget + [stop], mask, frozenset([stop]), TB)
            inc = Chart(g, text, base=prev)
            assert inc.ok == reference_ok(g, text) == Chart(g, text).ok, (g.rules, head, budget)
            prev = inc
        done += 1


@pytest.mark.parametrize("seed", range(6))
def test_bounded_shortest_completion_equals_the_unbounded_one(seed):
    rng = random.Random(200 + seed)
    done = 0
    while done < 30:
        g = random_grammar(rng)
        if g is None:
            continue
        slots, mask, stop = random_canvas(rng)
        text = canvas_text(slots, mask, frozenset([stop]), TB)
        if text is None:
            continue
        if text.budget is None:
            continue
        chart = Chart(g, text)
        full = chart.shortest_completion()
        for bound in range(0, 6):
            got = chart.shortest_completion(bound)
            assert got == (full if full <= bound else 1 << 30), (g.rules, slots, bound, got, full)
        done += 1
