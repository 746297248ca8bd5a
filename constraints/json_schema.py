"""JSON Schema -> regular expression whose full matches are JSON texts valid under the schema.

`schema_to_regex(schema, *, whitespace=None) -> str`. The result uses only syntax that both Python `re`
and `interegular` read alike: literals, `[...]` classes with `\\xHH` escapes, `(?:...)`, `|`, `?`, `*`,
`+`, `{m,n}`. No anchors, lookarounds, backreferences, lazy quantifiers or `\\d`/`\\w`/`\\s` (which
mean Unicode classes to `re` and ASCII ones to `interegular`). Full-match it (`re.fullmatch`).

The language is a subset of the valid JSON texts, chosen to be small and natural for a model:

JSON style
    whitespace=None (default): what `json.dumps(value, ensure_ascii=False)` writes, i.e. item separator
    ", ", key separator ": ", nothing after "[" / "{" or before "]" / "}", nothing before or after the
    value: `{"a": 1, "b": [1, 2], "c": {}}`. With `whitespace` a regex W (e.g. `"[ ]?"`,
    `"[ \\n]{0,2}"`), W is allowed around every "," and ":" and inside every bracket pair; W must match
    only JSON whitespace (space, tab, newline, carriage return), else ConstraintError.
Objects
    Declared properties in the schema's declared order (then required-but-undeclared names, in `required`
    order); each required property present, each optional one present or absent. No undeclared
    properties are produced: `additionalProperties` true or a schema is treated as false when
    `properties`/`required` declare names. An object schema with no declared names and
    `additionalProperties` a schema (or true/absent) is a map: string keys, values under that schema (any
    JSON when true/absent), `minProperties`/`maxProperties` as count bounds. With declared names,
    `minProperties`/`maxProperties` are accepted only when they cannot bind (min <= number of required,
    max >= number of properties). `unevaluatedProperties: false` acts as `additionalProperties: false`.
Arrays
    `items` (a schema; a list in drafts <= 2019-09 means `prefixItems`), `prefixItems`, `additionalItems`,
    `minItems`, `maxItems`; unbounded arrays allowed. With a prefix and no schema for later items, arrays
    go past the prefix only as far as `minItems` requires (with any-JSON items). `uniqueItems: true` only
    with `maxItems <= 1`.
Strings
    Every character either raw or as an escape: `\\"`, `\\\\`, `\\/`, `\\b\\f\\n\\r\\t`, `\\uXXXX` (no lone
    surrogates; a surrogate pair counts as one character). Raw control characters never. `minLength` /
    `maxLength` count decoded characters. `pattern` (ECMA-262 syntax) is embedded, translated to match the
    JSON encoding of the decoded string (json.dumps' canonical escapes only); it is matched in full,
    as if it were anchored (the spec searches, so this is a subset), with anchors stripped. Lookarounds,
    backreferences, `\\b`, Unicode property escapes and anchors in the middle are refused. With
    `minLength`/`maxLength`, a pattern is accepted when it is one (possibly quantified) character class,
    or when its own lengths already lie inside the bounds. `format`: date, time, date-time (RFC 3339,
    upper-case "T"/"Z", at most 6 fraction digits), email (dotted local part, dotted domain with a
    letters-only TLD), uuid, ipv4; any other string format is refused.
Integers
    Canonical form (no leading zeros, no "-0", no fraction or exponent). minimum/maximum/
    exclusiveMinimum/exclusiveMaximum (draft-4 boolean exclusives too) give an exact decimal range regex
    (`integer_range_regex`), unbounded digit count on an open side. `multipleOf` only as 1.
Numbers
    Without bounds: `-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?`. With any bound
    (`number_range_regex`): exactly the decimals inside the bounds written without exponent, with at most
    MAX_FRACTION_DIGITS (6) fraction digits (more when needed to reach any value) and at most 15 digits
    once the decimal point is dropped: decimals of <= 15 significant digits parse to distinct doubles, in
    order, so the exact decimal comparison the regex makes is the comparison the validator makes on the
    parsed float (json.dumps' exponent forms such as 1e-06 are outside). `multipleOf: 1` makes a number
    an integer.
enum / const
    Any JSON values, each written in the chosen style (strings as `json.dumps(s, ensure_ascii=False)`);
    values failing the schema's other keywords (checked with `jsonschema`) are dropped.
anyOf / oneOf / allOf
    anyOf and oneOf are alternations of their branches, each branch merged with the sibling keywords;
    oneOf's exclusivity is NOT enforced (a text matching two branches is produced although oneOf rejects
    it). allOf (and `$ref` with sibling keywords) is merged into one schema when the keywords combine
    (type, required, properties, bounds, items, additionalProperties, enum, const, anyOf/oneOf);
    two different values of any other keyword are refused.
$ref
    Local JSON pointers only (`#`, `#/$defs/...`, `#/definitions/...`, any `#/...`). Recursion is
    unrolled: a reference is expanded at most MAX_REF_DEPTH times inside itself, the innermost expansion
    matching nothing, so only the instances of that nesting depth whose recursion can stop there remain
    (optional properties dropped, arrays emptied, anyOf branches removed).
Any JSON
    `{}` / `true` / a schema without type keywords: null, booleans, numbers, strings, and arrays/objects
    nested at most ANY_DEPTH (1) deep, i.e. flat arrays/objects of scalars; `{"type": "array"}` /
    `{"type": "object"}` without item/value schemas hold values of depth ANY_DEPTH - 1 (scalars). The
    bound keeps the character DFA small (depth 1: ~300 states, depth 2: ~1300). A schema without `type`
    is restricted to the types its keywords imply (properties -> object, items -> array, minLength ->
    string, minimum -> number, ...).

Refused with `ConstraintError` (one sentence naming the keyword and its location as a JSON pointer):
patternProperties, propertyNames, dependencies, dependentRequired, dependentSchemas, if (then/else), not,
contains, minContains, maxContains, $dynamicRef, $recursiveRef, uniqueItems (beyond the case above),
multipleOf other than 1, unevaluated* schemas, non-local $ref, unknown string formats, and the
combinations named above. A schema whose language in this subset is empty (empty enum, contradictory
bounds, recursion without a base case) raises too. Unknown keywords are ignored, as the spec says.
Results are cached per (schema as JSON text, whitespace).
"""
from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from functools import lru_cache

