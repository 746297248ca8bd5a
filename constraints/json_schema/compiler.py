"""JSON Schema -> grammar (ir.py): dispatch, `$ref` rules, enum/const, anyOf/oneOf, scalars.

Containers (objects, arrays) are in containers.py. The language is a subset of the valid JSON texts,
chosen to be small and natural for a model (see the package docstring for the style); keywords that
no grammar expresses are "relaxed" (left out during decoding, listed in `relaxed`, checked on the
finished answer) or, when strict, refused with one sentence.
"""
from __future__ import annotations

import json
import math
import re
from fractions import Fraction

from dllm.constraints.json_schema import ir
from dllm.constraints.json_schema.containers import Containers
from dllm.constraints.json_schema.formats import FORMATS
from dllm.constraints.json_schema.numbers import integer_range_regex, number_range_regex
from dllm.constraints.json_schema.pattern import _Pattern
from dllm.constraints.json_schema.refs import Document, ptr
from dllm.constraints.json_schema.rewrite import TYPES, assertions, json_eq, merge, normalize, num
from dllm.constraints.json_schema.text import _CHAR, _INT, _KEYCHAR, _NUMBER, _STRING, _alt, _atomic, _lit, \
    _not_words, _rep
from dllm.errors import ConstraintError

ANY_DEPTH = 1              # container nesting depth of an unconstrained ("any JSON") value
ENUM_INLINE = 32           # enums with more values stay alternatives of the grammar, not one regex
STRING_CAP = 64            # maxLength above this is cut to it (a subset: shorter strings are valid too)
MEMO_TEXT = 4096           # an allOf whose JSON text is at most this long is compiled once per text
INLINE = 2000              # a $ref target whose regex is at most this long is inlined, else a rule
_MAX_NESTING = 200         # compile recursion guard (self-referential allOf chains)
_BUSY = object()
_KW_TYPE = {
    "object": ("properties", "required", "additionalProperties", "minProperties", "maxProperties",
               "unevaluatedProperties", "patternProperties", "propertyNames"),
    "array": ("items", "prefixItems", "additionalItems", "minItems", "maxItems", "unevaluatedItems",
              "uniqueItems", "contains"),
    "string": ("minLength", "maxLength", "pattern", "format", "x-dllm-not-pattern", "x-dllm-pattern"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}


def _schema_error(where):
    return ConstraintError(f"the schema at {where} is not an object or a boolean.")


class Compiler(Containers):
    ANY_DEPTH = ANY_DEPTH

    def __init__(self, root, whitespace: str | None, strict: bool):
        self.doc = Document(root)
        self.strict = strict
        self.rules: dict = {}          # rule key -> node (shared or recursive subschemas)
        self.done: dict = {}           # $ref key -> what a reference to it compiles to
        self.relaxed: list = []        # "'keyword' at pointer" for each keyword left to the validator
        self.depth = 0
        self._any: dict = {}
        self._validator = None
        if whitespace is None:
            self.item_sep, self.key_sep, self.pad = ", ", ": ", ""
        else:
            w = whitespace if whitespace == "" or _atomic(whitespace) else f"(?:{whitespace})"
            self.item_sep, self.key_sep, self.pad = w + "," + w, w + ":" + w, w

    # -- bookkeeping

    def relax(self, keyword: str, where: str):
        if self.strict:
            raise ConstraintError(f"JSON Schema keyword '{keyword}' at {where} cannot be enforced while decoding, "
                                  f"and json_schema_strict=True refuses what it would only check afterwards.")
        item = f"'{keyword}' at {where}"
        if item not in self.relaxed:
            self.relaxed.append(item)

    @staticmethod
    def format_known(fmt) -> bool:
        return fmt in FORMATS

    def validator(self):
        if self._validator is None:
            import jsonschema
            root = self.doc.root if isinstance(self.doc.root, dict) else {}
            cls = jsonschema.validators.validator_for(root, default=jsonschema.Draft202012Validator)
            self._validator = cls(root)
        return self._validator

    def is_valid(self, value, schema, where: str) -> bool:
        try:
            return self.validator().evolve(schema=schema).is_valid(value)
        except Exception as e:  # noqa: BLE001 - jsonschema/referencing fail in many ways on a bad schema
            raise ConstraintError(f"the keywords at {where} cannot be checked: {str(e).splitlines()[0]}") from None

    # -- $ref

    def deref(self, s, where: str, hops: int = 0):
        if not isinstance(s, dict) or "$ref" not in s:
            return s
        if hops > 32:
            raise ConstraintError(f"the $ref chain at {where} refers to itself without ever reaching a schema.")
        target, tw = self.doc.resolve(s["$ref"], where)
        target = self.deref(target, tw, hops + 1)
        rest = {k: v for k, v in assertions(s).items() if k != "$ref"}
        return merge(self, target, rest, where) if rest else target

    def ref(self, s: dict, where: str):
        target, tw = self.doc.resolve(s["$ref"], where)
        rest = {k: v for k, v in assertions(s).items() if k != "$ref"}
        key = tw if not rest else tw + "|" + json.dumps(rest, sort_keys=True, default=str)
        return self.memo(key, lambda: self.compile(merge(self, target, rest, where), where) if rest
                         else self.compile(target, tw))

    def memo(self, key: str, build):
        """The node of a subschema compiled once per key; met again inside itself, it becomes a rule
        (the recursion then goes through the grammar route, never unrolled)."""
        if key in self.done:
            got = self.done[key]
            if got is _BUSY:                              # recursion: a rule, defined once compiled
                self.done[key] = ("ref", key)
                self.rules[key] = None
                return ("ref", key)
            return got
        self.done[key] = _BUSY
        node = build()
        if self.done[key] is not _BUSY:                   # referenced inside itself
            self.rules[key] = node
            return ("ref", key)
        if node is None or (isinstance(node, str) and len(node) <= INLINE):
            self.done[key] = node
            return node
        self.rules[key] = node
        self.done[key] = ("ref", key)
        return ("ref", key)

    def flat(self, s, where: str):
        """s with $ref, conditionals and allOf merged away: one dict (or a boolean)."""
        s = self.deref(s, where)
        if not isinstance(s, dict):
            return s
        s = normalize(self, s, where)
        return self.merge_all(s, where) if isinstance(s.get("allOf"), list) else s

    # -- dispatch

    def compile(self, s, where: str):
        if s is True:
            return self.any(ANY_DEPTH)
        if s is False:
            return None
        if not isinstance(s, dict):
            raise _schema_error(where)
        self.depth += 1
        try:
            if self.depth > _MAX_NESTING:
                raise ConstraintError(f"the schema at {where} nests too deeply or refers to itself without "
                                      f"an object or array in between.")
            for k in ("$dynamicRef", "$recursiveRef"):
                if k in s and "$ref" not in s:
                    s = dict(s, **{"$ref": s[k]})
            if "$ref" in s:
                return self.ref(s, where)
            s = normalize(self, s, where)
            if "allOf" in s:
                return self.all_of(s, where)
            if "enum" in s or "const" in s:
                return self.enum(s, where)
            self.check(s, where)
            if "anyOf" in s or "oneOf" in s:
                return self.union(s, where)
            return self.typed(s, where)
        finally:
            self.depth -= 1

    def all_of(self, s: dict, where: str):
        """An allOf: identical parts once; a lone part with no sibling keyword is compiled as itself (a
        `$ref` stays a reference); otherwise merged, memoised by the schema's text when that is small,
        so that an allOf of $refs that leads back to itself becomes a rule instead of being unrolled
        again at every level (renovate: {"allOf": [{"$ref": "#/definitions/group"}, ...]} inside group)."""
        if not isinstance(s["allOf"], list):
            raise ConstraintError(f"'allOf' at {where} must be a list of schemas.")
        parts = list({json.dumps(p, sort_keys=True, default=str): p for p in s["allOf"]}.values())
        rest = {k: v for k, v in assertions(s).items() if k != "allOf"}
        if len(parts) == 1 and not rest:
            return self.compile(parts[0], where)
        text = json.dumps(s, sort_keys=True, default=str)
        if len(text) > MEMO_TEXT:
            return self.compile(self.merge_all(s, where), where)
        base = self.doc.base_of(where)                    # its $refs resolve against the base URI in force
        return self.memo(f"allOf|{base}|{text}", lambda: self.compile(self.merge_all(s, where), where))

    def merge_all(self, s: dict, where: str):
        """s with its allOf merged in, and the allOfs those parts bring; a part met twice is merged once
        (A and A = A), which also ends reference cycles such as {"$ref": "#", "allOf": [...]}."""
        out = {k: v for k, v in s.items() if k != "allOf"}
        pending, seen = list(s["allOf"]), set()
        while pending:
            sub = pending.pop(0)
            key = json.dumps(sub, sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            if len(seen) > 512:
                raise ConstraintError(f"the allOf at {where} keeps growing as its parts are merged.")
            out = merge(self, out, sub, ptr(where, "allOf"))
            if not isinstance(out, dict):
                return out
            if isinstance(out.get("allOf"), list):
                pending += out.pop("allOf")
        return out

    def check(self, s: dict, where: str):
        if s.get("uniqueItems", False) is not False:
            mx = s.get("maxItems")
            if not (num(mx) and mx <= 1):
                self.relax("uniqueItems", where)
        if "multipleOf" in s and not (num(s["multipleOf"]) and s["multipleOf"] == 1):
            if not (num(s["multipleOf"]) and s["multipleOf"] > 0):
                raise ConstraintError(f"'multipleOf' at {where} must be a number > 0.")
            self.relax("multipleOf", where)
        for k in ("unevaluatedProperties", "unevaluatedItems"):
            if k in s and not isinstance(s[k], bool):
                self.relax(k, where)

    def union(self, s: dict, where: str):
        for k in ("anyOf", "oneOf"):
            if k in s and (not isinstance(s[k], list) or not s[k]):
                raise ConstraintError(f"'{k}' at {where} must be a non-empty list of schemas.")
        if "anyOf" in s and "oneOf" in s:
            key = "anyOf"
            branches = [{"allOf": [x, y]} for x in s["anyOf"] for y in s["oneOf"]]
            self.relax("oneOf", where)
        else:
            key = "anyOf" if "anyOf" in s else "oneOf"
            branches = s[key]
        rest = {k: v for k, v in assertions(s).items() if k not in ("anyOf", "oneOf")}
        vals = self.enum_union(branches, key, where)
        if vals is not None:                              # a union of enums is one enum
            return self.enum(dict(rest, enum=vals), where)
        if key == "oneOf" and not self.exclusive(branches, rest, where):
            self.relax("oneOf", where)
        alts = []
        for i, b in enumerate(branches):
            w = ptr(where, key, i)
            alts.append(self.compile(merge(self, rest, b, w) if rest else b, w))
        return ir.alt(alts)

    def enum_union(self, branches, key: str, where: str):
        """The values of an anyOf/oneOf whose branches are all enum/const (nothing else), else None; a
        oneOf drops the values that two branches share (they satisfy both, so they are invalid).
        azure-pipelines: 260 task-name branches, each merged with the sibling pattern one by one cost
        67k merges and compiles."""
        groups = []
        for i, b in enumerate(branches):
            b = self.deref(b, ptr(where, key, i))
            a = assertions(b) if isinstance(b, dict) else None
            if not a or not set(a) <= {"enum", "const"} or not isinstance(a.get("enum", []), list):
                return None
            vals = list(a["enum"]) if "enum" in a else [a["const"]]
            if "const" in a:
                vals = [x for x in vals if json_eq(x, a["const"])]
            groups.append(vals)
        keyed = [{_canon(x): x for x in vals} for vals in groups]      # canonical text -> value, per branch
        seen = {}
        for g in keyed:
            for k in g:
                seen[k] = seen.get(k, 0) + 1
        out = {}
        for g in keyed:
            for k, x in g.items():
                if k not in out and (key == "anyOf" or seen[k] == 1):
                    out[k] = x
        return list(out.values())

    def exclusive(self, branches, rest, where) -> bool:
        """True when no value can satisfy two oneOf branches (a sufficient test: their types differ, or
        their const/enum values do, or those of one required property do)."""
        sig = [self.signature(merge(self, rest, b, where) if rest else self.deref(b, where)) for b in branches]
        for i in range(len(sig)):
            for j in range(i):
                if not _disjoint(sig[i], sig[j]):
                    return False
        return True

    def signature(self, s):
        """(types or None, values or None, {required property: values}) of a subschema."""
        if s is False:
            return (frozenset(), None, {})
        if not isinstance(s, dict):
            return (None, None, {})
        s = normalize(self, s, "#")
        t = s.get("type")
        types = None if t is None else frozenset([t] if isinstance(t, str) else t)
        if types is not None and "number" in types:
            types = types | {"integer"}
        vals = s.get("enum") if isinstance(s.get("enum"), list) else [s["const"]] if "const" in s else None
        if vals is not None:
            types = frozenset(_type_of(v) for v in vals) if types is None else types
        props = {}
        req = s.get("required", []) if isinstance(s.get("required"), list) else []
        for name in req:
            sub = self.deref((s.get("properties") or {}).get(name, True), "#")
            if isinstance(sub, dict):
                pv = sub.get("enum") if isinstance(sub.get("enum"), list) else [sub["const"]] if "const" in sub else None
                if pv is not None:
                    props[name] = pv
        if types is None:
            implied = [ty for ty, kws in _KW_TYPE.items() if any(k in s for k in kws)]
            if implied and not any(k in s for k in ("anyOf", "oneOf", "allOf")):
                types = frozenset(implied) | ({"integer"} if "number" in implied else set())
        return (types, vals, props)

    def enum(self, s: dict, where: str):
        if "enum" in s:
            vals = s["enum"]
            if not isinstance(vals, list):
                raise ConstraintError(f"'enum' at {where} must be a list.")
            if "const" in s:
                vals = [x for x in vals if json_eq(x, s["const"])]
        else:
            vals = [s["const"]]
        rest = {k: v for k, v in assertions(s).items() if k not in ("enum", "const")}
        banned = rest.pop("x-dllm-not-in", [])
        vals = [x for x in vals if not any(json_eq(x, y) for y in banned)]
        if rest and vals:
            vals = self.enum_filter(vals, rest, where)
        lits = [self.literal(x, where) for x in vals]
        # many values: one grammar alternative each (one literal terminal each on the grammar route)
        return _alt(lits) if len(lits) <= ENUM_INLINE else ir.alt(lits)

    def enum_filter(self, vals: list, rest: dict, where: str) -> list:
        """The values that also satisfy the sibling keywords. A lone `pattern` is checked with re.search
        as jsonschema does (azure-pipelines merges ~260 task names with ~260 patterns: 67k checks, 4 s
        through jsonschema's validator)."""
        if list(rest) == ["pattern"] and isinstance(rest["pattern"], str):
            try:
                rx = re.compile(rest["pattern"])
            except re.error:
                rx = None
            if rx is not None:
                return [x for x in vals if not isinstance(x, str) or rx.search(x)]
        return [x for x in vals if self.is_valid(x, rest, where)]

    def literal(self, v, where: str) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return _lit(str(v))
        if isinstance(v, float):
            if not math.isfinite(v):
                raise ConstraintError(f"the enum/const value {v!r} at {where} is not a JSON number.")
            return _lit(json.dumps(v))
        if isinstance(v, str):
            return _lit(json.dumps(v, ensure_ascii=False))
        if isinstance(v, (list, tuple)):
            return self.wrap("\\[", self.item_sep.join(self.literal(x, where) for x in v), "\\]")
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise ConstraintError(f"an enum/const object at {where} has a key that is not a string.")
            return self.wrap("\\{", self.item_sep.join(
                _lit(json.dumps(k, ensure_ascii=False)) + self.key_sep + self.literal(x, where)
                for k, x in v.items()), "\\}")
        raise ConstraintError(f"the enum/const value {v!r} at {where} is not a JSON value.")

    def wrap(self, open_: str, body, close: str):
        if body is None:
            return None
        if isinstance(body, str):
            return open_ + self.pad + body + self.pad + close
        return ir.seq(open_ + self.pad, body, self.pad + close)

    def any(self, depth: int) -> str:
        if depth not in self._any:
            parts = ["null", "true", "false", _NUMBER, _STRING]
            if depth > 0:
                inner = self.any(depth - 1)
                parts.append(self.wrap("\\[", _list_rx(inner, self.item_sep), "\\]"))
                parts.append(self.wrap("\\{", _list_rx(_STRING + self.key_sep + inner, self.item_sep), "\\}"))
            self._any[depth] = _alt(parts)
        return self._any[depth]

    def typed(self, s: dict, where: str):
        t = s.get("type")
        if t is None:
            types = [ty for ty, kws in _KW_TYPE.items() if any(k in s for k in kws)]
            if not types:
                types = list(TYPES) if s.get("x-dllm-not-in") else None
                if types is None:
                    return self.any(ANY_DEPTH)
        else:
            types = [t] if isinstance(t, str) else t
            if not isinstance(types, list) or not types or any(ty not in TYPES for ty in types):
                raise ConstraintError(f"'type' at {where} must be one of {', '.join(TYPES)} or a list of "
                                      f"them, got {t!r}.")
        if "number" in types and "integer" in types:
            types = [ty for ty in types if ty != "integer"]
        banned = s.get("x-dllm-not-in", [])
        alts = []
        for ty in types:
            if ty == "null":
                alts.append(None if None in banned else "null")
            elif ty == "boolean":
                alts.append(_alt([b for b, v in (("true", True), ("false", False))
                                  if not any(json_eq(v, x) for x in banned)]))
            elif ty == "string":
                alts.append(self.string(s, where))
            elif ty in ("integer", "number"):
                alts.append(self.number(s, where, integer=ty == "integer"))
            elif ty == "array":
                alts.append(self.array(s, where))
            else:
                alts.append(self.object(s, where))
        if any(isinstance(b, (list, dict)) for b in banned) and any(ty in ("array", "object") for ty in types):
            self.relax("not", where)
        return ir.alt(alts)

    # -- scalars

    def nonneg_int(self, s: dict, key: str, where: str, default):
        v = s.get(key, default)
        if v is default:
            return v
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConstraintError(f"'{key}' at {where} must be a non-negative integer, got {v!r}.")
        return v

    def bounds(self, s: dict, where: str):
        """(lo, lo exclusive, hi, hi exclusive) as Fractions or None."""
        def value(key):
            v = s[key]
            if not num(v) or (isinstance(v, float) and not math.isfinite(v)):
                raise ConstraintError(f"'{key}' at {where} must be a finite number, got {v!r}.")
            return Fraction(repr(v)) if isinstance(v, float) else Fraction(v)

        out = []
        for inc, exc, tighter in (("minimum", "exclusiveMinimum", max), ("maximum", "exclusiveMaximum", min)):
            cands = []
            if inc in s:
                cands.append((value(inc), s.get(exc) is True))            # draft-4 boolean exclusive
            if exc in s and not isinstance(s[exc], bool):
                cands.append((value(exc), True))
            if not cands:
                out += [None, False]
                continue
            b = tighter(c[0] for c in cands)
            out += [b, any(c[1] for c in cands if c[0] == b)]
        return tuple(out)

    def number(self, s: dict, where: str, integer: bool):
        if not integer and "multipleOf" in s and s["multipleOf"] == 1:
            integer = True
        lo, lo_ex, hi, hi_ex = self.bounds(s, where)
        banned = [Fraction(repr(v)) if isinstance(v, float) else Fraction(v)
                  for v in s.get("x-dllm-not-in", []) if num(v) and math.isfinite(v)]
        if integer:
            a = None if lo is None else math.floor(lo) + 1 if lo_ex or lo != math.floor(lo) else int(lo)
            b = None if hi is None else math.ceil(hi) - 1 if hi_ex or hi != math.ceil(hi) else int(hi)
            holes = sorted({int(x) for x in banned if x.denominator == 1 and (a is None or x >= a)
                            and (b is None or x <= b)})
            pieces, start = [], a                      # the range with the banned integers cut out
            for h in holes:
                pieces.append((start, h - 1))
                start = h + 1
            pieces.append((start, b))
            if pieces == [(None, None)]:
                return _INT
            return _alt([integer_range_regex(x, y) for x, y in pieces])
        if banned and any((lo is None or x > lo or (x == lo and not lo_ex)) and
                          (hi is None or x < hi or (x == hi and not hi_ex)) for x in banned):
            self.relax("not", where)
        if lo is None and hi is None:
            return _NUMBER
        rx = number_range_regex(lo, lo_ex, hi, hi_ex)
        if rx is None and (lo is None or hi is None or lo < hi or (lo == hi and not lo_ex and not hi_ex)):
            raise ConstraintError(f"the bounds of the number at {where} leave no decimal with at most 15 "
                                  f"digits and no exponent.")
        return rx

    def string(self, s: dict, where: str, key: bool = False):
        """The regex of a JSON string (with its quotes) under s's string keywords; key: canonical spelling."""
        min_l = self.nonneg_int(s, "minLength", where, 0)
        max_l = self.nonneg_int(s, "maxLength", where, None)
        if max_l is not None and min_l > max_l:
            return None
        if max_l is not None and max_l > STRING_CAP:
            max_l = max(STRING_CAP, min_l)
        fmt = s.get("format") if s.get("format") in FORMATS else None
        pats = ([s["pattern"]] if "pattern" in s else []) + list(s.get("x-dllm-pattern", []))
        if fmt and pats:
            self.relax("format", where)
            fmt = None
        for _ in pats[1:]:
            self.relax("pattern", where)
        banned = [v for v in s.get("x-dllm-not-in", []) if isinstance(v, str)]
        if s.get("x-dllm-not-pattern"):
            self.relax("not", where)
        if fmt is None and not pats:
            char = _KEYCHAR if key or banned else _CHAR
            if banned and min_l == 0 and max_l is None:
                return '"' + _not_words(banned) + '"'
            rx = '"' + _rep(char, min_l, max_l) + '"'
        else:
            rx = self.patterned(fmt, pats[0] if pats else None, min_l, max_l, where)
        if rx is not None and any(re.fullmatch(rx, json.dumps(w, ensure_ascii=False)) for w in banned):
            self.relax("not", where)
        return rx

    def patterned(self, fmt, pat, min_l: int, max_l, where: str):
        if pat is not None and not isinstance(pat, str):
            raise ConstraintError(f"'pattern' at {where} must be a string.")
        try:
            modes = [_Pattern(FORMATS[fmt], where, "format").parse()] if fmt else \
                [_Pattern(pat, where, search=True).parse(), _Pattern(pat, where).parse()]
        except ConstraintError:
            if self.strict:
                raise
            self.relax("pattern", where)
            return '"' + _rep(_CHAR, min_l, max_l) + '"'
        for rx, plo, phi, single in modes:            # searched, then matched in full (a subset)
            if (phi is not None and phi < min_l) or (max_l is not None and plo > max_l):
                continue
            if plo >= min_l and (max_l is None or (phi is not None and phi <= max_l)):
                return '"' + rx + '"'
            if single is not None:
                unit, qlo, qhi = single
                lo = max(qlo, min_l)
                hi = max_l if qhi is None else qhi if max_l is None else min(qhi, max_l)
                return '"' + _rep(unit, lo, hi) + '"'
        rx, plo, phi, _ = modes[0]
        if (phi is not None and phi < min_l) or (max_l is not None and plo > max_l):
            return None
        self.relax("minLength" if max_l is None else "maxLength", where)
        return '"' + rx + '"'


def _list_rx(x: str, sep: str) -> str:
    return _rep(x + _rep(sep + x, 0, None), 0, 1)


def _canon(v) -> str:
    """A text equal for two values exactly when json_eq holds (1 and 1.0 alike, true and 1 not)."""
    def norm(x):
        if isinstance(x, float) and x.is_integer():
            return int(x)
        if isinstance(x, list):
            return [norm(y) for y in x]
        if isinstance(x, dict):
            return {k: norm(y) for k, y in x.items()}
        return x
    return json.dumps(norm(v), sort_keys=True, ensure_ascii=False, default=str)


def _type_of(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    return {str: "string", list: "array", dict: "object"}.get(type(v), "null")


def _disjoint(a, b) -> bool:
    ta, va, pa = a
    tb, vb, pb = b
    if ta is not None and tb is not None and not (ta & tb):
        return True
    if va is not None and vb is not None and not any(json_eq(x, y) for x in va for y in vb):
        return True
    return any(not any(json_eq(x, y) for x in pa[k] for y in pb[k]) for k in pa.keys() & pb.keys())
