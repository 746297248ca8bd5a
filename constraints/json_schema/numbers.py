"""Decimal ranges as regexes: canonical integers in [lo, hi], bounded decimals without exponent."""
from __future__ import annotations

import math
from fractions import Fraction

from dllm.constraints.json_schema.text import _alt, _rep

MAX_FRACTION_DIGITS = 6    # fraction digits of bounded numbers
_SIG_CAP = 10 ** 15 - 1    # bounded numbers: N / 10**j with |N| <= this, i.e. <= 15 digits

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


