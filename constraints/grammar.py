"""Lark grammar -> regular expression (a sound, depth-bounded approximation of the CFG).

The grammar is compiled by lark; its BNF rules (after lark's EBNF expansion) are turned into
one regex over characters:
  terminal T        -> (?:IGNORE)*(?:T's regex)        IGNORE = the %ignore terminals
  rule R            -> alternation of its expansions, each the concatenation of its symbols
  R: A | R B        -> (?:A)(?:B)*                      left recursion (lark's x* / x+ helpers)
  R: A | B R        -> (?:B)*(?:A)                      right recursion
  other recursion   -> unrolled up to `depth` nested uses of the rule (deeper branches dropped)
and the whole answer is start's regex followed by (?:IGNORE)*. Every string of the regex is in
the grammar's language (as a CFG over characters whose terminals are regexes, i.e. what lark's
Earley parser with lexer="dynamic_complete" accepts); strings that need more nesting than
`depth` are not produced. The regex then goes through the same token DFA and DINGO dynamic
program as any regex, so templates (infilling) and every scheduler work unchanged.

This is not the CFG-intersection check of constrained-diffusion (arXiv 2508.10111): that
handles unbounded nesting; this bounds it and reuses the regular machinery.
"""
from __future__ import annotations

import re
from functools import lru_cache

from dllm.constraints.budget import Budget
from dllm.errors import ConstraintBudgetError, ConstraintError

DEPTH = 3


# Terminal idioms of lark's common.lark (and grammars written like it) whose regex relies on a
# lookbehind or a lazy quantifier, with the regular expression of the strings lark's lexer takes as
# one token (re.match of the idiom covers the whole string): the escaped string (a quote, characters
# other than newline, the first quote not escaped by an odd run of backslashes closes it) and the C
# comment (closed by the first "*/"). Lookarounds and laziness cannot be compiled to a DFA as such.
_ESCAPED = re.compile(r'(["\'`])\.\*\?\(\?<!\\\\\)\(\\\\\\\\\)\*\?\1')
_C_COMMENT = re.compile(r"/\\\*\(\.\|(?:\n|\\n)\)\*\?\\\*/")     # newline written raw or as \n


def lexer_equivalent(rx: str) -> str:
    """rx with the idioms above replaced by lookaround-free, eager equivalents."""
    rx = _C_COMMENT.sub(lambda m: r"/\*(?:[^*]|\*+[^*/])*\*+/", rx)
    return _ESCAPED.sub(lambda m: f"{m[1]}(?:[^{m[1]}\\\\\\n]|\\\\[^\\n])*{m[1]}", rx)


_IMPORT = re.compile(r"^[ \t]*%import[ \t]+([^\s(]+)", re.M)
_BUNDLED = ("common", "lark", "python", "unicode")   # the grammars lark ships (lark/grammars/*.lark)


def _check_imports(grammar: str):
    """Only lark's bundled grammars may be imported: lark resolves any other %import (relative or not) to a
    file under the working directory, and a grammar must never read files."""
    for m in _IMPORT.finditer(grammar):
        path = m[1]
        if path.startswith(".") or path.split(".")[0] not in _BUNDLED or path.count(".") > 1:
            raise ConstraintError(f"a grammar may %import only lark's bundled grammars ({', '.join(_BUNDLED)}), "
                                  f"not files ({path!r}); inline the rules.")


