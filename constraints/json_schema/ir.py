"""The schema compiler's output: a small grammar over JSON text, rendered as one regex (the token-DFA
route) or as a Lark grammar (the Earley route of constraints/cfg.py).

A node is
    None                        the empty language
    str                         a terminal: a regex fragment that never matches "" (a value, a key, ", ")
    ("seq", (n1, n2, ...))      concatenation; EPS = ("seq", ()) is the empty string
    ("alt", (n1, n2, ...))      union (EPS among them makes it optional)
    ("rep", n, lo, hi)          lo..hi copies (hi None: unbounded)
    ("ref", key)                the rule `key` of the compiler's rule table (shared or recursive)
"""
from __future__ import annotations

from dllm.constraints.json_schema.text import _alt, _rep
from dllm.errors import ConstraintBudgetError

EPS = ("seq", ())


FLATTEN = 8   # a nested seq of at most this many parts is spliced in; a longer one stays one part


def seq(*parts):
    """Concatenation. Nested short sequences are spliced in; a longer one stays a unit, so that a
    chain built link by link (an object's optional entries: seq(entry?, rest)) stays linear in size
    and the grammar route gets one nonterminal per link instead of rules as long as the object
    (renovate: 300-entry objects made 349k-symbol rule sets and 250k+ Earley items per check)."""
    out = []
    for p in parts:
        if p is None:
            return None
        if isinstance(p, tuple) and p[0] == "seq" and len(p[1]) <= FLATTEN:
            out.extend(p[1])
        elif p != "":
            out.append(p)
    if not out:
        return EPS
    return out[0] if len(out) == 1 else ("seq", tuple(out))


def alt(parts):
    out = []
    for p in parts:
        if p is None:
            continue
        if isinstance(p, tuple) and p[0] == "alt":
            out.extend(x for x in p[1] if x not in out)
        elif p not in out:
            out.append(p)
    if not out:
        return None
    return out[0] if len(out) == 1 else ("alt", tuple(out))


def rep(x, lo: int, hi):
    if hi == 0 or x == EPS:
        return EPS
    if x is None:
        return EPS if lo == 0 else None
    if lo == hi == 1:
        return x
    return ("rep", x, lo, hi)


def lst(x, lo: int, hi, sep):
    """lo..hi copies of x separated by sep."""
    if hi is not None and lo > hi:
        return None
    if hi == 0:
        return EPS
    first = seq(x, rep(seq(sep, x), max(lo - 1, 0), None if hi is None else hi - 1))
    return first if lo >= 1 else rep(first, 0, 1)


# ---------------------------------------------------------------- one regex


class RegexTooLarge(ConstraintBudgetError):
    """The schema's regex passes the size the token-DFA route takes (the grammar route gets it)."""


def _refs(n, out: set) -> set:
    """The rule keys that n refers to (directly, not through other rules). Nodes are a DAG (the
    compiler shares subtrees), so each tuple is walked once: a tree walk is exponential on some
    schemas (travis: 680 million visits)."""
    seen, todo = set(), [n]
    while todo:
        n = todo.pop()
        if not isinstance(n, tuple) or id(n) in seen:
            continue
        seen.add(id(n))
        if n[0] == "ref":
            out.add(n[1])
        elif n[0] == "rep":
            todo.append(n[1])
        else:
            todo.extend(n[1])
    return out


def recursive_rules(rules: dict) -> dict:
    """{key: the recursive rules (those inside a cycle) that key reaches, itself included}."""
    succ = {k: _refs(v, set()) for k, v in rules.items()}
    reach: dict = {}
    for k in rules:                                  # DFS per rule: schemas hold a few thousand rules
        seen, todo = set(), list(succ[k])
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo.extend(succ.get(x, ()))
        reach[k] = seen
    cyclic = {k for k in rules if k in reach[k]}
    return {k: (reach[k] | {k}) & cyclic for k in rules}


def regex_size(node, rules: dict, cap: int) -> int:
    """About how many characters to_regex would write for node (rules inlined, each part counted
    once per use), in time linear in the DAG: each tuple and rule is sized once. Stops counting past
    `cap` (returns a number > cap). Recursive rules count `cap + 1`: they never fit one regex of the
    grammar-capable route's taste, and the caller routes them by plan.recursive anyway."""
    memo: dict = {}
    busy: set = set()

    def size(n) -> int:
        if n is None:
            return 0
        if isinstance(n, str):
            return len(n)
        k = id(n) if n[0] != "ref" else ("ref", n[1])
        if k in memo:
            return memo[k]
        if k in busy:
            return cap + 1
        busy.add(k)
        if n[0] == "ref":
            out = size(rules.get(n[1]))
        elif n[0] == "rep":
            out = size(n[1]) + 10                   # (?:x){m,n}
        else:
            out = 0
            for p in n[1]:
                out += size(p) + (n[0] == "alt")   # "|" between alternatives
                if out > cap:
                    break
            out += 6 if n[0] == "alt" else 0        # (?:...)
        busy.discard(k)
        memo[k] = out = min(out, cap + 1)
        return out

    return size(node)


