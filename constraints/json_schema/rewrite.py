"""Schema algebra on JSON Schema objects: intersection (allOf), negation (`not`) into positive forms, and
the conditional keywords (`if`/`then`/`else`, `dependentRequired`, `dependencies`, `dependentSchemas`)
rewritten into allOf/anyOf, so that the compiler only meets keywords it can turn into a grammar.

`ctx` is the compiler: ctx.deref(schema, where) resolves a `$ref` (with its siblings merged) and
ctx.relax(keyword, where) records a keyword that decoding cannot enforce (or refuses it, when strict).
Internal keywords: "x-dllm-not-in" (the value is none of these), "x-dllm-not-pattern" (a string in
which none of these patterns is found), "x-dllm-pattern" (more patterns the string must match).
"""
from __future__ import annotations

import re

from dllm.errors import ConstraintError

TYPES = ("null", "boolean", "object", "array", "string", "integer", "number")
MIN_KW = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains")
MAX_KW = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains")
# keywords the compiler reads; every other keyword is an annotation or unknown, ignored as the spec says
ASSERTIONS = frozenset(("type", "enum", "const", "properties", "required", "additionalProperties",
                        "patternProperties", "propertyNames", "minProperties", "maxProperties", "items",
                        "prefixItems", "additionalItems", "contains", "minContains", "maxContains", "minItems",
                        "maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "format", "minimum",
                        "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "allOf", "anyOf",
                        "oneOf", "not", "if", "then", "else", "dependentRequired", "dependencies",
                        "dependentSchemas", "unevaluatedProperties", "unevaluatedItems", "$ref", "$dynamicRef",
                        "$recursiveRef", "x-dllm-not-in", "x-dllm-not-pattern", "x-dllm-pattern"))
_ABSENT = object()
_LITERALS = re.compile(r"\^(?:\(([A-Za-z0-9_ -]+(?:\|[A-Za-z0-9_ -]+)*)\)|([A-Za-z0-9_ -]+))\$")