def load_lark(grammar: str, start: str = "start"):
    """Compile Lark text with lark -> (parser, {terminal name: regex}, ignore regex or "").
    Shared by both grammar modes (this file's regex and constraints/cfg.py's CFG check)."""
    try:
        from lark import Lark
    except ImportError:   # pragma: no cover - lark is a dependency
        raise ConstraintError("grammar constraints need the lark package (pip install lark).") from None
    _check_imports(grammar)
    limit = Budget().positions         # lark's own compile (not interruptible) takes ~1 s per 25k characters
    if len(grammar) > limit:
        raise ConstraintBudgetError(f"the grammar is {len(grammar):,} characters long; grammar constraints take at "
                                    f"most {limit:,} (raise DLLM_CONSTRAINT_POSITIONS).")
    try:
        parser = Lark(grammar, start=start, parser="earley", lexer="dynamic_complete")
    except Exception as e:   # lark raises LarkError and, for some malformed grammars, plain exceptions
        raise ConstraintError(f"the grammar does not compile: {' '.join(str(e).split())[:300]}") from None
    terminals = {}
    for t in parser.terminals:
        if t.pattern.flags:
            raise ConstraintError(f"terminal {t.name} uses regex flags {sorted(t.pattern.flags)}, which grammar "
                                  "constraints do not support.")
        terminals[t.name] = lexer_equivalent(t.pattern.to_regexp())
    return parser, terminals, "|".join(f"(?:{terminals[n]})" for n in parser.ignore_tokens)


def grammar_to_regex(grammar: str, start: str = "start", depth: int = DEPTH, budget: Budget | None = None) -> str:
    """The grammar's regex. Past the budget (a regex longer than 10 x budget.positions characters,
    rules nested too deeply for Python's stack, or the wall-clock cap) ConstraintBudgetError names
    the rule being expanded."""
    budget = budget or Budget()
    try:
        return _grammar_to_regex(grammar, start, depth, budget.positions, budget.seconds)
    except RecursionError:
        raise ConstraintBudgetError("the grammar's rules nest too deeply to unroll into a regex; use "
                                    "grammar_mode='cfg'.") from None


@lru_cache(maxsize=64)
def _grammar_to_regex(grammar: str, start: str, depth: int, positions: int, seconds: float) -> str:
    budget = Budget(positions=positions, seconds=seconds)
    limit = 10 * positions
    parser, terminals, ignore = load_lark(grammar, start)
    skip = f"(?:{ignore})*" if ignore else ""
    rules: dict[str, list[list]] = {}
    for r in parser.rules:
        rules.setdefault(r.origin.name, []).append(list(r.expansion))
    if start not in rules:
        raise ConstraintError(f"the grammar has no {start!r} rule.")

    def symbol(sym, stack):
        if sym.is_term:
            return f"{skip}(?:{terminals[sym.name]})"
        return rule(sym.name, stack)

    def seq(symbols, stack):
        parts = []
        for s in symbols:
            x = symbol(s, stack)
            if x is None:
                return None
            parts.append(x)
        return "".join(parts)

    def alt(options):
        options = [o for o in options if o is not None]
        if not options:
            return None
        return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"

    def uses(name, exps):
        return any(not s.is_term and s.name == name for e in exps for s in e)

    def rule(name, stack):
        exps = rules[name]
        left = [e[1:] for e in exps if e and not e[0].is_term and e[0].name == name]
        right = [e[:-1] for e in exps if e and not e[-1].is_term and e[-1].name == name and not
                 (not e[0].is_term and e[0].name == name)]
        inner = stack + (name,)
        if left and not right:
            base = [e for e in exps if not (e and not e[0].is_term and e[0].name == name)]
            if not uses(name, base) and not uses(name, left):
                b, r = alt(seq(e, inner) for e in base), alt(seq(e, inner) for e in left)
                return None if b is None else (b if r is None else f"(?:{b})(?:{r})*")
        if right and not left:
            base = [e for e in exps if not (e and not e[-1].is_term and e[-1].name == name)]
            if not uses(name, base) and not uses(name, right):
                b, r = alt(seq(e, inner) for e in base), alt(seq(e, inner) for e in right)
                return None if b is None else (b if r is None else f"(?:{r})*(?:{b})")
        if stack.count(name) >= depth:
            return None
        budget.tick(f"rule {name}")
        out = alt(seq(e, inner) for e in exps)
        if out is not None and len(out) > limit:
            raise ConstraintBudgetError(
                f"the grammar's rule {name} unrolls to a regex of more than {limit:,} characters in "
                "grammar_mode='regex'; use grammar_mode='cfg' or raise DLLM_CONSTRAINT_POSITIONS.")
        return out

    body = rule(start, ())
    if body is None:
        raise ConstraintError(f"the grammar derives no string within {depth} levels of nesting.")
    return body + skip
