"""ModelArgs of the block-diffusion families from their published config.json fields.

SDAR / TraDo (model_type "sdar"), LLaDA2.x MoE ("llada2_moe") and Fast-dLLM v2 ("Fast_dLLM_Qwen"):
attention is block-causal (a query sees its own block and every earlier block), so committed
blocks have an exact KV cache. Facts and file:line references: docs/specs/block-diffusion.md.
Special ids the config lacks are filled in by models/special_ids.py (generation_config.json, the
tokenizer's special tokens, then the family constants below).
"""
from __future__ import annotations

from dllm.errors import ModelLoadError
from dllm.models.config import FIELDS, ModelArgs, MoEArgs, _get, _ids, _pad, _plain_rope, check_field

# (mask id, eos ids) each family's reference code falls back on: LLaDA2's loops hard-code them
# (dInfer benchmarks/benchmark.py:84-85), Fast-dLLM v2's generate() defaults (mask_id=151665,
# stop_token=151645), SDAR-*-Chat's config.json / tokenizer (<|MASK|> 151669, <|endoftext|> 151643)
FAMILY_IDS = {"sdar": (151669, (151643,)), "llada2": (156895, (156892,)), "fast_dllm": (151665, (151645,))}
# block length when the config has none: LLaDA2's model card (a request argument there), Fast-dLLM v2's bd_size
DEFAULT_BLOCK = {"llada2": 32, "fast_dllm": 32}


# the fields only these families read, in the config field spec's form (kind, interval; models/config.py)
_FIELDS = {**dict.fromkeys(("block_size", "bd_size", "num_experts", "num_experts_per_tok", "n_group", "topk_group"),
                           ("int", "[1, 65536]")),
           "moe_intermediate_size": ("int", "[1, 1048576]"), "num_shared_experts": ("int", "[0, 65536]"),
           "first_k_dense_replace": ("int", "[0, 4096]"), "routed_scaling_factor": ("float", "(0, 1000000]")}


def _field(cfg: dict, key: str, name: str, default=None):
    """Field `key`, typed and range-checked by the spec; absent -> default, or an error without one."""
    v = cfg.get(key)
    if v is None:
        if default is None:
            raise ModelLoadError(f"config.json of this {name} checkpoint has no {key!r} field.")
        return default
    kind, interval = FIELDS.get(key) or _FIELDS[key]
    return check_field(key, v, kind, interval)


_pos_int = _field


def _silu(cfg: dict):
    if cfg.get("hidden_act", "silu") != "silu":
        raise ModelLoadError(f"config.json has hidden_act={cfg['hidden_act']!r}; only 'silu' is supported.")


def _mask_id(cfg: dict) -> int:
    return _get(cfg, "mask_token_id", -1)   # -1: resolved by special_ids.py


def _block(cfg: dict, key: str, family: str, name: str) -> int:
    return _pos_int(cfg, key, name, DEFAULT_BLOCK.get(family))


