"""constraints/token_bytes.py and constraints/regex.py: token bytes, regex -> token DFA, caches.

The DFA is checked against brute force: every token sequence up to length 3 over a small hand-made
byte-level vocabulary (whole characters, partial UTF-8 pieces, multi-character tokens) is decoded and
compared with `re.fullmatch`; byte strings that are not valid UTF-8 must be rejected.
"""
from __future__ import annotations

import itertools
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from dllm.constraints import regex as cregex
from dllm.constraints.regex import TokenDFA, check_regex, compile_regex
from dllm.constraints.token_bytes import bytes_to_unicode, decoder_style, token_bytes
from dllm.errors import ConstraintError, DllmError, InvalidParamsError
from dllm.tokenizer import Tokenizer
from tests.tokenizer_files import CORPUS, write_dream_tokenizer, write_llada_tokenizer

ROUND_TRIP = ["Hello world", "The quick brown fox.", "Café crème brûlée", "東京タワー", "東京 is big",
              "emoji 🙂🚀 done", "   leading", "a  b   c\t\td\n\n\ne", "{\"key\": [1, 2, 3]}", "x" * 40,
              "Ωμέγα", "mixed: café 東京 🙂 end  "]


# ---- tokenizers ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llada_tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok_llada")
    info = write_llada_tokenizer(d)
    return Tokenizer.from_pretrained(d), info


@pytest.fixture(scope="module")
def dream_tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok_dream")
    info = write_dream_tokenizer(d)
    return Tokenizer.from_pretrained(d), info


# The hand-made vocabulary of the brute-force tests: single characters, multi-character pieces,
# 'é' (C3 A9) and '東' (E6 9D B1) whole and in partial pieces, an emoji split in two, and byte
# strings that no valid UTF-8 text contains.
TINY_PIECES = [b"a", b"b", b"c", b"x", b" ", b"1", b"2", b"ab", b"bc", b"ca", b"a ", b" a", b"12",
               "é".encode(), b"\xc3", b"\xa9", "東".encode(), b"\xe6\x9d", b"\xb1", "é東".encode(),
               "🙂".encode()[:2], "🙂".encode()[2:], b"\n", b"b\xc3", b"{", b"}", b"]",
               # never valid UTF-8: an overlong NUL and '/', a surrogate, a code point above U+10FFFF
               b"\xc0\x80", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]
TINY_EXTRA_IDS = 3  # the model's vocabulary is larger than the tokenizer's: ids with no token


def _byte_level_tokenizer(pieces: list[bytes], added=(), specials=("<|end|>", "<|mask|>")) -> Tokenizer:
    table = bytes_to_unicode()
    vocab = {"".join(table[b] for b in p): i for i, p in enumerate(pieces)}
    hf = HFTokenizer(models.BPE(vocab, []))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_tokens([AddedToken(a, special=False, normalized=False) for a in added])
    hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return Tokenizer(hf, {"eos_token": specials[0]}, None)


@pytest.fixture(scope="module")
def tiny():
    tok = _byte_level_tokenizer(TINY_PIECES)
    V = tok.vocab_size + TINY_EXTRA_IDS
    tb = token_bytes(tok, V)
    ids = [i for i in range(V) if tb[i] is not None]
    seqs, texts = [], []
    for n in range(4):
        for seq in itertools.product(ids, repeat=n):
            data = b"".join(tb[i] for i in seq)
            try:
                texts.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(None)
            seqs.append(list(seq) + [-1] * (3 - n))
    return tok, V, tb, np.array(seqs, dtype=np.int64), texts


def _dfa_accepts(dfa: TokenDFA, seqs: np.ndarray) -> np.ndarray:
    """Vectorised dfa.matches over [N, 3] sequences padded with -1."""
    cls, trans, accept = dfa.token_class.numpy(), dfa.trans.numpy(), dfa.accept.numpy()
    state = np.full(len(seqs), dfa.start)
    for k in range(seqs.shape[1]):
        tok = seqs[:, k]
        step = (tok >= 0) & (state >= 0)
        state = np.where(step, trans[np.maximum(state, 0), cls[np.maximum(tok, 0)]], state)
    return (state >= 0) & accept[np.maximum(state, 0)]


