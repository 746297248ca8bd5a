"""The budget of one constraint compilation: how large a pattern may unroll, how many automaton
states it may build, and how long it may take.

Compiling a regex to a DFA can take exponential space (`(a|b)*a(a|b){18}` needs 2^19 states) and a
Lark grammar can chain thousands of rules, so every compiler stage charges a Budget and raises
ConstraintBudgetError, naming the part of the pattern it was building, once a limit is passed.
The limits are arguments (Budget(states=..., seconds=...)) or, when not given, the environment:

  DLLM_CONSTRAINT_POSITIONS  characters a regex may unroll to ({m,n} multiplies)      200,000
  DLLM_CONSTRAINT_STATES     automaton states one compilation may build                250,000
  DLLM_CONSTRAINT_SECONDS    wall-clock seconds one compilation may take                   300

Measured on 360 JSONSchemaBench schemas (README, "What dllm refuses, and why"): every schema that
dllm's JSON-Schema translation expresses within 200,000 positions needs at most 175,833 states; an
exploding pattern reaches 250,000 states in about 5 s (and ~0.6 GB). The seconds are the backstop
for what is slow without being large: the token stage costs ~3 ms per state on a 49k vocabulary.
The environment is read when a Budget is made, never at import time.

One request's compile may make many Budgets (the token-DFA route, then the grammar route; each stage;
each grammar terminal). Inside `one_clock()` (compile_constraint opens it) they all end by one deadline,
so DLLM_CONSTRAINT_SECONDS bounds the whole compile; outside, a Budget's clock starts when it is made.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import time

from dllm.errors import ConstraintBudgetError, InvalidParamsError

DEFAULTS = {"positions": 200_000, "states": 250_000, "seconds": 300.0}
ENV = {"positions": "DLLM_CONSTRAINT_POSITIONS", "states": "DLLM_CONSTRAINT_STATES",
       "seconds": "DLLM_CONSTRAINT_SECONDS"}


def _limit(name: str, given):
    """The limit `name`: the argument, else the environment variable, else the default."""
    value = given
    if value is None:
        text = os.environ.get(ENV[name])
        if text is None or not text.strip():
            return DEFAULTS[name]
        try:
            value = float(text) if name == "seconds" else int(text)
        except ValueError:
            raise InvalidParamsError(f"{ENV[name]}={text!r} is not a number.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value \
            or value == float("inf"):
        raise InvalidParamsError(f"the constraint budget's {name} must be a positive finite number, got {value!r}.")
    return value


_DEADLINE: contextvars.ContextVar = contextvars.ContextVar("dllm_constraint_deadline", default=None)


@contextlib.contextmanager
def one_clock():
    """Every Budget made inside ends by DLLM_CONSTRAINT_SECONDS from now (nested: the outer clock holds)."""
    if _DEADLINE.get() is not None:
        yield
        return
    token = _DEADLINE.set(time.monotonic() + _limit("seconds", None))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


class Budget:
    """Limits shared by every stage of one compilation (regex -> char DFA -> byte DFA -> token DFA,
    or all the terminals and rules of one grammar). The clock starts when the Budget is made, and ends
    by the deadline of the one_clock() it is made in, unless own_clock (the diagnosis of a refusal)."""

    def __init__(self, positions=None, states=None, seconds=None, own_clock: bool = False):
        self.positions = int(_limit("positions", positions))
        self.states = int(_limit("states", states))
        self.seconds = float(_limit("seconds", seconds))
        self.deadline = time.monotonic() + self.seconds
        shared = None if own_clock else _DEADLINE.get()
        if shared is not None:
            self.deadline = min(self.deadline, shared)
        self.used = 0                      # states built so far, all stages together
        self.exceeded = None               # "states" or "seconds" once a limit was passed

    def spend(self, n: int, what) -> None:
        """Charge n more states (and look at the clock); `what` names the part being built (a string,
        or a function returning one, called only when the budget is exceeded)."""
        self.used += n
        if self.used > self.states:
            self.exceeded = "states"
            raise ConstraintBudgetError(
                f"compiling the constraint needs more than {self.states:,} automaton states at {_name(what)}; "
                f"simplify that part or raise {ENV['states']}.")
        self.tick(what)

    def tick(self, what) -> None:
        """Raise once the wall-clock cap has passed."""
        if time.monotonic() > self.deadline:
            self.exceeded = "seconds"
            raise ConstraintBudgetError(
                f"compiling the constraint took more than {self.seconds:g} s, at {_name(what)}; simplify that "
                f"part or raise {ENV['seconds']}.")

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _name(what) -> str:
    return what() if callable(what) else what


def show(text: str, limit: int = 60) -> str:
    """A part of a pattern as it appears in an error sentence (shortened)."""
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")
