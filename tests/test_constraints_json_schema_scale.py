"""Issue 25 (continued): real schemas at scale. Recursion through `$ref: "#"` with sibling keywords
(renovate's shape) becomes a grammar rule instead of being unrolled; the IR is a DAG and is walked as
one; a terminal's closure (the states a gap can lead to) is found on demand and equals the full one."""
import json

import numpy as np
import pytest

from dllm.constraints.cfg import ANY, Text, _Term
from dllm.constraints.cfg_chart import Chart
from dllm.constraints.json_schema import ir, plan_schema
from dllm.constraints.regex import _ByteDFA
from tests.test_constraints_json_schema import validate

# renovate.json's shape: a definition is the root itself ("$ref": "#") plus an allOf that declares the
# same recursive property again, and the root carries a `not` that becomes an anyOf of each level
RENOVATE_LIKE = {
    "type": "object",
    "not": {"anyOf": [{"required": ["secret"]}, {"required": ["token"]}]},
    "properties": {"name": {"$ref": "#/definitions/name"}, "group": {"$ref": "#/definitions/group"},
                   "digest": {"$ref": "#/definitions/digest"}},
    "additionalProperties": False,
    "definitions": {
        "name": {"type": "string", "maxLength": 3},
        "group": {"description": "config of a group", "type": "object", "default": {}, "$ref": "#",
                  "allOf": [{"type": "object", "properties": {"name": {"$ref": "#/definitions/name"},
                                                              "group": {"$ref": "#/definitions/group"}}}]},
        "digest": {"type": "object", "$ref": "#",
                   "allOf": [{"type": "object", "properties": {"group": {"$ref": "#/definitions/group"},
                                                               "digest": {"$ref": "#/definitions/digest"}}}]},
    },
}


def _accepts(plan, text: str) -> bool:
    b = list(text.encode())
    return Chart(plan.grammar(), Text(b, [False] * (len(b) + 1), None)).ok


def test_ref_to_root_with_siblings_is_a_rule_not_an_unrolling():
    plan = plan_schema(RENOVATE_LIKE)                 # used to fail: "nests too deeply" after 200 levels
    assert plan.recursive and plan.relaxed == ()
    deep = {"name": "a"}
    for i in range(12):                               # deeper than any unrolling (keys in declared order)
        deep = {"group": deep} if i % 3 else {"name": "b", "digest": {"group": deep}}
    validate(deep, RENOVATE_LIKE)
    assert _accepts(plan, json.dumps(deep))
    for bad in ({"group": {"group": {"secret": 1}}}, {"group": {"name": "abcd"}}, {"x": 1},
                {"digest": {"group": {"token": "t"}}}):
        assert not _accepts(plan, json.dumps(bad)), bad


def test_allof_of_one_ref_twice_keeps_the_reference():
    schema = {"type": "array", "items": {"$ref": "#/$defs/t"},
              "$defs": {"t": {"type": "object", "properties": {"kids": {"allOf": [{"$ref": "#"}, {"$ref": "#"}]},
                                                               "v": {"type": "integer"}}, "required": ["v"],
                              "additionalProperties": False}}}
    plan = plan_schema(schema)
    assert plan.recursive
    good = [{"kids": [{"kids": [{"kids": [{"kids": [], "v": 4}], "v": 3}], "v": 2}], "v": 1}]   # declared order
    validate(good, schema)
    assert _accepts(plan, json.dumps(good))
    assert not _accepts(plan, json.dumps([{"kids": [{"kids": []}], "v": 1}]))


def test_ir_is_walked_as_a_dag():
    node = "x"
    for _ in range(80):                               # 2^80 paths, 80 distinct tuples
        node = ("seq", (node, ("ref", "r"), node))
    assert ir._refs(node, set()) == {"r"}
    rules = {"r": ("alt", (node, ("ref", "s"))), "s": ("rep", ("ref", "r"), 0, None)}
    rec = ir.recursive_rules(rules)
    assert rec == {"r": {"r", "s"}, "s": {"r", "s"}}


