"""Write tiny autoregressive checkpoints (helpers, not tests).

* write_hf: a Llama- or Qwen2-shaped Hugging Face directory as transformers saves one:
  config.json with the published field names, model.safetensors under the published tensor
  names, and optionally tokenizer.json + tokenizer_config.json (a byte-level BPE with a ChatML
  template).
* write_gguf: the same weights as a GGUF file laid out as llama.cpp's converter writes it:
  llama.cpp tensor names, Q/K rows of `llama` models permuted for interleaved RoPE, no
  output.weight when the embeddings are tied, the tokenizer as tokenizer.ggml.* metadata.
  Needs the `gguf` package.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from tests.tokenizer_files import CORPUS, DREAM_TEMPLATE

CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]   # ids 0, 1, 2, as in SmolLM2
USER_DEFINED = "<think>"                                       # the last id: added, not special


def train_tokenizer(vocab_target: int = 360):
    """A SmolLM-style byte-level BPE (digits split alone, GPT-2 regex) trained on a fixed corpus.

    Returns (tokenizers.Tokenizer, tokens by id, GGUF token types, merges as "a b" strings).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_target, min_frequency=2, show_progress=False,
                                  special_tokens=CONTROL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_tokens([AddedToken(USER_DEFINED, special=False, normalized=False)])
    model = json.loads(tok.to_str())["model"]
    vocab = {**model["vocab"], USER_DEFINED: tok.token_to_id(USER_DEFINED)}
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in CONTROL else 4 if t == USER_DEFINED else 1 for t in tokens]
    return tok, tokens, types, merges


def _random(shape, gen, scale):
    return torch.randn(shape, generator=gen) * scale


def write_hf(path, family="llama", *, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden=96, vocab_size=None,
             tie=False, save_tied_head=False, rope_theta=10000.0, seed=0, tokenizer=True, scale=0.35, max_len=2048):
    """A tiny Llama ("llama") or Qwen2 ("qwen2") checkpoint directory. Returns (config, {hf_name: tensor}).

    With tokenizer=True the vocabulary is the trained tokenizer's (eos = <|im_end|> = 2).
    save_tied_head: also save lm_head.weight (= the embedding) as some tied exports do.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer:
        tok, tokens, _, _ = train_tokenizer()
        V = len(tokens)
        tok.save(str(path / "tokenizer.json"))
        (path / "tokenizer_config.json").write_text(json.dumps({
            "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
            "chat_template": DREAM_TEMPLATE, "add_bos_token": False, "model_max_length": max_len}))
    else:
        V = vocab_size or 320
    hd = dim // n_heads
    cfg = {
        "architectures": ["LlamaForCausalLM" if family == "llama" else "Qwen2ForCausalLM"], "model_type": family,
        "hidden_size": dim, "intermediate_size": hidden, "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads, "hidden_act": "silu",
        "max_position_embeddings": max_len, "rms_norm_eps": 1e-5, "rope_theta": rope_theta, "rope_scaling": None,
        "tie_word_embeddings": tie, "vocab_size": V, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32", "use_cache": True, "attention_dropout": 0.0, "initializer_range": 0.02,
    }
    if family == "llama":
        cfg.update({"attention_bias": False, "mlp_bias": False, "head_dim": hd, "pretraining_tp": 1})
    else:
        cfg.update({"use_sliding_window": False, "sliding_window": max_len, "max_window_layers": n_layers})
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    g = torch.Generator().manual_seed(seed)
    s = scale
    t = {"model.embed_tokens.weight": _random((V, dim), g, 1.0),
         "model.norm.weight": 1 + _random((dim,), g, 0.1)}
    if not tie:
        t["lm_head.weight"] = _random((V, dim), g, 2 * s)
    elif save_tied_head:
        t["lm_head.weight"] = t["model.embed_tokens.weight"].clone()
    for i in range(n_layers):
        p = f"model.layers.{i}."
        for n, o in (("q", dim), ("k", n_kv_heads * hd), ("v", n_kv_heads * hd)):
            t[p + f"self_attn.{n}_proj.weight"] = _random((o, dim), g, s)
            if family == "qwen2":
                t[p + f"self_attn.{n}_proj.bias"] = _random((o,), g, 0.3)
        t[p + "self_attn.o_proj.weight"] = _random((dim, dim), g, s)
        t[p + "input_layernorm.weight"] = 1 + _random((dim,), g, 0.1)
        t[p + "post_attention_layernorm.weight"] = 1 + _random((dim,), g, 0.1)
        t[p + "mlp.gate_proj.weight"] = _random((hidden, dim), g, s)
        t[p + "mlp.up_proj.weight"] = _random((hidden, dim), g, s)
        t[p + "mlp.down_proj.weight"] = _random((dim, hidden), g, s)
    save_file({k: v.contiguous() for k, v in t.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    return cfg, t


def permute_for_gguf(w: torch.Tensor, heads: int) -> torch.Tensor:
    """What llama.cpp's converter does to Llama Q/K rows: per head, rotate_half order
    [first half | second half] -> interleaved (row 2i = first-half row i, row 2i+1 = second-half row i)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


_GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_GGUF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.o_proj.weight": "attn_output.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
    **{f"self_attn.{p}_proj.{t}": f"attn_{p}.{t}" for p in "qkv" for t in ("weight", "bias")},
}


def write_gguf(file, cfg: dict, sd: dict, *, tokenizer=True, quantize: tuple = (), pre="smollm", permute=True,
               rope_scaling: str | None = None):
    """cfg/sd as write_hf returns them -> a GGUF file. quantize: GGUF names stored as Q8_0.
    permute=False writes Llama Q/K unpermuted (a broken file, for the test that shows it matters)."""
    import gguf

    family = cfg["model_type"]
    file = Path(file)
    w = gguf.GGUFWriter(str(file), family)
    w.add_name("tiny-" + family)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if rope_scaling:
        w.add_rope_scaling_type(gguf.RopeScalingType(rope_scaling))
        w.add_rope_scaling_factor(4.0)
    if tokenizer:
        _, tokens, types, merges = train_tokenizer()
        assert len(tokens) == cfg["vocab_size"]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_pad_token_id(0)
        w.add_add_bos_token(False)
        w.add_chat_template(DREAM_TEMPLATE)
    heads = {"q": cfg["num_attention_heads"], "k": cfg["num_key_value_heads"]}
    for name, t in sd.items():
        if name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue
        if name in _GGUF_NAMES:
            gname = _GGUF_NAMES[name]
        else:
            _, _, i, rest = name.split(".", 3)     # model.layers.{i}.{rest}
            gname = f"blk.{i}.{_GGUF_LAYER[rest]}"
            proj = rest[len("self_attn."):][0] if rest.startswith("self_attn.") else None
            if family == "llama" and permute and proj in heads and rest.endswith("_proj.weight"):
                t = permute_for_gguf(t, heads[proj])
        arr = t.float().numpy()
        if gname in quantize:
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gname, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return file
