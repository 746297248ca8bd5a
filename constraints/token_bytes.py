"""The bytes each token id contributes to the decoded text.

A constraint is a language over *text*, a model emits *token ids*: to connect the two we need, for
every id, the exact byte string the tokenizer's decoder turns it into. Decoding is per token for
the decoders real checkpoints use, so this is a fixed table:

  * byte-level BPE (GPT-2, LLaDA, Qwen2/Dream, SmolLM2; decoder `ByteLevel`): every character of a
    token stands for one byte through GPT-2's `bytes_to_unicode` table (`Ġ` = space). A token with
    a character outside that table decodes to its own UTF-8, as the `tokenizers` decoder does.
    Tokens that hold part of a multi-byte character give their raw bytes (not valid UTF-8 alone).
  * SentencePiece style (decoder `Metaspace`, or a `Sequence` of `Replace("▁", " ")`,
    `ByteFallback`, `Fuse`, `Strip`): `▁` is a space and `<0xAB>` byte-fallback tokens are the
    byte 0xAB. Not modelled: the decoder drops ONE leading space of the whole decoded text (the
    `prepend_scheme` of `Metaspace`, Llama's `Strip(" ", 1, 0)`); a constraint sees that space.
  * anything else: each id decoded on its own with the tokenizer (an approximation for decoders
    whose output depends on neighbours, e.g. WordPiece's `##`).

The decoder is applied to added tokens too (that is what `tokenizers` does), so a non-special
added token contributes its content's UTF-8 unless the decoder maps it (e.g. a byte-level added
token made only of table characters). Special tokens, and ids the tokenizer does not have (a
model vocabulary may be larger than the tokenizer's), give None.
"""
from __future__ import annotations

import json
import re

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_UNMAPPED = "\uffff"  # stands for "a character outside the byte table": it makes latin-1 encoding fail


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table: printable Latin-1 bytes map to
    themselves, the other 68 bytes to U+0100 onwards, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# str.translate table: table character -> the Latin-1 character of its byte; the characters below 256
# that are NOT in the table (space, control characters, ...) -> _UNMAPPED, so that encode("latin-1")
# succeeds exactly for tokens made only of table characters.
_BYTE_CHARS = {ord(ch): chr(b) for b, ch in bytes_to_unicode().items()}
_TO_LATIN1 = {**{c: _UNMAPPED for c in range(256)}, **_BYTE_CHARS}


def _byte_level(token: str) -> bytes:
    try:
        return token.translate(_TO_LATIN1).encode("latin-1")
    except UnicodeEncodeError:  # a character outside the table: the decoder keeps the token's UTF-8
        return token.encode("utf-8")


def _state(component) -> dict | None:
    """The JSON config of a decoder / pre-tokenizer object (None when unset)."""
    if component is None:
        return None
    return json.loads(component.__getstate__())


def _types(config) -> list[dict]:
    """Flatten a (possibly nested) Sequence config into its steps, in order."""
    if not config:
        return []
    if config.get("type") == "Sequence":
        inner = config.get("decoders") or config.get("pretokenizers") or []
        return [step for c in inner for step in _types(c)]
    return [config]


def _spm_converter(steps: list[dict]):
    """Per-token converter for the SentencePiece family, or None if a step is not understood."""
    replaces: list[tuple[str, str]] = []
    byte_fallback = False
    fused = False  # a Strip after Fuse acts on the whole text (context-dependent: not modelled)
    strips: list[tuple[str, int, int]] = []
    for step in steps:
        kind = step.get("type")
        if kind == "Metaspace":
            replaces.append((step.get("replacement", "▁"), " "))
        elif kind == "Replace" and "String" in (step.get("pattern") or {}):
            replaces.append((step["pattern"]["String"], step.get("content", "")))
        elif kind == "ByteFallback":
            byte_fallback = True
        elif kind == "Fuse":
            fused = True
        elif kind == "Strip":
            if not fused:
                strips.append((step.get("content", " "), int(step.get("start", 0)), int(step.get("stop", 0))))
        else:
            return None

    def convert(token: str) -> bytes:
        if byte_fallback:
            m = _BYTE_FALLBACK.fullmatch(token)
            if m:
                return bytes([int(m.group(1), 16)])
        for old, new in replaces:
            token = token.replace(old, new)
        for content, start, stop in strips:  # tokenizers' Strip: up to `start`/`stop` copies of content
            for _ in range(start):
                if not token.startswith(content):
                    break
                token = token[len(content):]
            for _ in range(stop):
                if not token.endswith(content):
                    break
                token = token[:len(token) - len(content)]
        return token.encode("utf-8")

    return convert


def _hf(tokenizer):
    """The underlying `tokenizers.Tokenizer` of a dllm Tokenizer (or a raw one)."""
    return getattr(tokenizer, "_tok", tokenizer)


def decoder_style(tokenizer) -> str:
    """'byte_level', 'sentencepiece' or 'generic': how token_bytes reads this tokenizer."""
    hf = _hf(tokenizer)
    steps = _types(_state(hf.decoder))
    if not steps:  # no decoder: fall back to the pre-tokenizer, which fixes the token alphabet
        steps = [s for s in _types(_state(hf.pre_tokenizer)) if s.get("type") in ("ByteLevel", "Metaspace")]
    if any(s.get("type") == "ByteLevel" for s in steps):
        return "byte_level"
    if steps and _spm_converter(steps) is not None:
        return "sentencepiece"
    return "generic"


def token_bytes(tokenizer, vocab_size: int) -> list[bytes | None]:
    """For each id in range(vocab_size): the bytes it adds to the decoded text, or None when it is a
    special token or an id this tokenizer does not have. See the module docstring for exactness."""
    hf = _hf(tokenizer)
    added = hf.get_added_tokens_decoder()  # {id: AddedToken}; added content wins over the model vocab
    special = getattr(tokenizer, "special_ids", None)
    if special is None:
        special = {i for i, t in added.items() if t.special}

    # id -> token string; get_vocab is one Rust call, much faster than id_to_token per id
    strings: list[str | None] = [None] * vocab_size
    for text, idx in hf.get_vocab(with_added_tokens=True).items():
        if 0 <= idx < vocab_size:
            strings[idx] = text
    for idx, tok in added.items():
        if 0 <= idx < vocab_size:
            strings[idx] = tok.content
    for idx in special:
        if 0 <= idx < vocab_size:
            strings[idx] = None

    style = decoder_style(tokenizer)
    if style == "byte_level":
        convert = _byte_level
    elif style == "sentencepiece":
        steps = _types(_state(hf.decoder)) or _types(_state(hf.pre_tokenizer))
        convert = _spm_converter(steps)
    else:
        ids = [i for i, s in enumerate(strings) if s is not None]
        texts = hf.decode_batch([[i] for i in ids], skip_special_tokens=False)
        out: list[bytes | None] = [None] * vocab_size
        for i, text in zip(ids, texts):
            out[i] = text.encode("utf-8")
        return out
    return [None if s is None else convert(s) for s in strings]
