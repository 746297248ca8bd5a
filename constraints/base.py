"""The constraint protocol and its one factory, for every decoding path.

`compile_constraint(params, ...)` turns a request's regex / JSON Schema / grammar (or a template's
"any text" language) into a Compiled constraint, cached per (pattern, tokenizer) by the compilers
underneath. A Compiled constraint binds to one request:

  diffusion (Compiled.bind(decoder) -> a per-request object, constraints/runtime.py ConstrainedRows
  for DINGO over a token DFA, constraints/cfg_rows.py GrammarRows for the CFG check):
    completable(x) -> [1] bool     the canvas (masks free, the rest fixed) can still be completed
    begin_block(x, blk)            a block starts: walk the newly committed columns
    witness(logits, xblk, masked, propose) -> (tokens, scores)
                                   the step's proposal, restricted (DINGO: a valid assignment of the
                                   whole block, any subset of which stays completable)
    check(commit, tokens, scores, x, blk) -> (commit, tokens)
                                   vet the scheduler's commits (the CFG check: reject and re-pick)
    complete(logits, x, col) -> tokens   early commit: a valid completion of columns col..
    finish_block(x, blk)           a block ends (the CFG check fills what a fixed schedule left)
  autoregressive (Compiled.token_mask(n, device) -> runtime.TokenMask):
    allowed(generated, i) -> [V] bool     the tokens that keep the answer completable

State lives per request, so requests come and go without any state to keep in step with a batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from dllm.errors import ConstraintError, TokenizerError


@dataclass
class Compiled:
    kind: str                 # "dfa" (a TokenDFA, constraints/regex.py) | "cfg" (a GrammarConstraint)
    obj: object
    stop_ids: frozenset
    what: str = ""            # for the unsatisfiable sentence (" with the template's fixed text")

    def bind(self, decoder):
        """The per-request runtime for a diffusion decoder (engine/diffusion.py); raises
        ConstraintError when no answer of the request's length satisfies the constraint."""
        canvas = SimpleNamespace(x=decoder.x[None], prompt_len=decoder.P, mask_id=decoder.mask_id)
        if self.kind == "cfg":
            from dllm.constraints.cfg_rows import GrammarRows
            rows = GrammarRows(self.obj, self.stop_ids, canvas)
        else:
            from dllm.constraints.runtime import ConstrainedRows
            p = decoder.p
            rows = ConstrainedRows(self.obj, self.stop_ids, canvas, p.temperature, decoder.gen, p.remasking)
        if not bool(rows.completable(canvas.x).all()):
            raise ConstraintError(f"no answer of at most {decoder.N} tokens satisfies the constraint{self.what}; "
                                  "allow more tokens or relax the constraint.")
        return rows

    def token_mask(self, n: int, device):
        """The autoregressive runtime: per-step allowed tokens (a DFA only; grammars compile to one)."""
        from dllm.constraints.runtime import TokenMask
        if int(self.obj.dist[self.obj.start]) > n:
            raise ConstraintError(f"no answer of at most {n} tokens satisfies the constraint; allow more tokens "
                                  "or relax the constraint.")
        return TokenMask(self.obj, self.stop_ids, n, device)


def compile_constraint(params, tokenizer, vocab_size: int, stop_ids, *, causal: bool, templated: bool,
                       name: str = "the model"):
    """A request's constraint, or None. Templates without a pattern get the any-text language, so that
    an end token can only close the last gap. Grammars take the CFG check on diffusion models
    (grammar_mode="cfg") and their depth-bounded regex elsewhere; a JSON Schema takes whichever route
    constraints/json_schema/route.py measures cheaper. The whole compile runs under one clock
    (DLLM_CONSTRAINT_SECONDS; constraints/budget.py one_clock)."""
    from dllm.constraints.budget import one_clock

    with one_clock():
        return _compile(params, tokenizer, vocab_size, stop_ids, causal=causal, templated=templated, name=name)


def _compile(params, tokenizer, vocab_size: int, stop_ids, *, causal: bool, templated: bool, name: str):
    stops = frozenset(int(s) for s in stop_ids)
    what = " with the template's fixed text" if templated else ""
    grammar_ok = not causal and not params.draft_model      # the CFG check runs on diffusion decoding only
    if (params.json_schema is not None or params.regex is not None or params.grammar is not None or templated) \
            and tokenizer is None:
        raise TokenizerError(f"{name!r} has no tokenizer files; constraints and templates need them.")
    if params.json_schema is not None:   # a token DFA or a grammar, by the schema's measured cost
        from dllm.constraints.cfg_rows import GrammarConstraint
        from dllm.constraints.json_schema import compile_json_schema
        # slots (issue 25): lets a large token DFA give way to the grammar check when the answer has room
        obj = compile_json_schema(params.json_schema, tokenizer, vocab_size, params.json_schema_strict,
                                  grammar_ok=grammar_ok, slots=None if templated else params.max_new_tokens)
        return Compiled("cfg" if isinstance(obj, GrammarConstraint) else "dfa", obj, stops, what)
    pattern = params.regex
    cfg = params.grammar is not None and params.grammar_mode == "cfg" and grammar_ok
    if params.grammar is not None and not cfg:   # autoregressive models take the regex form
        from dllm.constraints.grammar import grammar_to_regex
        pattern = grammar_to_regex(params.grammar)
    if pattern is None and not templated and not cfg:
        return None
    from dllm.constraints.regex import _vocab, compile_regex

    if cfg:
        from dllm.constraints.cfg import compile_grammar
        from dllm.constraints.cfg_rows import GrammarConstraint
        return Compiled("cfg", GrammarConstraint(compile_grammar(params.grammar), _vocab(tokenizer, vocab_size).tb),
                        stops, what)
    return Compiled("dfa", compile_regex(pattern if pattern is not None else r"[\s\S]*", tokenizer, vocab_size),
                    stops, what)
