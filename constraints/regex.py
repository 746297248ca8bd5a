"""Regular expression -> token-level DFA over a model's real vocabulary (the entry point).

Semantics: the decoded answer must FULL-match the pattern (`re.fullmatch` on str). A token sequence
is accepted iff the concatenation of its tokens' bytes (constraints/token_bytes.py) is the UTF-8
encoding of a string in the language; byte strings that are not valid UTF-8 are rejected.

Pipeline (compile_regex), one module per stage, all charging one Budget (constraints/budget.py):
  0. regex_parse.py  Python's verdict on the syntax, then interegular's parse tree of the pattern,
                     rewritten so that interegular reads it as Python does.
  1. char_dfa.py     parse tree -> Thompson NFA over character classes -> character DFA (subset
                     construction, state budget and wall-clock cap).
  2. byte_dfa.py     character DFA -> UTF-8 byte DFA (code-point ranges, hash-consed intermediate states).
  3. token_dfa.py    byte DFA x vocabulary trie (vocab_trie.py) -> token DFA; tokens behaving alike in
                     every state form one class, so `trans` is [n_states, n_classes]. Class 0 is dead.
  4. dfa_cache.py    the on-disk cache (full key inside each file, every table checked on load).

Exact: the language over token ids, given token_bytes; `dist` (shortest token distance to
acceptance). Differences from Python's `re` come from interegular's reading of the pattern:
`\\d`, `\\w`, `\\s` and `(?i)` follow ASCII rules (as under re.ASCII; `(?i)` does lower/upper
only). A leading `^` and a trailing `$` are dropped (redundant under fullmatch); anchors elsewhere,
`\\b`, `\\A`, `\\Z`, backreferences, lookbehinds, the `m` flag and `\\p{..}` are refused with a
ConstraintError. Patterns past the budget (unrolled size, DFA states, seconds) are refused with a
ConstraintBudgetError naming the part that blew up. Lazy quantifiers are the same language as greedy
ones under fullmatch. `\\uXXXX`, `\\UXXXXXXXX` and `\\N{name}` are read as the character they name.

Compiled DFAs are cached in memory (pattern, tokenizer fingerprint, vocab_size) and on disk as .npz
(no pickle) under `cache_dir`, `$DLLM_CACHE` or ~/.cache/dllm/constraints.
"""
from __future__ import annotations

from collections import OrderedDict

from dllm.constraints import dfa_cache
from dllm.constraints.budget import Budget
from dllm.constraints.byte_dfa import _byte_dfa, _ByteDFA  # noqa: F401 (re-exported: cfg.py builds terminals)
from dllm.constraints.dfa_cache import FORMAT_VERSION, default_cache_dir  # noqa: F401 (re-exported)
from dllm.constraints.regex_parse import _normalise, _parse, _show, check_regex  # noqa: F401 (re-exported)
from dllm.constraints.token_dfa import TokenDFA, _to_dfa, _token_dfa
from dllm.constraints.vocab_trie import _LOCK, _VOCABS, _vocab, prepare_vocabulary  # noqa: F401 (re-exported)
from dllm.errors import ConstraintBudgetError, ConstraintError, TokenizerError

__all__ = ["TokenDFA", "check_regex", "compile_regex", "clear_memory_cache", "prepare_vocabulary",
           "default_cache_dir", "FORMAT_VERSION", "Budget"]

_MEMORY_CACHE_SIZE = 32
_CELLS_PER_STATE = 256      # a token DFA may have at most budget.states * this many table cells (64M by default)
_DFAS: OrderedDict[tuple, TokenDFA] = OrderedDict()
# (pattern, state and position limits) -> the sentence it was refused with: a pattern past the state cap
# is past it every time, and finding that out takes seconds (a JSON-Schema pattern was built, and refused,
# by the token-DFA route and then again by the grammar route; a client could resend it in a loop).
# Refusals for time are not kept: they depend on the machine's load; nor are those of a budget that other
# patterns had already spent from (a Lark grammar's terminals share one).
_REFUSED: OrderedDict[tuple, str] = OrderedDict()
_REFUSED_SIZE = 256


