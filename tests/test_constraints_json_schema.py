"""JSON Schema -> regex: random walks over the regex's FSM give JSON that validates; hand-written valid
instances (json.dumps style) match, invalid ones do not; integer/number ranges equal brute force;
unsupported keywords raise ConstraintError."""
import datetime
import functools
import json
import random
import re
from fractions import Fraction

import interegular
import jsonschema
import pytest
from hypothesis import given, settings, strategies as st
from interegular.fsm import anything_else

from dllm.constraints.json_schema import (MAX_REF_DEPTH, integer_range_regex, number_range_regex,
                                          schema_to_regex)
from dllm.errors import ConstraintError

# ---------------------------------------------------------------- FSM random-walk sampler

# concrete characters standing for interegular's `anything_else` (any character the regex never names)
_OTHERS = "é中😀ßΩ~Z\u2028"


class Sampler:
    """Walks the regex's DFA from the start: a random transition each step, among those leading to a
    state from which an accepting state is reachable; at an accepting state it stops with probability
    p_stop. Past soft_cap characters it only takes transitions that get closer to acceptance."""

    def __init__(self, regex: str):
        fsm = interegular.parse_pattern(regex).to_fsm()
        self.fsm = fsm
        named = {sym for sym in fsm.alphabet if sym is not anything_else}
        others = [c for c in _OTHERS if c not in named]
        self.chars = {}
        for key, syms in fsm.alphabet.by_transition.items():
            # sorted: a set's order follows the string hash, which changes between runs (PYTHONHASHSEED)
            self.chars[key] = sorted(s for s in syms if s is not anything_else) + \
                (others if anything_else in syms else [])
        # shortest distance to an accepting state, by BFS over reversed transitions
        rev = {}
        for src, moves in fsm.map.items():
            for key, dst in moves.items():
                if self.chars[key]:
                    rev.setdefault(dst, set()).add(src)
        self.dist = {f: 0 for f in fsm.finals}
        frontier = list(fsm.finals)
        while frontier:
            nxt = []
            for s in frontier:
                for p in rev.get(s, ()):
                    if p not in self.dist:
                        self.dist[p] = self.dist[s] + 1
                        nxt.append(p)
            frontier = nxt
        assert fsm.initial in self.dist, "the regex's language is empty"

    def sample(self, rng: random.Random, p_stop: float = 0.3, soft_cap: int = 200) -> str:
        state, out = self.fsm.initial, []
        while True:
            if state in self.fsm.finals and (rng.random() < p_stop or len(out) > soft_cap):
                break
            # ordered by the characters a move reads: interegular numbers its alphabet keys (and states)
            # in set order, which follows PYTHONHASHSEED
            moves = sorted(((k, d) for k, d in self.fsm.map.get(state, {}).items() if d in self.dist and self.chars[k]),
                           key=lambda m: self.chars[m[0]])
            if len(out) > soft_cap:
                moves = [(k, d) for k, d in moves if self.dist[d] < self.dist[state]]
            if not moves:
                assert state in self.fsm.finals
                break
            key, state = rng.choice(moves)
            out.append(rng.choice(self.chars[key]))
        return "".join(out)


@functools.cache
def sampler_for(regex: str) -> Sampler:
    return Sampler(regex)


def _iso_time(s):
    return datetime.time.fromisoformat(s.replace("Z", "+00:00"))


def _iso_datetime(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


# jsonschema checks date/uuid/ipv4/email itself; time and date-time need rfc3339-validator, absent here
_FORMATS = jsonschema.FormatChecker()
_FORMATS.checks("time", raises=ValueError)(lambda s: not isinstance(s, str) or bool(_iso_time(s)))
_FORMATS.checks("date-time", raises=ValueError)(lambda s: not isinstance(s, str) or bool(_iso_datetime(s)))


def validate(instance, schema):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls(schema, format_checker=_FORMATS).validate(instance)


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------- schemas

PERSON = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer", "minimum": 18, "maximum": 120},
        "offset": {"type": "integer", "minimum": -40, "maximum": -5},
        "score": {"type": "number", "minimum": -1.5, "exclusiveMaximum": 99.25},
        "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
        "born": {"type": "string", "format": "date"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "minItems": 1, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 6},
                           "zip": {"type": "string", "pattern": "[0-9]{5}"},
                           "country": {"const": "NL"}},
            "required": ["city", "zip"],
        },
        "active": {"type": "boolean"},
        "nickname": {"type": ["string", "null"], "maxLength": 4},
    },
    "required": ["id", "name", "age", "role", "tags", "address"],
    "additionalProperties": False,
}