def _brute_force(pattern: str, tiny, flags=0) -> None:
    tok, V, tb, seqs, texts = tiny
    try:
        dfa = compile_regex(pattern, tok, V, cache_dir=False)
    except ConstraintError as exc:
        # only acceptable when nothing this vocabulary spells matches (checked up to 3 tokens)
        assert "no sequence" in str(exc), exc
        assert not any(t is not None and re.fullmatch(pattern, t, flags) for t in texts), pattern
        return
    want = np.array([t is not None and re.fullmatch(pattern, t, flags) is not None for t in texts])
    got = _dfa_accepts(dfa, seqs)
    bad = np.nonzero(want != got)[0]
    if bad.size:
        i = bad[0]
        seq = [int(t) for t in seqs[i] if t >= 0]
        raise AssertionError(f"{pattern!r}: tokens {seq} = {b''.join(tb[t] for t in seq)!r} "
                             f"re={bool(want[i])} dfa={bool(got[i])} ({bad.size} mismatches)")
    # the scalar API agrees with the vectorised check on a sample
    for i in range(0, len(seqs), 997):
        assert dfa.matches([int(t) for t in seqs[i] if t >= 0]) == want[i]
    _check_invariants(dfa, tok, V)


def _check_invariants(dfa: TokenDFA, tok, V: int) -> None:
    S, cls, trans = dfa.n_states, dfa.token_class.numpy(), dfa.trans.numpy()
    dist, accept = dfa.dist.numpy(), dfa.accept.numpy()
    assert dfa.token_class.shape == (V,) and dfa.token_class.dtype == dfa.trans.dtype == dfa.dist.dtype
    assert trans.shape[0] == S == len(accept) == len(dist) and 0 <= dfa.start < S
    assert trans.min() >= -1 and trans.max() < S
    # class 0 is the dead class; every other class is live somewhere and all columns differ
    assert (trans[:, 0] == -1).all()
    assert ((trans[:, 1:] >= 0).any(axis=0)).all()
    assert np.unique(trans, axis=1).shape[1] == trans.shape[1]
    assert (cls[sorted(tok.special_ids)] == 0).all()
    assert (cls[tok.vocab_size:] == 0).all()
    # dist is the BFS distance to acceptance: 0 exactly on accepting states, and otherwise one more
    # than the best successor's
    assert ((dist == 0) == accept).all() and (dist >= 0).all()
    succ = np.where(trans >= 0, dist[np.maximum(trans, 0)], np.iinfo(np.int64).max)
    best = succ.min(axis=1)
    assert (dist[~accept] == best[~accept] + 1).all()
    # every state is reachable from the start
    seen, todo = {dfa.start}, [dfa.start]
    while todo:
        for t in trans[todo.pop()]:
            if t >= 0 and t not in seen:
                seen.add(int(t))
                todo.append(int(t))
    assert len(seen) == S


# ---- token_bytes --------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["llada", "dream"])
def test_token_bytes_round_trip(which, llada_tok, dream_tok):
    tok, info = llada_tok if which == "llada" else dream_tok
    V = info["vocab_size"] + 7
    tb = token_bytes(tok, V)
    assert decoder_style(tok) == "byte_level" and len(tb) == V
    for s in ROUND_TRIP + CORPUS:
        ids = tok.encode(s, add_special_tokens=False)
        assert b"".join(tb[i] for i in ids) == s.encode("utf-8"), s
    assert all(tb[i] is None for i in tok.special_ids)
    assert all(b is None for b in tb[tok.vocab_size:])
    # per token, the same bytes as the tokenizer's own decoder (where they are valid UTF-8 alone)
    for i in range(tok.vocab_size):
        if tb[i] is not None:
            text = tok.decode([i], skip_special_tokens=False)
            if "\ufffd" not in text:
                assert tb[i] == text.encode("utf-8"), i
    # the round trips above did go through tokens that hold part of a character
    parts = [tb[i] for s in ROUND_TRIP for i in tok.encode(s, add_special_tokens=False)]
    assert any(not _is_utf8(p) for p in parts)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_token_bytes_added_tokens(dream_tok):
    tok, info = dream_tok
    tb = token_bytes(tok, info["vocab_size"])
    assert tb[tok.token_to_id("<tool_call>")] == b"<tool_call>"   # added, not special
    assert tb[info["mask"]] is None and tb[info["eos"]] is None
    # a non-special added token whose characters lie outside the byte table keeps its UTF-8
    t2 = _byte_level_tokenizer([b"a", b"b"], added=[" hi there", "東京"])
    tb2 = token_bytes(t2, t2.vocab_size)
    assert tb2[t2.token_to_id(" hi there")] == b" hi there" and tb2[t2.token_to_id("東京")] == "東京".encode()
    assert t2.decode([t2.token_to_id(" hi there"), t2.token_to_id("東京")]) == " hi there東京"


