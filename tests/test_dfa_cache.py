"""The compiled-DFA disk cache is not trusted by file name (issue 19): swapped, truncated, inflated,
out-of-range and foreign entries are detected and rebuilt, a planted symlink is neither read nor
written through, and the constrained answer stays in the language."""
from __future__ import annotations

import io
import os
import re
import zipfile

import numpy as np
import pytest

from dllm.constraints import dfa_cache
from dllm.constraints import regex as cregex
from tests.checkpoints import write_llada

A, B = r"[0-9]{3}", r"(the|a) [a-z]{2,4}"


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    from dllm import LLM

    path = tmp_path_factory.mktemp("cache_model")
    write_llada(path, dim=32, n_layers=1, n_heads=2, hidden=48)
    return LLM(str(path))


def compile_fresh(llm, pattern, cache):
    cregex.clear_memory_cache(vocabularies=False)
    return cregex.compile_regex(pattern, llm.tokenizer, llm.args.vocab_size, cache_dir=cache)


def entry(llm, pattern, cache):
    vocab = cregex._vocab(llm.tokenizer, llm.args.vocab_size)
    key = dfa_cache.full_key(pattern, vocab.fingerprint, vocab.vocab_size)
    return dfa_cache.disk_path(cache, key), key


def in_language(llm, pattern, dfa) -> bool:
    """The DFA accepts exactly the texts of a few probes as re.fullmatch does."""
    probes = ["123", "12", "1234", "the cat", "a dog", "the dogs!", "job", "abc"]
    return all(dfa.matches(llm.tokenizer.encode(p, add_special_tokens=False)) == bool(re.fullmatch(pattern, p))
               for p in probes)


def npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def test_swapped_entries_are_rebuilt(llm, tmp_path):
    compile_fresh(llm, A, tmp_path), compile_fresh(llm, B, tmp_path)
    (pa, _), (pb, _) = entry(llm, A, tmp_path), entry(llm, B, tmp_path)
    a, b = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(b)
    pb.write_bytes(a)
    for pattern, path in ((A, pa), (B, pb)):
        dfa = compile_fresh(llm, pattern, tmp_path)
        assert in_language(llm, pattern, dfa), pattern
        assert dfa_cache.load(path, entry(llm, pattern, tmp_path)[1], llm.args.vocab_size, 10 ** 6, 10 ** 9)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "foreign npz", "out of range", "bad dist",
                                    "accept-all without key", "extra member", "object array"])
def test_damaged_entries_are_rebuilt(llm, tmp_path, damage):
    compile_fresh(llm, A, tmp_path)
    path, key = entry(llm, A, tmp_path)
    data = path.read_bytes()
    with np.load(path) as f:
        good = {k: f[k] for k in f.files}
    if damage == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign npz":
        path.write_bytes(npz({"x": np.zeros(3)}))
    elif damage == "out of range":
        path.write_bytes(npz({**good, "trans": np.full_like(good["trans"], 10 ** 6)}))
    elif damage == "bad dist":
        path.write_bytes(npz({**good, "dist": good["dist"] + 1}))
    elif damage == "accept-all without key":
        n = int(good["n_states"])
        allow = {k: v for k, v in good.items() if k != "key"}
        allow.update(accept=np.ones(n, bool), dist=np.zeros(n, np.int64))
        path.write_bytes(npz(allow))
    elif damage == "extra member":
        path.write_bytes(npz({**good, "extra": np.zeros(2)}))
    elif damage == "object array":
        raw = io.BytesIO()
        with zipfile.ZipFile(raw, "w") as z:
            for k, v in good.items():
                z.writestr(k + ".npy", _npy(v) if k != "dist" else _npy(np.array([None] * len(v), dtype=object)))
        path.write_bytes(raw.getvalue())
    assert dfa_cache.load(path, key, llm.args.vocab_size, 10 ** 6, 10 ** 9) is None
    dfa = compile_fresh(llm, A, tmp_path)
    assert in_language(llm, A, dfa)
    assert dfa_cache.load(path, key, llm.args.vocab_size, 10 ** 6, 10 ** 9) is not None    # rewritten whole


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def test_inflated_entry_is_refused_before_decompressing(llm, tmp_path, monkeypatch):
    """A small file whose trans table (consistent with the zip directory) inflates to 200x its size:
    refused from its .npy header, before anything is decompressed."""
    compile_fresh(llm, A, tmp_path)
    path, key = entry(llm, A, tmp_path)
    with np.load(path) as f:
        good = {k: f[k] for k in f.files}
    n, V = 20_000, llm.args.vocab_size
    trans = np.zeros((n, V + 1), np.int32)
    path.write_bytes(npz({**good, "n_states": np.int64(n), "trans": trans}))
    assert path.stat().st_size * 200 < trans.nbytes
    read = []
    array = dfa_cache._array
    monkeypatch.setattr(dfa_cache, "_array", lambda zf, name, *a: read.append(name) or array(zf, name, *a))
    assert dfa_cache.load(path, key, V, 250_000, 1_000_000) is None       # 8M cells declared, 1M allowed
    assert "trans" not in read                                             # refused from its header
    monkeypatch.undo()
    assert in_language(llm, A, compile_fresh(llm, A, tmp_path))


def test_planted_symlink_is_not_followed(llm, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    path, _ = entry(llm, A, cache)
    path.symlink_to(victim)
    dfa = compile_fresh(llm, A, cache)
    assert in_language(llm, A, dfa)
    assert victim.read_text() == "do not touch"
    assert path.is_file() and not path.is_symlink()
    assert not list(cache.glob("*.tmp"))                       # the temporary file was renamed into place


def test_constrained_answer_stays_in_the_language(llm, tmp_path, monkeypatch):
    from dllm import SamplingParams

    monkeypatch.setenv("DLLM_CACHE", str(tmp_path))
    compile_fresh(llm, A, None), compile_fresh(llm, B, None)
    (pa, _), (pb, _) = entry(llm, A, None), entry(llm, B, None)
    a = pa.read_bytes()
    pa.write_bytes(pb.read_bytes())                            # A's file now holds B's table
    pb.write_bytes(a)
    cregex.clear_memory_cache(vocabularies=False)
    out = llm.generate("Give a number.", SamplingParams(max_new_tokens=8, regex=A))[0]
    assert re.fullmatch(A, out.text), out.text
