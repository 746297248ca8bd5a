"""A schema compiled once into its grammar (ir.py), cached, and rendered on demand as a regex or a
Lark grammar."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from dllm.constraints.json_schema import ir
from dllm.constraints.json_schema.compiler import Compiler
from dllm.errors import ConstraintError

MAX_REF_DEPTH = 3          # regex route: expansions of a recursive $ref inside itself
REGEX_BUDGET = 20_000      # regex route: characters of the schema's regex (past it: the grammar route)


@dataclass(eq=False)
class Plan:
    """node/rules: the grammar; relaxed: "'keyword' at pointer" for the keywords left to the validator;
    recursive: some rule refers to itself (unbounded nesting)."""
    node: object
    rules: dict
    relaxed: tuple
    recursive: bool
    _regex: dict = field(default_factory=dict)
    _lark: list = field(default_factory=list)
    _grammar: list = field(default_factory=list)

    def regex(self, budget: int = REGEX_BUDGET, unroll: int = MAX_REF_DEPTH) -> str:
        """One regex (recursion unrolled `unroll` levels); RegexTooLarge past `budget` characters."""
        key = (budget, unroll)
        if key not in self._regex:
            rx = ir.to_regex(self.node, self.rules, budget, unroll)
            if rx is None:
                raise ConstraintError("the JSON schema admits no value that can be written in the supported "
                                      "subset within the unrolled nesting depth.")
            self._regex[key] = rx
        return self._regex[key]

    def regex_size(self, cap: int = REGEX_BUDGET) -> int:
        """About the length of the schema's regex, without writing it (past `cap`: some number > cap)."""
        return ir.regex_size(self.node, self.rules, cap)

    def grammar(self):
        """constraints.cfg.Grammar of the schema (built once), for the grammar route."""
        if not self._grammar:
            from dllm.constraints.json_schema.grammar import build_grammar
            self._grammar.append(build_grammar(self.node, self.rules))
        return self._grammar[0]

    def lark(self) -> str:
        """The same grammar as Lark text (for reading it; the route builds the Grammar directly)."""
        if not self._lark:
            self._lark.append(ir.to_lark(self.node, self.rules))
        return self._lark[0]


def check_whitespace(whitespace) -> None:
    if not isinstance(whitespace, str):
        raise ConstraintError(f"whitespace must be a regular expression string or None, got "
                              f"{type(whitespace).__name__}.")
    try:
        re.compile(whitespace)
        import interegular
        fsm = interegular.parse_pattern(whitespace).to_fsm()
        ok = fsm.issubset(interegular.parse_pattern("[ \\t\\n\\r]*").to_fsm())
    except Exception:  # noqa: BLE001 - interegular's parse errors share no base class
        ok = False
    if not ok:
        raise ConstraintError(f"whitespace {whitespace!r} must be a regular expression that matches only JSON "
                              f"whitespace (space, tab, newline, carriage return).")


def _build(schema, whitespace, strict: bool) -> Plan:
    if whitespace is not None:
        check_whitespace(whitespace)
    if not isinstance(schema, (dict, bool)):
        raise ConstraintError(f"the JSON schema must be an object or a boolean, got {type(schema).__name__}.")
    c = Compiler(schema, whitespace, strict)
    if isinstance(schema, dict):
        node = c.ref({"$ref": "#"}, "#")
    else:
        node = c.compile(schema, "#")
    live = ir.productive(c.rules)
    empty = node is None or (isinstance(node, tuple) and node[0] == "ref" and node[1] not in live)
    if empty:
        raise ConstraintError("the JSON schema admits no value that can be written in the supported subset "
                              "(empty enum, contradictory bounds or recursion without a base case).")
    recursive = any(k in reach for k, reach in ir.recursive_rules(c.rules).items())
    return Plan(node, c.rules, tuple(c.relaxed), recursive)


@lru_cache(maxsize=64)
def _cached(text: str, whitespace, strict: bool) -> Plan:
    return _build(json.loads(text), whitespace, strict)


def plan_schema(schema, *, whitespace: str | None = None, strict: bool = False) -> Plan:
    """The compiled grammar of `schema` (cached per schema text, whitespace and strictness). Raises
    ConstraintError for an invalid schema, an external $ref, an empty language, or (strict) a keyword
    that decoding cannot enforce."""
    try:
        try:
            text = json.dumps(schema, allow_nan=False, sort_keys=False)
        except (TypeError, ValueError):
            return _build(schema, whitespace, strict)
        return _cached(text, whitespace, bool(strict))
    except RecursionError:   # the compiler walks nesting, and an object's entries as a chain, recursively
        raise ConstraintError(TOO_DEEP) from None


TOO_DEEP = ("the JSON schema nests too deeply, or has an object with too many entries (about 1,000), to "
            "compile.")


def schema_to_regex(schema, *, whitespace: str | None = None, strict: bool = False) -> str:
    """Regular expression whose full matches are JSON texts under `schema` (recursion unrolled
    MAX_REF_DEPTH levels; relaxed keywords, see the package docstring, left out unless strict).
    Raises RegexTooLarge (a ConstraintBudgetError) past 10x DLLM_CONSTRAINT_POSITIONS characters,
    more than any regex the compiler takes: Kubernetes-sized schemas wrote 5-25 million characters
    (and ran out of memory) before."""
    from dllm.constraints.budget import Budget

    return plan_schema(schema, whitespace=whitespace, strict=strict).regex(budget=10 * Budget().positions)