def _sentencepiece_tokenizer(decoder) -> Tokenizer:
    """A Llama-style tokenizer: Metaspace pre-tokenizer, BPE with <0xNN> byte fallback."""
    base = HFTokenizer(models.BPE(unk_token="<unk>"))
    base.pre_tokenizer = pre_tokenizers.Metaspace()
    base.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=220, special_tokens=["<unk>", "<s>", "</s>"],
                                                         show_progress=False))
    model = json.loads(base.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    vocab = dict(model["vocab"])
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    hf = HFTokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    hf.decoder = decoder
    hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in ["<unk>", "<s>", "</s>"]])
    return Tokenizer(hf, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, None)


@pytest.mark.parametrize("kind", ["llama_sequence", "metaspace"])
def test_token_bytes_sentencepiece(kind):
    llama = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                               decoders.Strip(" ", 1, 0)])
    tok = _sentencepiece_tokenizer(llama if kind == "llama_sequence" else decoders.Metaspace())
    V = tok.vocab_size
    tb = token_bytes(tok, V)
    assert decoder_style(tok) == "sentencepiece"
    if kind == "llama_sequence":
        assert tb[tok.token_to_id("<0xC3>")] == b"\xc3" and tb[tok.token_to_id("<0x41>")] == b"A"
    assert tb[tok.token_to_id("▁")] == b" "
    assert all(tb[i] is None for i in tok.special_ids)
    for s in ROUND_TRIP:
        ids = tok.encode(s, add_special_tokens=False)
        data = b"".join(tb[i] for i in ids)
        # the pre-tokenizer prepends "▁" (unless the text starts with a space) and the decoder drops
        # one leading space of the whole text: token bytes keep that space (documented)
        spelled = (s if s.startswith(" ") else " " + s).encode("utf-8")
        if kind == "llama_sequence" or not any(b"<0x" in (tok.id_to_token(i) or "").encode() for i in ids):
            assert data == spelled, s
        if kind == "llama_sequence":
            assert tok.decode(ids).encode("utf-8") == spelled[1:]


def test_token_bytes_of_a_large_vocabulary():
    # 20k tokens here (its speed: benchmarks/constraints.py times 126k; tests assert no timings)
    rng = random.Random(0)
    pieces = [bytes([b]) for b in range(256)]
    seen = set(pieces)
    while len(pieces) < 20_000:
        p = b" " * rng.randint(0, 1) + bytes(rng.choice(b"abcdefghijklmnop") for _ in range(rng.randint(2, 9)))
        if p not in seen:
            seen.add(p)
            pieces.append(p)
    tok = _byte_level_tokenizer(pieces)
    tb = token_bytes(tok, tok.vocab_size)
    assert tb[:len(pieces)] == pieces


# ---- brute force against re.fullmatch -----------------------------------------------------------

FIXED_PATTERNS = [
    r"a", r"ab|c", r"(ab)*", r"[a-c]+", r"[^x]", r"[^x]*", r"é", r"é*東?", r"東|é+", r"[^a東]{1,2}",
    r".", r".{2}", r"\u00e9+", r"x?[0-9]{1,3}", r" ?[ab]+ ?", r"[\s\S]*", r"(?:a|b c)+", r"🙂", r"[^a-z]+",
    r"(a|)(b|)", r"", r"a{0}", r"[é東]{2,}", r"(?i)AB", r"12|1 2", r"(?:\n|x)+", r"a(?=b)b",
    r"^a+$", r"^a|b$", r"a\$?",   # a leading ^ / trailing $ is redundant under fullmatch and dropped
    # spots where interegular alone reads a pattern differently from Python
    r"[]a]", r"[^]a]", r"a{", r"a{}", r"x{ 2}", r"a{,}", r"\0?a", r"[\u00e9-\u6771]", r"\N{LATIN SMALL LETTER E WITH ACUTE}",
    # wide class ranges (written as a few representatives, widened again at the byte level)
    r"[\u0080-\U0010ffff]+", r"[^\u0100-\uffff]{1,2}", r"[\u00e0-\u9fffa]{1,2}", r"[\u4e00-\u9fff]|é",
    r"[\x00-\U0010ffff]", r"[^\u00e8-\u00ea東]+", r"[\u6770-\u7000é]?[\u6000-\u6771]",
]


