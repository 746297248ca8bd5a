"""Issue 25: JSON Schema keywords real schemas use. Per keyword: random walks over the compiled regex
validate under the schema (jsonschema), the schema's own valid instances match, hypothesis-generated
instances match, the grammar route accepts what the regex route does; strict refusals are one
sentence; the non-strict report (stats.schema_violations) comes from the finished answer."""
import json
import random
import re

import jsonschema
import pytest
from hypothesis import given, settings, strategies as st

from dllm.constraints.cfg import Text
from dllm.constraints.cfg_chart import Chart
from dllm.constraints.json_schema import compile_json_schema, plan_schema, schema_to_regex, schema_violations
from dllm.errors import ConstraintError
from tests.test_constraints_json_schema import sampler_for, validate

KEYWORDS = {
    "patternProperties": ({"type": "object", "properties": {"name": {"type": "string", "maxLength": 3}},
                           "patternProperties": {"^x-": {"type": "integer", "minimum": 0, "maximum": 9}},
                           "additionalProperties": False},
                          [{"name": "ab", "x-a": 1}, {"x-": 0, "x-zz": 9}, {}]),
    "additionalProperties_schema": ({"type": "object", "properties": {"a": {"type": "boolean"}},
                                     "additionalProperties": {"type": "integer", "maximum": 5}},
                                    [{"a": True, "b": 5}, {"zz": -1}]),
    "propertyNames_enum": ({"type": "object", "propertyNames": {"enum": ["bind", "symlink"]},
                            "additionalProperties": {"type": "string", "maxLength": 2},
                            "minProperties": 1, "maxProperties": 1}, [{"bind": "x"}]),
    "propertyNames_pattern": ({"type": "object", "propertyNames": {"pattern": "^[a-z][a-z0-9_-]*$"},
                               "additionalProperties": {"type": "null"}}, [{"run": None, "a-1": None}]),
    "propertyNames_not_enum": ({"type": "object", "propertyNames": {"not": {"pattern": "^(when|unless)$"}},
                                "additionalProperties": {"type": "null"}}, [{"whe": None, "whenx": None, "": None}]),
    "min_maxProperties": ({"type": "object", "properties": {"a": {"type": "null"}, "b": {"type": "null"},
                                                            "c": {"type": "null"}},
                           "minProperties": 1, "maxProperties": 2, "additionalProperties": False},
                          [{"a": None}, {"b": None, "c": None}]),
    "dependentRequired": ({"type": "object", "properties": {"card": {"type": "boolean"}, "addr": {"type": "null"}},
                           "dependentRequired": {"card": ["addr"]}}, [{"card": True, "addr": None}, {"addr": None}]),
    "dependencies_schema": ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                             "dependencies": {"a": {"properties": {"b": {"minimum": 10}}, "required": ["b"]}}},
                            [{"a": 1, "b": 10}, {"b": 3}]),
    "prefixItems": ({"type": "array", "prefixItems": [{"type": "boolean"}, {"enum": ["x", "y"]}], "items": False},
                    [[True, "x"], [False], []]),
    "contains": ({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                  "contains": {"minimum": 8}, "minContains": 2}, [[8, 9], [1, 8, 2, 9, 3]]),
    "if_then_else": ({"type": "object", "properties": {"kind": {"enum": ["cron", "daily"]}, "cron": {"type": "string"}},
                      "required": ["kind"], "if": {"properties": {"kind": {"const": "cron"}}},
                      "then": {"required": ["cron"]}, "else": {"properties": {"cron": False}}},
                     [{"kind": "cron", "cron": "* *"}, {"kind": "daily"}]),
    "not_required": ({"type": "object", "properties": {"a": {"type": "null"}, "b": {"type": "null"}},
                      "not": {"required": ["a", "b"]}}, [{"a": None}, {}]),
    "not_enum_type": ({"type": ["string", "integer"], "not": {"enum": ["script", "npm", 3]}},
                      ["scrip", "npmx", 4, ""]),
    "allOf_annotations": ({"allOf": [{"type": "integer", "description": "a", "markdownDescription": "x", "minimum": 2},
                                     {"description": "b", "title": "t", "deprecated": True, "maximum": 4,
                                      "examples": [3], "x-custom": 1}]}, [2, 3, 4]),
    "id_relative_ref": ({"$id": "https://example.com/root.json", "type": "object",
                         "properties": {"p": {"$ref": "item.json"}, "q": {"$ref": "#/$defs/n"}},
                         "$defs": {"item": {"$id": "item.json", "type": "object",
                                            "properties": {"v": {"$ref": "#/$defs/small"}},
                                            "$defs": {"small": {"type": "integer", "maximum": 3}}},
                                   "n": {"$anchor": "num", "type": "number", "minimum": 0, "maximum": 1}}},
                        [{"p": {"v": 3}, "q": 0.5}]),
    "anchor_ref": ({"type": "array", "items": {"$ref": "#num"}, "$defs": {"n": {"$anchor": "num", "enum": [1, 2]}}},
                   [[1, 2, 1]]),
    "unknown_format": ({"type": "string", "format": "simple-template", "maxLength": 4}, ["{{x}", ""]),
}
FORMATS = ["date-time", "date", "time", "duration", "email", "hostname", "ipv4", "ipv6", "uri", "uri-reference",
           "uuid"]