from dllm.errors import ConstraintError

__all__ = ["ANY_DEPTH", "MAX_FRACTION_DIGITS", "MAX_REF_DEPTH", "integer_range_regex", "number_range_regex",
           "schema_to_regex"]

ANY_DEPTH = 1              # container nesting depth of an unconstrained ("any JSON") value
MAX_REF_DEPTH = 3          # expansions of one $ref inside itself
MAX_FRACTION_DIGITS = 6    # fraction digits of bounded numbers
_SIG_CAP = 10 ** 15 - 1    # bounded numbers: N / 10**j with |N| <= this, i.e. <= 15 digits
_MAX_NESTING = 200         # compile recursion guard (self-referential allOf/$ref chains)

# ---------------------------------------------------------------- regex text helpers

_SPECIAL = set("\\.^$*+?{}[]()|")


def _lit(s: str) -> str:
    out = []
    for ch in s:
        cp = ord(ch)
        if cp < 0x20 or cp == 0x7F:
            out.append(f"\\x{cp:02x}")
        elif ch in _SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _group_end(x: str, i: int) -> int:
    """Index of the ')' closing the '(' at x[i]."""
    depth = 0
    while i < len(x):
        c = x[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _class_end(x, i) + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _class_end(x: str, i: int) -> int:
    """Index of the ']' closing the '[' at x[i] (classes written by this module never hold a bare ']')."""
    i += 1
    if i < len(x) and x[i] == "^":
        i += 1
    while i < len(x) and x[i] != "]":
        i += 2 if x[i] == "\\" else 1
    return i


def _atomic(x: str) -> bool:
    """x is one quantifiable unit: a character, an escape, a class or one group."""
    if len(x) == 1:
        return x not in _SPECIAL
    if x[0] == "\\":
        return len(x) == 2 or (x[1] == "x" and len(x) == 4)
    if x[0] == "[":
        return _class_end(x, 0) == len(x) - 1
    if x[0] == "(":
        return _group_end(x, 0) == len(x) - 1
    return False


def _rep(x: str, lo: int, hi: int | None) -> str:
    if x == "" or hi == 0:
        return ""
    if lo == hi == 1:
        return x
    a = x if _atomic(x) else f"(?:{x})"
    if (lo, hi) == (0, 1):
        return a + "?"
    if hi is None:
        return a + ("*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}")
    return a + (f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}")


def _alt(parts) -> str | None:
    """Alternation of the non-None parts; None when there are none (the empty language)."""
    ps, empty = [], False
    for p in parts:
        if p is None:
            continue
        if p == "":
            empty = True
        elif p not in ps:
            ps.append(p)
    if not ps:
        return "" if empty else None
    body = ps[0] if len(ps) == 1 else "(?:" + "|".join(ps) + ")"
    return _rep(body, 0, 1) if empty else body


def _list(x: str, lo: int, hi: int | None, sep: str) -> str | None:
    """lo..hi copies of x separated by sep."""
    if hi is not None and lo > hi:
        return None
    if hi == 0:
        return ""
    first = x + _rep(sep + x, max(lo - 1, 0), None if hi is None else hi - 1)
    return first if lo >= 1 else _rep(first, 0, 1)


def _ptr(where: str, *keys) -> str:
    return where + "".join("/" + str(k).replace("~", "~0").replace("/", "~1") for k in keys)


# ---------------------------------------------------------------- character sets (decoded code points)

_MAXCP = 0x10FFFF
_SURROGATES = ((0xD800, 0xDFFF),)
_UNSAFE = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C))   # must be escaped inside a JSON string
_SHORT_ESC = {0x22: '\\\\"', 0x5C: "\\\\\\\\", 0x08: "\\\\b", 0x09: "\\\\t", 0x0A: "\\\\n", 0x0C: "\\\\f",
              0x0D: "\\\\r"}


def _norm(ranges) -> tuple:
    out = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _complement(r) -> tuple:
    out, nxt = [], 0
    for lo, hi in r:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAXCP:
        out.append((nxt, _MAXCP))
    return tuple(out)


def _intersect(a, b) -> tuple:
    out = []
    for lo, hi in a:
        for lo2, hi2 in b:
            x, y = max(lo, lo2), min(hi, hi2)
            if x <= y:
                out.append((x, y))
    return _norm(out)


def _minus(a, b) -> tuple:
    return _intersect(a, _complement(_norm(b)))


def _size(r) -> int:
    return sum(hi - lo + 1 for lo, hi in r)


def _cls_char(cp: int) -> str:
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    ch = chr(cp)
    return "\\" + ch if ch in "\\]^-[" else ch


def _class(r, negated: bool = False) -> str:
    if not negated and len(r) == 1 and r[0][0] == r[0][1]:
        return _lit(chr(r[0][0]))
    items = []
    for lo, hi in r:
        items.append(_cls_char(lo) if lo == hi else _cls_char(lo) + _cls_char(hi) if hi == lo + 1
                     else _cls_char(lo) + "-" + _cls_char(hi))
    return "[" + ("^" if negated else "") + "".join(items) + "]"


def _encoded(cs) -> str | None:
    """Regex for the canonical JSON encoding (inside quotes) of one character of the set cs."""
    safe = _minus(_minus(cs, _UNSAFE), _SURROGATES)
    parts = []
    if safe:
        excluded = _minus(_complement(safe), _SURROGATES)
        parts.append(_class(safe) if _size(safe) <= _size(excluded) else _class(excluded, negated=True))
    unsafe = [cp for lo, hi in _intersect(cs, _UNSAFE) for cp in range(lo, hi + 1)]
    parts += [_SHORT_ESC[cp] for cp in unsafe if cp in _SHORT_ESC]
    by_high = {}
    for cp in unsafe:
        if cp not in _SHORT_ESC:
            by_high.setdefault(cp >> 4, []).append(cp & 15)
    if by_high:
        hexes = [f"{h}" + _class(_norm((d, d) for d in (ord(f"{x:x}") for x in lows)))
                 for h, lows in sorted(by_high.items())]
        parts.append("\\\\u00" + _alt(hexes))
    return _alt(parts)


