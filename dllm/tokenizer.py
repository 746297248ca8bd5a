"""Tokenizer and chat template read from a local model directory.

Built on the `tokenizers` library and jinja2 only: transformers is not a dependency, and a
checkpoint's own tokenizer code (`auto_map`, e.g. Dream's tokenization_dream.py) is never imported,
because running code shipped inside a downloaded checkpoint would be arbitrary code execution.

Two layouts load:
  * tokenizer.json (LLaDA and most fast tokenizers): the file fully describes the pipeline.
  * vocab.json + merges.txt (Dream, which ships only a slow Qwen2-style tokenizer): we rebuild what
    Qwen2's fast tokenizer would be: NFC, the Qwen2 split regex, byte-level BPE, byte-level decoding.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as _HFTokenizer

from dllm.errors import TokenizerError

# Any of these in a directory means "a tokenizer was meant to be here": missing pieces are then an
# error, while a directory with none of them is a checkpoint without a tokenizer (returns None).
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                    "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "chat_template.jinja")

# Qwen2's pre-tokenization pattern (also Dream's PRETOKENIZE_REGEX); needs \p classes, which
# the tokenizers Regex (oniguruma) supports.
_QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<|endoftext|>")
# The token attributes HF treats as special even when the vocab does not flag them so.
_SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "sep_token", "cls_token")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{path} is not readable JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} must hold a JSON object.")
    return data


def _token_text(value, where: str) -> str | None:
    """tokenizer_config writes a token either as a plain string or as {"content": ..., ...}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(f"{where} is neither a string nor an object with a 'content' string.")


def _build_qwen2_bpe(directory: Path, config: dict) -> _HFTokenizer:
    """Rebuild Qwen2's fast tokenizer from vocab.json + merges.txt + added_tokens_decoder."""
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
                tok = _HFTokenizer.from_file(str(directory / "tokenizer.json"))
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
            template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
        if template is not None and not isinstance(template, str):
            raise TokenizerError(f"the chat_template in {config_path} is not a string.")
        return cls(tok, template_tokens, template)

    # ---- text <-> ids -------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects a str, got {type(text).__name__}.")
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
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            # Same environment settings as Hugging Face, so templates render byte-identically. The
            # sandbox matters: a template is data from the checkpoint and must not reach Python.
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
            env.filters["tojson"] = _tojson
            env.globals["raise_exception"] = _raise_from_template
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            try:
                self._compiled = env.from_string(self.chat_template)
            except TemplateError as exc:
                raise TokenizerError(f"the chat template does not compile ({exc}).") from None
        return self._compiled

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        from jinja2 import TemplateError

        template = self._template()
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   **self._template_tokens)
        except (TemplateError, TypeError, ValueError, LookupError, AttributeError) as exc:
            raise TokenizerError(f"the chat template failed to render these messages ({exc}).") from None

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        # The rendered text already carries the BOS the template wants; adding special tokens again
        # would prepend a second one for tokenizers whose post-processor inserts BOS.
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), add_special_tokens=False)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Replaces Jinja's built-in tojson, which HTML-escapes; chat templates expect plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_from_template(message):
    raise TokenizerError(f"the chat template refused these messages: {message}")