SHAPES = {
    "$defs": {
        "point": {"type": "object", "required": ["x", "y"],
                  "properties": {"x": {"type": "integer", "minimum": -10, "maximum": 10},
                                 "y": {"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 250}}},
        "circle": {"type": "object", "required": ["kind", "center", "r"],
                   "properties": {"kind": {"const": "circle"}, "center": {"$ref": "#/$defs/point"},
                                  "r": {"type": "number", "exclusiveMinimum": 0, "maximum": 5}}},
        "poly": {"type": "object", "required": ["kind", "points"],
                 "properties": {"kind": {"const": "poly"},
                                "points": {"type": "array", "items": {"$ref": "#/$defs/point"},
                                           "minItems": 3, "maxItems": 4}}},
    },
    "type": "object",
    "properties": {
        "shapes": {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/circle"}, {"$ref": "#/definitions/poly"}]},
                   "maxItems": 2},
        "when": {"type": "string", "format": "date-time"},
    },
    "required": ["shapes"],
    "definitions": {"poly": {"$ref": "#/$defs/poly"}},
}

TREE = {
    "type": "object",
    "properties": {"v": {"type": "integer", "minimum": 0, "maximum": 9},
                   "kids": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2}},
    "required": ["v"],
}

MISC = {
    "type": "object",
    "properties": {
        "pick": {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"enum": ["x", "y"]}, {"type": "null"}]},
        "pair": {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "string", "format": "time"}],
                 "items": False, "minItems": 1},
        "esc": {"type": "string", "minLength": 2, "maxLength": 4},
        "pat": {"type": "string", "pattern": '^a"b\\\\[^x]\\.$'},
        "word": {"type": "string", "pattern": "^\\w+$", "maxLength": 4},
        "counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 3},
                   "maxProperties": 2},
        "mail": {"type": "string", "format": "email"},
        "ip": {"type": "string", "format": "ipv4"},
        "ratio": {"type": "number"},
        "big": {"type": "integer", "minimum": 1000},
        "both": {"allOf": [{"type": "integer", "minimum": 3}, {"maximum": 7}]},
        "ext": {"$ref": "#/$defs/base", "required": ["b"]},
    },
    "required": ["pick", "pair", "esc", "pat", "word"],
    "$defs": {"base": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}}}},
}

ANYTHING = {"type": "object", "properties": {"free": {}, "list": {"type": "array"}}, "required": ["free"]}

UNION = {  # anyOf branches merged with the sibling keywords; allOf with additionalProperties false
    "type": "object", "properties": {"kind": {"type": "string"}}, "required": ["kind"],
    "anyOf": [{"properties": {"kind": {"const": "a"}, "x": {"type": "integer", "maximum": -1}}, "required": ["x"]},
              {"properties": {"kind": {"enum": ["b", "c"]}, "y": {"type": "boolean"}}},
              {"allOf": [{"properties": {"kind": {"const": "d"}}, "additionalProperties": False},
                         {"properties": {"z": {"type": "null"}}}]}],
}

DRAFT4 = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object", "required": ["n", "i", "t"],
    "properties": {"n": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 2,
                         "exclusiveMaximum": True},
                   "i": {"type": "integer", "minimum": -3, "exclusiveMinimum": True, "maximum": 0.5},
                   "t": {"type": "array", "items": [{"type": "string", "maxLength": 2}, {"type": "integer"}],
                         "additionalItems": {"type": "boolean"}, "maxItems": 4}},
}

SCHEMAS = {"person": PERSON, "shapes": SHAPES, "tree": TREE, "misc": MISC, "anything": ANYTHING, "union": UNION,
           "draft4": DRAFT4}


# ---------------------------------------------------------------- (1) random walks validate

@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_random_walks_are_valid_json_under_the_schema(name):
    schema = SCHEMAS[name]
    rx = schema_to_regex(schema)
    sampler, rng = sampler_for(rx), random.Random(name)
    for _ in range(150):
        text = sampler.sample(rng)
        assert re.fullmatch(rx, text), text          # Python's re reads the regex as interegular does
        validate(json.loads(text), schema)


def test_random_walks_with_whitespace_override():
    rx = schema_to_regex(TREE, whitespace="[ \\n]?")
    sampler, rng = sampler_for(rx), random.Random(7)
    texts = [sampler.sample(rng) for _ in range(150)]
    for text in texts:
        validate(json.loads(text), TREE)
    assert any("\n" in t for t in texts) and any(", " in t for t in texts) and any("1," in t for t in texts)


