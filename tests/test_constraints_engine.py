"""Constrained diffusion decoding end to end: every answer is in the language, for every
scheduler and cache mode, at any temperature, in batches; templates keep their fixed text."""
import json
import re

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dllm import LLM, SamplingParams
from dllm.errors import ConstraintError, PromptError
from dllm.schedulers import SCHEDULERS


@pytest.fixture(scope="module")
def llm(llada_dir):
    return LLM(llada_dir)


PROMPTS = [{"prompt_token_ids": [5, 9, 11]}, {"prompt_token_ids": [40, 41, 42, 43, 44, 45]}, "Hello world"]


@pytest.mark.parametrize("name", sorted(set(SCHEDULERS) - {"learned_filter", "apd"}))   # apd: tests/test_apd.py
@pytest.mark.parametrize("cache", ["none", "dual"])
def test_regex_answers_match_for_every_scheduler_and_cache(llm, name, cache):
    if name == "wino" and cache != "none":
        pytest.skip("wino refuses caches")
    pattern = r"[0-9]{3}-[a-z]{2,4}( ok)?"
    for temperature in (0.0, 1.0):
        params = SamplingParams(max_new_tokens=16, block_length=8, scheduler=name, cache=cache, regex=pattern,
                                temperature=temperature, seed=1, early_commit_thresholds=(1.0, 0.5, 0.2),
                                eot_prediction=True)
        for out in llm.generate(PROMPTS, params):
            assert re.fullmatch(pattern, out.text), (out.text, out.token_ids)
            assert out.finish_reason == "eos"


def test_json_schema_answers_validate(llm):
    schema = {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
        "required": ["city", "age", "tags"]}
    for temperature in (0.0, 0.8):
        params = SamplingParams(max_new_tokens=48, block_length=16, scheduler="threshold", json_schema=schema,
                                temperature=temperature, seed=3, cache="prefix")
        for out in llm.generate(PROMPTS, params):
            jsonschema.validate(json.loads(out.text), schema)


def test_templates_keep_their_fixed_text(llm):
    tpl = ['{"city": "', 4, '", "zip": "', 3, '"}']
    out = llm.generate([{"prompt": "Where?", "template": tpl}], SamplingParams(max_new_tokens=32, block_length=8))[0]
    assert out.text.startswith('{"city": "') and out.text.endswith('"}') and '", "zip": "' in out.text
    # with a regex over the whole answer
    pattern = r'\{"city": "[a-z]+", "zip": "[0-9]+"\}'
    for sched in ("topk", "threshold"):
        out = llm.generate([{"prompt": "Where?", "template": tpl}],
                           SamplingParams(max_new_tokens=32, block_length=8, regex=pattern, scheduler=sched))[0]
        assert re.fullmatch(pattern, out.text), out.text


def test_multibyte_characters(llm):
    pattern = "(東京|Café) [é]{1,3}"
    for out in llm.generate(PROMPTS, SamplingParams(max_new_tokens=12, block_length=4, regex=pattern,
                                                    temperature=1.0, seed=0)):
        assert re.fullmatch(pattern, out.text), out.text


def test_mixed_batch(llm):
    params = [SamplingParams(max_new_tokens=16, block_length=8, regex="[a-c]+"), SamplingParams(max_new_tokens=16, block_length=8)]
    outs = llm.generate(PROMPTS[:2], params)
    assert re.fullmatch("[a-c]+", outs[0].text)
    assert outs[1].token_ids == llm.generate(PROMPTS[1], params[1])[0].token_ids


def test_errors(llm):
    with pytest.raises(ConstraintError):
        SamplingParams(regex="(unclosed")
    with pytest.raises(ConstraintError, match="max_new_tokens|no answer"):
        llm.generate(PROMPTS[0], SamplingParams(max_new_tokens=4, regex="[0-9]{40}"))
    with pytest.raises(ConstraintError):
        llm.generate({"prompt": "x", "template": ["abc", 2]}, SamplingParams(max_new_tokens=16, regex="[0-9]+"))
    with pytest.raises(PromptError, match="template"):
        llm.generate({"prompt": "x", "template": ["abc", 40]}, SamplingParams(max_new_tokens=16))


# random regexes x random prompts (the tiny model's logits are random): every answer matches
ATOMS = ["a", "b", "[0-9]", "[a-c]", "é", " ", "x?", "[^a]"]


@st.composite
def regexes(draw, depth=0):
    kind = draw(st.sampled_from(["atom", "seq", "alt", "rep"] if depth < 2 else ["atom"]))
    if kind == "atom":
        return draw(st.sampled_from(ATOMS))
    if kind == "seq":
        return "".join(draw(st.lists(regexes(depth + 1), min_size=2, max_size=3)))
    if kind == "alt":
        return "(" + "|".join(draw(st.lists(regexes(depth + 1), min_size=2, max_size=3))) + ")"
    lo = draw(st.integers(0, 2))
    return "(" + draw(regexes(depth + 1)) + "){%d,%d}" % (lo, lo + draw(st.integers(0, 2)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=regexes(), seed=st.integers(0, 1000), temperature=st.sampled_from([0.0, 1.0]))
def test_random_regexes_always_match(llm, pattern, seed, temperature):
    params = SamplingParams(max_new_tokens=16, block_length=8, regex=pattern, scheduler="threshold",
                            temperature=temperature, seed=seed)
    prompt = {"prompt_token_ids": [1 + seed % 50, 2, 3]}
    try:
        out = llm.generate(prompt, params)[0]
    except ConstraintError:      # only when nothing in the language fits in 16 tokens of this vocabulary
        return
    assert re.fullmatch(pattern, out.text), (pattern, out.text)