FORMAT_EXAMPLES = {"date-time": "2024-02-29T10:00:00Z", "date": "1999-12-31", "time": "23:59:60Z"[:0] + "23:59:59Z",
                   "duration": "P1Y2M3DT4H5M6S", "email": "a.b@c.org", "hostname": "api.example.com",
                   "ipv4": "10.0.0.1", "ipv6": "fe80::1", "uri": "https://x.org/a?b#c", "uri-reference": "../a/b",
                   "uuid": "123e4567-e89b-12d3-a456-426614174000"}


def _check_format(fmt, s):
    """The format's own definition, checked here (jsonschema skips formats without an installed checker)."""
    import datetime
    import ipaddress
    if fmt == "date-time":
        return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    if fmt == "date":
        return datetime.date.fromisoformat(s)
    if fmt == "time":
        return datetime.time.fromisoformat(s.replace("Z", "+00:00"))
    if fmt == "ipv4":
        return ipaddress.IPv4Address(s)
    if fmt == "ipv6":
        return ipaddress.IPv6Address(s)
    if fmt in ("uri", "uri-reference"):
        from urllib.parse import urlsplit
        parts = urlsplit(s)
        assert fmt == "uri-reference" or parts.scheme
        return parts
    if fmt == "hostname":
        assert len(s) <= 253 and all(0 < len(x) <= 63 for x in s.split("."))
        return s
    return s


@pytest.mark.parametrize("name", sorted(KEYWORDS))
def test_keyword_is_enforced_without_relaxation(name):
    schema, valid = KEYWORDS[name]
    plan = plan_schema(schema, strict=True)          # strict: nothing is left to the validator
    assert plan.relaxed == ()
    rx = schema_to_regex(schema, strict=True)
    sampler, rng = sampler_for(rx), random.Random(name)
    for _ in range(120):                              # every answer the constraint allows validates
        text = sampler.sample(rng)
        validate(json.loads(text), schema)
    for inst in valid:                                # the schema's own valid instances are allowed
        validate(inst, schema)
        assert re.fullmatch(rx, json.dumps(inst, ensure_ascii=False)), inst


@pytest.mark.parametrize("fmt", FORMATS)
def test_formats_sample_valid_strings(fmt):
    rx = schema_to_regex({"type": "string", "format": fmt}, strict=True)
    sampler, rng = sampler_for(rx), random.Random(fmt)
    for _ in range(60):
        _check_format(fmt, json.loads(sampler.sample(rng)))
    assert re.fullmatch(rx, json.dumps(FORMAT_EXAMPLES[fmt]))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True).filter(lambda k: k not in ("when", "unless")),
                       st.none(), max_size=4))
def test_hypothesis_maps_match(inst):
    schema = KEYWORDS["propertyNames_pattern"][0]
    assert re.fullmatch(schema_to_regex(schema), json.dumps(inst))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9), max_size=6))
def test_hypothesis_contains_agrees_with_jsonschema(items):
    schema = KEYWORDS["contains"][0]
    ok = jsonschema.Draft202012Validator(schema).is_valid(items)
    assert bool(re.fullmatch(schema_to_regex(schema), json.dumps(items))) == ok


@settings(max_examples=80, deadline=None)
@given(st.fixed_dictionaries({"n": st.integers(-8, 60)}, optional={"s": st.sampled_from(["a", "b", "c"])}))
def test_hypothesis_instances_match_exactly_the_valid_ones(inst):
    # hypothesis-jsonschema 0.23 does not run with this hypothesis; instances are drawn here and the
    # constraint must accept exactly those jsonschema accepts (in declared key order)
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": -5, "maximum": 50},
                                               "s": {"enum": ["a", "b"]}},
              "required": ["n"], "additionalProperties": False,
              "not": {"required": ["s"], "properties": {"s": {"const": "b"}}}}
    ok = jsonschema.Draft202012Validator(schema).is_valid(inst)
    ordered = {k: inst[k] for k in ("n", "s") if k in inst}
    assert bool(re.fullmatch(schema_to_regex(schema, strict=True), json.dumps(ordered))) == ok


def _grammar_accepts(plan, text: str) -> bool:
    b = list(text.encode())
    return Chart(plan.grammar(), Text(b, [False] * (len(b) + 1), None)).ok