def test_samples_cover_escapes_and_optional_properties():
    rx = schema_to_regex(MISC)
    sampler, rng = sampler_for(rx), random.Random(3)
    texts = [sampler.sample(rng) for _ in range(150)]
    assert any("\\u" in t for t in texts) and any('\\"' in t for t in texts)
    assert any('"ratio"' in t for t in texts) and any('"ratio"' not in t for t in texts)


# ---------------------------------------------------------------- (2) valid instances match

VALID = [
    (PERSON, {"id": "123e4567-e89b-12d3-a456-426614174000", "name": "Ann", "age": 18, "offset": -40,
              "score": 99.249999, "code": "AB-123", "born": "2000-02-29", "role": "admin", "tags": ["a", "bc"],
              "address": {"city": "Delft", "zip": "26281", "country": "NL"}, "active": True, "nickname": None}),
    (PERSON, {"id": "123E4567-E89B-12D3-A456-426614174000", "name": "Zoë \"Z\" \\ \n", "age": 120,
              "role": "guest", "tags": ["x"], "address": {"city": "", "zip": "00000"}}),
    (PERSON, {"id": "00000000-0000-0000-0000-000000000000", "name": "Bo", "age": 77, "score": -1.5,
              "born": "1999-12-31", "role": "user", "tags": ["😀", "", "a\\c"],
              "address": {"city": "Paris", "zip": "75001"}, "nickname": "bob"}),
    (PERSON, {"id": "00000000-0000-0000-0000-000000000000", "name": "Bo", "age": 77, "score": 0,
              "role": "user", "tags": ["a"], "address": {"city": "Paris", "zip": "75001"}}),
    (SHAPES, {"shapes": []}),
    (SHAPES, {"shapes": [{"kind": "circle", "center": {"x": -10, "y": 249}, "r": 5},
                         {"kind": "poly", "points": [{"x": 0, "y": -2}, {"x": 1, "y": 1}, {"x": 10, "y": 0}]}],
              "when": "2024-02-29T23:59:59.123Z"}),
    (SHAPES, {"shapes": [{"kind": "circle", "center": {"x": 3, "y": 4}, "r": 0.0001}],
              "when": "1970-01-01T00:00:00+05:30"}),
    (TREE, {"v": 1, "kids": [{"v": 2, "kids": []}, {"v": 3, "kids": [{"v": 4}]}]}),
    (MISC, {"pick": 7, "pair": [True, "12:30:00Z"], "esc": "\t\u0001", "pat": 'a"b\\\\.', "word": "ab_9",
            "counts": {"k": 3, "": 0}, "mail": "first.last@mail.example.org", "ip": "192.168.0.255",
            "ratio": -0.5e-3, "big": 1000, "both": 7, "ext": {"a": -12, "b": False}}),
    (MISC, {"pick": None, "pair": [False], "esc": "ab", "pat": 'a"b\\é.', "word": "X"}),
    (MISC, {"pick": "y", "pair": [False], "esc": "\U0001F600\u2028é", "pat": 'a"b\\\n.', "word": "0000",
            "ratio": 12345678901234567890, "big": 98765432109876543210}),
    ({"type": "string", "maxLength": 3}, "\U0001F600é\u0001"),     # ensure_ascii: a surrogate pair is 1 char
    ({}, [1, "a", None]),
    ({}, {"k": "x", "v": 2.5}),
    ({"type": ["integer", "string"], "minimum": 3}, "x"),
    ({"enum": [{"a": [1, 2]}, [True, None], 1.5, "é"]}, {"a": [1, 2]}),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 2}, [-1, 0]),
    (UNION, {"kind": "a", "x": -5}), (UNION, {"kind": "c"}), (UNION, {"kind": "d"}),
    (DRAFT4, {"n": 1.999999, "i": -2, "t": ["ab", 3, True, False]}), (DRAFT4, {"n": 0.0001, "i": 0, "t": []}),
]


@pytest.mark.parametrize("schema,instance", VALID)
def test_valid_instances_match(schema, instance):
    validate(instance, schema)                      # the instances themselves are valid
    rx = schema_to_regex(schema)
    assert re.fullmatch(rx, dumps(instance)), dumps(instance)
    if isinstance(instance, str):                   # \uXXXX escapes (surrogate pairs too) as well
        assert re.fullmatch(rx, json.dumps(instance)), json.dumps(instance)


