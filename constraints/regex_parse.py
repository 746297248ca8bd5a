"""Regex syntax: Python's verdict, interegular's parse tree, and the rewrites that make interegular
read a pattern the way Python does (stage 0 of constraints/regex.py).

`check_regex` is this stage alone: fast, torch-free, run while SamplingParams is validated.
"""
from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right

from dllm.constraints.budget import Budget
from dllm.errors import ConstraintError

_SURROGATES = (0xD800, 0xE000)


def _show(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 80 else pattern[:77] + "...")


_QUANTIFIER = re.compile(r"\{(\d*)(,\d*)?\}")
_SIMPLE_ESCAPES = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_BIG_RANGE = 256            # class ranges wider than this reach interegular as a few representatives


def _char_escape(ch: str) -> str:
    """One character written so that interegular reads it literally, in or out of a class."""
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else ch   # non-ASCII characters are never special


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str | None, str, int]:
    """The escape at pattern[i] (a backslash) as Python reads it: (the one character it denotes, or
    None for a class such as \\d or an assertion; the text to hand interegular; the next index)."""
    nxt, j = pattern[i + 1], i + 2
    fixed = {"u": r"[0-9a-fA-F]{4}", "U": r"[0-9a-fA-F]{8}", "x": r"[0-9a-fA-F]{2}", "N": r"\{([^}]*)\}",
             "0": r"[0-7]{0,2}"}
    ch = None
    if nxt in fixed:
        m = re.compile(fixed[nxt]).match(pattern, j)
        if m:
            j = m.end()
            ch = (unicodedata.lookup(m.group(1)) if nxt == "N"
                  else chr(int(m.group(0) or "0", 8 if nxt == "0" else 16)))
    elif nxt in "1234567":                       # octal: in a class \1..\377, outside only 3 digits
        m = re.compile(r"[0-7]{0,2}" if in_class else r"[0-7]{2}").match(pattern, j)
        if m:
            j = m.end()
            ch = chr(int(nxt + m.group(0), 8))
    elif nxt in _SIMPLE_ESCAPES or (nxt == "b" and in_class):
        ch = _SIMPLE_ESCAPES.get(nxt, "\b")
    elif not nxt.isalnum():
        ch = nxt                                 # escaped punctuation or space
    if ch is None:                               # \d \w \s ..., \A \Z \b, backreferences: as written
        return None, pattern[i:j], j
    return ch, _char_escape(ch), j


def _normalise(pattern: str) -> tuple[str, dict[int, int]]:
    r"""Rewrite a pattern (already accepted by re.compile) into one interegular reads the way Python
    does, and keep huge character classes small. Returns (pattern for interegular, segments).

      * a leading `^` and a trailing unescaped `$` are redundant under fullmatch: dropped;
      * \uXXXX, \UXXXXXXXX, \N{name}, octal and \xHH escapes -> the character (interegular lacks some);
      * `]` first in a class is a literal in Python -> escaped;
      * `{` that does not start a quantifier (`a{`, `a{}`, `x{ 2}`) is a literal in Python -> `\{`;
      * a class range wider than _BIG_RANGE code points: interegular would list every code point.
        The code-point line is cut at every character and range end the pattern mentions (and at
        every ASCII character), so that every set the pattern uses holds each piece whole; such a
        range is then written as the first code point of each piece it covers, and `segments` maps
        that representative to the piece's last code point for the byte stage to widen it again.
    """
    pattern = pattern.removeprefix("^")
    if pattern.endswith("$") and (len(pattern) - 1 - len(pattern[:-1].rstrip("\\"))) % 2 == 0:
        pattern = pattern[:-1]
    pieces: list = []            # text, or (lo, hi) for a wide class range written out later
    cuts = set(range(129)) | {*_SURROGATES, 0x110000}
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            ch, text, i = _escape(pattern, i, in_class=False)
            pieces.append(text)
            if ch is not None:
                cuts.update((ord(ch), ord(ch) + 1))
        elif c == "[":
            i = _class(pattern, i, pieces, cuts)
        elif c == "{":
            m = _QUANTIFIER.match(pattern, i)
            quantifier = m is not None and m.group(0) != "{}"
            pieces.append(m.group(0) if quantifier else "\\{")
            i = m.end() if quantifier else i + 1
        else:
            pieces.append(c)
            cuts.update((ord(c), ord(c) + 1))
            i += 1
    return _write(pieces, sorted(cuts))


