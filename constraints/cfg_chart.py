"""The Earley chart of constraints/cfg.py: is a canvas (a Text: a linear automaton over bytes with loops
at gaps) still completable under a Grammar?

Positions are the automaton's states; a loop at p lets terminals span (p, p). Terminals are lexed
lazily (only those predicted at a position), a chart built on a previous one reuses it up to the first
byte where the canvases differ, at a loop the predicted items stay implicit (cfg._Universe), and a tail
budget is tested by a shortest-completion search that stops at the budget.
"""
from __future__ import annotations

import heapq

from dllm.constraints.cfg import INF, Grammar, Text, _Universe
from dllm.errors import ConstraintBudgetError


class _Set:
    """One Earley set: items, items waiting on each nonterminal (wait) and terminal (twait), each
    terminal's end positions (tends); at a loop position also the implicit predicted items (univ)."""
    __slots__ = ("wait", "twait", "tends", "items", "univ", "k")

    def __init__(self, k: int, univ: "_Universe | None" = None):
        self.wait, self.twait, self.tends, self.items = {}, {}, {}, set()
        self.univ, self.k = univ, k

    def waiting(self, x: int) -> list:
        """The items of this set waiting on nonterminal x, implicit ones included."""
        own = self.wait.get(x, ())
        imp = self.univ.nts.get(x) if self.univ is not None else None
        if not imp:
            return own
        k = self.k
        return [*own, *((r, d, k) for r, d in imp)]

    def twaiting(self, t: int) -> list:
        own = self.twait.get(t, ())
        imp = self.univ.terms.get(t) if self.univ is not None else None
        if not imp:
            return own
        k = self.k
        return [*own, *((r, d, k) for r, d in imp)]


