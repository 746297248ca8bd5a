"""Tiny block-diffusion checkpoints in the published on-disk layouts (helpers, not tests).

  write_sdar       SDAR-*-Chat: Qwen3 tensor names written by transformers' Qwen3ForCausalLM
                   (save_pretrained, sharded + index), SDAR's config.json / generation_config.json,
                   a Qwen2-style vocab.json + merges.txt tokenizer with SDAR's <|MASK|>
  write_fast_dllm  Fast_dLLM_v2: Qwen2 names written by transformers' Qwen2ForCausalLM, bd_size in config
  write_llada2     LLaDA2.0-mini in miniature: dInfer's tensor names (fused query_key_value, experts,
                   shared experts, gate + expert_bias), shards + index (no CPU reference class exists)
Every writer returns (config, {checkpoint name: tensor}). The LM head row of the mask token is zero
(like a trained model, the mask token is never proposed; tests rely on it to compare with references
that do not ban it) and the other rows are large enough that its probability is ~0.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from tests.checkpoints import _random, _write_shards
from tests.tokenizer_files import DREAM_TEMPLATE, QWEN2_PATTERN, _added_entry, _train, _write_json

SDAR_ADDED = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<think>", False),
              ("<|MASK|>", True)]


def write_sdar_tokenizer(dirpath) -> dict:
    """SDAR-*-Chat's tokenizer layout: vocab.json + merges.txt, tokenizer_config.json (Qwen2Tokenizer,
    mask_token <|MASK|>), added_tokens.json and special_tokens_map.json."""
    directory = Path(dirpath)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    _train(tok)
    tok.model.save(str(directory))
    base = tok.get_vocab_size()
    added = {c: base + k for k, (c, _) in enumerate(SDAR_ADDED)}
    _write_json(directory / "tokenizer_config.json", {
        "add_bos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": {str(added[c]): _added_entry(c, sp) for c, sp in SDAR_ADDED},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|MASK|>"],
        "bos_token": None, "chat_template": DREAM_TEMPLATE, "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>", "mask_token": "<|MASK|>", "errors": "replace", "model_max_length": 131072,
        "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None})
    _write_json(directory / "added_tokens.json", added)
    _write_json(directory / "special_tokens_map.json", {"eos_token": _added_entry("<|endoftext|>", True),
                                                        "pad_token": _added_entry("<|endoftext|>", True)})
    return {"vocab_size": max(added.values()) + 1, "mask": added["<|MASK|>"], "eos": added["<|endoftext|>"],
            "eot": added["<|im_end|>"]}


def _qwen_tensors(V, dim, n_layers, n_heads, n_kv, hd, hidden, g, scale, qk_norm, qkv_bias, o_bias, head_scale):
    t = {"model.embed_tokens.weight": _random((V, dim), g, 1.0),
         "model.norm.weight": 1 + _random((dim,), g, 0.1),
         "lm_head.weight": _random((V, dim), g, head_scale)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        for n, o in (("q", n_heads * hd), ("k", n_kv * hd), ("v", n_kv * hd)):
            t[p + f"self_attn.{n}_proj.weight"] = _random((o, dim), g, scale)
            if qkv_bias:
                t[p + f"self_attn.{n}_proj.bias"] = _random((o,), g, 0.2)
        t[p + "self_attn.o_proj.weight"] = _random((dim, n_heads * hd), g, scale)
        if o_bias:
            t[p + "self_attn.o_proj.bias"] = _random((dim,), g, 0.2)
        if qk_norm:
            t[p + "self_attn.q_norm.weight"] = 1 + _random((hd,), g, 0.2)
            t[p + "self_attn.k_norm.weight"] = 1 + _random((hd,), g, 0.2)
        t[p + "input_layernorm.weight"] = 1 + _random((dim,), g, 0.1)
        t[p + "post_attention_layernorm.weight"] = 1 + _random((dim,), g, 0.1)
        t[p + "mlp.gate_proj.weight"] = _random((hidden, dim), g, scale)
        t[p + "mlp.up_proj.weight"] = _random((hidden, dim), g, scale)
        t[p + "mlp.down_proj.weight"] = _random((dim, hidden), g, scale)
    return t


def _save_with(hf_cls, hf_cfg, tensors: dict, path: Path, dtype):
    """Write the tensors through transformers' own model class: sharded safetensors + index."""
    model = hf_cls(hf_cfg)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    model.to(dtype).save_pretrained(str(path), max_shard_size="200KB")
    return model


