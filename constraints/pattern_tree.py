"""interegular's regex parse tree, read by the constraint compiler: the flags in force at a node (as
int bits), a node's children, the character set of a leaf, and a node written back as regex text
(for error sentences that name the part of a pattern)."""
from __future__ import annotations

from interegular.patterns import _DOT, Pattern, REFlags, _CharGroup, _Concatenation, _NonCapturing, _Repeated

from dllm.errors import ConstraintError

_I, _M, _S = REFlags.CASE_INSENSITIVE.value, REFlags.MULTILINE.value, REFlags.SINGLE_LINE.value


def _flags_of(node, flags: int) -> int:
    """The flags in force inside node (int bits of interegular's REFlags; a Pattern may change them)."""
    if type(node) is Pattern:
        return (flags | node.added_flags.value) & ~node.removed_flags.value
    return flags


def _children(node):
    """Sub-patterns of a node (lookarounds' inner patterns included)."""
    kind = type(node)
    if kind is Pattern:
        return list(node.options)
    if kind is _Concatenation:
        return [p.inner if type(p) is _NonCapturing else p for p in node.parts]
    if kind is _Repeated:
        return [node.base]
    return []


_SPECS: dict = {}


def _spec(node, flags: int):
    """A character set as (frozenset of characters, negated), or None for a non-leaf."""
    kind = type(node)
    if kind is not _CharGroup and node is not _DOT:
        return None
    if flags & _M:
        raise ConstraintError("the regex uses the m (multiline) flag, which constraints do not support.")
    if node is _DOT:
        return (frozenset(), True) if flags & _S else (frozenset("\n"), True)
    if not flags & _I:
        return node.chars, node.negated
    key = (node, flags & _I)
    out = _SPECS.get(key)
    if out is None:
        chars = frozenset(v for c in node.chars for v in (c, c.lower(), c.upper()) if len(v) == 1)
        out = _SPECS.setdefault(key, (chars, node.negated))
    return out


def render(node, limit: int = 200) -> str:
    """A regex that reads like the sub-pattern `node` (interegular's tree back to text, shortened)."""
    spec = _spec(node, 0)
    if spec is not None:
        chars, neg = spec
        if not neg and len(chars) == 1:
            c = next(iter(chars))
            return "\\" + c if c in ".^$*+?{}[]\\|()" else c if c.isprintable() else f"\\x{ord(c):02x}" \
                if ord(c) < 256 else f"\\u{ord(c):04x}"
        if neg and chars == frozenset("\n"):
            return "."
        body = "".join(sorted(chars))[:20]
        return f"[{'^' if neg else ''}{body!s}{'...' if len(chars) > 20 else ''}]"
    if isinstance(node, Pattern):
        parts, n = [], 0
        for o in node.options:
            parts.append(render(o, limit))
            n += len(parts[-1]) + 1
            if n > limit:
                break
        text = "|".join(parts)
        return text if len(node.options) == 1 else f"(?:{text})"
    if isinstance(node, _Concatenation):
        out = ""
        for p in node.parts:
            if isinstance(p, _NonCapturing):
                out += f"(?{'<' if p.backwards else ''}{'!' if p.negate else '='}{render(p.inner, limit)})"
            else:
                out += render(p, limit)
            if len(out) > limit:
                break
        return out
    if isinstance(node, _Repeated):
        inner = render(node.base, limit)
        if len(inner) > 1 and not (inner.startswith("(") or inner.startswith("[")):
            inner = f"(?:{inner})"
        q = {(0, None): "*", (1, None): "+", (0, 1): "?"}.get((node.min, node.max))
        if q is None:
            q = f"{{{node.min}}}" if node.min == node.max else f"{{{node.min},{'' if node.max is None else node.max}}}"
        return inner + q
    return ""