def _single(cp: int) -> tuple:
    return ((cp, cp),)


_DIGIT = ((0x30, 0x39),)
_WORD = _norm([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
_SPACE = _norm([(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)])
_DOT = _complement(_norm([(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]))
_ANYCHAR = ((0, _MAXCP),)
_CLASS_ESC = {"d": _DIGIT, "D": _complement(_DIGIT), "w": _WORD, "W": _complement(_WORD),
              "s": _SPACE, "S": _complement(_SPACE)}
_CTRL_ESC = {"t": 0x09, "n": 0x0A, "v": 0x0B, "f": 0x0C, "r": 0x0D}

# ---------------------------------------------------------------- ECMA-262 pattern -> regex over JSON text

_QUANT = re.compile(r"\{([0-9]+)(?:(,)([0-9]*))?\}")
_HEXRE = re.compile(r"[0-9a-fA-F]+")


class _Pattern:
    """Recursive descent over an ECMA-262 pattern. Nodes are (regex, min decoded length, max or None,
    single) where single = (unit regex, lo, hi) when the node is one character set repeated lo..hi."""

    def __init__(self, src: str, where: str, what: str = "pattern"):
        self.src, self.where, self.what, self.i = src, where, what, 0

    def fail(self, what: str):
        raise ConstraintError(f"the {self.what} {self.src!r} at {self.where} uses {what}, "
                              f"which cannot be embedded in a regular expression.")

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.src[j] if j < len(self.src) else ""

    def parse(self):
        node = self.alternation(top=True)
        if self.i < len(self.src):
            self.fail("an unbalanced ')'")
        return node

    def alternation(self, top: bool):
        branches = [self.sequence(top)]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence(top))
        if len(branches) == 1:
            return branches[0]
        his = [b[2] for b in branches]
        return (_alt([b[0] for b in branches]), min(b[1] for b in branches),
                None if None in his else max(his), None)

    def sequence(self, top: bool):
        parts = []
        if top and self.peek() == "^":
            self.i += 1
        while self.peek() not in ("", "|", ")"):
            if top and self.peek() == "$" and self.peek(1) in ("", "|"):
                self.i += 1
                break
            parts.append(self.quantified(self.atom()))
        if len(parts) == 1:
            return parts[0]
        his = [p[2] for p in parts]
        return ("".join(p[0] for p in parts), sum(p[1] for p in parts),
                None if None in his else sum(his), None)

    def quant(self):
        c = self.peek()
        if c == "*":
            self.i += 1
            return 0, None
        if c == "+":
            self.i += 1
            return 1, None
        if c == "?":
            self.i += 1
            return 0, 1
        m = _QUANT.match(self.src, self.i) if c == "{" else None
        if m is None:
            return None
        self.i = m.end()
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
        if hi is not None and hi < lo:
            self.fail(f"the quantifier {m.group(0)} with its bounds out of order")
        return lo, hi

    def quantified(self, node):
        q = self.quant()
        if q is None:
            return node
        if self.peek() == "?":          # lazy: same language under a full match
            self.i += 1
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and _QUANT.match(self.src, self.i)):
            self.fail("a quantifier on a quantifier")
        lo, hi = q
        rx, nlo, nhi, single = node
        single = (single[0], lo, hi) if single is not None and single[1:] == (1, 1) else None
        return (_rep(rx, lo, hi), nlo * lo, 0 if hi == 0 else None if hi is None or nhi is None else nhi * hi,
                single)

    def char(self, cs):
        rx = _encoded(cs)
        if rx is None:
            self.fail("a character set with no character a JSON string can hold")
        return rx, 1, 1, (rx, 1, 1)

    def atom(self):
        c = self.peek()
        if c == "(":
            self.i += 1
            if self.peek() == "?":
                rest = self.src[self.i:]
                if rest.startswith("?:"):
                    self.i += 2
                elif rest.startswith(("?=", "?!", "?<=", "?<!")):
                    self.fail("a lookaround assertion")
                elif rest.startswith(("?<", "?P<")):
                    end = self.src.find(">", self.i)
                    if end < 0:
                        self.fail("an unterminated group name")
                    self.i = end + 1
                else:
                    self.fail(f"the group syntax '({rest[:2]}'")
            rx, lo, hi, single = self.alternation(top=False)
            if self.peek() != ")":
                self.fail("an unclosed '('")
            self.i += 1
            return (rx if rx == "" or _atomic(rx) else f"(?:{rx})"), lo, hi, single
        if c == "[":
            return self.char(self.char_class())
        if c == ".":
            self.i += 1
            return self.char(_DOT)
        if c == "\\":
            self.i += 1
            return self.char(self.escape(in_class=False))
        if c in ("*", "+", "?") or (c == "{" and _QUANT.match(self.src, self.i)):
            self.fail("a quantifier with nothing to repeat")
        if c in ("^", "$"):
            self.fail(f"the anchor '{c}' away from the ends of the pattern")
        self.i += 1
        return self.char(_single(ord(c)))

    def char_class(self):
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        if self.peek() == "]":
            self.i += 1
            if negated:
                return _ANYCHAR
            self.fail("the empty character class '[]'")
        ranges = []
        while True:
            c = self.peek()
            if c == "":
                self.fail("an unclosed '['")
            if c == "]":
                self.i += 1
                break
            first = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                last = self.class_atom()
                if _size(first) != 1 or _size(last) != 1 or len(first) != 1 or len(last) != 1:
                    self.fail("a character range with a class escape as an end")
                if first[0][0] > last[0][0]:
                    self.fail("a character range out of order")
                ranges.append((first[0][0], last[0][0]))
            else:
                ranges += first
        cs = _norm(ranges)
        return _complement(cs) if negated else cs

    def class_atom(self):
        c = self.peek()
        self.i += 1
        if c == "\\":
            return self.escape(in_class=True)
        return _single(ord(c))

    def hex_digits(self, n: int) -> int:
        h = self.src[self.i:self.i + n]
        if len(h) != n or not _HEXRE.fullmatch(h):
            self.fail("a malformed hexadecimal escape")
        self.i += n
        return int(h, 16)

    def escape(self, in_class: bool):
        c = self.peek()
        if c == "":
            self.fail("a trailing backslash")
        self.i += 1
        if c in _CLASS_ESC:
            return _CLASS_ESC[c]
        if c == "b" and in_class:
            return _single(0x08)
        if c in ("b", "B"):
            self.fail(f"the word boundary '\\{c}'")
        if c in "123456789":
            self.fail("a backreference")
        if c == "0":
            if self.peek().isdigit():
                self.fail("an octal escape")
            return _single(0)
        if c in _CTRL_ESC:
            return _single(_CTRL_ESC[c])
        if c == "x":
            return _single(self.hex_digits(2))
        if c == "u":
            if self.peek() == "{":
                end = self.src.find("}", self.i)
                h = self.src[self.i + 1:end] if end > 0 else ""
                if not _HEXRE.fullmatch(h) or int(h, 16) > _MAXCP:
                    self.fail("a malformed \\u{...} escape")
                self.i = end + 1
                return _single(int(h, 16))
            cp = self.hex_digits(4)
            if 0xD800 <= cp <= 0xDBFF and self.src.startswith("\\u", self.i):
                m = _HEXRE.match(self.src, self.i + 2)
                if m and m.end() - self.i - 2 >= 4:
                    low = int(self.src[self.i + 2:self.i + 6], 16)
                    if 0xDC00 <= low <= 0xDFFF:
                        self.i += 6
                        return _single(0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00))
            return _single(cp)
        if c == "c" and self.peek().isascii() and self.peek().isalpha():
            self.i += 1
            return _single(ord(self.src[self.i - 1]) % 32)
        if c in ("p", "P"):
            self.fail("a Unicode property escape")
        if c == "k":
            self.fail("a named backreference")
        if c.isascii() and c.isalnum():
            self.fail(f"the escape '\\{c}'")
        return _single(ord(c))