def write_sdar(path, *, tokenizer=True, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=24, hidden=96,
               vocab_size=320, block_size=4, seed=0, scale=0.35, head_scale=0.6, attention_bias=False,
               rope_theta=1000000.0, max_len=4096, dtype=torch.float32, quiet=()):
    """An SDAR-4B-Chat-shaped checkpoint in miniature (head_dim * heads != hidden_size, as published).
    quiet: more token ids whose LM-head row is zero (never proposed, e.g. EOS in a benchmark)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    info = write_sdar_tokenizer(path) if tokenizer else {"vocab_size": vocab_size, "mask": vocab_size - 1,
                                                           "eos": vocab_size - 2, "eot": vocab_size - 3}
    V, mask, eos = info["vocab_size"], info["mask"], info["eos"]
    g = torch.Generator().manual_seed(seed)
    t = _qwen_tensors(V, dim, n_layers, n_heads, n_kv_heads, head_dim, hidden, g, scale, True, attention_bias,
                      attention_bias, head_scale)
    t["lm_head.weight"][[mask, *quiet]] = 0
    hf = Qwen3Config(vocab_size=V, hidden_size=dim, intermediate_size=hidden, num_hidden_layers=n_layers,
                     num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, head_dim=head_dim,
                     rms_norm_eps=1e-6, rope_theta=rope_theta, attention_bias=attention_bias,
                     max_position_embeddings=max_len, tie_word_embeddings=False)
    _save_with(Qwen3ForCausalLM, hf, t, path, dtype)
    cfg = {   # SDAR-4B-Chat's config.json fields (training/model/SDAR-4B-Chat/config.json)
        "architectures": ["SDARForCausalLM"], "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig",
                                                          "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"},
        "attention_bias": attention_bias, "attention_dropout": 0.0, "attn_implementation": "flex_attention",
        "bos_token_id": eos, "eos_token_id": eos, "block_size": block_size, "mask_token_id": mask,
        "head_dim": head_dim, "hidden_act": "silu", "hidden_size": dim, "intermediate_size": hidden,
        "max_position_embeddings": max_len, "max_window_layers": n_layers, "model_type": "sdar",
        "num_attention_heads": n_heads, "num_hidden_layers": n_layers, "num_key_value_heads": n_kv_heads,
        "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": rope_theta, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": False, "use_sliding_window": False,
        "vocab_size": V}
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    (path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": eos, "eos_token_id": [info["eot"], eos], "pad_token_id": eos, "do_sample": True,
         "temperature": 0.6, "top_k": 20, "top_p": 0.95}))
    return cfg, t


def write_fast_dllm(path, *, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden=96, vocab_size=320, bd_size=8,
                    seed=0, scale=0.35, head_scale=0.6, rope_theta=1000000.0, max_len=4096, dtype=torch.float32):
    """A Fast_dLLM_v2_7B-shaped (Qwen2.5 + bd_size) checkpoint in miniature, without a tokenizer; its
    mask/stop ids are config fields here (mask = V - 1, stop = V - 2)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    V, mask, stop = vocab_size, vocab_size - 1, vocab_size - 2
    g = torch.Generator().manual_seed(seed)
    t = _qwen_tensors(V, dim, n_layers, n_heads, n_kv_heads, dim // n_heads, hidden, g, scale, False, True, False,
                      head_scale)
    t["lm_head.weight"][mask] = 0
    hf = Qwen2Config(vocab_size=V, hidden_size=dim, intermediate_size=hidden, num_hidden_layers=n_layers,
                     num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, rms_norm_eps=1e-6,
                     rope_theta=rope_theta, max_position_embeddings=max_len, tie_word_embeddings=False)
    _save_with(Qwen2ForCausalLM, hf, t, path, dtype)
    cfg = {
        "architectures": ["Fast_dLLM_QwenForCausalLM"], "model_type": "Fast_dLLM_Qwen", "bd_size": bd_size,
        "auto_map": {"AutoConfig": "configuration.Fast_dLLM_QwenConfig",
                     "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"},
        "hidden_act": "silu", "hidden_size": dim, "intermediate_size": hidden, "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads, "max_position_embeddings": max_len,
        "rms_norm_eps": 1e-6, "rope_theta": rope_theta, "rope_scaling": None, "tie_word_embeddings": False,
        "use_sliding_window": False, "layer_types": ["full_attention"] * n_layers, "vocab_size": V,
        "mask_token_id": mask, "eos_token_id": stop, "torch_dtype": "float32"}
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return cfg, t