def test_whitespace_style_matches_indented_json():
    rx = schema_to_regex(TREE, whitespace="[ \\n]{0,6}")
    inst = {"v": 1, "kids": [{"v": 2}]}
    assert re.fullmatch(rx, json.dumps(inst, indent=1))
    assert re.fullmatch(rx, json.dumps(inst, separators=(",", ":")))
    assert not re.fullmatch(rx, json.dumps(inst, indent=4))       # four spaces exceed the bound


# ---------------------------------------------------------------- (3) invalid instances do not match

_P = VALID[0][1]


def _changed(base, change):
    d = dict(base)
    for k, v in change.items():
        if v is KeyError:
            del d[k]
        else:
            d[k] = v
    return d


def _person(**change):
    return _changed(_P, change)


def _misc(**change):
    return _changed({"pick": 1, "pair": [True], "esc": "ab", "pat": 'a"b\\c.', "word": "a"}, change)


INVALID = [
    (PERSON, _person(age=17)), (PERSON, _person(age=121)), (PERSON, _person(offset=-4)),
    (PERSON, _person(offset=-41)), (PERSON, _person(score=99.25)), (PERSON, _person(score=-1.51)),
    (PERSON, _person(name=KeyError)), (PERSON, _person(address={"city": "x"})),
    (PERSON, _person(tags=["a", "b", "c", "d"])), (PERSON, _person(tags=[])), (PERSON, _person(role="root")),
    (PERSON, _person(code="ab-123")), (PERSON, _person(born="2001-02-29")), (PERSON, _person(born="2000-13-01")),
    (PERSON, _person(id="123e4567-e89b-12d3-a456-42661417400")), (PERSON, _person(extra=1)),
    (PERSON, _person(name="")), (PERSON, _person(name="x" * 13)), (PERSON, _person(age=18.5)),
    (PERSON, _person(tags=["abcd"])), (PERSON, _person(nickname=3)),
    (SHAPES, {"shapes": [{"kind": "circle", "center": {"x": 11, "y": 0}, "r": 1}]}),
    (SHAPES, {"shapes": [{"kind": "circle", "center": {"x": 1, "y": -3}, "r": 1}]}),
    (SHAPES, {"shapes": [{"kind": "circle", "center": {"x": 1, "y": 0}, "r": 0}]}),
    (SHAPES, {"shapes": [{"kind": "poly", "points": [{"x": 0, "y": 0}, {"x": 1, "y": 1}]}]}),
    (SHAPES, {"shapes": [{"kind": "square", "points": []}]}),
    (SHAPES, {"shapes": [], "when": "2024-02-30T00:00:00Z"}),
    (TREE, {"v": 10}), (TREE, {"kids": []}), (TREE, {"v": 1, "kids": [{"v": 1}, {"v": 2}, {"v": 3}]}),
    (MISC, _misc(pick=10)), (MISC, _misc(pick="z")), (MISC, _misc(pair=[True, "12:00:00Z", 1])),
    (MISC, _misc(pair=[True, "24:00:00Z"])), (MISC, _misc(esc="a")), (MISC, _misc(esc="abcde")),
    (MISC, _misc(pat='a"b\\x.')), (MISC, _misc(pat='a"bc.')), (MISC, _misc(word="abcde")),
    (MISC, _misc(word="a-b")), (MISC, _misc(counts={"a": 4})), (MISC, _misc(counts={"a": 1, "b": 1, "c": 1})),
    (MISC, _misc(both=8)), (MISC, _misc(both=2)), (MISC, _misc(big=999)), (MISC, _misc(ext={"a": 1})),
    (MISC, _misc(ip="256.1.1.1")), (MISC, _misc(mail="no-at-sign")), (MISC, _misc(pick=KeyError)),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 2}, [1, 2, 3]),
    ({"enum": ["a", 1]}, "b"),
    (UNION, {"kind": "a"}), (UNION, {"kind": "a", "x": 0}), (UNION, {"kind": "e"}), (UNION, {"kind": "d", "z": None}),
    (DRAFT4, {"n": 0, "i": 0, "t": []}), (DRAFT4, {"n": 2, "i": 0, "t": []}), (DRAFT4, {"n": 1, "i": -3, "t": []}),
    (DRAFT4, {"n": 1, "i": 1, "t": []}), (DRAFT4, {"n": 1, "i": 0, "t": ["a", 1, 2]}),
    (DRAFT4, {"n": 1, "i": 0, "t": ["a", 1, True, True, True]}),
]