def sdar_args(cfg: dict) -> ModelArgs:
    """SDAR's config.json (Qwen3 field names, model_type "sdar", block_size and mask_token_id)."""
    _silu(cfg)
    if cfg.get("use_sliding_window"):
        raise ModelLoadError("config.json has use_sliding_window=true; dllm supports only full attention for SDAR models.")
    theta = _plain_rope(cfg, "SDAR")
    n_heads = _pos_int(cfg, "num_attention_heads", "SDAR")
    bias = bool(cfg.get("attention_bias", False))   # SDAR puts attention_bias on q, k, v and o (modeling_sdar.py:497-508)
    return ModelArgs(
        family="sdar", vocab_size=_pos_int(cfg, "vocab_size", "SDAR"), dim=_pos_int(cfg, "hidden_size", "SDAR"),
        n_layers=_pos_int(cfg, "num_hidden_layers", "SDAR"), n_heads=n_heads,
        n_kv_heads=_pos_int(cfg, "num_key_value_heads", "SDAR", n_heads),
        intermediate_size=_pos_int(cfg, "intermediate_size", "SDAR"), norm_eps=float(_get(cfg, "rms_norm_eps", 1e-6)),
        rope_theta=theta, max_seq_len=_pos_int(cfg, "max_position_embeddings", "SDAR", 32768),
        mask_token_id=_mask_id(cfg), eos_token_ids=_ids(_get(cfg, "eos_token_id")),
        pad_token_id=_pad(_get(cfg, "pad_token_id")),
        qkv_bias=bias, o_bias=bias, tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        head_size=_pos_int(cfg, "head_dim", "SDAR", _pos_int(cfg, "hidden_size", "SDAR") // n_heads),
        qk_norm=True, block_causal=True, block_size=_block(cfg, "block_size", "sdar", "SDAR"),
        sampler="dream", scheduler="sdar")


def _moe_args(cfg: dict, n_layers: int) -> MoEArgs | None:
    if cfg.get("num_experts") is None:
        return None
    if cfg.get("score_function", "sigmoid") != "sigmoid":
        raise ModelLoadError(f"config.json has score_function={cfg['score_function']!r}; LLaDA2 routes with 'sigmoid'.")
    name = "LLaDA2"
    m = MoEArgs(
        n_experts=_pos_int(cfg, "num_experts", name), top_k=_pos_int(cfg, "num_experts_per_tok", name),
        # absent: the defaults of dInfer's config class (configuration_llada2_moe.py:39-40), which its
        # modeling file reads as they are
        n_group=_pos_int(cfg, "n_group", name, 8), topk_group=_pos_int(cfg, "topk_group", name, 4),
        intermediate_size=_pos_int(cfg, "moe_intermediate_size", name),
        n_shared=_field(cfg, "num_shared_experts", name, 0), first_dense=_field(cfg, "first_k_dense_replace", name, 0),
        routed_scaling=float(_field(cfg, "routed_scaling_factor", name, 2.5)), norm_topk=True)
    per_group = m.n_experts // m.n_group
    if m.n_experts % m.n_group or per_group < 2:
        raise ModelLoadError(f"config.json has {m.n_experts} experts in {m.n_group} groups; each group needs an equal "
                             "share of at least 2 experts (a group scores by its top 2).")
    if m.topk_group > m.n_group or m.top_k > m.topk_group * per_group:
        raise ModelLoadError(f"config.json routes each token to {m.top_k} experts in {m.topk_group} of {m.n_group} "
                             f"groups of {per_group}, which is more than those groups hold.")
    if m.n_shared < 0 or not 0 <= m.first_dense <= n_layers:
        raise ModelLoadError("config.json has a negative num_shared_experts or first_k_dense_replace beyond the layers.")
    return m


def llada2_args(cfg: dict) -> ModelArgs:
    """LLaDA2.x's config.json (model_type "llada2_moe"; dInfer configuration_llada2_moe.py)."""
    _silu(cfg)
    for key, why in (("norm_head", "a normalised LM head"), ("use_sliding_window", "sliding-window attention")):
        if cfg.get(key):
            raise ModelLoadError(f"config.json has {key}=true; dllm does not support {why} for LLaDA2 models.")
    if cfg.get("use_qk_norm") is False:
        raise ModelLoadError("config.json has use_qk_norm=false; LLaDA2 checkpoints always carry QK-norm weights.")
    if cfg.get("rope_scaling"):
        raise ModelLoadError("config.json sets rope_scaling; dllm supports only plain RoPE for LLaDA2 models.")
    name = "LLaDA2"
    dim, n_heads = _pos_int(cfg, "hidden_size", name), _pos_int(cfg, "num_attention_heads", name)
    head_dim = _pos_int(cfg, "head_dim", name, dim // n_heads)
    factor = cfg.get("partial_rotary_factor", 0.5)   # the class default (configuration_llada2_moe.py:46)
    if not isinstance(factor, (int, float)) or not 0 < factor <= 1 or int(head_dim * factor) % 2:
        raise ModelLoadError(f"config.json has partial_rotary_factor={factor!r}; it must be in (0, 1] and give an even "
                             "number of rotated dimensions.")
    n_layers = _pos_int(cfg, "num_hidden_layers", name)
    moe = _moe_args(cfg, n_layers)
    dense = cfg.get("intermediate_size")
    if moe is None or moe.first_dense:
        dense = _pos_int(cfg, "intermediate_size", name)
    return ModelArgs(
        family="llada2", vocab_size=_pos_int(cfg, "vocab_size", name), dim=dim, n_layers=n_layers, n_heads=n_heads,
        n_kv_heads=_pos_int(cfg, "num_key_value_heads", name, n_heads), intermediate_size=int(dense or 0),
        norm_eps=float(_get(cfg, "rms_norm_eps", 1e-5)), rope_theta=float(_get(cfg, "rope_theta", 10000.0)),
        max_seq_len=_pos_int(cfg, "max_position_embeddings", name, 16384), mask_token_id=_mask_id(cfg),
        eos_token_ids=_ids(_get(cfg, "eos_token_id")),
        pad_token_id=_pad(_get(cfg, "pad_token_id")),
        qkv_bias=bool(cfg.get("use_qkv_bias", False)), o_bias=bool(cfg.get("use_bias", True)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), head_size=head_dim, qk_norm=True,
        rotary_dim=int(head_dim * factor), fused_qkv=True, block_causal=True,
        block_size=_block(cfg, "block_size", "llada2", name), sampler="llada", scheduler="dinfer", moe=moe)


def fast_dllm_args(cfg: dict) -> ModelArgs:
    """Fast-dLLM v2's config.json (Qwen2.5 fields, model_type "Fast_dLLM_Qwen", bd_size)."""
    _silu(cfg)
    layer_types = cfg.get("layer_types") or []
    if cfg.get("use_sliding_window") or not isinstance(layer_types, list) or any(t != "full_attention" for t in layer_types):
        raise ModelLoadError("config.json asks for sliding-window layers; dllm supports only full attention for "
                             "Fast-dLLM v2 models.")
    name = "Fast-dLLM v2"
    theta = _plain_rope(cfg, name)
    dim, n_heads = _pos_int(cfg, "hidden_size", name), _pos_int(cfg, "num_attention_heads", name)
    if _get(cfg, "head_dim") is not None and cfg["head_dim"] * n_heads != dim:
        raise ModelLoadError(f"config.json has head_dim={cfg['head_dim']} with {n_heads} heads and hidden_size {dim}; "
                             "Fast-dLLM v2 (Qwen2) needs head_dim * heads = hidden_size.")
    return ModelArgs(
        family="fast_dllm", vocab_size=_pos_int(cfg, "vocab_size", name), dim=dim,
        n_layers=_pos_int(cfg, "num_hidden_layers", name), n_heads=n_heads,
        n_kv_heads=_pos_int(cfg, "num_key_value_heads", name, n_heads),
        intermediate_size=_pos_int(cfg, "intermediate_size", name), norm_eps=float(_get(cfg, "rms_norm_eps", 1e-6)),
        rope_theta=theta, max_seq_len=_pos_int(cfg, "max_position_embeddings", name, 32768),
        mask_token_id=_mask_id(cfg), eos_token_ids=_ids(_get(cfg, "eos_token_id")),
        pad_token_id=_pad(_get(cfg, "pad_token_id")),
        qkv_bias=True,   # Fast_dLLM_QwenAttention: bias=True on q, k, v whatever the config says; none on o
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), block_causal=True,
        block_size=_block(cfg, "bd_size", "fast_dllm", name), token_shift=True, sampler="dream",
        scheduler="fast_dllm_v2")


BLOCK_FAMILIES = {"sdar": sdar_args, "llada2_moe": llada2_args, "fast_dllm_qwen": fast_dllm_args}
# published variants whose layout dllm cannot check against a published config: refused by name
REFUSED = {"sdar_moe": "SDAR's MoE variant (model_type 'sdar_moe') has no published config in the SDAR repository, "
                       "so dllm does not load it yet."}