def _char_fsm(pattern: str, budget: Budget | None = None):
    """(character DFA, segments of _normalise) of a pattern: stages 0 and 1."""
    from dllm.constraints.char_dfa import char_dfa

    budget = budget or Budget()
    key = (pattern, budget.states, budget.positions)
    with _LOCK:
        refused = _REFUSED.get(key)
    if refused is not None:
        raise ConstraintBudgetError(refused)
    fresh = budget.used == 0
    parsed, segments = _parse(pattern, budget)
    try:
        return char_dfa(parsed, pattern, budget), segments
    except RecursionError:
        raise ConstraintError(f"the regex {_show(pattern)} is nested too deeply for a constraint.") from None
    except ConstraintBudgetError as e:
        if budget.exceeded == "states" and fresh:
            with _LOCK:
                _REFUSED[key] = str(e)
                while len(_REFUSED) > _REFUSED_SIZE:
                    _REFUSED.popitem(last=False)
        raise


def clear_memory_cache(vocabularies: bool = True) -> None:
    """Forget the in-memory DFAs (and the prepared vocabularies): benchmarks time cold compiles."""
    with _LOCK:
        _DFAS.clear()
        _REFUSED.clear()
        if vocabularies:
            _VOCABS.clear()


def _build(pattern: str, vocab, budget: Budget) -> dict:
    """Stages 0-3: the token DFA's arrays."""
    arrays = _token_dfa(_byte_dfa(*_char_fsm(pattern, budget), pattern, budget), vocab.trie(), pattern, budget)
    cells = arrays["trans"].size
    if cells > budget.states * _CELLS_PER_STATE:
        from dllm.errors import ConstraintBudgetError

        raise ConstraintBudgetError(f"the token DFA of the regex {_show(pattern)} has {cells:,} table cells, more "
                                    f"than {budget.states * _CELLS_PER_STATE:,}; simplify the pattern or raise "
                                    "DLLM_CONSTRAINT_STATES.")
    return arrays


def compile_regex(pattern: str, tokenizer, vocab_size: int, *, cache_dir=None,
                  budget: Budget | None = None) -> TokenDFA:
    """The token DFA of `pattern` (full match) over ids 0..vocab_size-1 of `tokenizer`.

    tokenizer: a dllm Tokenizer (or a raw `tokenizers.Tokenizer`). cache_dir: where compiled DFAs
    are kept on disk (None: $DLLM_CACHE or ~/.cache/dllm/constraints; False: no disk cache).
    budget: the compile's limits (default: Budget(), i.e. the DLLM_CONSTRAINT_* environment).
    Raises ConstraintError for an invalid or unsupported pattern, an empty language, or one that no
    token sequence of this vocabulary spells; ConstraintBudgetError past the budget. The same
    (pattern, vocabulary) returns the same object.
    """
    if not isinstance(pattern, str):
        raise ConstraintError(f"a regex must be a string, got {type(pattern).__name__}.")
    if tokenizer is None:
        raise TokenizerError("a regex constraint needs the model's tokenizer, and this model has none.")
    # Only patterns that compiled are cached (memory or disk), so a hit needs no parse.
    vocab = _vocab(tokenizer, int(vocab_size))
    key = (pattern, vocab.fingerprint, vocab.vocab_size)
    with _LOCK:
        hit = _DFAS.get(key)
        if hit is not None:
            _DFAS.move_to_end(key)
            return hit
    budget = budget or Budget()
    full = dfa_cache.full_key(pattern, vocab.fingerprint, vocab.vocab_size)
    path = dfa_cache.disk_path(cache_dir, full)
    arrays = dfa_cache.load(path, full, vocab.vocab_size, budget.states, budget.states * _CELLS_PER_STATE)
    if arrays is None:
        arrays = _build(pattern, vocab, budget)
        dfa_cache.save(path, full, arrays)
    dfa = _to_dfa(arrays)
    with _LOCK:
        dfa = _DFAS.setdefault(key, dfa)
        _DFAS.move_to_end(key)
        while len(_DFAS) > _MEMORY_CACHE_SIZE:
            _DFAS.popitem(last=False)
    return dfa