@pytest.mark.parametrize("seed", range(5))
def test_term_closure_on_demand_equals_the_full_closure(seed):
    rng = np.random.default_rng(seed)
    n = 40
    table = np.full((n + 1, 256), n, np.int32)
    for s in range(n):                                # a sparse random DFA
        for b in rng.choice(256, size=3, replace=False):
            table[s, b] = rng.integers(0, n)
    accept = np.zeros(n + 1, bool)
    accept[rng.choice(n, size=4, replace=False)] = True
    t = _Term("T", _ByteDFA(table=table, accept=accept, start=0, n=n))
    for _ in range(20):
        S = frozenset(int(x) for x in rng.choice(n, size=3, replace=False))
        want, todo = set(S), list(S)                  # brute force: every state reachable by any bytes
        while todo:
            s = todo.pop()
            for b in range(256):
                u = int(table[s, b])
                if u != n and u not in want:
                    want.add(u)
                    todo.append(u)
        assert t.close(S) == frozenset(want)
        assert t.step(S, ANY) <= t.close(S)


@pytest.mark.parametrize("text", ['"name": ', "é€x", "{"])
def test_literal_terminal_behaves_as_its_byte_chain_dfa(text):
    from dllm.constraints.json_schema.grammar import _LiteralTerm

    b = text.encode()
    n = len(b)
    table = np.full((n + 2, 256), n + 1, np.int32)     # states 0..n, row n + 1 the dead sink
    table[np.arange(n), np.frombuffer(b, np.uint8)] = np.arange(1, n + 1)
    accept = np.zeros(n + 2, bool)
    accept[n] = True
    full, lit = _Term("T", _ByteDFA(table=table, accept=accept, start=0, n=n + 1)), _LiteralTerm("T", text)
    assert lit.start == full.start and lit.remaining(lit.start) == full.remaining(full.start) == n
    rng = np.random.default_rng(n)
    for _ in range(40):
        S = frozenset(int(x) for x in rng.choice(n + 1, size=int(rng.integers(1, n + 2)), replace=False))
        assert lit.close(S) == full.close(S) and lit.accepts(S) == full.accepts(S)
        assert lit.remaining(S) == full.remaining(S)
        for byte in [ANY, b[0], b[-1], 0x20, 0xFF]:
            assert lit.step(S, byte) == full.step(S, byte)


@pytest.mark.parametrize("schema,allowed", [
    ({"type": "string", "pattern": "^a", "anyOf": [{"enum": ["ab", "b"]}, {"const": "ac", "description": "d"}]},
     ["ab", "ac"]),
    ({"oneOf": [{"enum": ["x", "y", 1]}, {"enum": ["y", "z", 1.0]}]}, ["x", "z"]),   # shared values match twice
    ({"anyOf": [{"enum": [1, True]}, {"const": 1.0}]}, [1, True]),
])
def test_a_union_of_enums_is_one_enum(schema, allowed):
    import re

    from dllm.constraints.json_schema import schema_to_regex

    rx = schema_to_regex(schema, strict=True)          # exact: nothing relaxed
    for v in ["ab", "b", "ac", "x", "y", "z", 1, True, 2]:
        ok = re.fullmatch(rx, json.dumps(v)) is not None
        assert ok == (v in allowed and type(v) in {type(a) for a in allowed if a == v}), v
        if ok:
            validate(v, schema)


@pytest.mark.parametrize("seed", range(6))
def test_shortest_derivations_match_the_plain_fixed_point(seed):
    from dllm.constraints.cfg import INF, Grammar
    from dllm.constraints.json_schema.grammar import _LiteralTerm

    rng = np.random.default_rng(seed)
    terms = [_LiteralTerm(f"T{i}", "x" * int(rng.integers(1, 6))) for i in range(5)]
    n = 12
    rules = []
    for lhs in range(n):
        for _ in range(int(rng.integers(0, 4))):       # some nonterminals get no rule: unproductive
            rhs = tuple(int(rng.integers(0, n)) if rng.random() < 0.5 else ~int(rng.integers(0, 5))
                        for _ in range(int(rng.integers(0, 5))))
            rules.append((lhs, rhs))
    rules.append((0, (~0,)))                           # the start derives something
    g = Grammar.from_parts(terms, rules, n, 0)
    want = [INF] * (n + 1)                             # reference: iterate the equations to their fixed point
    changed = True
    while changed:
        changed = False
        for lhs, rhs in g.rules:
            v = min(INF, sum(g.tmin[~x] if x < 0 else want[x] for x in rhs))
            if v < want[lhs]:
                want[lhs], changed = v, True
    assert g.minlen == want


