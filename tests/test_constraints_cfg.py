"""CFG constraints (grammar_mode="cfg"): the gapped-canvas check against lark and brute force,
incremental charts against fresh ones, and the engine's answers under every scheduler."""
import functools
import itertools
import random
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Lark

from dllm import LLM, SamplingParams
from dllm.constraints.cfg import ANY, Text, canvas_text, compile_grammar
from dllm.constraints.cfg_chart import Chart
from dllm.constraints.cfg_rows import GrammarConstraint, GrammarRows
from dllm.errors import ConstraintError

GRAMMARS = {
    "arith": (r'''
start: expr
expr: term (("+"|"-") term)*
term: NUMBER | "(" expr ")"
NUMBER: /[0-9]+/
%ignore " "
''', "()+ 1"),
    "list": (r'''
start: "[" [item ("," item)*] "]"
item: WORD | "'" WORD "'"
WORD: /[a-c]+/
''', "[],'a"),
    "palindrome": ('start: "a" start "a" | "b" start "b" | "c" | \n', "abc"),
    "ambiguous": ('start: x+\nx: "a" | "ab" | "b" y\ny: "ba"?\n', "ab"),
    "nested": ('start: "(" start ")" | "x"\n', "()x"),
}


@functools.lru_cache(maxsize=None)
def _parser(src):
    return Lark(src, parser="earley", lexer="dynamic_complete")


@functools.lru_cache(maxsize=100_000)
def parses(src, text):
    try:
        _parser(src).parse(text)
        return True
    except Exception:       # lark's UnexpectedInput family
        return False


def text_of(parts):
    """parts: str (fixed) | int (k masked slots before more fixed text); a trailing ("tail", k)."""
    sym, loop, budget = [], [False], None
    for p in parts:
        if isinstance(p, str):
            b = list(p.encode())
            sym += b
            loop += [False] * len(b)
        elif isinstance(p, tuple):
            budget = p[1]
            loop[-1] = True
        else:
            sym += [ANY] * p
            loop += [False] * p
            loop[-1] = True
    return Text(sym, loop, budget)