def write_llada2(path, *, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=16, hidden=96, moe_hidden=32,
                 n_experts=8, top_k=2, n_group=4, topk_group=2, n_shared=1, first_dense=1, vocab_size=320,
                 seed=0, scale=0.35, head_scale=0.6, rope_theta=600000.0, partial_rotary=0.5, use_bias=False,
                 qkv_bias=False, shards=3, max_len=4096, dtype=torch.float32, with_ids=False, quiet=()):
    """An inclusionAI/LLaDA2.0-mini-shaped checkpoint in miniature (layer 0 dense, then MoE). Like the
    published config there is no mask/eos/block field unless with_ids (then mask = V - 1, eos = V - 2)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    V = vocab_size
    g = torch.Generator().manual_seed(seed)
    hd, s = head_dim, scale
    t = {"model.word_embeddings.weight": _random((V, dim), g, 1.0),
         "model.norm.weight": 1 + _random((dim,), g, 0.1),
         "lm_head.weight": _random((V, dim), g, head_scale)}
    if with_ids or V > 156895:   # the mask token's row (V - 1, or LLaDA2's constant 156895)
        t["lm_head.weight"][V - 1 if with_ids else 156895] = 0
    t["lm_head.weight"][list(quiet)] = 0
    mlp = lambda pre, n: {f"{pre}gate_proj.weight": _random((n, dim), g, s),   # noqa: E731
                          f"{pre}up_proj.weight": _random((n, dim), g, s),
                          f"{pre}down_proj.weight": _random((dim, n), g, s)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + _random((dim,), g, 0.1)
        t[p + "post_attention_layernorm.weight"] = 1 + _random((dim,), g, 0.1)
        t[p + "attention.query_key_value.weight"] = _random(((n_heads + 2 * n_kv_heads) * hd, dim), g, s)
        if qkv_bias:
            t[p + "attention.query_key_value.bias"] = _random(((n_heads + 2 * n_kv_heads) * hd,), g, 0.2)
        t[p + "attention.query_layernorm.weight"] = 1 + _random((hd,), g, 0.2)
        t[p + "attention.key_layernorm.weight"] = 1 + _random((hd,), g, 0.2)
        t[p + "attention.dense.weight"] = _random((dim, n_heads * hd), g, s)
        if use_bias:
            t[p + "attention.dense.bias"] = _random((dim,), g, 0.2)
        if i < first_dense:
            t.update(mlp(p + "mlp.", hidden))
            continue
        t[p + "mlp.gate.weight"] = _random((n_experts, dim), g, 0.5)
        t[p + "mlp.gate.expert_bias"] = _random((n_experts,), g, 0.05)
        for e in range(n_experts):
            t.update(mlp(p + f"mlp.experts.{e}.", moe_hidden))
        if n_shared:
            t.update(mlp(p + "mlp.shared_experts.", moe_hidden * n_shared))
    t = {k: v.to(torch.float32 if k.endswith("expert_bias") else dtype) for k, v in t.items()}
    _write_shards(path, t, shards)
    cfg = {   # inclusionAI/LLaDA2.0-mini's config.json fields (spec part 3)
        "architectures": ["LLaDA2MoeModelLM"], "model_type": "llada2_moe",
        "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                     "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
        "hidden_size": dim, "head_dim": head_dim, "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads,
        "num_hidden_layers": n_layers, "intermediate_size": hidden, "moe_intermediate_size": moe_hidden,
        "num_experts": n_experts, "num_experts_per_tok": top_k, "num_shared_experts": n_shared, "n_group": n_group,
        "topk_group": topk_group, "first_k_dense_replace": first_dense, "routed_scaling_factor": 2.5,
        "score_function": "sigmoid", "norm_topk_prob": True, "moe_router_enable_expert_bias": True,
        "use_qk_norm": True, "use_qkv_bias": qkv_bias, "use_bias": use_bias, "partial_rotary_factor": partial_rotary,
        "rope_theta": rope_theta, "rms_norm_eps": 1e-6, "vocab_size": V, "pad_token_id": V - 2,
        "tie_word_embeddings": False, "max_position_embeddings": max_len, "hidden_act": "silu",
        "rope_scaling": None, "norm_head": False, "torch_dtype": "float32"}
    if with_ids:
        cfg.update({"mask_token_id": V - 1, "eos_token_id": V - 2})
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return cfg, t