@pytest.mark.parametrize("schema,instance", INVALID)
def test_invalid_instances_do_not_match(schema, instance):
    with pytest.raises(jsonschema.ValidationError):
        validate(instance, schema)                  # really invalid...
    assert not re.fullmatch(schema_to_regex(schema), dumps(instance))    # ...and refused


def test_non_canonical_texts_do_not_match():
    rx = schema_to_regex({"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}})
    for text in ['{"n": 01}', '{"n": -0}', '{"n": +1}', '{"n":1}', '{ "n": 1}', '{"s": "\x01"}', '{"s": "\\x"}',
                 '{"s": "\\ud800"}', '{"n": 1, "s": "a",}', '{"s": "a", "n": 1}', ' {}']:
        assert not re.fullmatch(rx, text), text
    assert re.fullmatch(rx, '{"n": -1, "s": "\\u00e9\\/\\ud83d\\ude00"}')


def test_recursion_is_unrolled_to_a_bounded_depth():
    rx = schema_to_regex(TREE)

    def nest(d):
        return {"v": 0} if d == 0 else {"v": 0, "kids": [nest(d - 1)]}
    assert re.fullmatch(rx, dumps(nest(MAX_REF_DEPTH)))               # "#" expanded MAX_REF_DEPTH times
    assert not re.fullmatch(rx, dumps(nest(MAX_REF_DEPTH + 1)))
    validate(nest(MAX_REF_DEPTH + 1), TREE)         # valid, but beyond the unrolled depth


# ---------------------------------------------------------------- (4) integer and number ranges

bound = st.none() | st.integers(-1500, 1500)


@settings(max_examples=60, deadline=None)
@given(bound, bound)
def test_integer_range_regex_equals_brute_force(lo, hi):
    rx = integer_range_regex(lo, hi)
    inside = [n for n in range(-1700, 1701) if (lo is None or n >= lo) and (hi is None or n <= hi)]
    if not inside:
        assert rx is None
        return
    pat = re.compile(rx)
    assert [n for n in range(-1700, 1701) if pat.fullmatch(str(n))] == inside
    for text in ("-0", "00", "01", "+1", "1.0", "", "-", "1e2"):
        assert not pat.fullmatch(text)


@settings(max_examples=40, deadline=None)
@given(st.integers(-10 ** 12, 10 ** 12), st.integers(0, 10 ** 12), st.lists(st.integers(-10 ** 13, 10 ** 13), max_size=30))
def test_integer_range_regex_large_bounds(lo, width, probes):
    hi = lo + width
    pat = re.compile(integer_range_regex(lo, hi))
    for n in probes + [lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, 0, -1, 10 ** 12, -10 ** 12]:
        assert bool(pat.fullmatch(str(n))) == (lo <= n <= hi), n
    pat = re.compile(integer_range_regex(lo, None))
    for n in probes + [lo - 1, lo, 10 ** 30]:
        assert bool(pat.fullmatch(str(n))) == (n >= lo), n


decimal_bound = st.none() | st.builds(lambda n, k: Fraction(n, 10 ** k), st.integers(-3000, 3000), st.integers(0, 3))


@settings(max_examples=60, deadline=None)
@given(decimal_bound, st.booleans(), decimal_bound, st.booleans(), st.randoms(use_true_random=False))
def test_number_range_regex_against_exact_and_float_comparison(lo, lo_ex, hi, hi_ex, rnd):
    def inside(x):
        return ((lo is None or x > lo or (x == lo and not lo_ex))
                and (hi is None or x < hi or (x == hi and not hi_ex)))
    rx = number_range_regex(lo, lo_ex, hi, hi_ex)
    if rx is None:
        assert lo is not None and hi is not None and not any(inside(Fraction(n, 10 ** 6)) for n in
                                                            range(int(lo * 10 ** 6), int(hi * 10 ** 6) + 1))
        return
    pat = re.compile(rx)
    for _ in range(150):
        k = rnd.randint(0, 6)
        n = rnd.randint(-400 * 10 ** k, 400 * 10 ** k)
        x = Fraction(n, 10 ** k)
        text = ("-" if n < 0 else "") + (f"{abs(n) // 10 ** k}.{str(abs(n) % 10 ** k).zfill(k)}" if k else str(abs(n)))
        if text in ("-0",) or text.startswith("-0.") and x == 0:
            continue
        assert bool(pat.fullmatch(text)) == inside(x), text          # exact up to 6 fraction digits
        if pat.fullmatch(text):          # and so does the validator: parsed float against the float bound
            v, flo, fhi = json.loads(text), None if lo is None else float(lo), None if hi is None else float(hi)
            assert (lo is None or (v > flo if lo_ex else v >= flo)) and (hi is None or (v < fhi if hi_ex else v <= fhi))
    for text in ("1e2", "01", "1.", ".5", "-0", "+1", "1.1234567"):
        assert not pat.fullmatch(text)


def test_number_bounds_close_to_float_precision():
    # 0.1 is not exact in binary: the regex's decimal comparison must agree with the validator's float one
    schema = {"type": "number", "exclusiveMinimum": 0.1, "exclusiveMaximum": 0.3}
    rx = schema_to_regex(schema)
    sampler, rng = Sampler(rx), random.Random(0)
    for _ in range(200):
        validate(json.loads(sampler.sample(rng)), schema)
    assert not re.fullmatch(rx, "0.1") and re.fullmatch(rx, "0.100001") and re.fullmatch(rx, "0.299999")
    assert re.fullmatch(schema_to_regex({"type": "number", "minimum": 1e-9, "maximum": 2e-9}), "0.000000001")


# ---------------------------------------------------------------- (5) refusals

REFUSED = [   # strict: what decoding cannot enforce, and what is invalid or empty in any mode
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "'uniqueItems' at #"),
    ({"type": "integer", "multipleOf": 5}, "'multipleOf' at #"),
    ({"$defs": {"a": {"type": "array", "items": {"type": "number", "multipleOf": 0.5}}}, "$ref": "#/$defs/a"},
     "'multipleOf' at #/$defs/a/items"),
    ({"type": "string", "pattern": "(?=a)b"}, "lookaround"),
    ({"type": "string", "pattern": "(a)\\1"}, "backreference"),
    ({"type": "string", "pattern": "\\bword"}, "word boundary"),
    ({"type": "string", "pattern": "\\p{L}+"}, "Unicode property"),
    ({"type": "string", "pattern": "a^b"}, "anchor"),
    ({"type": "string", "pattern": "[a-z]+[0-9]", "maxLength": 5}, "'maxLength'"),
    ({"$ref": "https://example.com/s.json"}, "outside the schema"),
    ({"$ref": "#/$defs/missing"}, "points at nothing"),
    ({"allOf": [{"type": "string", "pattern": "a"}, {"pattern": "b"}]}, "'pattern'"),
    ({"type": "string", "unevaluatedItems": {"type": "integer"}}, "'unevaluatedItems'"),
    ({"type": "string", "not": {"pattern": "ab"}}, "'not' at #"),
    ({"enum": []}, "admits no value"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "admits no value"),
    ({"type": "object", "properties": {"a": {"$ref": "#/properties/a"}}, "required": ["a"]}, "admits no value"),
    ({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}, "required": ["next"]}},
      "$ref": "#/$defs/n"}, "admits no value"),
    ({"type": "number", "minimum": 1e20}, "at most 15"),
    ({"type": "strin"}, "'type' at #"),
]