def to_regex(node, rules: dict, budget: int, unroll: int) -> str | None:
    """The regex of node, rules inlined; a rule inside itself is expanded at most `unroll` times (the
    innermost expansion empty). Raises RegexTooLarge past `budget` characters."""
    rec = recursive_rules(rules)
    memo: dict = {}
    active: dict = {}

    def go(n):
        if n is None or isinstance(n, str):
            return n
        kind = n[0]
        if kind == "ref":
            key = n[1]
            # a rendering is reusable unless it reaches a recursive rule that is being expanded now
            pure = not any(active.get(k) for k in rec[key])
            if pure and key in memo:
                return memo[key]
            depth = active.get(key, 0)
            if depth > unroll:
                return None
            active[key] = depth + 1
            out = go(rules[key])
            active[key] = depth
            if pure:
                memo[key] = out
            return out
        if kind == "seq":
            parts = []
            for p in n[1]:
                x = go(p)
                if x is None:
                    return None
                parts.append(x)
            out = "".join(parts)
        elif kind == "alt":
            out = _alt([go(p) for p in n[1]])
        else:
            x = go(n[1])
            out = ("" if n[2] == 0 else None) if x is None else _rep(x, n[2], n[3])
        if out is not None and len(out) > budget:
            raise RegexTooLarge(f"the JSON schema's regular expression passes {budget} characters.")
        return out

    return go(node)


# ---------------------------------------------------------------- a Lark grammar


def productive(rules: dict) -> set:
    """Rule keys that derive at least one string (least fixed point)."""
    done: set = set()

    def ok(n) -> bool:
        if n is None:
            return False
        if isinstance(n, str):
            return True
        if n[0] == "ref":
            return n[1] in done
        if n[0] == "seq":
            return all(ok(p) for p in n[1])
        if n[0] == "alt":
            return any(ok(p) for p in n[1])
        return n[2] == 0 or ok(n[1])

    changed = True
    while changed:
        changed = False
        for key, body in rules.items():
            if key not in done and ok(body):
                done.add(key)
                changed = True
    return done


def _shared(roots) -> set:
    """ids of the tuples (other than refs) that several parents reach: the DAG's shared parts."""
    seen, shared, todo = set(), set(), list(roots)
    while todo:
        n = todo.pop()
        if not isinstance(n, tuple) or n[0] == "ref":
            continue
        if id(n) in seen:
            shared.add(id(n))
            continue
        seen.add(id(n))
        todo.extend([n[1]] if n[0] == "rep" else n[1])
    return shared


def to_lark(node, rules: dict) -> str:
    """Lark grammar text whose language is node's: every rule and every repetition, optional part or
    alternation becomes a BNF rule of its own (no `[..]` / `?` inside a rule, whose EBNF expansion
    would multiply that rule's alternatives), every terminal a /regex/ terminal."""
    live = productive(rules)
    shared = _shared([node] + list(rules.values()))
    done: dict = {}                                # id of a shared tuple -> its rule name
    names: dict = {}
    terms: dict = {}
    lines: list = []

    def term(rx: str) -> str:
        if rx not in terms:
            terms[rx] = f"T{len(terms)}"
        return terms[rx]

    def new_rule(alts) -> str:
        name = f"h{len(names) + len(lines)}"
        lines.append(f"{name}: " + " | ".join(alts))
        return name

    def rule_of(key) -> str:
        if key not in names:
            names[key] = f"r{len(names)}"
            body = expr_alts(rules[key])
            lines.append(f"{names[key]}: " + " | ".join(body))
        return names[key]

    def expr(n) -> str | None:
        """One Lark expression for n (a symbol or a space-separated sequence), None if empty. A tuple
        reached from several places becomes a rule of its own (written once)."""
        if isinstance(n, tuple) and n[0] != "ref" and id(n) in shared:
            if id(n) not in done:
                alts = expr_alts(n)
                done[id(n)] = new_rule(alts) if alts else None
            return done[id(n)]
        return expr_body(n)

    def expr_body(n) -> str | None:
        if n is None:
            return None
        if isinstance(n, str):
            return term(n)
        kind = n[0]
        if kind == "ref":
            return rule_of(n[1]) if n[1] in live else None
        if kind == "seq":
            parts = [expr(p) for p in n[1]]
            return None if None in parts else " ".join(parts) if parts else ""
        if kind == "alt":
            alts = expr_alts(n)
            return None if not alts else alts[0] if len(alts) == 1 and " " not in alts[0] and alts[0] else \
                new_rule(alts)
        x, lo, hi = expr(n[1]), n[2], n[3]
        if x is None:
            return "" if lo == 0 else None
        unit = x if " " not in x and x else new_rule([x])
        body = " ".join([unit] * lo)
        if hi is None:
            return (body + " " + unit + "*").strip()
        tail = ""
        for _ in range(hi - lo):                   # nested optionals: unit (unit (...)?)?
            tail = new_rule([(unit + " " + tail).strip(), ""])
        return (body + " " + tail).strip()

    def expr_alts(n) -> list:
        if isinstance(n, tuple) and n[0] == "alt":
            out = [expr(p) for p in n[1]]
            return [x for x in dict.fromkeys(out) if x is not None]
        x = expr_body(n) if isinstance(n, tuple) and n[0] != "ref" else expr(n)
        return [] if x is None else [x]

    top = expr(node)
    if top is None:
        return ""
    lines.insert(0, f"start: {top}")
    for rx, name in terms.items():
        lines.append(f"{name}: /{rx.replace('/', chr(92) + '/')}/")
    return "\n".join(lines) + "\n"
