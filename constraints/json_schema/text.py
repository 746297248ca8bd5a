"""Regex text helpers and decoded code-point sets, shared by the JSON Schema compiler's parts.

Every regex written here uses only syntax that both Python `re` and `interegular` read alike:
literals, `[...]` classes with `\\xHH` escapes, `(?:...)`, `|`, `?`, `*`, `+`, `{m,n}`.
Character sets are tuples of inclusive (lo, hi) code-point ranges, sorted and merged.
"""
from __future__ import annotations

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


# ---------------------------------------------------------------- JSON value regexes

_INT = "(?:0|-?[1-9][0-9]*)"
_NUMBER = "-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
# One decoded character of a JSON string: raw (not '"', '\' or a control), a short escape, \uXXXX
# outside the surrogates, or a surrogate pair \uD800-DBFF \uDC00-DFFF (one character once decoded).
_HEX = "[0-9a-fA-F]"
_CHAR = ('(?:[^"\\\\\\x00-\\x1f]|\\\\["\\\\/bfnrt]|\\\\u(?:[0-9a-cA-CefEF]' + _HEX + "{3}|[dD][0-7]" + _HEX
         + "{2})|\\\\u[dD][89abAB]" + _HEX + "{2}\\\\u[dD][c-fC-F]" + _HEX + "{2})")
_STRING = '"' + _CHAR + '*"'
# One character in json.dumps(ensure_ascii=False)'s canonical encoding: every decoded string has
# exactly one such spelling, which is what makes "every string except these" a regex (keys).
_KEYCHAR = _encoded(_ANYCHAR)
_KEY = '"' + _rep(_KEYCHAR, 0, None) + '"'


def _not_words(words) -> str:
    """Regex (canonical encoding, no quotes) of every string that is not one of `words`: at each node
    of the words' trie, stop (unless a word ends there), leave the trie with a character no word
    continues with (then anything), or follow a child."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[None] = {}

    def sub(node) -> str:
        kids = sorted(k for k in node if k is not None)
        parts = [] if None in node else [""]
        out = _encoded(_minus(_ANYCHAR, _norm((ord(k), ord(k)) for k in kids)))
        parts.append(out + _rep(_KEYCHAR, 0, None))
        parts += [_encoded(_single(ord(k))) + sub(node[k]) for k in kids]
        return _alt(parts)

    return sub(trie)