@pytest.mark.parametrize("schema,needle", REFUSED)
def test_unsupported_keywords_raise(schema, needle):
    with pytest.raises(ConstraintError) as info:
        schema_to_regex(schema, strict=True)
    assert needle in str(info.value), str(info.value)
    assert str(info.value).count(". ") == 0          # one sentence


def test_enum_and_const_keep_only_values_the_schema_accepts():
    rx = schema_to_regex({"type": "string", "enum": ["ok", 3, "toolong"], "maxLength": 4})
    assert re.fullmatch(rx, '"ok"') and not re.fullmatch(rx, "3") and not re.fullmatch(rx, '"toolong"')
    rx = schema_to_regex({"const": {"a": [1, "x"]}}, whitespace="[ ]?")
    assert re.fullmatch(rx, '{"a":[1,"x"]}') and re.fullmatch(rx, '{ "a" : [ 1 , "x" ] }')


def test_whitespace_must_be_json_whitespace():
    for bad in ("[ a]?", "\\s*", "(", 3):
        with pytest.raises(ConstraintError):
            schema_to_regex({"type": "null"}, whitespace=bad)
    assert " " not in schema_to_regex({"type": "array"}, whitespace="")


def test_output_uses_only_syntax_interegular_and_re_share():
    for schema in SCHEMAS.values():
        rx = schema_to_regex(schema)
        assert not re.search(r"\\[dDwWsSbBuUAZ]|\(\?[=!<P]|(?<!\[)\^|(?<!\\)\$", rx.replace("\\\\", "")), rx