@pytest.mark.parametrize("pattern", ["pull-push|pull|push|\\$\\w{1,255}", "^a{2,5}", "b{3,}c", "x*$", "[0-9]{2,4}"])
def test_searched_pattern_keeps_only_the_minimum_of_an_edge_repetition(pattern):
    import random
    import re

    from dllm.constraints.json_schema import schema_to_regex

    rx = re.compile(schema_to_regex({"type": "string", "pattern": pattern}, strict=True))
    rng = random.Random(pattern)
    words = ["pull", "push", "$", "$a", "a", "aa", "aaaaaa", "b", "bbb", "c", "x", "12", "1", "-", "_"]
    for _ in range(300):
        s = "".join(rng.choice(words) for _ in range(rng.randint(0, 4)))
        assert (rx.fullmatch(json.dumps(s)) is not None) == (re.search(pattern, s) is not None), s


def _wide(n_props: int, depth: int):
    """An object of n_props optional properties, each the same object one level down: the regex
    repeats every level's text once per use, the grammar shares it."""
    s = {"type": "integer", "minimum": 0, "maximum": 99}
    for _ in range(depth):
        s = {"type": "object", "properties": {f"p{i}": s for i in range(n_props)}, "additionalProperties": False}
    return s


def test_size_estimate_tracks_the_regex_and_routes_big_schemas_to_the_grammar():
    from dllm.constraints.json_schema import REGEX_BUDGET, choose_route

    small, big = plan_schema(_wide(3, 2)), plan_schema(_wide(12, 4))
    real = len(small.regex())
    assert 0.8 * real <= small.regex_size() <= 1.25 * real          # an estimate (group and quantifier text)
    assert big.regex_size() > REGEX_BUDGET and not big.recursive
    assert choose_route(big, grammar_ok=True) == ("grammar", None)
    assert big._regex == {}                            # decided without writing the regex
    assert choose_route(small, grammar_ok=True)[0] == "regex"
    inst = {"p0": {"p3": {"p11": {"p2": 7}}}, "p11": {}}
    validate(inst, _wide(12, 4))
    assert _accepts(big, json.dumps(inst))


def test_schema_to_regex_refuses_a_regex_past_its_cap(monkeypatch):
    from dllm.constraints.json_schema import schema_to_regex
    from dllm.errors import ConstraintBudgetError

    monkeypatch.setenv("DLLM_CONSTRAINT_POSITIONS", "1000")     # cap: 10,000 characters
    with pytest.raises(ConstraintBudgetError, match="passes 10000 characters"):
        schema_to_regex(_wide(12, 4))


def test_regex_terminals_are_built_once_per_process():
    from dllm.constraints.json_schema.grammar import _LiteralTerm

    a = plan_schema({"type": "object", "properties": {"a": {"type": "string"}, "n": {"type": "number"}}})
    b = plan_schema({"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string"}]}})
    ta = {id(t) for t in a.grammar().terms if not isinstance(t, _LiteralTerm)}
    tb = {id(t) for t in b.grammar().terms if not isinstance(t, _LiteralTerm)}
    assert len(ta & tb) >= 2                           # the string and the number terminal, shared


def test_a_large_token_dfa_gives_way_to_the_grammar_when_the_answer_has_room():
    from dllm import LLM, SamplingParams
    from dllm.constraints.cfg_rows import GrammarConstraint
    from dllm.constraints.json_schema import compile_json_schema
    from dllm.constraints.json_schema.route import DINGO_CELLS
    from dllm.constraints.regex import TokenDFA
    from dllm.default_model import DEFAULT_MODEL

    llm = LLM(str(DEFAULT_MODEL))
    tok, V = llm.tokenizer, llm.args.vocab_size
    schema = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                                               "labels": {"type": "array", "items": {"enum": ["bug", "docs"]}},
                                               "body": {"type": "string", "maxLength": 30}},
              "required": ["title"], "additionalProperties": False}
    dfa = compile_json_schema(schema, tok, V)                 # slots unknown: the token DFA, as before
    assert isinstance(dfa, TokenDFA) and dfa.trans.numel() > DINGO_CELLS
    assert isinstance(compile_json_schema(schema, tok, V, slots=64), GrammarConstraint)
    assert isinstance(compile_json_schema(schema, tok, V, slots=8), TokenDFA)    # '{"title": ""}' needs 13 bytes
    assert isinstance(compile_json_schema(schema, tok, V, grammar_ok=False, slots=64), TokenDFA)
    for t in (0.0, 1.0):                                      # through the engine: slots = max_new_tokens
        out = llm.generate("Fill the JSON:", SamplingParams(max_new_tokens=48, json_schema=schema, temperature=t,
                                                            seed=1))[0]
        validate(json.loads(out.text), schema)
        assert out.stats.schema_violations == []


