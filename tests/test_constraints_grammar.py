"""Grammar constraints, grammar_mode="regex": a Lark grammar becomes a depth-bounded regex; every answer parses."""
import pytest
from lark import Lark

from dllm import LLM, SamplingParams
from dllm.constraints.grammar import grammar_to_regex
from dllm.errors import ConstraintError

ARITH = r'''
start: expr
expr: term (("+"|"-") term)*
term: NUMBER | "(" expr ")"
NUMBER: /[0-9]+/
%ignore " "
'''
LIST = r'''
start: "[" [item ("," item)*] "]"
item: WORD | "'" WORD "'"
WORD: /[a-c]+/
'''


@pytest.fixture(scope="module")
def llm(llada_dir):
    return LLM(llada_dir)


def parses(grammar, text):
    Lark(grammar, parser="earley", lexer="dynamic_complete").parse(text)
    return True


@pytest.mark.parametrize("grammar", [ARITH, LIST])
@pytest.mark.parametrize("scheduler,cache", [("topk", "none"), ("threshold", "dual"), ("factor", "prefix")])
def test_answers_parse(llm, grammar, scheduler, cache):
    for temperature in (0.0, 1.0):
        params = SamplingParams(max_new_tokens=24, block_length=8, grammar=grammar, grammar_mode="regex", scheduler=scheduler, cache=cache,
                                temperature=temperature, seed=2)
        for out in llm.generate([{"prompt_token_ids": [5, 9]}, "Hello world", {"prompt_token_ids": [77, 3, 4]}], params):
            assert parses(grammar, out.text), out.text


def test_nesting_beyond_the_bound_is_not_produced_but_within_it_is():
    import re

    r = grammar_to_regex(ARITH, depth=3)
    assert re.fullmatch(r, "((1)) + 2") and re.fullmatch(r, "1 - (2 + 3)")
    assert not re.fullmatch(r, "((((1))))")      # deeper than 3 levels
    assert not re.fullmatch(r, "1 +")


def test_template_with_a_grammar(llm):
    out = llm.generate([{"prompt": "x", "template": ["[", 6, "]"]}],
                       SamplingParams(max_new_tokens=16, block_length=8, grammar=LIST, grammar_mode="regex"))[0]
    assert out.text.startswith("[") and out.text.endswith("]") and parses(LIST, out.text)


def test_grammar_errors():
    with pytest.raises(ConstraintError, match="does not compile"):
        SamplingParams(grammar="start: undefined_rule")
    with pytest.raises(ConstraintError, match="nesting"):
        SamplingParams(grammar='start: "(" start ")"', grammar_mode="regex")        # no finite derivation
    with pytest.raises(Exception, match="not several"):
        SamplingParams(grammar=LIST, regex="a")
