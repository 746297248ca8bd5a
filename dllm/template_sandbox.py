"""A jinja2 sandbox for chat templates, bounded in output size and time.

A chat template is data from the checkpoint. jinja2's ImmutableSandboxedEnvironment already keeps it
away from Python internals; this one also keeps it from exhausting memory or time:
  * `*` on strings and lists, and `**`, are intercepted: a result longer than the output cap (or a
    power with a huge result) is refused before it is built;
  * every call (methods such as str.center / ljust, globals, filters) is refused when an integer
    argument exceeds the output cap, and a string result longer than the cap is refused;
  * the rendered text is streamed and capped; a trace function stops rendering at the deadline
    (nested loops over range() or long strings), so a template cannot run for ever; a tracer already
    set (a debugger, coverage) is chained, not suspended.
Limits: DLLM_TEMPLATE_CHARS (output cap, default 4,000,000 characters plus 8 x the messages' text)
and DLLM_TEMPLATE_SECONDS (default 5), read when a template renders.
"""
from __future__ import annotations

import functools
import os
import sys
import time

from jinja2.sandbox import ImmutableSandboxedEnvironment

from dllm.errors import TokenizerError

DEFAULT_CHARS = 4_000_000
DEFAULT_SECONDS = 5.0


class _Stop(Exception):
    """Raised inside the template to stop it; turned into TokenizerError by render()."""


def _limit(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise TokenizerError(f"{name}={text!r} is not a number.") from None
    if not value > 0:
        raise TokenizerError(f"{name}={text!r} must be > 0.")
    return value


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_chars = DEFAULT_CHARS
        self.filters = {name: self._guarded(f, name == "format") for name, f in self.filters.items()}

    def _check_size(self, value):
        if isinstance(value, (str, list, tuple, bytes)) and len(value) > self.max_chars:
            raise _Stop(f"it builds a value of {len(value):,} items (the cap is {self.max_chars:,})")
        return value

    def _check_args(self, args, kwargs):
        for v in (*args, *kwargs.values()):
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > self.max_chars:
                raise _Stop(f"it passes {v} to a call (the cap is {self.max_chars:,})")

    def _guarded(self, f, is_format: bool):
        @functools.wraps(f)
        def filter_(*args, **kwargs):
            self._check_args(args[1:], kwargs)
            if is_format and args and isinstance(args[0], str) and _wide(args[0]):
                raise _Stop("it formats with a huge width")    # "%999999999s"|format(...)
            return self._check_size(f(*args, **kwargs))
        return filter_

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            seq, n = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > self.max_chars:
                raise _Stop(f"it repeats a sequence {n} times (the cap is {self.max_chars:,} items)")
        elif operator == "%" and isinstance(left, str) and _wide(left):
            raise _Stop("it formats with a huge width")
        elif operator == "**" and isinstance(right, (int, float)) and isinstance(left, (int, float)):
            if abs(right) > 1024 or (isinstance(left, int) and abs(left) > 1 and right * max(abs(left), 2).bit_length() > 65536):
                raise _Stop(f"it raises {left!r} to the power {right!r}")
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value):
        owner = getattr(value, "__self__", None)   # "{:>999999999}".format(...) is wrapped here by jinja2
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map") and _wide(owner):
            raise _Stop("it formats with a huge width")
        return super().wrap_str_format(value)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's own signature)
        __self._check_args(args, kwargs)
        return __self._check_size(super().call(__context, __obj, *args, **kwargs))


def _wide(fmt: str) -> bool:
    """A format string with a width or precision of 8+ digits ("%999999999s", "{:>99999999}")."""
    return any(len(w) > 7 for w in _digit_runs(fmt))


def _digit_runs(text: str):
    run = ""
    for c in text:
        if c.isdigit():
            run += c
        elif run:
            yield run
            run = ""
    if run:
        yield run


def render(env: BoundedSandbox, template, variables: dict, extra_chars: int = 0) -> str:
    """template.render(**variables) under the caps: at most DLLM_TEMPLATE_CHARS + extra_chars
    characters out, at most DLLM_TEMPLATE_SECONDS seconds; past them TokenizerError."""
    cap = int(_limit("DLLM_TEMPLATE_CHARS", DEFAULT_CHARS)) + extra_chars
    seconds = _limit("DLLM_TEMPLATE_SECONDS", DEFAULT_SECONDS)
    env.max_chars = cap
    deadline = time.monotonic() + seconds
    ticks = 0
    old = sys.gettrace()       # a debugger's or coverage's tracer: chained, so it keeps seeing the render

    def tick():
        nonlocal ticks
        ticks += 1
        if ticks % 256 == 0 and time.monotonic() > deadline:
            raise _Stop(f"it ran for more than {seconds:g} s")

    def chained(inner):        # this frame's local tracer: ours, then the old tracer's own (if it has one)
        def local(frame, event, arg):
            nonlocal inner
            tick()
            if inner is not None:
                inner = inner(frame, event, arg)
            return local
        return local

    def trace(frame, event, arg):   # every Python frame and line the template (or jinja for it) runs
        tick()
        return chained(old(frame, event, arg) if old is not None else None)

    sys.settrace(trace)
    out, n = [], 0
    try:
        for chunk in template.generate(**variables):
            n += len(chunk)
            if n > cap:
                raise _Stop(f"its output passed {cap:,} characters")
            out.append(chunk)
    except _Stop as e:
        raise TokenizerError(f"the chat template was stopped: {e} (raise DLLM_TEMPLATE_CHARS or "
                             "DLLM_TEMPLATE_SECONDS for a template that needs more).") from None
    except (MemoryError, RecursionError, OverflowError) as e:
        raise TokenizerError(f"the chat template failed to render ({type(e).__name__}).") from None
    finally:
        sys.settrace(old)
    return "".join(out)