# ---------------------------------------------------------------- integers and bounded numbers


def _digit_class(a: int, b: int) -> str:
    return str(a) if a == b else f"[{a}{b}]" if b == a + 1 else f"[{a}-{b}]"


def _same_len(x: str, y: str) -> list:
    """Token lists (one token per digit position) for the digit strings of len(x) in [x, y], x <= y."""
    if not x:
        return [[]]
    if x[0] == y[0]:
        return [[x[0]] + t for t in _same_len(x[1:], y[1:])]
    n = len(x) - 1
    a, b = int(x[0]), int(y[0])
    out = []
    if x[1:] != "0" * n:
        out += [[x[0]] + t for t in _same_len(x[1:], "9" * n)]
        a += 1
    low_y = y[1:] != "9" * n
    if low_y:
        b -= 1
    if a <= b:
        out.append([_digit_class(a, b)] + ["[0-9]"] * n)
    if low_y:
        out += [[y[0]] + t for t in _same_len("0" * n, y[1:])]
    return out


def _join(tokens) -> str:
    out, i = [], 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] == tokens[i]:
            j += 1
        t, k = tokens[i], j - i
        out.append(f"{t}{{{k}}}" if k > 1 and t.startswith("[") else t * k)
        i = j
    return "".join(out)


def _nonneg_alts(a: int, b: int | None, j: int) -> list:
    """Regexes for the integers N in [a, b] (a >= 0, b None: unbounded) written as N / 10**j with exactly
    j fraction digits: integer part without leading zeros, '0' when N < 10**j."""
    out = []
    if b is not None and a > b:
        return out
    p = 10 ** j
    if j == 0:
        if a == 0:
            out.append("0")
            a = 1
    elif a < p:
        top = p - 1 if b is None else min(b, p - 1)
        out += ["0\\." + _join(t) for t in _same_len(str(a).zfill(j), str(top).zfill(j))]
        a = p
    if b is not None and a > b:
        return out
    dot = (lambda t: t[:len(t) - j] + ["\\."] + t[len(t) - j:]) if j else (lambda t: t)
    span = None                                     # [first, last] lengths fully covered

    def flush(last):
        lo_int = span - j                           # integer-part digits = length - j
        hi_int = None if last is None else last - j
        out.append("[1-9]" + _rep("[0-9]", lo_int - 1, None if hi_int is None else hi_int - 1)
                   + ("\\." + _rep("[0-9]", j, j) if j else ""))

    length = len(str(a))
    while b is None or length <= len(str(b)):
        lo_l, hi_l = max(a, 10 ** (length - 1)), 10 ** length - 1 if b is None else min(b, 10 ** length - 1)
        if lo_l == 10 ** (length - 1) and hi_l == 10 ** length - 1:
            span = length if span is None else span
            if b is None:
                flush(None)
                return out
        else:
            if span is not None:
                flush(length - 1)
                span = None
            out += [_join(dot(t)) for t in _same_len(str(lo_l), str(hi_l))]
            if b is None:
                span = length + 1
                flush(None)
                return out
        length += 1
    if span is not None:
        flush(length - 1)
    return out


def _signed_alts(lo: int | None, hi: int | None, j: int) -> list:
    out = []
    if hi is None or hi >= 0:
        out += _nonneg_alts(max(lo, 0) if lo is not None else 0, hi, j)
    if lo is None or lo < 0:
        neg = _alt(_nonneg_alts(1 if hi is None or hi >= 0 else -hi, None if lo is None else -lo, j))
        if neg is not None:
            out.append("-" + neg)
    return out


