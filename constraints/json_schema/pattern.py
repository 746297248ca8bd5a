"""ECMA-262 `pattern` -> regex over the JSON encoding of the strings it matches."""
from __future__ import annotations

import re

from dllm.constraints.json_schema.text import (_ANYCHAR, _CLASS_ESC, _CTRL_ESC, _DOT, _MAXCP, _alt, _atomic,
                                               _complement, _encoded, _norm, _rep, _single, _size)
from dllm.errors import ConstraintError

_ENC_ANY = _encoded(_ANYCHAR)         # one character of any kind, canonically encoded
_QUANT = re.compile(r"\{([0-9]+)(?:(,)([0-9]*))?\}")
_HEXRE = re.compile(r"[0-9a-fA-F]+")


def _at_least(node):
    """A node u{lo,hi} (one character set repeated) cut to u{lo}, its shortest form."""
    unit, lo, _ = node[3]
    return _rep(unit, lo, lo), lo, lo, (unit, lo, lo)


class _Pattern:
    """Recursive descent over an ECMA-262 pattern. Nodes are (regex, min decoded length, max or None,
    single) where single = (unit regex, lo, hi) when the node is one character set repeated lo..hi."""

    def __init__(self, src: str, where: str, what: str = "pattern", search: bool = False):
        # search: the language of strings in which the pattern is FOUND (JSON Schema's semantics),
        # i.e. each top-level branch gets any characters before it unless it starts with '^' and
        # after it unless it ends with '$'; otherwise the pattern is matched in full
        self.src, self.where, self.what, self.i, self.search = src, where, what, 0, search

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
        start = end = False
        if top and self.peek() == "^":
            self.i += 1
            start = True
        while self.peek() not in ("", "|", ")"):
            if top and self.peek() == "$" and self.peek(1) in ("", "|"):
                self.i += 1
                end = True
                break
            parts.append(self.quantified(self.atom()))
        if top and self.search:              # any characters around an unanchored end
            # a repeated character next to a free end needs only its minimum: "contains $\w{1,255}" is
            # "contains $\w" (gitlab-ci's cache policy: 7,300 DFA states -> a few dozen)
            if parts and not end and parts[-1][3] is not None:
                parts[-1] = _at_least(parts[-1])
            if parts and not start and parts[0][3] is not None:
                parts[0] = _at_least(parts[0])
            free = (_rep(_ENC_ANY, 0, None), 0, None, None)
            parts = ([] if start else [free]) + parts + ([] if end else [free])
        if not parts:
            return "", 0, 0, None
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


