"""compile_json_schema: one JSON Schema -> the constraint the engine runs (a TokenDFA or a GrammarConstraint).

The route is chosen per schema by its measured size: the token-DFA route (constraints/regex.py, the
DINGO witness; exact slot counting, cheap steps) when the schema's regex stays within REGEX_BUDGET
characters and the regex compiler's own size check; otherwise, and for recursive schemas on diffusion
models, the grammar route (constraints/cfg.py: an Earley check of each commit, unbounded nesting, a
grammar whose size grows with the schema's instead of with its unrolled regex). Autoregressive models
and scheduler="apd" take the token mask of the regex route only: a schema too large for it is refused.
Both routes cache: plans per schema text, DFAs in memory and on disk, grammars per Lark text.
"""
from __future__ import annotations

from dllm.constraints.json_schema.ir import RegexTooLarge
from dllm.constraints.json_schema.plan import REGEX_BUDGET, plan_schema
from dllm.errors import ConstraintBudgetError, ConstraintError


def choose_route(plan, grammar_ok: bool) -> tuple[str, str | None]:
    """("regex", the regex) or ("grammar", None)."""
    from dllm.constraints.regex import check_regex

    if plan.recursive and grammar_ok:
        return "grammar", None
    if grammar_ok and plan.regex_size() > REGEX_BUDGET:
        return "grammar", None           # a cheap estimate first: rendering a huge regex costs time and memory
    try:
        rx = plan.regex(budget=REGEX_BUDGET)
        check_regex(rx)                  # the regex compiler's own size check (repetitions unrolled)
        return "regex", rx
    except (RegexTooLarge, ConstraintBudgetError):
        if grammar_ok:
            return "grammar", None
        raise ConstraintError("the JSON schema is too large for a token mask of an autoregressive model "
                              "(or scheduler 'apd'); use a diffusion model, which checks it as a grammar.") from None
    except ConstraintError as e:
        if grammar_ok and "too large" in str(e):
            return "grammar", None
        raise


def compile_json_schema(schema, tokenizer, vocab_size: int, strict: bool = False, *, grammar_ok: bool = True,
                        whitespace: str | None = None, cache_dir=None):
    """The constraint of `schema` over ids 0..vocab_size-1 of `tokenizer`: a constraints.regex.TokenDFA
    or a constraints.cfg_rows.GrammarConstraint. grammar_ok: the caller can run a grammar (a diffusion
    model with a scheduler other than apd). Raises ConstraintError (strict: also for keywords decoding
    cannot enforce)."""
    plan = plan_schema(schema, whitespace=whitespace, strict=strict)
    route, rx = choose_route(plan, grammar_ok)
    from dllm.constraints.regex import _vocab, compile_regex

    if route == "regex":
        try:
            return compile_regex(rx, tokenizer, vocab_size, cache_dir=cache_dir)
        except ConstraintBudgetError:
            if not grammar_ok:
                raise
    from dllm.constraints.cfg_rows import GrammarConstraint

    return GrammarConstraint(plan.grammar(), _vocab(tokenizer, vocab_size).tb)