def integer_range_regex(lo: int | None, hi: int | None) -> str | None:
    """Regex matching exactly the canonical decimal integers n with lo <= n <= hi (None: unbounded);
    None when the range is empty."""
    if lo is not None and hi is not None and lo > hi:
        return None
    return _alt(_signed_alts(lo, hi, 0))


def number_range_regex(lo, lo_exclusive: bool, hi, hi_exclusive: bool) -> str | None:
    """Regex for decimals x (no exponent) with lo <(=) x <(=) hi (bounds int/float/Fraction or None),
    at most MAX_FRACTION_DIGITS fraction digits (more, up to 14, only when no value has that few) and
    at most 15 digits; None when no such decimal exists."""
    lo = None if lo is None else Fraction(repr(lo)) if isinstance(lo, float) else Fraction(lo)
    hi = None if hi is None else Fraction(repr(hi)) if isinstance(hi, float) else Fraction(hi)
    alts = []
    for j in range(15):
        if j > MAX_FRACTION_DIGITS and alts:
            break
        s = 10 ** j
        # N = x * 10**j must satisfy lo * 10**j <(=) N <(=) hi * 10**j
        a = -_SIG_CAP if lo is None else math.ceil(lo * s) + (1 if lo_exclusive and lo * s == math.ceil(lo * s) else 0)
        b = _SIG_CAP if hi is None else math.floor(hi * s) - (1 if hi_exclusive and hi * s == math.floor(hi * s) else 0)
        a, b = max(a, -_SIG_CAP), min(b, _SIG_CAP)
        if a <= b:
            alts += _signed_alts(a, b, j)
    return _alt(alts)


# ---------------------------------------------------------------- schema compiler

_ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "$schema", "$id", "$defs",
                "definitions", "deprecated", "readOnly", "writeOnly", "contentMediaType", "contentEncoding",
                "contentSchema", "$anchor", "$vocabulary", "$dynamicAnchor", "$recursiveAnchor"}
_UNSUPPORTED = ("patternProperties", "propertyNames", "dependencies", "dependentRequired", "dependentSchemas",
                "if", "not", "contains", "minContains", "maxContains", "$dynamicRef", "$recursiveRef")
_TYPES = ("null", "boolean", "object", "array", "string", "integer", "number")
_KW_TYPE = {
    "object": ("properties", "required", "additionalProperties", "minProperties", "maxProperties",
               "unevaluatedProperties"),
    "array": ("items", "prefixItems", "additionalItems", "minItems", "maxItems", "unevaluatedItems",
              "uniqueItems"),
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}
_MIN_KW = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_MAX_KW = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")

_INT = "(?:0|-?[1-9][0-9]*)"
_NUMBER = "-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
# One decoded character of a JSON string: raw (not '"', '\' or a control), a short escape, \uXXXX
# outside the surrogates, or a surrogate pair \uD800-DBFF \uDC00-DFFF (one character once decoded).
_HEX = "[0-9a-fA-F]"
_CHAR = ('(?:[^"\\\\\\x00-\\x1f]|\\\\["\\\\/bfnrt]|\\\\u(?:[0-9a-cA-CefEF]' + _HEX + "{3}|[dD][0-7]" + _HEX
         + "{2})|\\\\u[dD][89abAB]" + _HEX + "{2}\\\\u[dD][c-fC-F]" + _HEX + "{2})")
_STRING = '"' + _CHAR + '*"'

_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"                # 0001-9999
_LEAP = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = ("(?:" + _YEAR + "-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
         "|02-(?:0[1-9]|1[0-9]|2[0-8]))|" + _LEAP + "-02-29)")
_TIME = ("(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?"
         "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_FORMATS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": _DATE + "T" + _TIME,
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "email": "[A-Za-z0-9_%+-]+(?:\\.[A-Za-z0-9_%+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\\.)+[A-Za-z]{2,}",
    "ipv4": _OCTET + "(?:\\." + _OCTET + "){3}",
}

_ABSENT = object()