@pytest.mark.parametrize("pattern", FIXED_PATTERNS)
def test_dfa_matches_brute_force(pattern, tiny):
    _brute_force(pattern, tiny)


ALPHABET = ["a", "b", "c", "x", " ", "1", "2", "é", "東", "\n"]
ATOMS = [re.escape(c) for c in ALPHABET] + [r"[a-c]", r"[^x]", r"[^a東]", r"[0-9]", r".", r"[ab é]",
                                             r"[^ ]", r"\d", r"\w", r"\s", r"[é-東]"]


@st.composite
def regexes(draw, depth=0):
    kind = draw(st.sampled_from(["atom", "atom", "concat", "alt", "repeat"] if depth < 3 else ["atom"]))
    if kind == "atom":
        return draw(st.sampled_from(ATOMS))
    if kind == "concat":
        return "".join(draw(st.lists(regexes(depth + 1), min_size=2, max_size=3)))
    if kind == "alt":
        return "(" + "|".join(draw(st.lists(regexes(depth + 1), min_size=2, max_size=3))) + ")"
    inner = draw(regexes(depth + 1))
    lo = draw(st.integers(0, 2))
    hi = lo + draw(st.integers(0, 2))
    quant = draw(st.sampled_from(["?", "*", "+", f"{{{lo}}}", f"{{{lo},{hi}}}", f"{{{lo},}}"]))
    return "(?:" + inner + ")" + quant


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=regexes())
def test_random_regexes_match_brute_force(pattern, tiny):
    # \d \w \s are ASCII in constraints (documented), so the reference runs under re.ASCII
    _brute_force(pattern, tiny, flags=re.ASCII)


def test_real_tokenizer_sampled_sequences(llada_tok):
    tok, info = llada_tok
    V = info["vocab_size"]
    tb = token_bytes(tok, V)
    ids = [i for i in range(V) if tb[i] is not None]
    rng = random.Random(0)
    for pattern in [r'\{"name": "[a-zA-Z ]{1,20}", "age": [0-9]{1,3}\}', r'"[^"]*"', r"[a-z ]+", r"(東京|é)+.?"]:
        dfa = compile_regex(pattern, tok, V, cache_dir=False)
        _check_invariants(dfa, tok, V)
        # the text's own encoding must be accepted, and random sequences agree with re
        for s in ['{"name": "Bob Smith", "age": 42}', '"hello world"', "the dog", "東京é東京", '{"name": "", "age": 1}']:
            enc = tok.encode(s, add_special_tokens=False)
            assert dfa.matches(enc) == (re.fullmatch(pattern, s) is not None), (pattern, s)
        for _ in range(1500):
            seq = [rng.choice(ids) for _ in range(rng.randint(1, 4))]
            data = b"".join(tb[i] for i in seq)
            try:
                want = re.fullmatch(pattern, data.decode("utf-8")) is not None
            except UnicodeDecodeError:
                want = False
            assert dfa.matches(seq) == want, (pattern, seq, data)
        assert not dfa.matches([info["eos"]]) and dfa.step(dfa.start, info["mask"]) == -1
        assert dfa.step(dfa.start, V + 5) == -1 and dfa.step(-1, ids[0]) == -1


def test_wide_classes_are_not_enumerated(tiny):
    # interegular alone lists every code point of a class (~20 s for the first pattern): the
    # normalised pattern names one representative per piece of the cut code-point line instead
    from dllm.constraints.regex_parse import _normalise

    for pattern in [r"[\x00-\U0010ffff]*", r"[^\u0100-\U0010ffff]+x", r"[\u0100-\U0010fffe]{1,3}"]:
        text, segments = _normalise(pattern)
        assert segments and len(text) < 1000, (pattern, len(text))
        compile_regex(pattern, tiny[0], tiny[1], cache_dir=False)


def test_dist_is_the_fewest_tokens(tiny):
    tok, V = tiny[0], tiny[1]
    dfa = compile_regex(r"(ab){3}c", tok, V, cache_dir=False)
    # "ab" is one token, then "c": 4 tokens at least
    assert int(dfa.dist[dfa.start]) == 4
    s = dfa.walk([TINY_PIECES.index(b"a")])
    assert s >= 0 and int(dfa.dist[s]) == 4        # "b" + "ab" + "ab" + "c"
    assert dfa.walk([TINY_PIECES.index(b"ab")] * 3 + [TINY_PIECES.index(b"c")]) >= 0
    assert dfa.matches([TINY_PIECES.index(b"ab")] * 3 + [TINY_PIECES.index(b"c")])