def test_an_object_of_many_optional_entries_is_a_linear_grammar():
    n = 200
    schema = {"type": "object", "properties": {f"k{i}": {"type": "integer", "maximum": 9, "minimum": 0}
                                               for i in range(n)}, "additionalProperties": False}
    plan = plan_schema(schema)
    g = plan.grammar()
    assert sum(len(rhs) for _, rhs in g.rules) < 20 * n             # spliced chains were ~n^2 / 2 symbols
    inst = {f"k{i}": i % 10 for i in range(0, n, 7)}
    assert _accepts(plan, json.dumps(inst))
    assert not _accepts(plan, json.dumps({"k7": 1, "k3": 2}))       # declared order


@pytest.mark.parametrize("steps", [40, 80])
def test_fixed_step_schedule_completes_on_the_grammar_route(steps):
    """A fixed schedule leaves masks for the end-of-block fill; a masked slot before committed text that
    its tokens cannot spell used to raise "cannot fill a gap" (changie-shaped schema, dllm-tiny)."""
    from dllm import LLM, SamplingParams
    from dllm.default_model import DEFAULT_MODEL

    schema = {"type": "object", "properties": {"changesDir": {"type": "string"}, "unreleasedDir": {"type": "string"},
                                               "headerPath": {"type": "string"}, "body": {"type": "object"}},
              "required": ["changesDir", "unreleasedDir"], "additionalProperties": False}
    llm = LLM(str(DEFAULT_MODEL))
    for t in (0.0, 1.0):
        out = llm.generate("Write a valid configuration as JSON:", SamplingParams(
            max_new_tokens=160, steps=steps, temperature=t, seed=0, json_schema=schema))[0]
        validate(json.loads(out.text), schema)


