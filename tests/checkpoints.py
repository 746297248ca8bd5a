"""Write tiny LLaDA / Dream checkpoints in the published on-disk layout (not tests).

config.json with the published field names, weights under the published tensor names split
over several safetensors shards plus model.safetensors.index.json, and optionally the
tokenizer files of tests/tokenizer_files.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def _random(shape, gen, scale):
    return torch.randn(shape, generator=gen) * scale


def _write_shards(path: Path, tensors: dict, shards: int):
    names = list(tensors)
    per = -(-len(names) // shards)
    weight_map = {}
    for s in range(shards):
        chunk = names[s * per:(s + 1) * per]
        if not chunk:
            continue
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in chunk}, str(path / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in chunk})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def _vocab(path, tokenizer, writer_name, vocab_size):
    if tokenizer:
        from tests import tokenizer_files

        info = getattr(tokenizer_files, writer_name)(path)
        return info["vocab_size"], info["mask"], info["eos"], info
    return vocab_size, vocab_size - 1, vocab_size - 2, None


def write_llada(path, *, tokenizer=True, dim=64, n_layers=2, n_heads=4, n_kv_heads=None, hidden=96,
                vocab_size=320, rope_theta=500000.0, shards=2, seed=0, qkv_bias=False, max_len=4096,
                dtype=torch.float32, scale=0.35, head_scale=None, head_boost=None):
    """A LLaDA-8B-shaped checkpoint in miniature. Returns (config, {hf_name: tensor}, tokenizer info).
    head_boost {token id: factor}: scales those rows of the LM head (e.g. a model that often predicts
    a newline, for adablock)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    V, mask, eos, info = _vocab(path, tokenizer, "write_llada_tokenizer", vocab_size)
    kv = n_kv_heads or n_heads
    hd = dim // n_heads
    cfg = {
        "architectures": ["LLaDAModelLM"], "model_type": "llada", "activation_type": "silu",
        "alibi": False, "block_type": "llama", "d_model": dim, "n_heads": n_heads, "n_kv_heads": kv,
        "n_layers": n_layers, "mlp_hidden_size": hidden, "mlp_ratio": 4, "vocab_size": V, "embedding_size": V,
        "max_sequence_length": max_len, "rope": True, "rope_theta": rope_theta, "rope_full_precision": True,
        "layer_norm_type": "rms", "rms_norm_eps": 1e-5, "include_bias": False, "include_qkv_bias": qkv_bias,
        "weight_tying": False, "scale_logits": False, "input_emb_norm": False, "mask_token_id": mask,
        "eos_token_id": eos, "pad_token_id": eos, "torch_dtype": "float32", "use_cache": False,
    }
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    g = torch.Generator().manual_seed(seed)
    s = scale
    t = {"model.transformer.wte.weight": _random((V, dim), g, 1.0),
         "model.transformer.ln_f.weight": 1 + _random((dim,), g, 0.1),
         "model.transformer.ff_out.weight": _random((V, dim), g, head_scale or 2 * s)}
    t["model.transformer.ff_out.weight"][mask] = 0  # like a trained model: the mask token is never the argmax
    for tok, factor in (head_boost or {}).items():
        t["model.transformer.ff_out.weight"][tok] *= factor
    for i in range(n_layers):
        p = f"model.transformer.blocks.{i}."
        t[p + "q_proj.weight"] = _random((dim, dim), g, s)
        t[p + "k_proj.weight"] = _random((kv * hd, dim), g, s)
        t[p + "v_proj.weight"] = _random((kv * hd, dim), g, s)
        if qkv_bias:
            for n, o in (("q", dim), ("k", kv * hd), ("v", kv * hd)):
                t[p + f"{n}_proj.bias"] = _random((o,), g, 0.1)
        t[p + "attn_out.weight"] = _random((dim, dim), g, s)
        t[p + "attn_norm.weight"] = 1 + _random((dim,), g, 0.1)
        t[p + "ff_norm.weight"] = 1 + _random((dim,), g, 0.1)
        t[p + "ff_proj.weight"] = _random((hidden, dim), g, s)
        t[p + "up_proj.weight"] = _random((hidden, dim), g, s)
        t[p + "ff_out.weight"] = _random((dim, hidden), g, s)
    t = {k: v.to(dtype) for k, v in t.items()}
    _write_shards(path, t, shards)
    return cfg, t, info


def write_dream(path, *, tokenizer=True, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden=96,
                vocab_size=320, rope_theta=1000000.0, shards=3, seed=0, max_len=2048, dtype=torch.float32,
                scale=0.35):
    """A Dream-7B-shaped (Qwen2 layout) checkpoint in miniature."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    V, mask, eos, info = _vocab(path, tokenizer, "write_dream_tokenizer", vocab_size)
    hd = dim // n_heads
    cfg = {
        "architectures": ["DreamModel"], "model_type": "Dream", "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "hidden_size": dim, "intermediate_size": hidden, "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads, "hidden_act": "silu",
        "max_position_embeddings": max_len, "rms_norm_eps": 1e-6, "rope_theta": rope_theta, "rope_scaling": None,
        "tie_word_embeddings": False, "vocab_size": V, "mask_token_id": mask, "pad_token_id": eos,
        "bos_token_id": eos, "eos_token_id": eos, "torch_dtype": "float32", "use_cache": False,
        "use_sliding_window": False, "attention_dropout": 0.0,
    }
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    g = torch.Generator().manual_seed(seed)
    s = scale
    t = {"model.embed_tokens.weight": _random((V, dim), g, 1.0),
         "model.norm.weight": 1 + _random((dim,), g, 0.1),
         "lm_head.weight": _random((V, dim), g, 2 * s)}
    t["lm_head.weight"][mask] = 0  # like a trained model: the mask token is never the argmax
    for i in range(n_layers):
        p = f"model.layers.{i}."
        for n, o in (("q", dim), ("k", n_kv_heads * hd), ("v", n_kv_heads * hd)):
            t[p + f"self_attn.{n}_proj.weight"] = _random((o, dim), g, s)
            t[p + f"self_attn.{n}_proj.bias"] = _random((o,), g, 0.1)
        t[p + "self_attn.o_proj.weight"] = _random((dim, dim), g, s)
        t[p + "input_layernorm.weight"] = 1 + _random((dim,), g, 0.1)
        t[p + "post_attention_layernorm.weight"] = 1 + _random((dim,), g, 0.1)
        t[p + "mlp.gate_proj.weight"] = _random((hidden, dim), g, s)
        t[p + "mlp.up_proj.weight"] = _random((hidden, dim), g, s)
        t[p + "mlp.down_proj.weight"] = _random((dim, hidden), g, s)
    t = {k: v.to(dtype) for k, v in t.items()}
    _write_shards(path, t, shards)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos, "mask_token_id": mask}))
    return cfg, t, info


if __name__ == "__main__":  # python -m tests.checkpoints DIR [llada|dream]: a tiny random checkpoint to try dllm on
    import sys

    out, family = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "llada")
    (write_dream if family == "dream" else write_llada)(out)
    print(f"wrote a tiny random {family} checkpoint (published layout, random weights) to {out}")