@pytest.mark.parametrize("name", sorted(GRAMMARS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_full_text_matches_lark(name, data):
    src, alpha = GRAMMARS[name]
    s = data.draw(st.text(alphabet=alpha, max_size=10))
    assert Chart(compile_grammar(src), text_of([s])).ok == parses(src, s)


@pytest.mark.parametrize("name", sorted(GRAMMARS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_tail_budget_is_exact_for_single_byte_completions(name, data):
    """prefix + k tail slots passes iff some completion of at most k bytes parses."""
    src, alpha = GRAMMARS[name]
    prefix = data.draw(st.text(alphabet=alpha, max_size=6))
    k = data.draw(st.integers(0, 3))
    brute = any(parses(src, prefix + "".join(t)) for n in range(k + 1) for t in itertools.product(alpha, repeat=n))
    assert Chart(compile_grammar(src), text_of([prefix, ("tail", k)])).ok == brute


@pytest.mark.parametrize("name", sorted(GRAMMARS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_middle_gap_never_rejects_a_fill(name, data):
    """A k-slot gap before fixed text: any k-byte fill that parses means the check passes
    (the check may also pass for longer fills: the gap grants k or more bytes)."""
    src, alpha = GRAMMARS[name]
    a = data.draw(st.text(alphabet=alpha, max_size=4))
    b = data.draw(st.text(alphabet=alpha, min_size=1, max_size=4))
    k = data.draw(st.integers(1, 2))
    got = Chart(compile_grammar(src), text_of([a, k, b])).ok
    fills = [a + "".join(f) + b for n in range(k, k + 3) for f in itertools.product(alpha, repeat=n)]
    if any(parses(src, f) for f in fills[:len(alpha) ** k]):
        assert got
    if got is False:
        assert not any(parses(src, f) for f in fills)


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_incremental_chart_equals_a_fresh_one(name):
    """Random edits of a canvas (fill a slot, open a gap, end early): the chart built on the
    previous one agrees with a chart built from scratch."""
    src, alpha = GRAMMARS[name]
    g = compile_grammar(src)
    rng = random.Random(name)
    tb = [bytes([ord(c)]) for c in alpha] + [None, None]
    mask, stop = len(alpha), len(alpha) + 1
    for _ in range(30):
        slots = [mask] * rng.randint(1, 9)
        prev = None
        for _ in range(12):
            i = rng.randrange(len(slots))
            slots[i] = rng.choice([rng.randrange(len(alpha)), rng.randrange(len(alpha)), stop, mask])
            text = canvas_text(slots, mask, frozenset([stop]), tb)
            if text is None:
                continue
            fresh = Chart(g, text)
            inc = Chart(g, text, base=prev)
            assert inc.ok == fresh.ok, (slots, inc.ok, fresh.ok)
            prev = inc


def test_canvas_text_spells_the_gaps():
    tb = [b"ab", b"c", None, None]      # mask 2, stop 3
    t = canvas_text([0, 2, 2, 1, 2, 2], 2, frozenset([3]), tb)
    assert t.sym == [97, 98, ANY, ANY, 99] and t.loop == [False, False, False, False, True, True]
    assert t.budget == 2
    t = canvas_text([0, 2, 3, 2], 2, frozenset([3]), tb)     # the answer ends at the stop
    assert t.sym == [97, 98] and t.budget == 1
    assert canvas_text([3, 0], 2, frozenset([3]), tb) is None    # text after the end
    assert canvas_text([0, 3, 3], 2, frozenset([3]), tb).budget is None


# ---- the runtime on a synthetic vocabulary -------------------------------------------------------

def _rows(src, tb, answer, stop):
    mask = len(tb) - 2
    x = torch.tensor([[0] + answer])
    canvas = SimpleNamespace(x=x, prompt_len=1, mask_id=mask)   # what a request's decoder hands its constraint
    return GrammarRows(GrammarConstraint(compile_grammar(src), tb), [stop], canvas), canvas


def test_rejected_tokens_are_repicked_from_the_same_logits():
    src = 'start: "(" start ")" | "x"\n'
    tb = [b"(", b")", b"x", b"))", None, None]
    mask, stop = 4, 5
    rows, canvas = _rows(src, tb, [mask] * 4, stop)
    x = canvas.x
    logits = torch.full((1, 4, 6), -9.0)
    logits[0, 0, 1] = 5.0        # slot 0 wants ")" (invalid), then "(" (valid)
    logits[0, 0, 0] = 4.0
    tokens, scores = rows.witness(logits, x[:, 1:], x[:, 1:] == mask, lambda lg: (lg.argmax(-1), lg.amax(-1)))
    commit = torch.tensor([[True, False, False, False]])
    commit, tokens = rows.check(commit, tokens, scores, x, slice(1, 5))
    assert commit.tolist() == [[True, False, False, False]] and tokens[0, 0].item() == 0


def test_stuck_middle_gap_backtracks_and_finishes_left_to_right():
    """'(' gap ')' with a one-slot gap: the check grants the gap any number of bytes, but the
    grammar needs "xy" (or more) there and no single token spells it. The row gets stuck, puts
    its block's tokens back to masks and refills the block left to right."""
    src = 'start: "(" start ")" | "xy"\n'
    tb = [b"(", b")", b"x", b"y", None, None]
    mask, stop = 4, 5
    rows, canvas = _rows(src, tb, [mask] * 6, stop)
    x, blk = canvas.x, slice(1, 7)
    propose = lambda lg: (lg.argmax(-1), lg.amax(-1))          # noqa: E731
    first = torch.zeros((1, 6, 6))
    first[0, 0, 0] = first[0, 2, 1] = 5.0                      # "(" at 0, ")" at 2
    tokens, scores = rows.witness(first, x[:, blk], x[:, blk] == mask, propose)
    commit, tokens = rows.check(torch.tensor([[True, False, True, False, False, False]]), tokens, scores, x, blk)
    assert commit.tolist() == [[True, False, True, False, False, False]]
    x[:, blk] = torch.where(commit, tokens, x[:, blk])
    logits = torch.zeros((1, 6, 6))
    logits[0, :, 1] = 3.0                                      # ")" everywhere, then "("
    logits[0, :, 0] = 2.0
    for _ in range(8):
        masked = x[:, blk] == mask
        if not bool(masked.any()):
            break
        tokens, scores = rows.witness(logits, x[:, blk], masked, propose)
        commit, tokens = rows.check(masked, tokens, scores, x, blk)
        x[:, blk] = torch.where(commit, tokens, x[:, blk])
    assert rows.ltr[0]                                         # it did backtrack
    ans = x[0, 1:].tolist()
    end = next((i for i, t in enumerate(ans) if t == stop), len(ans))
    text = b"".join(tb[t] for t in ans[:end]).decode()
    assert mask not in ans[:end] and parses(src, text), (ans, text)


# ---- the engine -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llm(llada_dir):
    return LLM(llada_dir)


@pytest.mark.parametrize("scheduler,cache", [("topk", "none"), ("threshold", "dual"), ("credit", "prefix"),
                                             ("early_commit", "none"), ("ltr", "none")])
@pytest.mark.parametrize("name", ["arith", "list"])
def test_engine_answers_parse(llm, name, scheduler, cache):
    src = GRAMMARS[name][0]
    for temperature in (0.0, 1.0):
        params = SamplingParams(max_new_tokens=24, block_length=8, grammar=src, scheduler=scheduler, cache=cache,
                                temperature=temperature, seed=3)
        outs = llm.generate([{"prompt_token_ids": [5, 9]}, "Hello world", {"prompt_token_ids": [77, 3, 4]}], params)
        for out in outs:
            assert parses(src, out.text), (scheduler, out.text)


def test_nesting_deeper_than_the_regex_bound(llm):
    """Seven open parentheses in the template: the depth-3 regex has no such answer, the CFG does."""
    src = GRAMMARS["arith"][0]
    prompt = {"prompt": "x", "template": ["(((((((", 16]}
    with pytest.raises(ConstraintError, match="no answer"):
        llm.generate([prompt], SamplingParams(max_new_tokens=24, block_length=8, grammar=src, grammar_mode="regex"))
    out = llm.generate([prompt], SamplingParams(max_new_tokens=24, block_length=8, grammar=src))[0]
    assert out.text.startswith("(((((((") and parses(src, out.text), out.text


def test_templates_keep_their_text(llm):
    src = GRAMMARS["list"][0]
    for seed in range(3):
        out = llm.generate([{"prompt": "x", "template": ["['", 3, "',", 4, "]"]}],
                           SamplingParams(max_new_tokens=16, block_length=8, grammar=src, seed=seed,
                                          temperature=1.0))[0]
        assert out.text.startswith("['") and "'," in out.text and out.text.endswith("]"), out.text
        assert parses(src, out.text), out.text


def test_nothing_fits(llm):
    src = GRAMMARS["nested"][0]
    with pytest.raises(ConstraintError, match="no answer of at most 4 tokens"):
        llm.generate([{"prompt": "x", "template": ["(((", 1]}], SamplingParams(max_new_tokens=4, grammar=src))


def test_errors():
    with pytest.raises(ConstraintError, match="does not compile"):
        SamplingParams(grammar="start: undefined_rule")
    with pytest.raises(ConstraintError, match="no finite string"):
        SamplingParams(grammar='start: "(" start ")"')
    with pytest.raises(Exception, match="grammar_mode"):
        SamplingParams(grammar='start: "a"', grammar_mode="lalr")


def test_multibyte_characters_under_byte_level_bpe(llm):
    """Terminals over é and 東京: tokens that are partial UTF-8 sequences may only be committed
    where the bytes can still complete a character the grammar allows."""
    src = 'start: "{" NAME ("," NAME)* "}"\nNAME: /[é東京a]+/\n'
    for seed in range(2):
        for tpl in (None, ["{東", 5, "}"]):
            prompt = {"prompt_token_ids": [5, 9]} if tpl is None else {"prompt": "x", "template": tpl}
            out = llm.generate([prompt], SamplingParams(max_new_tokens=20, block_length=10, grammar=src,
                                                         temperature=1.0, seed=seed))[0]
            assert parses(src, out.text), out.text
            if tpl is not None:
                assert out.text.startswith("{東") and out.text.endswith("}")