def _json_eq(x, y) -> bool:
    if isinstance(x, bool) or isinstance(y, bool):
        return isinstance(x, bool) and isinstance(y, bool) and x == y
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x == y
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_json_eq(a, b) for a, b in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_json_eq(x[k], y[k]) for k in x)
    return type(x) is type(y) and x == y


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Compiler:
    def __init__(self, root, whitespace: str | None):
        self.root = root
        self.active: dict[str, int] = {}
        self.depth = 0
        self._any: dict[int, str] = {}
        self._validator = None
        if whitespace is None:
            self.item_sep, self.key_sep, self.pad = ", ", ": ", ""
        else:
            w = whitespace if whitespace == "" or _atomic(whitespace) else f"(?:{whitespace})"
            self.item_sep, self.key_sep, self.pad = w + "," + w, w + ":" + w, w

    # -- helpers

    def wrap(self, open_: str, body: str | None, close: str) -> str | None:
        return None if body is None else open_ + self.pad + body + self.pad + close

    def nonneg_int(self, s: dict, key: str, where: str, default):
        v = s.get(key, default)
        if v is default:
            return v
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConstraintError(f"'{key}' at {where} must be a non-negative integer, got {v!r}.")
        return v

    def resolve(self, ref, where: str):
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise ConstraintError(f"the $ref {ref!r} at {where} is not supported: only local references "
                                  f"such as '#/$defs/name' are.")
        from urllib.parse import unquote
        node = self.root
        pointer = unquote(ref[1:])
        if pointer and not pointer.startswith("/"):
            raise ConstraintError(f"the $ref {ref!r} at {where} is not supported: only JSON-pointer "
                                  f"references such as '#/$defs/name' are.")
        for part in pointer.split("/")[1:] if pointer else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ConstraintError(f"the $ref {ref!r} at {where} points at nothing in the schema.")
        return node, "#" + pointer

    def deref(self, s, where: str, hops: int = 0):
        if not isinstance(s, dict) or "$ref" not in s:
            return s
        if hops > 32:
            raise ConstraintError(f"the $ref chain at {where} refers to itself without ever reaching a schema.")
        target, tw = self.resolve(s["$ref"], where)
        target = self.deref(target, tw, hops + 1)
        rest = {k: v for k, v in s.items() if k != "$ref" and k not in _ANNOTATIONS}
        return self.merge(target, rest, where) if rest else target

    # -- allOf / $ref-with-siblings / anyOf-with-siblings: intersection of two schemas

    def merge(self, a, b, where: str):
        a, b = self.deref(a, where), self.deref(b, where)
        if a is False or b is False:
            return False
        if a is True or (isinstance(a, dict) and not a):
            return b
        if b is True or (isinstance(b, dict) and not b):
            return a
        if not isinstance(a, dict) or not isinstance(b, dict):
            raise ConstraintError(f"a subschema at {where} is not an object or a boolean.")
        out = dict(a)
        for k, v in b.items():
            if k in _ANNOTATIONS:
                continue
            if k not in out:
                out[k] = v
                continue
            u = out[k]
            if _json_eq(u, v):
                continue
            if k == "type":
                ta, tb = ([u] if isinstance(u, str) else list(u)), ([v] if isinstance(v, str) else list(v))
                both = [t for t in ta if t in tb or (t == "integer" and "number" in tb)]
                both += [t for t in tb if t == "integer" and "number" in ta and t not in both]
                if not both:
                    return False
                out[k] = both
            elif k == "required":
                out[k] = list(u) + [r for r in v if r not in u]
            elif k == "properties":
                props = dict(u)
                for name, sub in v.items():
                    props[name] = {"allOf": [props[name], sub]} if name in props else sub
                out[k] = props
            elif k in _MIN_KW + _MAX_KW and _num(u) and _num(v):
                out[k] = max(u, v) if k in _MIN_KW else min(u, v)
            elif k in ("items", "additionalProperties", "additionalItems") and not isinstance(u, list) \
                    and not isinstance(v, list):
                out[k] = False if u is False or v is False else {"allOf": [u, v]}
            elif k == "enum" and isinstance(u, list) and isinstance(v, list):
                out[k] = [x for x in u if any(_json_eq(x, y) for y in v)]
            elif k == "const":
                return False
            elif k in ("anyOf", "oneOf") and isinstance(u, list) and isinstance(v, list):
                out[k] = [{"allOf": [x, y]} for x in u for y in v]
            elif k == "allOf" and isinstance(u, list) and isinstance(v, list):
                out[k] = list(u) + list(v)
            else:
                raise ConstraintError(f"two different values of '{k}' meet at {where} (allOf, $ref with "
                                      f"siblings or anyOf/oneOf with siblings), which is not supported.")
        # a side with additionalProperties false/schema governs the other side's extra properties
        for x in (a, b):
            ap = x.get("additionalProperties", _ABSENT)
            if ap is _ABSENT or ap is True or not isinstance(out.get("properties"), dict):
                continue
            own = x.get("properties", {})
            props = {}
            for name, sub in out["properties"].items():
                if name in own:
                    props[name] = sub
                elif ap is False:
                    if name in out.get("required", ()):
                        return False
                else:
                    props[name] = {"allOf": [sub, ap]}
            out["properties"] = props
        return out

    # -- dispatch

    def compile(self, s, where: str) -> str | None:
        if s is True:
            return self.any(ANY_DEPTH)
        if s is False:
            return None
        if not isinstance(s, dict):
            raise ConstraintError(f"the schema at {where} is not an object or a boolean.")
        self.depth += 1
        try:
            if self.depth > _MAX_NESTING:
                raise ConstraintError(f"the schema at {where} nests too deeply or refers to itself without "
                                      f"an object or array in between.")
            if "$ref" in s:
                return self.ref(s, where)
            if "allOf" in s:
                if not isinstance(s["allOf"], list):
                    raise ConstraintError(f"'allOf' at {where} must be a list of schemas.")
                out = {k: v for k, v in s.items() if k != "allOf"}
                for i, sub in enumerate(s["allOf"]):
                    out = self.merge(out, sub, _ptr(where, "allOf", i))
                return self.compile(out, where)
            if "enum" in s or "const" in s:
                return self.enum(s, where)
            self.check(s, where)
            if "anyOf" in s or "oneOf" in s:
                return self.union(s, where)
            return self.typed(s, where)
        finally:
            self.depth -= 1

    def ref(self, s: dict, where: str):
        target, tw = self.resolve(s["$ref"], where)
        if self.active.get(tw, 0) >= MAX_REF_DEPTH:
            return None                               # recursion cut: the innermost expansion is empty
        self.active[tw] = self.active.get(tw, 0) + 1
        try:
            rest = {k: v for k, v in s.items() if k != "$ref" and k not in _ANNOTATIONS}
            if rest:
                return self.compile(self.merge(target, rest, where), where)
            return self.compile(target, tw)
        finally:
            self.active[tw] -= 1

    def check(self, s: dict, where: str):
        for k in _UNSUPPORTED:
            if k in s:
                raise ConstraintError(f"JSON Schema keyword '{k}' at {where} is not supported.")
        if s.get("uniqueItems", False) is not False:
            mx = s.get("maxItems")
            if not (s["uniqueItems"] is True and _num(mx) and mx <= 1):
                raise ConstraintError(f"JSON Schema keyword 'uniqueItems' at {where} is not supported "
                                      f"(only with maxItems <= 1).")
        if "multipleOf" in s and not (_num(s["multipleOf"]) and s["multipleOf"] == 1):
            raise ConstraintError(f"JSON Schema keyword 'multipleOf' at {where} is not supported "
                                  f"(only multipleOf: 1).")
        for k in ("unevaluatedProperties", "unevaluatedItems"):
            if k in s and not isinstance(s[k], bool):
                raise ConstraintError(f"JSON Schema keyword '{k}' with a schema value at {where} is not "
                                      f"supported (only true or false).")

    def union(self, s: dict, where: str):
        for k in ("anyOf", "oneOf"):
            if k in s and (not isinstance(s[k], list) or not s[k]):
                raise ConstraintError(f"'{k}' at {where} must be a non-empty list of schemas.")
        if "anyOf" in s and "oneOf" in s:
            key = "anyOf"
            branches = [{"allOf": [x, y]} for x in s["anyOf"] for y in s["oneOf"]]
        else:
            key = "anyOf" if "anyOf" in s else "oneOf"
            branches = s[key]
        rest = {k: v for k, v in s.items() if k not in ("anyOf", "oneOf") and k not in _ANNOTATIONS}
        alts = []
        for i, b in enumerate(branches):
            w = _ptr(where, key, i)
            alts.append(self.compile(self.merge(rest, b, w) if rest else b, w))
        return _alt(alts)

    def enum(self, s: dict, where: str):
        if "enum" in s:
            vals = s["enum"]
            if not isinstance(vals, list):
                raise ConstraintError(f"'enum' at {where} must be a list.")
            if "const" in s:
                vals = [x for x in vals if _json_eq(x, s["const"])]
        else:
            vals = [s["const"]]
        rest = {k: v for k, v in s.items() if k not in ("enum", "const") and k not in _ANNOTATIONS}
        if rest and vals:
            sub = self.validator().evolve(schema=rest)
            try:
                vals = [x for x in vals if sub.is_valid(x)]
            except Exception as e:  # noqa: BLE001 - jsonschema/referencing fail in many ways on a bad schema
                raise ConstraintError(f"the keywords beside 'enum'/'const' at {where} cannot be checked: "
                                      f"{str(e).splitlines()[0]}") from None
        return _alt([self.literal(x, where) for x in vals])

    def validator(self):
        if self._validator is None:
            import jsonschema
            root = self.root if isinstance(self.root, dict) else {}
            cls = jsonschema.validators.validator_for(root, default=jsonschema.Draft202012Validator)
            self._validator = cls(root, format_checker=cls.FORMAT_CHECKER)
        return self._validator

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

    def any(self, depth: int) -> str:
        if depth not in self._any:
            parts = ["null", "true", "false", _NUMBER, _STRING]
            if depth > 0:
                inner = self.any(depth - 1)
                parts.append(self.wrap("\\[", _list(inner, 0, None, self.item_sep), "\\]"))
                parts.append(self.wrap("\\{", _list(_STRING + self.key_sep + inner, 0, None, self.item_sep),
                                       "\\}"))
            self._any[depth] = _alt(parts)
        return self._any[depth]

    def typed(self, s: dict, where: str):
        t = s.get("type", _ABSENT)
        if t is _ABSENT:
            types = [ty for ty, kws in _KW_TYPE.items() if any(k in s for k in kws)]
            if not types:
                return self.any(ANY_DEPTH)
        else:
            types = [t] if isinstance(t, str) else t
            if not isinstance(types, list) or not types or any(ty not in _TYPES for ty in types):
                raise ConstraintError(f"'type' at {where} must be one of {', '.join(_TYPES)} or a list of "
                                      f"them, got {t!r}.")
        if "number" in types and "integer" in types:
            types = [ty for ty in types if ty != "integer"]
        alts = []
        for ty in types:
            if ty == "null":
                alts.append("null")
            elif ty == "boolean":
                alts.append("(?:true|false)")
            elif ty == "string":
                alts.append(self.string(s, where))
            elif ty in ("integer", "number"):
                alts.append(self.number(s, where, integer=ty == "integer"))
            elif ty == "array":
                alts.append(self.array(s, where))
            else:
                alts.append(self.object(s, where))
        return _alt(alts)

    # -- scalars

    def bounds(self, s: dict, where: str):
        """(lo, lo exclusive, hi, hi exclusive) as Fractions or None."""
        def value(key):
            v = s[key]
            if not _num(v) or (isinstance(v, float) and not math.isfinite(v)):
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
        if not integer and "multipleOf" in s:
            integer = True                             # multipleOf 1 (check() refuses the rest)
        lo, lo_ex, hi, hi_ex = self.bounds(s, where)
        if integer:
            a = None if lo is None else math.floor(lo) + 1 if lo_ex or lo != math.floor(lo) else int(lo)
            b = None if hi is None else math.ceil(hi) - 1 if hi_ex or hi != math.ceil(hi) else int(hi)
            return _INT if a is None and b is None else integer_range_regex(a, b)
        if lo is None and hi is None:
            return _NUMBER
        rx = number_range_regex(lo, lo_ex, hi, hi_ex)
        if rx is None and (lo is None or hi is None or lo < hi or (lo == hi and not lo_ex and not hi_ex)):
            raise ConstraintError(f"the bounds of the number at {where} leave no decimal with at most 15 "
                                  f"digits and no exponent.")
        return rx

    def string(self, s: dict, where: str):
        min_l = self.nonneg_int(s, "minLength", where, 0)
        max_l = self.nonneg_int(s, "maxLength", where, None)
        if max_l is not None and min_l > max_l:
            return None
        fmt, pat = s.get("format"), s.get("pattern")
        if fmt is not None and pat is not None:
            raise ConstraintError(f"'pattern' together with 'format' at {where} is not supported.")
        if fmt is not None:
            if fmt not in _FORMATS:
                raise ConstraintError(f"string format {fmt!r} at {where} is not supported (supported: "
                                      f"{', '.join(_FORMATS)}).")
            node = _Pattern(_FORMATS[fmt], where, "format").parse()
        elif pat is not None:
            if not isinstance(pat, str):
                raise ConstraintError(f"'pattern' at {where} must be a string.")
            node = _Pattern(pat, where).parse()
        else:
            return '"' + _rep(_CHAR, min_l, max_l) + '"'
        rx, plo, phi, single = node
        if (phi is not None and phi < min_l) or (max_l is not None and plo > max_l):
            return None
        if plo >= min_l and (max_l is None or (phi is not None and phi <= max_l)):
            return '"' + rx + '"'
        if single is not None:
            unit, qlo, qhi = single
            lo = max(qlo, min_l)
            hi = max_l if qhi is None else qhi if max_l is None else min(qhi, max_l)
            return '"' + _rep(unit, lo, hi) + '"'
        raise ConstraintError(f"'minLength'/'maxLength' together with the {'format' if fmt else 'pattern'} "
                              f"at {where} are not supported unless the pattern is one repeated character "
                              f"class or its own lengths already satisfy them.")

    # -- containers

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
            extra, extra_w = s.get(extra_key, _ABSENT), _ptr(where, extra_key)
            prefix_w = [_ptr(where, key, i) for i in range(len(prefix))]
        else:
            prefix, prefix_w, extra, extra_w = [], [], items, _ptr(where, "items")
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
                e = self.any(ANY_DEPTH) if lo > m else None
                hi = max(lo, m) if hi is None else min(hi, max(lo, m))
            else:
                e = self.any(ANY_DEPTH - 1)
        else:
            e = self.compile(extra, extra_w)
        if e is None:
            hi = m if hi is None else min(hi, m)
        if hi is not None and lo > hi:
            return None
        sep = self.item_sep

        def tail(i):                                     # items i.. after an existing item i - 1
            if i < m:
                body = sep + p[i] + tail(i + 1)
                return body if i < lo else _rep(body, 0, 1)
            if e is None:
                return ""
            return _rep(sep + e, max(0, lo - m), None if hi is None else hi - m)

        if hi == 0:
            body = ""
        elif m:
            body = p[0] + tail(1)
            body = body if lo >= 1 else _rep(body, 0, 1)
        else:
            body = _list(e, lo, hi, sep)
        return self.wrap("\\[", body, "\\]")

    def object(self, s: dict, where: str):
        props = s.get("properties", {})
        required = s.get("required", [])
        if not isinstance(props, dict):
            raise ConstraintError(f"'properties' at {where} must be an object.")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ConstraintError(f"'required' at {where} must be a list of strings.")
        required = list(dict.fromkeys(required))
        addl = s.get("additionalProperties", _ABSENT)
        if addl is _ABSENT and s.get("unevaluatedProperties") is False:
            addl = False
        if addl is not _ABSENT and not isinstance(addl, (bool, dict)):
            raise ConstraintError(f"'additionalProperties' at {where} must be a schema.")
        min_p = self.nonneg_int(s, "minProperties", where, 0)
        max_p = self.nonneg_int(s, "maxProperties", where, None)
        key_sep, sep = self.key_sep, self.item_sep

        if props or required:
            entries = []
            for name in list(props) + [r for r in required if r not in props]:
                if name in props:
                    sub, w = props[name], _ptr(where, "properties", name)
                elif addl is False:
                    return None                          # a required name no property may carry
                elif isinstance(addl, dict):
                    sub, w = addl, _ptr(where, "additionalProperties")
                else:
                    sub, w = True, where
                rx = self.compile(sub, w)
                req = name in required
                if rx is None:
                    if req:
                        return None
                    continue
                entries.append((_lit(json.dumps(name, ensure_ascii=False)) + key_sep + rx, req))
            n_req = sum(r for _, r in entries)
            if min_p > len(entries) or (max_p is not None and max_p < n_req):
                return None
            if min_p > n_req or (max_p is not None and max_p < len(entries)):
                raise ConstraintError(f"'minProperties'/'maxProperties' at {where} are only supported when "
                                      f"the required and optional properties already satisfy them.")
            memo = {}
            req_after = [any(r for _, r in entries[i:]) for i in range(len(entries) + 1)]

            def seq(i, first):                           # entries i.., first: nothing written before
                if i == len(entries):
                    return ""
                if (i, first) not in memo:
                    rx, req = entries[i]
                    lead = "" if first else sep
                    if req:
                        memo[i, first] = lead + rx + seq(i + 1, False)
                    elif first and req_after[i + 1]:   # a later entry follows: "rx, " or nothing
                        memo[i, first] = _rep(rx + sep, 0, 1) + seq(i + 1, True)
                    elif first:
                        memo[i, first] = _alt([rx + seq(i + 1, False), seq(i + 1, True)])
                    else:
                        memo[i, first] = _rep(sep + rx, 0, 1) + seq(i + 1, False)
                return memo[i, first]

            return self.wrap("\\{", seq(0, True), "\\}")
        if addl is False:
            return None if min_p > 0 else self.wrap("\\{", "", "\\}")
        value = self.compile(addl, _ptr(where, "additionalProperties")) if isinstance(addl, dict) \
            else self.any(ANY_DEPTH - 1)
        if value is None:
            return None if min_p > 0 else self.wrap("\\{", "", "\\}")
        return self.wrap("\\{", _list(_STRING + key_sep + value, min_p, max_p, sep), "\\}")


# ---------------------------------------------------------------- entry point


def _check_whitespace(whitespace) -> None:
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


@lru_cache(maxsize=64)
def _cached(text: str, whitespace: str | None) -> str:
    return _compile(json.loads(text), whitespace)


def _compile(schema, whitespace: str | None) -> str:
    if whitespace is not None:
        _check_whitespace(whitespace)
    if not isinstance(schema, (dict, bool)):
        raise ConstraintError(f"the JSON schema must be an object or a boolean, got {type(schema).__name__}.")
    rx = _Compiler(schema, whitespace).compile(schema, "#")
    if rx is None:
        raise ConstraintError("the JSON schema admits no value that can be written in the supported subset "
                              "(empty enum, contradictory bounds or recursion without a base case).")
    return rx


def schema_to_regex(schema: dict, *, whitespace: str | None = None) -> str:
    """Regular expression whose full matches are JSON texts valid under `schema` (see the module
    docstring for the subset and style). Raises ConstraintError for what it cannot express."""
    try:
        text = json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError):
        return _compile(schema, whitespace)
    return _cached(text, whitespace)
