"""Objects and arrays of the JSON Schema compiler (a mixin of compiler.Compiler).

Objects: declared properties in declared order (required-but-undeclared names after them), each
optional one present or absent, then the extra entries the schema allows: keys matching a
`patternProperties` pattern (searched, as the spec says) with that pattern's schema, and, when
`additionalProperties` is a schema, any other key (canonical spelling, not a declared name) with that
schema. `propertyNames` restricts the extra keys (an enum lists them; other string keywords give
their language) and drops declared names it rejects. minProperties/maxProperties count the entries.
An extra key that could repeat a declared name or a pattern's key carries every schema that could
apply to it, so the last value json.loads keeps is valid whichever key it is.
Arrays: prefixItems/tuple items, items/additionalItems, minItems/maxItems, contains/minContains.
"""
from __future__ import annotations

import json
import re

from dllm.constraints.json_schema import ir
from dllm.constraints.json_schema.pattern import _Pattern
from dllm.constraints.json_schema.refs import ptr
from dllm.constraints.json_schema.rewrite import is_true, merge
from dllm.constraints.json_schema.text import _KEY, _lit, _not_words
from dllm.errors import ConstraintError

_ABSENT = object()


class Containers:
    # -- arrays

    def array(self, s: dict, where: str):
        lo = self.nonneg_int(s, "minItems", where, 0)
        hi = self.nonneg_int(s, "maxItems", where, None)
        items = s.get("items", _ABSENT)
        if "prefixItems" in s or isinstance(items, list):
            key = "prefixItems" if "prefixItems" in s else "items"
            prefix = s[key]
            if not isinstance(prefix, list):
                raise ConstraintError(f"'{key}' at {where} must be a list of schemas.")
            extra_key = "items" if key == "prefixItems" else "additionalItems"
            extra, extra_w = s.get(extra_key, _ABSENT), ptr(where, extra_key)
            prefix_w = [ptr(where, key, i) for i in range(len(prefix))]
        else:
            prefix, prefix_w, extra, extra_w = [], [], items, ptr(where, "items")
        if extra is _ABSENT and s.get("unevaluatedItems") is False:
            extra = False
        p = []
        for sub, w in zip(prefix, prefix_w):
            rx = self.compile(sub, w)
            if rx is None:                              # no array reaches past this position
                hi = len(p) if hi is None else min(hi, len(p))
                break
            p.append(rx)
        m = len(p)
        if extra is _ABSENT or extra is True:
            if prefix:                                   # past the prefix only as far as minItems asks
                e = self.any(self.ANY_DEPTH) if lo > m else None
                hi = max(lo, m) if hi is None else min(hi, max(lo, m))
            else:
                e = self.any(self.ANY_DEPTH - 1)
        else:
            e = self.compile(extra, extra_w)
        if e is None:
            hi = m if hi is None else min(hi, m)
        if hi is not None and lo > hi:
            return None
        if "contains" in s:
            got = self.contains(s, e, m, lo, hi, where)
            if got is not _ABSENT:
                return got
        sep = self.item_sep

        def tail(i):                                     # items i.. after an existing item i - 1
            if i < m:
                body = ir.seq(sep, p[i], tail(i + 1))
                return body if i < lo else ir.rep(body, 0, 1)
            if e is None:
                return ir.EPS
            return ir.rep(ir.seq(sep, e), max(0, lo - m), None if hi is None else hi - m)

        if hi == 0:
            body = ir.EPS
        elif m:
            body = ir.seq(p[0], tail(1))
            body = body if lo >= 1 else ir.rep(body, 0, 1)
        else:
            body = ir.lst(e, lo, hi, sep)
        return self.wrap("\\[", body, "\\]")

    def contains(self, s, e, m, lo, hi, where):
        """Arrays whose items are e, at least minContains of them also under `contains`: (e, )* c (, e)*
        repeated; _ABSENT when that shape does not fit (then `contains` is checked afterwards)."""
        k = self.nonneg_int(s, "minContains", where, 1)
        if "maxContains" in s:
            self.relax("maxContains", where)
        if k == 0:
            return _ABSENT
        if m or e is None or hi is not None or lo > k:
            self.relax("contains", where)
            return _ABSENT
        items = s.get("items", True)
        c = self.compile(merge(self, items if not isinstance(items, list) else True, s["contains"], where),
                         ptr(where, "contains"))
        sep = self.item_sep
        body = ir.seq(ir.rep(ir.seq(e, sep), 0, None), c, ir.rep(ir.seq(sep, e), 0, None))
        for _ in range(k - 1):
            body = ir.seq(body, sep, c, ir.rep(ir.seq(sep, e), 0, None))
        return self.wrap("\\[", body, "\\]")

    # -- objects

    def object(self, s: dict, where: str):
        props = s.get("properties", {})
        required = s.get("required", [])
        pats = s.get("patternProperties", {})
        if not isinstance(props, dict) or not isinstance(pats, dict):
            raise ConstraintError(f"'properties' and 'patternProperties' at {where} must be objects.")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ConstraintError(f"'required' at {where} must be a list of strings.")
        required = list(dict.fromkeys(required))
        addl = s.get("additionalProperties", _ABSENT)
        if addl is _ABSENT and s.get("unevaluatedProperties") is False:
            addl = False
        if addl is not _ABSENT and not isinstance(addl, (bool, dict)):
            raise ConstraintError(f"'additionalProperties' at {where} must be a schema.")
        names_schema = self.flat(s.get("propertyNames", True), ptr(where, "propertyNames"))
        min_p = self.nonneg_int(s, "minProperties", where, 0)
        max_p = self.nonneg_int(s, "maxProperties", where, None)
        entries = self.declared(props, required, pats, addl, names_schema, where)
        if entries is None:
            return None
        extras = self.extras(props, pats, addl, names_schema, where)
        if extras is not None and min_p >= len(entries) + 2:
            self.relax("minProperties", where)           # two extra keys could be one key written twice
        return self.wrap("\\{", self.entry_seq(entries, extras, min_p, max_p), "\\}")

    def declared(self, props, required, pats, addl, names_schema, where):
        """[(key text, value node, required)] of the declared properties, or None (no valid object)."""
        entries = []
        for name in list(props) + [r for r in required if r not in props]:
            req = name in required
            subs = [props[name]] if name in props else []
            subs += [sub for p, sub in pats.items() if _search(p, name)]
            if not subs:
                subs = [addl if addl is not _ABSENT else True]
            if not is_true(names_schema) and not self.is_valid(name, names_schema, ptr(where, "propertyNames")):
                subs = [False]
            sub = subs[0]
            for x in subs[1:]:
                sub = merge(self, sub, x, where)
            w = ptr(where, "properties", name) if name in props else where
            node = self.compile(sub, w)
            if node is None:
                if req:
                    return None
                continue
            entries.append((_lit(json.dumps(name, ensure_ascii=False)) + self.key_sep, node, req))
        return entries

    def extras(self, props, pats, addl, names_schema, where):
        """Node of one extra entry (key, separator, value), or None when the object takes none."""
        alts = []
        enum_names = _names_enum(names_schema)
        for p, sub in pats.items():
            w = ptr(where, "patternProperties", p)
            if enum_names is not None:
                keys = [n for n in enum_names if n not in props and _search(p, n)]
                key = ir.alt([_lit(json.dumps(n, ensure_ascii=False)) for n in keys])
            else:
                try:
                    rx, _, _, _ = _Pattern(p, w, search=True).parse()
                except ConstraintError:
                    continue                             # keys of a pattern we cannot write: none produced
                key = '"' + rx + '"'
                if not is_true(names_schema):
                    self.relax("propertyNames", where)
            if key is None:
                continue
            value = sub                                 # plus every schema that could also apply to the key
            for q, other in pats.items():
                if q != p:
                    value = merge(self, value, other, w)
            if isinstance(key, str):
                for n in props:
                    if re.fullmatch(key, json.dumps(n, ensure_ascii=False)):
                        value = merge(self, value, props[n], w)
            alts.append(ir.seq(key, self.key_sep, self.compile(value, w)))
        if isinstance(addl, dict) or (addl is _ABSENT and not props and not pats) or (addl is True and not props
                                                                                    and not pats):
            w = ptr(where, "additionalProperties")
            value = self.compile(addl, w) if isinstance(addl, dict) else self.any(self.ANY_DEPTH - 1)
            if enum_names is not None:
                key = ir.alt([_lit(json.dumps(n, ensure_ascii=False)) for n in enum_names
                              if n not in props and not any(_search(p, n) for p in pats)])
            elif not is_true(names_schema):
                key = self.string(names_schema, ptr(where, "propertyNames"), key=True)
                if key is not None and (pats or any(re.fullmatch(key, json.dumps(n, ensure_ascii=False))
                                                    for n in props)):
                    value = self.compile(merge(self, addl if isinstance(addl, dict) else True,
                                               {"allOf": list(pats.values()) + list(props.values())}, w), w)
            elif pats:
                key = _KEY
                value = self.compile(merge(self, addl if isinstance(addl, dict) else True,
                                           {"allOf": list(pats.values())}, w), w)
                if props:
                    key = '"' + _not_words(list(props)) + '"'
            else:
                key = '"' + _not_words(list(props)) + '"' if props else _KEY
            if key is not None:
                alts.append(ir.seq(key, self.key_sep, value))
        return ir.alt(alts)

    def entry_seq(self, entries, extras, min_p: int, max_p):
        """The body between the braces: entries in order, each optional one present or absent, then
        extras; `c` counts the entries written so far (capped where the count no longer matters)."""
        sep, n = self.item_sep, len(entries)
        cap = max(1, min_p, max_p or 0)
        counted = min_p > 1 or max_p is not None
        req_after = [any(r for _, _, r in entries[i:]) for i in range(n + 1)]
        memo: dict = {}

        def tail(c):
            lo = max(0, min_p - c)
            hi = None if max_p is None else max_p - c
            if extras is None:
                return ir.EPS if lo == 0 else None
            return ir.lst(extras, lo, hi, sep) if c == 0 else ir.rep(ir.seq(sep, extras), lo, hi)

        def go(i, c):
            if (i, c) in memo:
                return memo[i, c]
            if i == n:
                out = tail(c)
            else:
                key, val, req = entries[i]
                full = max_p is not None and c >= max_p
                take = None if full else ir.seq("" if c == 0 else sep, key, val)
                nxt = min(c + 1, cap)
                if req:
                    out = ir.seq(take, go(i + 1, nxt))
                elif not counted and c == 0 and req_after[i + 1]:
                    out = ir.seq(ir.rep(ir.seq(key, val, sep), 0, 1), go(i + 1, 0))   # "k: v, " or nothing
                elif nxt == c and not full:
                    out = ir.seq(ir.rep(take, 0, 1), go(i + 1, c))
                else:
                    out = ir.alt([ir.seq(take, go(i + 1, nxt)), go(i + 1, c)])
            memo[i, c] = out
            return out

        return go(0, 0)


def _search(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except (re.error, TypeError):
        return True                                      # unknown: assume it applies (a stricter subset)


def _names_enum(ns):
    """The finite list of names a propertyNames schema allows, or None."""
    if isinstance(ns, dict):
        if isinstance(ns.get("enum"), list):
            return [x for x in ns["enum"] if isinstance(x, str)]
        if isinstance(ns.get("const"), str):
            return [ns["const"]]
    return None

