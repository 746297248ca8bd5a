"""Tokenizer and chat template read from a local model directory or a GGUF file.

Built on the `tokenizers` library and jinja2 only: transformers is not a dependency, and a
checkpoint's own tokenizer code (`auto_map`, e.g. Dream's tokenization_dream.py) is never imported,
because running code shipped inside a downloaded checkpoint would be arbitrary code execution.

Three sources load:
  * tokenizer.json (LLaDA and most fast tokenizers): the file fully describes the pipeline.
  * vocab.json + merges.txt (Dream, which ships only a slow Qwen2-style tokenizer): we rebuild what
    Qwen2's fast tokenizer would be: NFC, the Qwen2 split regex, byte-level BPE, byte-level decoding.
  * a GGUF file (Tokenizer.from_gguf): the vocabulary, merges, token types, special ids and chat
    template stored as tokenizer.* metadata, rebuilt as the byte-level BPE llama.cpp runs.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as _HFTokenizer

from dllm.errors import TokenizerError
from dllm.limits import TEXT_BYTES, read_file

TOKENIZER_BYTES = 4 * TEXT_BYTES    # tokenizer.json of 250k-token vocabularies is ~30 MB

# Any of these in a directory means "a tokenizer was meant to be here": missing pieces are then an
# error, while a directory with none of them is a checkpoint without a tokenizer (returns None).
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                    "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "chat_template.jinja")

# Qwen2's pre-tokenization pattern (also Dream's PRETOKENIZE_REGEX); needs \p classes, which
# the tokenizers Regex (oniguruma) supports.
_QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama-3's pre-tokenization pattern (GGUF `tokenizer.ggml.pre` "llama-bpe" and kin): digits in runs of <= 3.
_LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                   r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GGUF_SPLITS = {
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_PATTERN),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "falcon3", "dbrx"), _LLAMA3_PATTERN),
}
# GGUF token types (llama.cpp's llama_token_type): 3 = control (special), 4 = user-defined (added, not special)
_GGUF_CONTROL, _GGUF_USER_DEFINED = 3, 4

_END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<|endoftext|>")
# The token attributes HF treats as special even when the vocab does not flag them so.
_SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "sep_token", "cls_token")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(read_file(path, path.name, TOKENIZER_BYTES, error=TokenizerError))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise TokenizerError(f"{path} is not readable JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} must hold a JSON object.")
    return data


def _regular(path: Path) -> None:
    """A tokenizer file the Rust side reads itself: a regular file under TOKENIZER_BYTES."""
    import os
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        raise TokenizerError(f"cannot read {path} ({exc.strerror}).") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > TOKENIZER_BYTES:
        raise TokenizerError(f"{path} is not a regular file of at most {TOKENIZER_BYTES >> 20} MiB.")


def _token_text(value, where: str) -> str | None:
    """tokenizer_config writes a token either as a plain string or as {"content": ..., ...}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(f"{where} is neither a string nor an object with a 'content' string.")