def json_eq(x, y) -> bool:
    if isinstance(x, bool) or isinstance(y, bool):
        return isinstance(x, bool) and isinstance(y, bool) and x == y
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x == y
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(json_eq(a, b) for a, b in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(json_eq(x[k], y[k]) for k in x)
    return type(x) is type(y) and x == y


def num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def assertions(s: dict) -> dict:
    return {k: v for k, v in s.items() if k in ASSERTIONS}


def is_true(s) -> bool:
    return s is True or (isinstance(s, dict) and not any(k in ASSERTIONS for k in s))


# ---------------------------------------------------------------- conditionals -> allOf / anyOf


def normalize(ctx, s: dict, where: str) -> dict:
    """s without if/then/else, dependencies and `not` (rewritten into allOf/anyOf/merged keywords)."""
    if not any(k in s for k in ("if", "then", "else", "not", "dependentRequired", "dependencies",
                                "dependentSchemas")):
        return s
    out = {k: v for k, v in s.items() if k not in ("if", "then", "else", "not", "dependentRequired",
                                                   "dependencies", "dependentSchemas")}
    extra = []
    if "if" in s:
        a, b, c = s["if"], s.get("then", True), s.get("else", True)
        na = negate(ctx, a, where + "/if")
        # (A and B) or (not A and C); without a positive form of not A only A and B (a subset: sound)
        extra.append({"anyOf": [{"allOf": [a, b]}] + ([] if na is None else [{"allOf": [na, c]}])})
    deps = {}
    for key in ("dependentRequired", "dependencies", "dependentSchemas"):
        if key in s:
            if not isinstance(s[key], dict):
                raise ConstraintError(f"'{key}' at {where} must be an object.")
            deps.update(s[key])
    for name, dep in deps.items():
        present = {"required": [name]}
        if isinstance(dep, list):
            present = {"required": [name] + [d for d in dep if isinstance(d, str)]}
        else:
            present = {"allOf": [present, dep]}
        extra.append({"anyOf": [{"properties": {name: False}}, present]})
    if "not" in s:
        n = negate(ctx, s["not"], where + "/not")
        if n is None:
            ctx.relax("not", where)
        else:
            extra.append(n)
    if extra:
        out["allOf"] = list(out.get("allOf", [])) + extra if isinstance(out.get("allOf", []), list) else extra
    return out


# ---------------------------------------------------------------- negation


def negate(ctx, s, where: str, depth: int = 0):
    """A schema without `not` accepting exactly what s rejects, or None when this module has no
    positive form for it (oneOf, items, patterns of patterns, ...)."""
    if depth > 8:
        return None
    s = ctx.deref(s, where)
    if s is True or is_true(s):
        return False
    if s is False:
        return True
    if not isinstance(s, dict):
        return None
    s = assertions(s)
    pieces = []                                        # not (k1 and k2 ...) = (not k1) or (not k2) ...
    for k, v in s.items():
        p = _negate_keyword(ctx, k, v, s, where, depth)
        if p is _ABSENT:
            continue
        if p is None:
            return None
        pieces.append(p)
    if "required" in s and "properties" in s:
        pass                                           # each keyword was negated on its own: still exact
    if not pieces:
        return False
    return pieces[0] if len(pieces) == 1 else {"anyOf": pieces}


def _others(types) -> list:
    ts = set(types)
    if "number" in ts:
        ts.add("integer")
    return [t for t in TYPES if t not in ts]


def _negate_keyword(ctx, k, v, s, where, depth):
    obj, arr, string, number = ({"type": t} for t in ("object", "array", "string", "number"))
    if k == "type":
        ts = [v] if isinstance(v, str) else list(v)
        if "integer" in ts and "number" not in ts:
            return None                                # "a number with a fraction" has no type keyword
        return {"type": _others(ts)} if _others(ts) else False
    if k == "required":
        if not isinstance(v, list) or not v:
            return False if isinstance(v, list) else None
        return {"anyOf": [dict(obj, properties={n: False}) for n in v]}
    if k == "properties":
        alts = []
        for name, sub in v.items():
            ns = negate(ctx, sub, where, depth + 1)
            if ns is None:
                return None
            if ns is not False:
                alts.append(dict(obj, required=[name], properties={name: ns}))
        return {"anyOf": alts} if alts else False
    if k in ("enum", "const"):
        vals = v if k == "enum" else [v]
        return {"x-dllm-not-in": list(vals)} if isinstance(vals, list) else None
    if k == "pattern":
        words = _LITERALS.fullmatch(v) if isinstance(v, str) else None
        if words:                                      # ^(a|b)$: a string that is none of these words
            return dict(string, **{"x-dllm-not-in": (words.group(1) or words.group(2)).split("|")})
        return dict(string, **{"x-dllm-not-pattern": [v]})
    flip = {"minLength": ("maxLength", string, -1), "maxLength": ("minLength", string, 1),
            "minItems": ("maxItems", arr, -1), "maxItems": ("minItems", arr, 1),
            "minProperties": ("maxProperties", obj, -1), "maxProperties": ("minProperties", obj, 1)}
    if k in flip:
        kk, base, d = flip[k]
        if not isinstance(v, int) or v + d < 0:
            return False if k.startswith("min") and v == 0 else None
        return dict(base, **{kk: v + d})
    bound = {"minimum": "exclusiveMaximum", "maximum": "exclusiveMinimum", "exclusiveMinimum": "maximum",
             "exclusiveMaximum": "minimum"}
    if k in bound:
        return dict(number, **{bound[k]: v}) if num(v) else None
    if k == "anyOf":
        parts = [negate(ctx, x, where, depth + 1) for x in v]
        return None if any(p is None for p in parts) else {"allOf": parts}
    if k == "allOf":
        parts = [negate(ctx, x, where, depth + 1) for x in v]
        return None if any(p is None for p in parts) else {"anyOf": parts}
    if k == "not":
        return v
    if k in ("format",):
        return _ABSENT if not ctx.format_known(v) else None
    return None


# ---------------------------------------------------------------- intersection


def merge(ctx, a, b, where: str):
    """A schema accepting what both a and b accept (annotations and unknown keywords dropped)."""
    a, b = ctx.deref(a, where), ctx.deref(b, where)
    if a is False or b is False:
        return False
    if is_true(a):
        return b if isinstance(b, dict) or b is True else b
    if is_true(b):
        return a
    if not isinstance(a, dict) or not isinstance(b, dict):
        raise ConstraintError(f"a subschema at {where} is not an object or a boolean.")
    a, b = normalize(ctx, assertions(a), where), normalize(ctx, assertions(b), where)
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
            continue
        u = out[k]
        if json_eq(u, v):
            continue
        m = _merge_keyword(ctx, k, u, v, out, where)
        if m is False:
            return False
        out[k] = m
    _govern_extras(out, a, b)
    return out


def _merge_keyword(ctx, k, u, v, out, where):
    if k == "type":
        ta, tb = ([u] if isinstance(u, str) else list(u)), ([v] if isinstance(v, str) else list(v))
        both = [t for t in ta if t in tb or (t == "integer" and "number" in tb)]
        both += [t for t in tb if t == "integer" and "number" in ta and t not in both]
        return both or False
    if k == "required":
        return list(u) + [r for r in v if r not in u]
    if k in ("properties", "patternProperties") and isinstance(u, dict) and isinstance(v, dict):
        props = dict(u)
        for name, sub in v.items():
            props[name] = {"allOf": [props[name], sub]} if name in props and not json_eq(props[name], sub) else sub
        return props
    if k in MIN_KW + MAX_KW and num(u) and num(v):
        return max(u, v) if k in MIN_KW else min(u, v)
    if k in ("items", "additionalProperties", "additionalItems", "propertyNames", "unevaluatedProperties",
             "unevaluatedItems", "contains") and not isinstance(u, list) and not isinstance(v, list):
        return False if (u is False or v is False) and k != "contains" else {"allOf": [u, v]}
    if k in ("prefixItems", "items") and isinstance(u, list) and isinstance(v, list):
        n = max(len(u), len(v))
        return [{"allOf": [u[i] if i < len(u) else True, v[i] if i < len(v) else True]} for i in range(n)]
    if k == "enum" and isinstance(u, list) and isinstance(v, list):
        return [x for x in u if any(json_eq(x, y) for y in v)]
    if k == "const":
        return False
    if k in ("anyOf", "oneOf") and isinstance(u, list) and isinstance(v, list):
        if k == "oneOf":                               # exclusivity of the product is not that of either
            ctx.relax("oneOf", where)
        return [{"allOf": [x, y]} for x in u for y in v]
    if k in ("allOf", "x-dllm-not-in", "x-dllm-not-pattern", "x-dllm-pattern") and isinstance(u, list) \
            and isinstance(v, list):
        return list(u) + list(v)
    if k == "uniqueItems":
        return bool(u) or bool(v)
    if k == "pattern":
        out.setdefault("x-dllm-pattern", [])
        out["x-dllm-pattern"] = list(out["x-dllm-pattern"]) + [v]
        return u
    ctx.relax(k, where)                                # format, multipleOf, ...: keep one, check the other
    return u


def _govern_extras(out: dict, a: dict, b: dict):
    """A side with additionalProperties false/schema governs the other side's extra properties."""
    for x in (a, b):
        ap = x.get("additionalProperties", _ABSENT)
        if ap is _ABSENT or ap is True or not isinstance(out.get("properties"), dict):
            continue
        own = x.get("properties", {})
        pats = x.get("patternProperties", {})
        props = {}
        for name, sub in out["properties"].items():
            if name in own or (isinstance(pats, dict) and pats and _matches_any(pats, name)):
                props[name] = sub
            elif ap is False:
                props[name] = False
            else:
                props[name] = {"allOf": [sub, ap]}
        out["properties"] = props


def _matches_any(pats: dict, name: str) -> bool:
    for p in pats:
        try:
            if re.search(p, name):
                return True
        except re.error:
            return True                                # unknown: keep the property (the validator decides)
    return False
