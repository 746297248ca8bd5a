"""dllm.tokenizer against tiny tokenizers written in the LLaDA and Dream on-disk layouts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dllm.errors import TokenizerError
from dllm.tokenizer import Tokenizer

from tests.tokenizer_files import write_dream_tokenizer, write_llada_tokenizer

TEXTS = [
    "Hello world! The quick brown fox.",
    "def add(a, b):\n    return a + b\n",
    "é",
    "Café crème",
    "東京",
    "東京タワー in 東京",
    " a \t\n\n  b  \r\n   ",
    "mixed: 12345 é 東京 {\"k\": [1, 2]}\tend\n",
    "🙂 emoji outside the training corpus",
]


@pytest.fixture(scope="module")
def llada(tmp_path_factory):
    d = tmp_path_factory.mktemp("llada")
    info = write_llada_tokenizer(d)
    return d, info, Tokenizer.from_pretrained(d)


@pytest.fixture(scope="module")
def dream(tmp_path_factory):
    d = tmp_path_factory.mktemp("dream")
    info = write_dream_tokenizer(d)
    return d, info, Tokenizer.from_pretrained(d)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _edit_config(d: Path, **changes) -> None:
    path = d / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


# ---- loading --------------------------------------------------------------------------------


def test_llada_layout_loads(llada):
    d, info, tok = llada
    assert (d / "tokenizer.json").is_file()
    assert 300 <= info["vocab_size"] <= 500
    assert tok.vocab_size == info["vocab_size"]
    assert (tok.bos_token, tok.bos_token_id) == ("<|startoftext|>", info["bos"])
    # eos_token is written as {"content": ...} in tokenizer_config: it must resolve to the string.
    assert (tok.eos_token, tok.eos_token_id) == ("<|endoftext|>", info["eos"])
    assert tok.special_ids == frozenset(info["specials"].values())
    assert tok.chat_template


def test_dream_layout_loads(dream):
    d, info, tok = dream
    assert not (d / "tokenizer.json").exists() and (d / "vocab.json").is_file()
    assert 300 <= info["vocab_size"] <= 500
    assert tok.vocab_size == info["vocab_size"]
    assert tok.bos_token is None and tok.bos_token_id is None and info["bos"] is None
    assert (tok.eos_token, tok.eos_token_id) == ("<|endoftext|>", info["eos"])
    # <tool_call> is an added token flagged non-special: it must not count as special.
    assert tok.special_ids == frozenset(info["specials"].values())
    assert tok.token_to_id("<tool_call>") not in tok.special_ids


def test_dream_remote_code_never_executed(dream, tmp_path):
    d = _copy(dream[0], tmp_path)
    marker = tmp_path / "ran"
    # If anything imported this file it would leave a marker even if the RuntimeError were swallowed.
    body = (d / "tokenization_dream.py").read_text()
    assert "remote code must never run" in body
    (d / "tokenization_dream.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + body)
    tok = Tokenizer.from_pretrained(d)
    tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert not marker.exists()
    assert "tokenization_dream" not in sys.modules


def test_helpers_are_deterministic(tmp_path):
    for writer in (write_llada_tokenizer, write_dream_tokenizer):
        a, b = tmp_path / f"{writer.__name__}_a", tmp_path / f"{writer.__name__}_b"
        assert writer(a) == writer(b)
        for f in a.iterdir():
            assert f.read_bytes() == (b / f.name).read_bytes(), f.name


def test_no_tokenizer_files_gives_none(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 8)
    assert Tokenizer.from_pretrained(tmp_path) is None


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(TokenizerError):
        Tokenizer.from_pretrained(tmp_path / "absent")


def test_corrupt_tokenizer_json(llada, tmp_path):
    d = _copy(llada[0], tmp_path)
    text = (d / "tokenizer.json").read_text()
    (d / "tokenizer.json").write_text(text[: len(text) // 2])
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        Tokenizer.from_pretrained(d)


def test_corrupt_tokenizer_config(dream, tmp_path):
    d = _copy(dream[0], tmp_path)
    (d / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer_config.json"):
        Tokenizer.from_pretrained(d)


def test_vocab_without_merges_is_an_error(dream, tmp_path):
    d = _copy(dream[0], tmp_path)
    (d / "merges.txt").unlink()
    with pytest.raises(TokenizerError):
        Tokenizer.from_pretrained(d)


def test_config_without_vocabulary_is_an_error(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": "</s>"}')
    with pytest.raises(TokenizerError, match="neither tokenizer.json nor"):
        Tokenizer.from_pretrained(tmp_path)


def test_sentencepiece_only_is_an_error(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\x00")
    with pytest.raises(TokenizerError, match="SentencePiece"):
        Tokenizer.from_pretrained(tmp_path)


def test_added_token_id_clash_is_an_error(dream, tmp_path):
    d = _copy(dream[0], tmp_path)
    _edit_config(d, added_tokens_decoder={"5": {"content": "<|endoftext|>", "special": True}})
    with pytest.raises(TokenizerError, match="id 5"):
        Tokenizer.from_pretrained(d)


def test_module_does_not_import_torch():
    code = ("import sys, dllm.errors; before = 'torch' in sys.modules; import dllm.tokenizer; "
            "sys.exit(0 if before or 'torch' not in sys.modules else 1)")
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


# ---- encode / decode ------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("layout", ["llada", "dream"])
def test_round_trip(layout, text, request):
    _, info, tok = request.getfixturevalue(layout)
    ids = tok.encode(text, add_special_tokens=False)
    assert ids and all(0 <= i < tok.vocab_size and i not in tok.special_ids for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_llada_encode_adds_bos_and_decode_drops_it(llada):
    _, info, tok = llada
    ids = tok.encode("Hello world")
    assert ids[0] == info["bos"] and ids[1:] == tok.encode("Hello world", add_special_tokens=False)
    assert tok.decode(ids) == "Hello world"
    assert tok.decode(ids, skip_special_tokens=False) == "<|startoftext|>Hello world"


def test_dream_encode_adds_nothing(dream):
    _, _, tok = dream
    assert tok.encode("Hello world") == tok.encode("Hello world", add_special_tokens=False)


def test_dream_is_byte_level(dream):
    _, _, tok = dream
    # '東' alone is not a learned token: it must split into partial UTF-8 byte tokens, not <unk>.
    pieces = tok.encode("東", add_special_tokens=False)
    assert len(pieces) >= 2
    assert all("\ufffd" in tok.decode([p]) for p in pieces)
    assert tok.decode(pieces) == "東"
    assert "".join(tok.id_to_token(i) for i in pieces) == "".join(_byte_symbols("東".encode()))


def test_dream_normalizes_to_nfc(dream):
    _, _, tok = dream
    assert tok.encode("e\u0301", add_special_tokens=False) == tok.encode("é", add_special_tokens=False)


@pytest.mark.parametrize("layout", ["llada", "dream"])
def test_special_tokens_have_exact_ids(layout, request):
    _, info, tok = request.getfixturevalue(layout)
    for text, idx in info["specials"].items():
        assert tok.token_to_id(text) == idx
        assert tok.id_to_token(idx) == text
        assert tok.encode(text, add_special_tokens=False) == [idx]
        # Inside running text a special token is one id, and decode drops it unless asked not to.
        ids = tok.encode(f"Hi{text}there", add_special_tokens=False)
        assert ids.count(idx) == 1
        assert tok.decode(ids) == "Hithere"
        assert tok.decode(ids, skip_special_tokens=False) == f"Hi{text}there"
    assert tok.token_to_id("<|no such token|>") is None
    assert tok.id_to_token(tok.vocab_size) is None and tok.id_to_token(-1) is None


def test_special_ids_are_the_last_ones(llada, dream):
    _, info, tok = llada
    n = len(info["specials"])
    assert sorted(info["specials"].values()) == list(range(tok.vocab_size - n, tok.vocab_size))
    d, info, tok = dream
    learned = len(json.loads((d / "vocab.json").read_text(encoding="utf-8")))
    assert min(info["specials"].values()) == learned and max(info["specials"].values()) == tok.vocab_size - 1


def test_dream_non_special_added_token_survives_decode(dream):
    _, _, tok = dream
    idx = tok.token_to_id("<tool_call>")
    ids = tok.encode("a<tool_call>b", add_special_tokens=False)
    assert idx in ids
    assert tok.decode(ids) == "a<tool_call>b"


@pytest.mark.parametrize("layout", ["llada", "dream"])
def test_decode_skips_unknown_ids(layout, request):
    _, _, tok = request.getfixturevalue(layout)
    ids = tok.encode("Hello 東京", add_special_tokens=False)
    noisy = [-1] + ids[:1] + [tok.vocab_size, 10**12] + ids[1:]
    assert tok.decode(noisy) == "Hello 東京"


# ---- chat templates -------------------------------------------------------------------------

USER = [{"role": "user", "content": "  What is 2+2?\n"}]


def test_llada_chat_template(llada):
    _, _, tok = llada
    body = "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
    assert tok.apply_chat_template(USER, add_generation_prompt=False) == body
    assert tok.apply_chat_template(USER) == body + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    two = USER + [{"role": "assistant", "content": "4"}]
    assert tok.apply_chat_template(two, add_generation_prompt=False) == (
        body + "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>")


def test_dream_chat_template(dream):
    _, _, tok = dream
    body = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n  What is 2+2?\n<|im_end|>\n")
    assert tok.apply_chat_template(USER, add_generation_prompt=False) == body
    assert tok.apply_chat_template(USER) == body + "<|im_start|>assistant\n"
    own_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(own_system) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_llada_encode_chat_has_one_bos(llada):
    _, info, tok = llada
    text = tok.apply_chat_template(USER)
    ids = tok.encode_chat(USER)
    assert ids[0] == info["bos"] and ids.count(info["bos"]) == 1
    assert ids == tok.encode(text, add_special_tokens=False)
    # The check above means something: plain encode of the same text would add a second BOS.
    assert tok.encode(text)[:2] == [info["bos"], info["bos"]]


def test_dream_encode_chat(dream):
    _, info, tok = dream
    ids = tok.encode_chat(USER, add_generation_prompt=False)
    assert ids[0] == info["specials"]["<|im_start|>"]
    assert ids.count(info["eot"]) == 2
    assert tok.decode(ids, skip_special_tokens=False) == tok.apply_chat_template(USER, add_generation_prompt=False)


def test_template_raise_exception(dream, tmp_path):
    d = _copy(dream[0], tmp_path)
    _edit_config(d, chat_template=(
        "{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
        "{{ raise_exception('Conversation roles must be user or assistant') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"))
    tok = Tokenizer.from_pretrained(d)
    assert tok.apply_chat_template([{"role": "user", "content": "ok"}]) == "ok"
    with pytest.raises(TokenizerError, match="roles must be user or assistant"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])


def test_template_syntax_error_is_tokenizer_error(dream, tmp_path):
    d = _copy(dream[0], tmp_path)
    _edit_config(d, chat_template="{% for m in messages %}")
    tok = Tokenizer.from_pretrained(d)  # a broken template must not stop plain-text use
    assert tok.decode(tok.encode("fine")) == "fine"
    with pytest.raises(TokenizerError):
        tok.apply_chat_template(USER)


def test_no_chat_template(llada, tmp_path):
    d = _copy(llada[0], tmp_path)
    _edit_config(d, chat_template=None)
    tok = Tokenizer.from_pretrained(d)
    assert tok.chat_template is None
    with pytest.raises(TokenizerError):
        tok.apply_chat_template(USER)
    with pytest.raises(TokenizerError):
        tok.encode_chat(USER)


def test_template_list_and_jinja_file(llada, tmp_path):
    d = _copy(llada[0], tmp_path)
    _edit_config(d, chat_template=[{"name": "tool_use", "template": "TOOLS"},
                                   {"name": "default", "template": "DEFAULT {{ eos_token }}"}])
    assert Tokenizer.from_pretrained(d).apply_chat_template(USER) == "DEFAULT <|endoftext|>"
    _edit_config(d, chat_template=None)
    (d / "chat_template.jinja").write_text("{{ bos_token }}FILE{% if add_generation_prompt %}!{% endif %}")
    tok = Tokenizer.from_pretrained(d)
    assert tok.apply_chat_template(USER) == "<|startoftext|>FILE!"
    assert tok.apply_chat_template(USER, add_generation_prompt=False) == "<|startoftext|>FILE"


def test_template_tojson_is_plain_json_and_extra_tokens_visible(dream, tmp_path):
    d = _copy(dream[0], tmp_path)
    _edit_config(d, chat_template="{{ messages[0] | tojson }}|{{ mask_token }}|{{ pad_token }}")
    out = Tokenizer.from_pretrained(d).apply_chat_template([{"role": "user", "content": "<b>&é"}])
    assert out == '{"role": "user", "content": "<b>&é"}|<|mask|>|<|endoftext|>'


def test_template_sandbox_blocks_python_internals(dream, tmp_path):
    d = _copy(dream[0], tmp_path)
    _edit_config(d, chat_template="{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TokenizerError):
        Tokenizer.from_pretrained(d).apply_chat_template(USER)


def test_stop_token_ids(llada, dream):
    _, info, tok = llada
    assert tok.stop_token_ids() == {info["eos"], info["eot"]}
    _, info, tok = dream
    assert tok.stop_token_ids() == {info["eos"], info["eot"]}
    assert info["eos"] == tok.token_to_id("<|endoftext|>") and info["eot"] == tok.token_to_id("<|im_end|>")


# ---- an independent reference for the Dream layout -------------------------------------------
# A from-scratch Python version of the slow Qwen2/Dream algorithm (NFC, regex split, byte->unicode
# map, rank-ordered BPE merges). The stdlib `re` has no \p{L}/\p{N}; [^\W\d_] and \d stand in, which
# is exact for the letters and digits these tests generate.

_L, _N = r"[^\W\d_]", r"\d"
_REF_SPLIT = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    rf"|(?:(?!{_L}|{_N})[^\r\n])?{_L}+"
    rf"|{_N}"
    rf"| ?(?:(?!{_L}|{_N})\S)+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_symbols(data: bytes) -> list[str]:
    # GPT-2's printable stand-ins: printable Latin-1 bytes map to themselves, the other 68 bytes to
    # code points from 256 upward in byte order.
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in data]


def _reference_encode(directory: Path, text: str) -> list[int]:
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    lines = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()
    ranks = {tuple(line.split()): r for r, line in enumerate(l for l in lines if l and not l.startswith("#"))}
    ids = []
    for piece in _REF_SPLIT.findall(unicodedata.normalize("NFC", text)):
        word = _byte_symbols(piece.encode("utf-8"))
        while len(word) > 1:
            best = min(range(len(word) - 1), key=lambda k: ranks.get((word[k], word[k + 1]), float("inf")))
            pair = (word[best], word[best + 1])
            if pair not in ranks:
                break
            merged, k = [], 0
            while k < len(word):
                if k < len(word) - 1 and (word[k], word[k + 1]) == pair:
                    merged.append(word[k] + word[k + 1])
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = merged
        ids.extend(vocab[w] for w in word)
    return ids


@pytest.mark.parametrize("text", TEXTS + ["I'M here, you'll see; it's 3'd", "x  \n\n\n  y", "a_b__c"])
def test_dream_matches_reference_bpe(dream, text):
    d, _, tok = dream
    assert tok.encode(text, add_special_tokens=False) == _reference_encode(d, text)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(list("abcxyzTHE019 \t\n\r.,'!(){}_-+éè東京タ🙂") + ["e\u0301"]),
                max_size=40).map("".join))
def test_dream_matches_reference_bpe_random(dream, text):
    d, _, tok = dream
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == _reference_encode(d, text)
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)


# ---- optional cross-check against transformers (not a dependency; skipped when absent) ---------


def test_matches_transformers(llada, dream):
    transformers = pytest.importorskip("transformers")
    texts = TEXTS + ["<|im_start|>user\nHi<|im_end|>\n<tool_call>x", "I'm  don't 12345", "e\u0301"]
    d, _, ours = dream
    # Qwen2Tokenizer (slow, pure Python in transformers 4; tokenizers-backed in 5) and the v4 fast class.
    classes = [getattr(transformers, n) for n in ("Qwen2Tokenizer", "Qwen2TokenizerFast") if hasattr(transformers, n)]
    assert classes
    for cls in classes:
        theirs = cls.from_pretrained(str(d))
        for text in texts:
            ids = theirs.encode(text, add_special_tokens=False)
            assert ours.encode(text, add_special_tokens=False) == ids, (cls.__name__, text)
            assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), (cls.__name__, text)
        for gen in (True, False):
            assert ours.apply_chat_template(USER, gen) == theirs.apply_chat_template(
                USER, tokenize=False, add_generation_prompt=gen)

    d, _, ours = llada
    theirs = transformers.PreTrainedTokenizerFast.from_pretrained(str(d))
    for text in texts:
        assert ours.encode(text) == theirs.encode(text), text
    for gen in (True, False):
        assert ours.apply_chat_template(USER, gen) == theirs.apply_chat_template(
            USER, tokenize=False, add_generation_prompt=gen)