def _build_qwen2_bpe(directory: Path, config: dict) -> _HFTokenizer:
    """Rebuild Qwen2's fast tokenizer from vocab.json + merges.txt + added_tokens_decoder."""
    for name in ("vocab.json", "merges.txt"):   # regular files under the cap before the Rust side reads them
        _regular(directory / name)
    try:
        vocab, merges = models.BPE.read_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    except Exception as exc:  # the Rust side raises a bare Exception for bad files
        raise TokenizerError(f"vocab.json/merges.txt in {directory} could not be read ({exc}).") from None

    added: dict[int, AddedToken] = {}
    extra = directory / "added_tokens.json"  # older slow-tokenizer layout: {token: id}, not special
    if extra.is_file():
        for content, idx in _read_json(extra).items():
            if not isinstance(idx, int):
                raise TokenizerError(f"{extra} maps {content!r} to {idx!r}, which is not a token id.")
            added[idx] = AddedToken(content, special=False, normalized=False)
    for key, spec in (config.get("added_tokens_decoder") or {}).items():
        content = _token_text(spec, f"added_tokens_decoder[{key}]")
        if not key.isdigit() or content is None:
            raise TokenizerError(f"tokenizer_config.json has a malformed added_tokens_decoder entry {key!r}.")
        flags = spec if isinstance(spec, dict) else {}
        added[int(key)] = AddedToken(
            content, special=bool(flags.get("special", True)), normalized=bool(flags.get("normalized", False)),
            lstrip=bool(flags.get("lstrip", False)), rstrip=bool(flags.get("rstrip", False)),
            single_word=bool(flags.get("single_word", False)))

    # Placing each added token in the BPE vocab at its published id makes the AddedVocabulary reuse
    # that id; merely appending would renumber them whenever the ids are not contiguous.
    by_id = {i: t for t, i in vocab.items()}
    for idx, token in added.items():
        if by_id.get(idx, token.content) != token.content:
            raise TokenizerError(f"added token {token.content!r} claims id {idx}, which vocab.json gives "
                                 f"to {by_id[idx]!r}.")
        vocab[token.content] = idx

    tok = _HFTokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN2_PATTERN), behavior="isolated"),
        # use_regex=False: the split above already did GPT-2's job; this only maps bytes to chars.
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    # No post-processor: Dream's slow tokenizer adds no BOS/EOS around encoded text.
    for idx in sorted(added):
        # add_tokens ignores the special flag in older tokenizers releases, so route by kind.
        (tok.add_special_tokens if added[idx].special else tok.add_tokens)([added[idx]])
    return tok


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table: byte b is spelled chr(b) when printable (33..126,
    161..172, 174..255), otherwise chr(256 + n) for the n-th unprintable byte in order."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    out, n = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + n))
            n += 1
    return out


def _build_gguf_bpe(meta: dict, where: str) -> tuple[_HFTokenizer, dict[str, str]]:
    """A byte-level BPE tokenizer ("gpt2" in GGUF) from a GGUF file's tokenizer.* metadata.

    Vocabulary = tokenizer.ggml.tokens (id = index; a token not spelled in the byte alphabet is
    respelled byte by byte), merges = tokenizer.ggml.merges ("a b" per merge), control tokens
    (type 3) added as special, user-defined ones (type 4) as plain added tokens; the split regex
    chosen by tokenizer.ggml.pre as llama.cpp does (GPT-2's by default); BOS/EOS added around the
    text only when tokenizer.ggml.add_bos_token / add_eos_token say so.
    """
    from tokenizers import processors

    tokens, merges = meta.get("ggml.tokens"), meta.get("ggml.merges")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise TokenizerError(f"{where} has no usable tokenizer.ggml.tokens list.")
    if not isinstance(merges, list) or not all(isinstance(m, str) and m.count(" ") == 1 for m in merges):
        raise TokenizerError(f"{where} has no usable tokenizer.ggml.merges list (byte-level BPE needs one).")
    chars = _byte_chars()
    alphabet = set(chars)
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab[t if set(t) <= alphabet else "".join(chars[b] for b in t.encode("utf-8"))] = i
    tok = _HFTokenizer(models.BPE(vocab, [tuple(m.split(" ")) for m in merges], fuse_unk=False, byte_fallback=False))
    split = _GGUF_SPLITS.get(meta.get("ggml.pre"))
    if split is not None:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    elif meta.get("ggml.pre") == "smollm":
        # llama.cpp's smollm split: every digit alone, then GPT-2's regex (SmolLM's own tokenizer.json)
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()

    types = meta.get("ggml.token_type") or []
    control = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types)
               if k == _GGUF_CONTROL and set(t) <= alphabet]   # other spellings are llama.cpp mislabels
    if control:
        tok.add_special_tokens(control)
    user = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types)
            if k == _GGUF_USER_DEFINED and t in vocab]
    if user:
        tok.add_tokens(user)

    named = {}
    for attr, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        idx = meta.get(f"ggml.{key}")
        if isinstance(idx, int) and 0 <= idx < len(tokens):
            named[attr] = tokens[idx]
    pre, post = [], []
    if meta.get("ggml.add_bos_token") and "bos_token" in named:
        pre = [named["bos_token"]]
    if meta.get("ggml.add_eos_token") and "eos_token" in named:
        post = [named["eos_token"]]
    if pre or post:
        tok.post_processor = processors.TemplateProcessing(
            single=" ".join(pre + ["$A"] + post), pair=" ".join(pre + ["$A"] + post + pre + ["$B"] + post),
            special_tokens=[(t, vocab.get(t, tokens.index(t))) for t in dict.fromkeys(pre + post)])
    return tok, named


