"""lark's common terminals (lark/grammars/common.lark, the installed copy) as grammar constraints:
every one compiles to a byte DFA that takes exactly the strings lark's lexer takes as one token
(Python's re.match of lark's own regex covering the whole string), including ESCAPED_STRING,
whose regex needs a lookbehind, and C_COMMENT, whose regex is lazy (issue 19)."""
from __future__ import annotations

import random
import re
from pathlib import Path

import lark
import pytest

from dllm.constraints.grammar import load_lark
from dllm.constraints.regex import _byte_dfa, _char_fsm

COMMON = Path(lark.__file__).parent / "grammars" / "common.lark"
NAMES = [ln.split(":")[0].strip() for ln in COMMON.read_text().splitlines()
         if ln[:1].isupper() and ":" in ln]
ALPHABET = list('09a5zAZ_+-.eE"\\ \t\r\n\f#/*x')
SAMPLES = ['"a"', '"a\\"b"', '"\\\\"', '"\\"', '"a"b"', '""', '"\n"', '"\\\\\\""', "/**/", "/* x */", "/* a */ b */",
           "/***/", "/* \n */", "1.5e-3", "-2", "+.5", "1.", ".5", "1e5", "abc_1", "_x", "#c", "// c", "-- c",
           "\r\n\n", " \t", "x", ""]


def accepts(bd, text: str) -> bool:
    s = bd.start
    for b in text.encode():
        s = int(bd.table[s, b])
        if s == bd.n:
            return False
    return bool(bd.accept[s])


def lark_takes(rx: str, text: str) -> bool:
    """What lark's dynamic lexer takes as one token: re.match covering all of the text."""
    m = re.match(rx, text)
    return m is not None and m.end() == len(text)


@pytest.fixture(scope="module")
def terminals():
    grammar = "start: " + " | ".join(NAMES) + "\n" + "".join(f"%import common.{n}\n" for n in NAMES)
    parser = lark.Lark(grammar, parser="earley", lexer="dynamic_complete")
    original = {t.name: t.pattern.to_regexp() for t in parser.terminals}
    _, ours, _ = load_lark(grammar)
    return original, ours


@pytest.mark.parametrize("name", NAMES)
def test_common_terminal_matches_lark(terminals, name):
    original, ours = terminals
    bd = _byte_dfa(*_char_fsm(ours[name]), ours[name])
    rng = random.Random(name)
    texts = SAMPLES + ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 7))) for _ in range(400)]
    wrong = [t for t in texts if accepts(bd, t) != lark_takes(original[name], t)]
    assert not wrong, (name, ours[name], wrong[:5])


def test_json_grammar_with_common_terminals_in_cfg_mode(tmp_path):
    """lark's documented JSON grammar (%import common.ESCAPED_STRING) is accepted under cfg, and the
    answer is JSON."""
    import json

    from dllm import LLM, SamplingParams
    from tests.checkpoints import write_llada

    grammar = "\n".join(['?start: value', '?value: object | array | string | SIGNED_NUMBER | "true" | "false" | "null"',
                         'array : "[" [value ("," value)*] "]"', 'object : "{" [pair ("," pair)*] "}"',
                         'pair : string ":" value', 'string : ESCAPED_STRING', '%import common.ESCAPED_STRING',
                         '%import common.SIGNED_NUMBER', '%import common.WS', '%ignore WS'])
    write_llada(tmp_path, dim=32, n_layers=1, n_heads=2, hidden=48)
    out = LLM(str(tmp_path)).generate("JSON:", SamplingParams(max_new_tokens=16, grammar=grammar))[0]
    json.loads(out.text)