def _class(pattern: str, i: int, pieces: list, cuts: set) -> int:
    """The class starting at pattern[i] == "[" -> pieces (text, or (lo, hi) for a wide range) and its
    characters' and ranges' edges -> cuts; returns the index after its closing "]"."""
    n = len(pattern)
    j = i + 1 + (pattern[i + 1:i + 2] == "^")
    pieces.append(pattern[i:j])
    items = []           # (character or None, text, is an unescaped "-")
    while j < n and (pattern[j] != "]" or not items):
        if pattern[j] == "\\" and j + 1 < n:
            ch, text, j = _escape(pattern, j, in_class=True)
            items.append((ch, text, False))
        else:
            items.append((pattern[j], _char_escape(pattern[j]), pattern[j] == "-"))
            j += 1
    k = 0
    while k < len(items):
        ch, text, _ = items[k]
        if k + 2 < len(items) and items[k + 1][2] and ch is not None and items[k + 2][0] is not None:
            lo, hi = ord(ch), ord(items[k + 2][0])      # a range, as Python's parser forms it
            cuts.update((lo, hi + 1))
            pieces.append((lo, hi) if hi - lo >= _BIG_RANGE else f"{text}-{items[k + 2][1]}")
            k += 3
            continue
        if ch is not None:
            cuts.update((ord(ch), ord(ch) + 1))
        pieces.append(text)
        k += 1
    pieces.append("]")
    return j + 1


def _write(pieces: list, cuts: list) -> tuple[str, dict[int, int]]:
    """The pattern text, a wide range written as the first code point of each piece of the cut line it
    covers; segments maps each such representative to its piece's last code point."""
    segments: dict[int, int] = {}
    out = []
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
            continue
        lo, hi = p
        first = bisect_right(cuts, lo) - 1                      # cuts holds lo and hi + 1
        last = bisect_right(cuts, hi) - 1
        for a, b in zip(cuts[first:last + 1], cuts[first + 1:last + 2]):
            segments[a] = b - 1
            out.append(_char_escape(chr(a)))
    return "".join(out), segments


def _size(node) -> int:
    """A rough count of the character positions the pattern unrolls to ({m,n} multiplies): the
    NFA's size grows with it, so absurd patterns are refused before anything is built."""
    inner = sum(_size(c) for attr in ("options", "parts") for c in (getattr(node, attr, ()) or ()))
    for attr in ("base", "inner"):
        child = getattr(node, attr, None)
        if child is not None:
            inner += _size(child)
    if not hasattr(node, "min"):
        return max(inner, 1)
    return max(inner, 1) * max(node.min, node.max if node.max is not None else 1, 1)


def _largest(node, limit: int):
    """The innermost sub-pattern whose own size is above limit (node itself when no child is)."""
    from dllm.constraints.pattern_tree import _children

    while True:
        big = next((c for c in _children(node) if _size(c) > limit), None)
        if big is None:
            return node
        node = big


def _parse(pattern: str, budget: Budget | None = None):
    """Python's verdict on the syntax, then interegular's parse tree (raises ConstraintError).
    Patterns that unroll to more than budget.positions characters raise ConstraintBudgetError."""
    import interegular

    from dllm.errors import ConstraintBudgetError

    if not isinstance(pattern, str):
        raise ConstraintError(f"a regex must be a string, got {type(pattern).__name__}.")
    budget = budget or Budget()
    if len(pattern) > 10 * budget.positions:      # re.compile alone would take seconds
        raise ConstraintBudgetError(f"the regex {_show(pattern)} is {len(pattern):,} characters long; constraints "
                                    f"take at most {10 * budget.positions:,} (raise DLLM_CONSTRAINT_POSITIONS).")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConstraintError(f"the regex {_show(pattern)} is invalid: {exc}.") from None
    except (OverflowError, RecursionError):
        raise ConstraintError(f"the regex {_show(pattern)} is too large to compile.") from None
    try:
        text, segments = _normalise(pattern)
        parsed = interegular.parse_pattern(text)
        pre_post = parsed.prefix_postfix
        size = _size(parsed)
    except Exception as exc:  # noqa: BLE001 (interegular's InvalidSyntax / Unsupported / parser errors)
        detail = str(exc) or type(exc).__name__
        raise ConstraintError(f"the regex {_show(pattern)} uses a feature that constraints do not "
                              f"support ({detail}).") from None
    if pre_post != (0, 0):
        raise ConstraintError(f"the regex {_show(pattern)} has a lookahead or lookbehind reaching past "
                              "its ends, which constraints do not support.")
    if size > budget.positions:
        from dllm.constraints.pattern_tree import render

        part = render(_largest(parsed, budget.positions))
        raise ConstraintBudgetError(
            f"the regex {_show(pattern)} is too large for a constraint: its repetitions unroll to more than "
            f"{budget.positions:,} characters, in the part {_show(part)} (raise DLLM_CONSTRAINT_POSITIONS).")
    return parsed, segments


def check_regex(pattern: str, budget: Budget | None = None) -> None:
    """Syntax check only (fast, torch-free): raises ConstraintError for a pattern compile_regex refuses
    at parse time. An empty language, or one past the state budget, is only found by compile_regex."""
    _parse(pattern, budget)
