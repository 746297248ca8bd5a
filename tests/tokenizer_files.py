"""Write tiny tokenizers in the two on-disk layouts the published checkpoints use (helpers, not tests).

Each helper trains a small byte-level BPE on a fixed corpus (deterministic, a few milliseconds),
appends the model's special tokens after the learned vocab and writes the files the way the
Hugging Face repos lay them out:
  * write_llada_tokenizer: tokenizer.json + tokenizer_config.json + special_tokens_map.json
  * write_dream_tokenizer: vocab.json + merges.txt + tokenizer_config.json (no tokenizer.json),
    plus a tokenization_dream.py that raises if anything ever executes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers

# Small but varied: prose, code, digits, whitespace runs, a Latin-1 letter and CJK, so the learned
# merges include multi-byte UTF-8 pieces and most test strings tokenize into several merged tokens.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "Hello world! Hello there, how are you today? I am fine, thank you.",
    "A diffusion language model fills masked tokens in parallel, step by step.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i, 'even')\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "The numbers 0 1 2 3 4 5 6 7 8 9 and 12345 and 2024-06-30 and 3.14159.",
    "Café au lait, crème brûlée, résumé: é é é.",
    "東京 is the capital of Japan. 東京タワー and 京都 are famous; 東京 東京.",
    "   leading spaces,\ttabs,\n\nblank lines and trailing spaces   \n",
    "{\"key\": \"value\", \"list\": [1, 2, 3]} // JSON-ish; x = y * (z - 1) / 4;",
]
VOCAB_TARGET = 400

LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|mdm_mask|>"]
# Dream follows Qwen2: these are added tokens after the BPE vocab. <tool_call> is an added token
# that is NOT special (as in Qwen2), so decode must keep it even when skipping special tokens.
DREAM_ADDED = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
               ("<tool_call>", False), ("<|beginoftext|>", True), ("<|mask|>", True)]

# Llama-3 style, as LLaDA-8B-Instruct uses: BOS once, then header/content/eot per message.
LLADA_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first -%}{{ bos_token }}{%- endif -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
)

# ChatML as Dream uses it, with a default system turn when the conversation does not open with one.
DREAM_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _train(tok: Tokenizer) -> Tokenizer:
    # initial_alphabet = all 256 byte symbols: every byte is a token, so any text encodes and
    # multi-byte characters not merged stay split into partial UTF-8 byte tokens.
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_TARGET, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _added_entry(content: str, special: bool) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_llada_tokenizer(dirpath) -> dict:
    """tokenizer.json layout (LLaDA-8B-Instruct): the post-processor prepends <|startoftext|>."""
    directory = Path(dirpath)
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    _train(tok)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in LLADA_SPECIALS])
    specials = {s: tok.token_to_id(s) for s in LLADA_SPECIALS}
    bos = specials["<|startoftext|>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A", pair="<|startoftext|> $A $B", special_tokens=[("<|startoftext|>", bos)])
    tok.save(str(directory / "tokenizer.json"))

    # bos as a plain string, eos as a serialized AddedToken object: published configs use both.
    _write_json(directory / "tokenizer_config.json", {
        "added_tokens_decoder": {str(i): _added_entry(s, True) for s, i in specials.items()},
        "bos_token": "<|startoftext|>",
        "chat_template": LLADA_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": {"__type": "AddedToken", **_added_entry("<|endoftext|>", True)},
        "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
    _write_json(directory / "special_tokens_map.json", {
        "bos_token": _added_entry("<|startoftext|>", True),
        "eos_token": _added_entry("<|endoftext|>", True),
    })
    return {"vocab_size": max(specials.values()) + 1, "mask": specials["<|mdm_mask|>"],
            "eos": specials["<|endoftext|>"], "bos": bos, "eot": specials["<|eot_id|>"], "specials": specials}


def write_dream_tokenizer(dirpath) -> dict:
    """vocab.json + merges.txt layout (Dream-v0-Instruct-7B, a Qwen2 byte-level BPE)."""
    directory = Path(dirpath)
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    _train(tok)
    tok.model.save(str(directory))  # writes vocab.json and merges.txt ("#version: 0.2" header)
    base = tok.get_vocab_size()
    added = {content: base + k for k, (content, _) in enumerate(DREAM_ADDED)}

    _write_json(directory / "tokenizer_config.json", {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(added[c]): _added_entry(c, special) for c, special in DREAM_ADDED},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": None,
        "chat_template": DREAM_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "mask_token": "<|mask|>",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "DreamTokenizer",
        "unk_token": None,
    })
    # Remote code that a careless loader would import; it must never run.
    (directory / "tokenization_dream.py").write_text('raise RuntimeError("remote code must never run")\n')
    specials = {c: added[c] for c, special in DREAM_ADDED if special}
    return {"vocab_size": max(added.values()) + 1, "mask": added["<|mask|>"], "eos": added["<|endoftext|>"],
            "bos": None, "eot": added["<|im_end|>"], "specials": specials}