@pytest.mark.parametrize("name", sorted(KEYWORDS))
def test_grammar_route_agrees_with_regex_route(name):
    schema, valid = KEYWORDS[name]
    plan = plan_schema(schema)
    rx = plan.regex()
    sampler, rng = sampler_for(rx), random.Random(name + "g")
    for text in [sampler.sample(rng) for _ in range(15)] + [json.dumps(v, ensure_ascii=False) for v in valid]:
        assert _grammar_accepts(plan, text), text
    for bad in ['{"a": 1,}', "[", '"x', "nul"]:
        assert not _grammar_accepts(plan, bad)


def test_recursive_schema_takes_the_grammar_route_with_unbounded_nesting():
    tree = {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#"}}},
            "required": ["v"], "additionalProperties": False}
    plan = plan_schema(tree)
    assert plan.recursive
    deep = {"v": 0}
    for _ in range(8):                                # deeper than any regex unrolling
        deep = {"v": 1, "kids": [deep]}
    assert _grammar_accepts(plan, json.dumps(deep))
    assert not _grammar_accepts(plan, json.dumps({"v": 1, "kids": [{"w": 2}]}))


RELAXED = [
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "'uniqueItems' at #"),
    ({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}, "'oneOf' at #"),
    ({"type": "string", "not": {"pattern": "\\.\\."}}, "'not' at #"),
    ({"type": "number", "multipleOf": 0.5}, "'multipleOf' at #"),
    ({"type": "array", "contains": {"type": "integer"}, "maxContains": 2}, "'maxContains' at #"),
]


@pytest.mark.parametrize("schema,needle", RELAXED)
def test_strict_refuses_what_decoding_cannot_enforce(schema, needle):
    assert needle in plan_schema(schema).relaxed[0]          # default: relaxed and recorded
    with pytest.raises(ConstraintError) as info:
        plan_schema(schema, strict=True)
    assert needle in str(info.value) and str(info.value).count(". ") == 0


def test_external_ref_is_refused_in_both_modes():
    for strict in (False, True):
        with pytest.raises(ConstraintError, match="outside the schema"):
            plan_schema({"$ref": "https://example.com/other.json"}, strict=strict)
        with pytest.raises(ConstraintError, match="outside the schema"):
            plan_schema({"type": "object", "properties": {"a": {"$ref": "defs.json#/x"}}}, strict=strict)


def test_schema_violations_sentences():
    schema = {"type": "object", "properties": {"t": {"type": "array", "uniqueItems": True}}, "required": ["t"]}
    assert schema_violations(schema, '{"t": [1, 2]}') == []
    got = schema_violations(schema, '{"t": [1, 1]}')
    assert len(got) == 1 and "uniqueItems" in got[0] and "/t" in got[0]
    assert "not JSON" in schema_violations(schema, '{"t": [')[0]


@pytest.fixture(scope="module")
def tiny():
    from dllm import LLM
    from dllm.default_model import DEFAULT_MODEL
    return LLM(str(DEFAULT_MODEL))


def test_generate_reports_violations_of_relaxed_keywords(tiny):
    from dllm import SamplingParams
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b"]},
                                                        "uniqueItems": True, "minItems": 2}},
              "required": ["tags"], "additionalProperties": False}
    outs = tiny.generate(["Fill the JSON:"] * 2, [SamplingParams(max_new_tokens=24, json_schema=schema, seed=s,
                                                                 temperature=t) for s, t in ((0, 0.0), (1, 1.0))])
    for o in outs:
        inst = json.loads(o.text)                         # the relaxed language is still enforced
        assert set(inst) == {"tags"} and len(inst["tags"]) >= 2
        assert o.stats.schema_violations == schema_violations(schema, o.text)
        assert bool(o.stats.schema_violations) == (len(set(inst["tags"])) < len(inst["tags"]))
    with pytest.raises(ConstraintError, match="uniqueItems"):
        SamplingParams(json_schema=schema, json_schema_strict=True)


def test_generate_through_the_grammar_route_is_valid(tiny):
    from dllm import SamplingParams
    from dllm.constraints.cfg_rows import GrammarConstraint
    tree = {"type": "object", "properties": {"v": {"type": "integer", "minimum": 0, "maximum": 9},
                                             "kids": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2}},
            "required": ["v"], "additionalProperties": False}
    assert isinstance(compile_json_schema(tree, tiny.tokenizer, tiny.args.vocab_size), GrammarConstraint)
    for t in (0.0, 1.0):
        out = tiny.generate("Fill the JSON:", SamplingParams(max_new_tokens=32, json_schema=tree, temperature=t,
                                                             seed=3))[0]
        validate(json.loads(out.text), tree)
        assert out.stats.schema_violations == []