@pytest.mark.parametrize("lo,hi", [(0, 5), (0, 99), (2, 13), (1, 64), (3, 3 + 32)])
def test_a_long_bounded_array_is_logarithmic_and_exact(lo, hi):
    """minItems/maxItems far apart: the optional copies are built from doubling rules, O(log) of them
    (a chain took one nonterminal per copy, and a gap predicts them all); the lengths it accepts are
    exactly lo..hi, also through a masked gap and a tail."""
    schema = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
              "minItems": lo, "maxItems": hi}
    plan = plan_schema(schema)
    g = plan.grammar()
    assert len(g.rules) < 12 + 4 * hi.bit_length()
    for k in sorted({0, max(lo - 1, 0), lo, lo + 1, (lo + hi) // 2, hi - 1, hi, hi + 1}):
        assert _accepts(plan, json.dumps([k % 10] * k)) == (lo <= k <= hi), k
    # "[" gap ", 7" + a 2-byte tail ("]" fits): the gap must hold at least one item before ", 7"
    for tail, need in ((", 7", 2), (", 7, 7", 3)):
        b = [ord("[")] + [ANY] + list(tail.encode())
        loop = [False] * (len(b) + 1)
        loop[2] = loop[-1] = True
        assert Chart(g, Text(b, loop, 2)).ok == (hi >= need)


def _brute(texts: list[bytes], seq: list[int]):
    """(alive, accepts, remaining) after reading seq (ANY matches any byte), by brute force over texts."""
    fits = [t for t in texts if len(t) >= len(seq) and all(b == ANY or t[i] == b for i, b in enumerate(seq))]
    return bool(fits), any(len(t) == len(seq) for t in fits), min((len(t) - len(seq) for t in fits), default=None)


def test_literal_set_terminal_is_the_union_of_its_literals():
    """A long enum's values are one trie terminal on the grammar route (one terminal per value made the
    Earley scan try every value at every position); stepped byte by byte it accepts exactly the values."""
    from dllm.constraints.cfg import INF
    from dllm.constraints.json_schema.grammar import _LiteralSetTerm

    texts = ['"ab"', '"abc"', '"abd"', '"b"', '"é€x"', "12", "1", '{"k": [1]}']
    raw = [t.encode() for t in texts]
    term = _LiteralSetTerm("T", texts)
    rng = np.random.default_rng(0)
    seqs = [list(t[:k]) for t in raw for k in range(len(t) + 1)]
    for _ in range(300):                                  # prefixes with wildcards and wrong bytes
        t = raw[int(rng.integers(len(raw)))]
        s = list(t[:int(rng.integers(len(t) + 2))])
        for i in range(len(s)):
            r = rng.random()
            s[i] = ANY if r < 0.2 else int(rng.integers(256)) if r < 0.3 else s[i]
        seqs.append(s)
    for seq in seqs:
        S = term.start
        for b in seq:
            S = term.step(S, b)
        alive, accepts, rest = _brute(raw, seq)
        assert bool(S) == alive and term.accepts(S) == accepts, seq
        assert term.remaining(S) == (INF if rest is None else rest), seq
        closed = term.close(S)                            # any number of any bytes after seq
        assert S <= closed and term.accepts(closed) == alive
        assert term.step(S, ANY) <= closed


def test_a_long_enum_decodes_through_one_trie_terminal():
    from dllm import LLM, SamplingParams
    from dllm.constraints.json_schema.grammar import _LiteralSetTerm
    from dllm.default_model import DEFAULT_MODEL

    cities = [f"c{i}" for i in range(5000)]
    schema = {"type": "object", "properties": {"city": {"enum": cities}}, "required": ["city"],
              "additionalProperties": False}
    plan = plan_schema(schema)
    sets = [t for t in plan.grammar().terms if isinstance(t, _LiteralSetTerm)]
    assert len(sets) == 1 and len(sets[0].accept) == 5000
    assert _accepts(plan, '{"city": "c4999"}') and _accepts(plan, '{"city": "c0"}')
    for bad in ('{"city": "c5000"}', '{"city": "c"}', '{"city": "c12"3}', '{"city": 1}'):
        assert not _accepts(plan, bad), bad
    llm = LLM(str(DEFAULT_MODEL))
    for t in (0.0, 1.0):
        out = llm.generate("Name a city as JSON:", SamplingParams(max_new_tokens=24, json_schema=schema,
                                                                  temperature=t, seed=3))[0]
        assert json.loads(out.text)["city"] in cities and out.stats.schema_violations == []


def test_a_pattern_past_the_state_cap_is_built_once(monkeypatch):
    """A pattern refused for its states is refused again at once: a JSON-Schema pattern was built to the
    state cap by the token-DFA route and again by the grammar route (~10 s on dllm-tiny's CPU at the
    default cap), and a client could resend it. Limits are part of the key; time refusals are not kept."""
    from dllm.constraints import char_dfa as cd
    from dllm.constraints import regex
    from dllm.constraints.budget import Budget
    from dllm.constraints.json_schema import compile_json_schema
    from dllm.errors import ConstraintBudgetError
    from dllm.default_model import DEFAULT_MODEL
    from dllm.tokenizer import Tokenizer

    regex.clear_memory_cache(vocabularies=False)
    real, builds = cd.char_dfa, []
    monkeypatch.setattr(cd, "char_dfa", lambda *a: (builds.append(a[1]), real(*a))[1])
    pattern = "(a|b)*a(a|b){14}"                                # 2^15 states
    for _ in range(2):
        with pytest.raises(ConstraintBudgetError, match="more than 2,000 DFA states") as e:
            regex._char_fsm(pattern, Budget(states=2000))
    assert builds == [pattern] and "in the part" in str(e.value)
    regex._char_fsm(pattern, Budget(states=100_000))            # other limits: built, and it fits
    assert len(builds) == 2
    with pytest.raises(ConstraintBudgetError, match="takes more than"):
        regex._char_fsm("(a|b)*a(a|b){13}", Budget(seconds=1e-9))
    regex._char_fsm("(a|b)*a(a|b){13}", Budget())                # a time refusal is not remembered
    assert len(builds) == 4
    spent = Budget(states=2000)
    spent.used = 1500                                           # a grammar's earlier terminals spent from it
    with pytest.raises(ConstraintBudgetError):
        regex._char_fsm("(a|b)*a(a|b){9}", spent)
    regex._char_fsm("(a|b)*a(a|b){9}", Budget(states=2000))     # alone it fits: that refusal was not kept
    assert len(builds) == 6

    builds.clear()                                              # both routes of one schema: one build
    monkeypatch.setenv("DLLM_CONSTRAINT_STATES", "2000")
    tok = Tokenizer.from_pretrained(DEFAULT_MODEL)
    with pytest.raises(ConstraintBudgetError):
        compile_json_schema({"type": "string", "pattern": "(a|b)*a(a|b){15}"}, tok, 1125)
    assert len(builds) == 1
    regex.clear_memory_cache(vocabularies=False)


def test_one_request_compile_runs_under_one_clock(monkeypatch):
    """DLLM_CONSTRAINT_SECONDS bounds a request's whole compile: every Budget its routes, stages and
    terminals make ends by one deadline (each used to start its own clock: with 2 s, an exploding
    JSON-Schema pattern took ~8 s); a pattern begun after that deadline is refused without the search
    for the part at fault, whose own 2 s are the only time past the deadline."""
    from dllm.constraints import budget as B
    from dllm.constraints import char_dfa as cd
    from dllm.constraints import regex
    from dllm.constraints.base import compile_constraint
    from dllm.default_model import DEFAULT_MODEL
    from dllm.errors import ConstraintBudgetError
    from dllm.sampling_params import SamplingParams
    from dllm.tokenizer import Tokenizer

    made, real_init = [], B.Budget.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        made.append((self.deadline, k.get("own_clock", False)))

    monkeypatch.setattr(B.Budget, "__init__", init)
    monkeypatch.setenv("DLLM_CONSTRAINT_STATES", "2000")
    regex.clear_memory_cache(vocabularies=False)
    tok = Tokenizer.from_pretrained(DEFAULT_MODEL)
    params = SamplingParams(max_new_tokens=16, json_schema={"type": "string", "pattern": "(a|b)*a(a|b){15}"})
    with pytest.raises(ConstraintBudgetError, match="2,000 DFA states"):
        compile_constraint(params, tok, 1125, [], causal=False, templated=False)
    shared = [d for d, own in made if not own]
    assert len(shared) >= 2 and len(set(shared)) == 1, made     # both routes' budgets: one deadline
    assert any(own for _, own in made)                          # the diagnosis kept its own clock

    culprits = []
    monkeypatch.setattr(cd, "_culprit", lambda *a: culprits.append(a) or "?")
    with B.one_clock():
        late = B.Budget(seconds=1e-9)
        with pytest.raises(ConstraintBudgetError, match=r"takes more than .* in the part '\(a\|b\)\*a'"):
            regex._char_fsm("(a|b)*a", late)
    assert culprits == []
    regex.clear_memory_cache(vocabularies=False)


@pytest.mark.parametrize("n", [1000, 3000])
def test_a_very_wide_object_is_refused_with_a_sentence_not_a_recursion_error(n):
    """The compiler walks an object's entries as a chain, recursively: past ~1,000 entries Python's
    recursion limit ends it. compile_json_schema raised the bare RecursionError, and SamplingParams said
    the schema "nests too deeply" of a flat object."""
    from dllm import SamplingParams
    from dllm.constraints.json_schema import compile_json_schema
    from dllm.constraints.json_schema.plan import TOO_DEEP
    from dllm.default_model import DEFAULT_MODEL
    from dllm.errors import ConstraintError
    from dllm.tokenizer import Tokenizer

    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(n)},
              "required": [f"p{i}" for i in range(n)]}
    tok = Tokenizer.from_pretrained(DEFAULT_MODEL)
    for compile_it in (lambda: compile_json_schema(schema, tok, 1125), lambda: SamplingParams(json_schema=schema)):
        try:
            compile_it()
        except ConstraintError as e:
            assert str(e) == TOO_DEEP and "too many entries" in TOO_DEEP