def test_start_and_accept_are_consistent(tiny):
    tok, V, _, _, _ = tiny
    assert compile_regex(r"a*", tok, V, cache_dir=False).matches([])
    assert not compile_regex(r"a+", tok, V, cache_dir=False).matches([])
    only_empty = compile_regex(r"", tok, V, cache_dir=False)
    assert only_empty.n_states == 1 and only_empty.n_classes == 1 and bool(only_empty.accept[0])
    assert (only_empty.token_class == 0).all()


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["(unclosed", "[a-", "a{2,1}", "*a", "a**"])
def test_bad_syntax_raises(pattern, tiny):
    with pytest.raises(ConstraintError, match="invalid"):
        check_regex(pattern)
    with pytest.raises(ConstraintError):
        compile_regex(pattern, tiny[0], tiny[1], cache_dir=False)


@pytest.mark.parametrize("pattern", ["a^b", "a$b", "(^a)", r"\bfoo", r"(a)\1", r"\p{L}", "a{300000}", "(a{600}){600}", r"(?<=a)b", "(?m)a"])
def test_unsupported_features_raise(pattern, tiny):
    if pattern not in (r"(?<=a)b", "(?m)a"):       # these two are only found while building the FSM
        with pytest.raises(ConstraintError):
            check_regex(pattern)
    with pytest.raises(ConstraintError):
        compile_regex(pattern, tiny[0], tiny[1], cache_dir=False)


def test_empty_and_unproducible_languages_raise(tiny):
    tok, V = tiny[0], tiny[1]
    for pattern in [r"a[^\s\S]", r"(?=b)a"]:
        with pytest.raises(ConstraintError, match="matches no string"):
            compile_regex(pattern, tok, V, cache_dir=False)
    with pytest.raises(ConstraintError, match="no sequence of this vocabulary"):
        compile_regex(r"az", tok, V, cache_dir=False)       # no token holds a "z"
    err = ConstraintError("x")
    assert isinstance(err, InvalidParamsError) and isinstance(err, DllmError) and isinstance(err, ValueError)


def test_check_regex_is_torch_free():
    code = ("import sys; from dllm.constraints.regex import check_regex; check_regex(r'[a-z]+\\d{2}'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- caches -------------------------------------------------------------------------------------

def test_memory_cache_returns_the_same_tables(tiny):
    tok, V = tiny[0], tiny[1]
    a = compile_regex(r"[ab]+c", tok, V, cache_dir=False)
    b = compile_regex(r"[ab]+c", tok, V, cache_dir=False)
    assert a is b
    other = compile_regex(r"[ab]+c", tok, V + 2, cache_dir=False)   # another vocab size: its own DFA
    assert other is not a and other.token_class.shape == (V + 2,)
    assert (other.trans == a.trans).all()


def test_disk_cache_round_trip(tiny, tmp_path, monkeypatch):
    tok, V = tiny[0], tiny[1]
    pattern = r"(é|東)+[ab]?"
    first = compile_regex(pattern, tok, V, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as f:
        assert set(f.files) >= {"token_class", "trans", "accept", "dist", "start", "n_states"}

    cregex.clear_memory_cache()
    monkeypatch.setattr(cregex, "_token_dfa", lambda *a: pytest.fail("compiled again instead of loading"))
    second = compile_regex(pattern, tok, V, cache_dir=tmp_path)
    assert second is not first
    for name in ("token_class", "trans", "accept", "dist"):
        x, y = getattr(first, name), getattr(second, name)
        assert x.dtype == y.dtype and x.shape == y.shape and (x == y).all(), name
    assert (second.n_states, second.start) == (first.n_states, first.start)
    monkeypatch.undo()

    # a corrupt file is compiled again and replaced
    files[0].write_bytes(b"not an npz")
    cregex.clear_memory_cache()
    third = compile_regex(pattern, tok, V, cache_dir=tmp_path)
    assert (third.trans == first.trans).all()
    with np.load(files[0], allow_pickle=False) as f:
        assert f["trans"].shape == tuple(first.trans.shape)


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DLLM_CACHE", str(tmp_path / "c"))
    assert cregex.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DLLM_CACHE")
    assert cregex.default_cache_dir() == Path.home() / ".cache" / "dllm" / "constraints"