class Tokenizer:
    """Text <-> token ids for one model directory, plus its chat template."""

    def __init__(self, tok: _HFTokenizer, template_tokens: dict[str, str], chat_template: str | None):
        self._tok = tok
        self._template_tokens = template_tokens  # every *_token string, offered to the chat template
        self.chat_template = chat_template
        self._compiled = None

        # HF marks the named special tokens (eos, pad, ...) special even when the vocab did not.
        flagged = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
        for attr in _SPECIAL_ATTRS:
            text = template_tokens.get(attr)
            idx = tok.token_to_id(text) if text else None
            if idx is not None and idx not in flagged:
                tok.add_special_tokens([AddedToken(text, special=True, normalized=False)])
        self.special_ids = frozenset(i for i, t in tok.get_added_tokens_decoder().items() if t.special)

        self.vocab_size = max(tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        self.bos_token = template_tokens.get("bos_token")
        self.eos_token = template_tokens.get("eos_token")
        self.bos_token_id = self.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_token_id = self.token_to_id(self.eos_token) if self.eos_token else None

    @classmethod
    def from_pretrained(cls, path) -> "Tokenizer | None":
        directory = Path(path)
        if not directory.is_dir():
            raise TokenizerError(f"{directory} is not a directory.")
        if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
            return None

        config_path = directory / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.is_file() else {}
        if (directory / "tokenizer.json").is_file():
            try:
                tok = _HFTokenizer.from_str(read_file(directory / "tokenizer.json", "tokenizer.json",
                                                      TOKENIZER_BYTES, error=TokenizerError))
            except TokenizerError:
                raise
            except Exception as exc:  # corrupt JSON or an unknown component; the message says which
                raise TokenizerError(f"{directory / 'tokenizer.json'} could not be loaded ({exc}).") from None
        elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            # tokenizer_class/auto_map are deliberately ignored: see the module docstring.
            tok = _build_qwen2_bpe(directory, config)
        elif (directory / "tokenizer.model").is_file():
            raise TokenizerError(f"{directory} holds only a SentencePiece tokenizer.model, which is not "
                                 "supported; a tokenizer.json is needed.")
        else:
            raise TokenizerError(f"{directory} has tokenizer files but neither tokenizer.json nor "
                                 "vocab.json with merges.txt.")

        # special_tokens_map.json wins over tokenizer_config.json, as in Hugging Face's loader.
        named = dict(config)
        map_path = directory / "special_tokens_map.json"
        if map_path.is_file():
            named.update(_read_json(map_path))
        template_tokens = {}
        for key, value in named.items():
            if key.endswith("_token") and isinstance(value, (str, dict)):
                text = _token_text(value, f"{key} in the tokenizer config")
                if text is not None:
                    template_tokens[key] = text

        template = config.get("chat_template")
        if isinstance(template, list):  # a list of named templates: the "default" one is the chat one
            template = next((t.get("template") for t in template
                             if isinstance(t, dict) and t.get("name") == "default"), None)
        if template is None and (directory / "chat_template.jinja").is_file():
            template = read_file(directory / "chat_template.jinja", "chat_template.jinja", error=TokenizerError)
        if template is not None and not isinstance(template, str):
            raise TokenizerError(f"the chat_template in {config_path} is not a string.")
        return cls(tok, template_tokens, template)

    @classmethod
    def from_gguf(cls, path) -> "Tokenizer | None":
        """The tokenizer and chat template stored in a GGUF file's metadata (None when it has none).

        Only byte-level BPE vocabularies (tokenizer.ggml.model "gpt2": SmolLM, Llama 3, Qwen2) are
        rebuilt; SentencePiece ones ("llama") are refused.
        """
        from dllm.errors import ModelLoadError
        from dllm.models.gguf import tokenizer_metadata

        path = Path(path)
        try:
            meta = tokenizer_metadata(path)
        except ModelLoadError as exc:
            raise TokenizerError(str(exc)) from None
        kind = meta.get("ggml.model")
        if kind is None:
            return None
        if kind != "gpt2":
            raise TokenizerError(f"{path.name} holds a {kind!r} tokenizer; dllm rebuilds only byte-level BPE "
                                 "('gpt2') tokenizers from GGUF files.")
        tok, named = _build_gguf_bpe(meta, path.name)
        template = meta.get("chat_template")
        if template is not None and not isinstance(template, str):
            raise TokenizerError(f"the tokenizer.chat_template in {path.name} is not a string.")
        return cls(tok, named, template)

    # ---- text <-> ids -------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects a str, got {type(text).__name__}.")
        if not text.isascii():
            _refuse_surrogates(text)
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        # int() accepts numpy/torch scalars. Out-of-range ids are dropped here because the Rust side
        # takes u32 and would raise on negatives; ids inside the range but unassigned it skips itself.
        kept = [i for i in (int(x) for x in ids) if 0 <= i < self.vocab_size]
        return self._tok.decode(kept, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, id: int) -> str | None:
        return self._tok.id_to_token(id) if 0 <= id < self.vocab_size else None

    def stop_token_ids(self) -> set[int]:
        stops = {self.eos_token_id} if self.eos_token_id is not None else set()
        stops.update(i for i in map(self.token_to_id, _END_OF_TURN) if i is not None)
        return stops

    # ---- chat template ------------------------------------------------------------------------

    def _template(self):
        if self.chat_template is None:
            raise TokenizerError("this tokenizer has no chat template; pass a plain prompt or token ids.")
        if self._compiled is None:
            # Imported lazily: jinja2 is only needed by callers that use chat templates.
            from jinja2 import TemplateError

            from dllm.template_sandbox import BoundedSandbox

            # Same environment settings as Hugging Face, so templates render byte-identically. The
            # sandbox matters: a template is data from the checkpoint and must not reach Python, nor
            # exhaust memory or time (dllm/template_sandbox.py).
            env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
            env.filters["tojson"] = _tojson
            env.globals["raise_exception"] = _raise_from_template
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            try:
                self._compiled = env.from_string(self.chat_template)
            except (TemplateError, RecursionError, MemoryError) as exc:
                raise TokenizerError(f"the chat template does not compile ({exc}).") from None
        return self._compiled

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        from jinja2 import TemplateError

        from dllm.template_sandbox import render

        template = self._template()
        text = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
        try:
            return render(template.environment, template, dict(messages=messages,
                          add_generation_prompt=add_generation_prompt, **self._template_tokens), 8 * text)
        except (TemplateError, TypeError, ValueError, LookupError, AttributeError) as exc:
            raise TokenizerError(f"the chat template failed to render these messages ({exc}).") from None

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        # The rendered text already carries the BOS the template wants; adding special tokens again
        # would prepend a second one for tokenizers whose post-processor inserts BOS.
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), add_special_tokens=False)


def _refuse_surrogates(text: str) -> None:
    """Text with a lone surrogate (what Python makes of invalid UTF-8 in argv or a file read with
    errors="surrogateescape") is refused, not replaced: it is not Unicode text, and silently replacing
    it would decode a prompt the user did not write."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        from dllm.errors import PromptError

        raise PromptError(f"the text holds {text[e.start]!a} at character {e.start}, a lone surrogate (invalid "
                          "UTF-8 in the input); pass valid UTF-8 text.") from None


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Replaces Jinja's built-in tojson, which HTML-escapes; chat templates expect plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_from_template(message):
    raise TokenizerError(f"the chat template refused these messages: {message}")
