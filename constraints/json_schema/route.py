"""compile_json_schema: one JSON Schema -> the constraint the engine runs (a TokenDFA or a GrammarConstraint).

The route is chosen per schema by its measured size: the token-DFA route (constraints/regex.py, the
DINGO witness; exact slot counting) when the schema's regex stays within REGEX_BUDGET characters
(estimated first, in linear time) and the regex compiler's own size check, and, on a diffusion
model, when its token DFA is small enough for DINGO's per-step Viterbi to stay cheap (DINGO_CELLS)
or the answer's slots are too few for the grammar route; otherwise, and for recursive schemas on
diffusion models, the grammar route (constraints/cfg.py: an Earley check of each commit, unbounded
nesting, a grammar whose size grows with the schema's instead of with its unrolled regex).
Autoregressive models and scheduler="apd" take the token mask of the regex route only: a schema too
large for it is refused.
Both routes cache: plans per schema text, DFAs in memory and on disk, grammars per Lark text.
"""
from __future__ import annotations

from dllm.constraints.json_schema.ir import RegexTooLarge
from dllm.constraints.json_schema.plan import REGEX_BUDGET, plan_schema
from dllm.errors import ConstraintBudgetError, ConstraintError

# A diffusion model's regex route runs DINGO's Viterbi over every block each step: about
# block x states x classes work, which on dllm-tiny's CPU step (~50 ms a forward) cost 2-4x the
# forward for the check-jsonschema schemas on that route (github-discussion: 1,475 states x 140
# classes, 2.5x), while their grammar route cost 1.0-1.3x. Past this many transition-table cells a
# diffusion model takes the grammar route instead (autoregressive models keep the token mask).
DINGO_CELLS = 16_384


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
                        whitespace: str | None = None, cache_dir=None, slots: int | None = None):
    """The constraint of `schema` over ids 0..vocab_size-1 of `tokenizer`: a constraints.regex.TokenDFA
    or a constraints.cfg_rows.GrammarConstraint. grammar_ok: the caller can run a grammar (a diffusion
    model with a scheduler other than apd). slots: the answer's masked slots when known (no template);
    a token DFA past DINGO_CELLS then gives way to the grammar when the grammar's shortest answer fits
    them byte by byte (the grammar route grants the tail one byte per slot, so a longer shortest
    answer is refused there though multi-byte tokens could spell it). Raises ConstraintError (strict:
    also for keywords decoding cannot enforce)."""
    plan = plan_schema(schema, whitespace=whitespace, strict=strict)
    route, rx = choose_route(plan, grammar_ok)
    from dllm.constraints.regex import _vocab, compile_regex

    if route == "regex":
        try:
            dfa = compile_regex(rx, tokenizer, vocab_size, cache_dir=cache_dir)
            if not grammar_ok or slots is None or dfa.trans.numel() <= DINGO_CELLS \
                    or plan.grammar().minlen[plan.grammar().root] > slots:
                return dfa
        except ConstraintBudgetError:
            if not grammar_ok:
                raise
    from dllm.constraints.cfg_rows import GrammarConstraint

    return GrammarConstraint(plan.grammar(), _vocab(tokenizer, vocab_size).tb)