class Chart:
    """Earley sets over a Text; `ok` says whether the canvas is completable.

    A Text with a tail is charted without its tail loop (the answer ending at the fixed text),
    and ok = the shortest completion fits the tail's budget."""
    __slots__ = ("g", "text", "sets", "reach", "at_end", "ok", "spent", "sc")

    def __init__(self, g: Grammar, text: Text, base: "Chart | None" = None):
        if text.budget is not None:
            loop = list(text.loop)
            loop[-1] = False
            text = Text(text.sym, loop, text.budget)
        self.g, self.text = g, text
        self.spent = 0       # Earley items this check built: bounded by g.max_items
        self.at_end = {}     # (position, terminal) -> DFA states of a run still alive at the end
        self.sc = (INF, -1)  # (shortest completion if <= bound else INF, bound): what was searched
        sym, loop = text.sym, text.loop
        n = len(sym)
        c = 0
        if base is not None:
            # set k depends on sym[:k] and loop[:k + 1]: reuse base's sets while those agree
            bs, bl = base.text.sym, base.text.loop
            m = min(n, len(bs))
            while c <= m and loop[c] == bl[c] and (c == 0 or sym[c - 1] == bs[c - 1]):
                c += 1
            if c == n + 1 and len(bs) == n:
                # the same automaton (a commit that only moved the end, e.g. an end token in the tail):
                # every set, lexing run and searched completion carries over; only the budget differs
                self.sets, self.reach, self.at_end, self.sc = base.sets, base.reach, base.at_end, base.sc
                self._finish()
                return
        if c == 0:
            self.sets, self.reach = [None] * (n + 1), [{} for _ in range(n + 1)]
            pending = [[] for _ in range(n + 1)]
            pending[0] = [(r, 0, 0) for r in g.by_lhs[g.root]]
        else:
            self.sets = base.sets[:c] + [None] * (n + 1 - c)
            self.reach = base.reach[:c] + [{} for _ in range(n + 1 - c)]
            pending = [[] for _ in range(n + 1)]
            for j in range(c):                     # terminals lexed from j that ran into the change
                s = self.sets[j]
                if s is None:
                    continue
                stale = [t for t, r in self.reach[j].items() if r >= c - 1]
                if not stale:
                    continue
                self.reach[j] = reach = dict(self.reach[j])
                for t in stale:
                    ends, reach[t] = self._scan(t, j)
                    for q in ends:
                        if q >= c:
                            pending[q].extend((r, d + 1, o) for r, d, o in s.twaiting(t))
        for k in range(c, n + 1):
            if pending[k]:
                self._process(k, pending)
        self._finish()

    def _finish(self):
        g, text = self.g, self.text
        if text.budget is None:
            last = self.sets[len(text.sym)]
            self.ok = last is not None and any(r in g.root_rules and o == 0 and d == len(g.rules[r][1])
                                               for r, d, o in last.items)
            return
        value, bound = self.sc
        if value > bound and bound < text.budget:       # not searched this far yet
            self.sc = value, bound = self.shortest_completion(text.budget), text.budget
        self.ok = value <= text.budget

    def _scan(self, t: int, k: int):
        """Terminal t lexed from position k -> (end positions, last position where it was alive)."""
        T, sym, loop = self.g.terms[t], self.text.sym, self.text.loop
        n, S, ends, i = len(sym), T.start, [], k
        while True:
            if loop[i]:
                S = T.close(S)
            if T.accepts(S):
                ends.append(i)
            if i == n:
                self.at_end[k, t] = S
                break
            S = T.step(S, sym[i])
            if not S:
                break
            i += 1
        return ends, i

    def _process(self, k: int, pending):
        """Earley set k from its pending items. At a loop position (a gap's end) every productive symbol
        spans (k, k): an item waiting on a nonterminal X advances at once, and X's predictions stay
        implicit (preds grows by what X mentions; _Universe); after the work list, the terminals the
        implicit items wait on are lexed, and those that reach past k advance their items there."""
        g, rules, sets = self.g, self.g.rules, self.sets
        st = _Set(k)
        sets[k] = st
        items, wait, twait, tends = st.items, st.wait, st.twait, st.tends
        done, completed = set(), set()
        loop, preds, minlen, mentions = self.text.loop[k], set(), g.minlen, g.mentions
        reach = self.reach[k]
        work = pending[k]
        pending[k] = None
        while work:
            it = work.pop()
            if it in items:
                continue
            items.add(it)
            self.spent += 1
            if self.spent > g.max_items:
                raise ConstraintBudgetError(
                    f"checking the grammar constraint needs more than {g.max_items:,} Earley items for one "
                    "candidate answer (a highly ambiguous grammar); simplify the grammar, shorten the answer or "
                    "raise DLLM_CONSTRAINT_STATES.")
            r, d, o = it
            lhs, rhs = rules[r]
            if d == len(rhs):                      # complete lhs over (o, k)
                if o == k:
                    if lhs not in done:
                        done.add(lhs)
                        work.extend((pr, pd + 1, po) for pr, pd, po in wait.get(lhs, ()))
                elif (lhs, o) not in completed:
                    completed.add((lhs, o))
                    work.extend((pr, pd + 1, po) for pr, pd, po in sets[o].waiting(lhs))
                continue
            x = rhs[d]
            if x >= 0 and loop:                    # predict implicitly; x spans (k, k) if productive
                wait.setdefault(x, []).append(it)
                if x not in preds:
                    preds.add(x)
                    todo = [x]
                    while todo:
                        for y in mentions[todo.pop()]:
                            if y not in preds:
                                preds.add(y)
                                todo.append(y)
                if minlen[x] < INF:
                    work.append((r, d + 1, o))
            elif x >= 0:                           # predict
                lst = wait.get(x)
                if lst is None:
                    wait[x] = [it]
                    work.extend((r2, 0, k) for r2 in g.by_lhs[x])
                else:
                    lst.append(it)
                if x in done:
                    work.append((r, d + 1, o))
            else:                                  # scan a terminal
                t = ~x
                lst = twait.get(t)
                if lst is None:
                    twait[t] = [it]
                    ends, reach[t] = self._scan(t, k)
                    tends[t] = ends
                else:
                    lst.append(it)
                adv = (r, d + 1, o)
                for q in tends[t]:
                    if q == k:
                        work.append(adv)
                    else:
                        pending[q].append(adv)
        if preds:
            st.univ = univ = g.universe(frozenset(preds))
            for t, occ in univ.terms.items():
                ends = tends.get(t)
                if ends is None:
                    ends, reach[t] = self._scan(t, k)
                    tends[t] = ends
                for q in ends:
                    if q > k:
                        pending[q].extend((r, d + 1, k) for r, d in occ)

    def shortest_completion(self, bound: int = INF - 1) -> int:
        """Fewest bytes that, appended to the text, complete the answer, if at most bound (else INF):
        over the items at the end position and the terminals still being lexed there, the rest of the
        item plus the cheapest way to finish the items enclosing it. That is a shortest path over
        (nonterminal, origin) nodes up to (root, 0): node (X, o) has an edge to (lhs, po) of weight
        tail[r][d + 1] for each item (r, d, po) of set o waiting on X. Dijkstra from the ends upwards
        stops at the first pop of (root, 0) and never pushes past the bound, so it visits only nodes
        cheaper than the answer: a full search of every node first (and Bellman-Ford before it) was
        most of a step on dependabot's grammar."""
        g, sets, text = self.g, self.sets, self.text
        tail, rules = g.tail, g.rules
        best: dict = {}                               # node -> least cost pushed
        last = sets[len(text.sym)]
        if last is not None:
            for r, d, o in last.items:
                w = tail[r][d]
                node = (rules[r][0], o)
                if w <= bound and w < best.get(node, INF):
                    best[node] = w
            if last.univ is not None:                 # a text ending in a loop: its predictions complete there
                for x in last.univ.preds:
                    if g.minlen[x] < INF:
                        best[(x, last.k)] = 0
        # terminals still being lexed at n: every such run was (re)scanned for this text
        for (j, t), S in self.at_end.items():
            rest = g.terms[t].remaining(S)
            if 0 < rest <= bound:
                for pr, pd, po in sets[j].twaiting(t):
                    w = rest + tail[pr][pd + 1]
                    node = (rules[pr][0], po)
                    if w <= bound and w < best.get(node, INF):
                        best[node] = w
        heap = [(w, x, o) for (x, o), w in best.items()]
        heapq.heapify(heap)
        root, done = g.root, set()
        while heap:
            w, x, o = heapq.heappop(heap)
            if (x, o) in done:
                continue
            if x == root:
                if o == 0:
                    return w
                continue
            done.add((x, o))
            for pr, pd, po in sets[o].waiting(x):
                v = w + tail[pr][pd + 1]
                node = (rules[pr][0], po)
                if v <= bound and v < best.get(node, INF):
                    best[node] = v
                    heapq.heappush(heap, (v, node[0], po))
        return INF
