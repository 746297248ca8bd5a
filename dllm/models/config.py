"""ModelArgs: one config shape for every family, built from the published config.json fields."""
from __future__ import annotations

from dataclasses import dataclass

from dllm.errors import ModelLoadError


@dataclass(frozen=True)
class ModelArgs:
    family: str              # "llada" | "dream" | "llama" | "qwen2" | "sdar" | "llada2" | "fast_dllm"
    vocab_size: int          # rows of the embedding = columns of the logits
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    norm_eps: float
    rope_theta: float
    max_seq_len: int
    mask_token_id: int       # -1 for autoregressive families (no mask token; never a real id)
    eos_token_ids: tuple = ()
    pad_token_id: int | None = None
    qkv_bias: bool = False
    tie_embeddings: bool = False
    rope_fp32: bool = False      # LLaDA rotates q/k in float32 (rope_full_precision); Dream in the model dtype
    shift_logits: bool = False   # Dream: the hidden state at i-1 scores token i
    causal: bool = False
    input_emb_scale: bool = False  # LLaDA input_emb_norm: embeddings * sqrt(dim)
    scale_logits: bool = False     # LLaDA scale_logits: logits / sqrt(dim)
    # ---- block-diffusion families (SDAR, LLaDA2.x, Fast-dLLM v2; /work/shared/specs/block-diffusion.md) ----
    head_size: int = 0             # config head_dim when heads * head_dim != dim (SDAR, LLaDA2); 0: dim // heads
    qk_norm: bool = False          # RMSNorm over head_dim on q and k before RoPE (Qwen3 / SDAR, LLaDA2)
    rotary_dim: int = 0            # partial rotary (LLaDA2: head_dim * partial_rotary_factor); 0: all of head_dim
    o_bias: bool = False           # a bias on the attention output projection (LLaDA2 use_bias)
    fused_qkv: bool = False        # the checkpoint stores q|k|v as one matrix (LLaDA2 query_key_value)
    block_causal: bool = False     # attention: a query sees its own block and every earlier one
    block_size: int = 0            # the family's block length (block_causal); SamplingParams.block_length overrides
    token_shift: bool = False      # Fast-dLLM v2: slot j is scored by the hidden state of slot j - 1 (slot 0 by itself)
    sampler: str = "llada"         # how the family's reference draws a token: "llada" (Gumbel-max, untempered
                                   # softmax score) or "dream" (sample softmax(filtered logits / T), its probability)
    scheduler: str = "topk"        # what SamplingParams(scheduler="auto") decodes this family with
    moe: "MoEArgs | None" = None   # LLaDA2: the mixture-of-experts FFN of layers >= moe.first_dense

    @property
    def head_dim(self) -> int:
        return self.head_size or self.dim // self.n_heads

    @property
    def rope_dim(self) -> int:
        return self.rotary_dim or self.head_dim


@dataclass(frozen=True)
class MoEArgs:
    """LLaDA2's routed FFN (dInfer modeling_llada2_moe.py:487-633): sigmoid router in float32, an
    expert bias used only to choose experts, group-limited top-k, routed scaling, shared experts."""
    n_experts: int
    top_k: int
    n_group: int
    topk_group: int
    intermediate_size: int       # per routed expert (moe_intermediate_size)
    n_shared: int                # shared experts, fused into one MLP of n_shared * intermediate_size
    first_dense: int             # layers [0, first_dense) keep the dense MLP (first_k_dense_replace)
    routed_scaling: float
    norm_topk: bool              # weights / (sum + 1e-20) when top_k > 1


def _ids(v) -> tuple:
    if v is None:
        return ()
    return tuple(v) if isinstance(v, (list, tuple)) else (int(v),)


def _need(cfg: dict, key: str, family: str):
    if key not in cfg:
        raise ModelLoadError(f"config.json of this {family} checkpoint has no {key!r} field.")
    return cfg[key]


def llada_args(cfg: dict) -> ModelArgs:
    """LLaDA's config.json (OLMo-style field names, model_type "llada")."""
    refuse = {
        "block_type": ("llama", "only LLaDA's 'llama' block is supported"),
        "layer_norm_type": ("rms", "only RMSNorm is supported"),
        "activation_type": ("silu", "only the SiLU-gated MLP is supported"),
    }
    for key, (want, why) in refuse.items():
        if cfg.get(key, want) != want:
            raise ModelLoadError(f"config.json has {key}={cfg[key]!r}; {why}.")
    if cfg.get("alibi") or cfg.get("rope") is False:
        raise ModelLoadError("config.json asks for ALiBi or no RoPE; only rotary position embeddings are supported.")
    if cfg.get("include_bias"):
        raise ModelLoadError("config.json has include_bias=true, which no published LLaDA checkpoint uses and dllm does not support.")
    d_model = int(_need(cfg, "d_model", "LLaDA"))
    n_heads = int(_need(cfg, "n_heads", "LLaDA"))
    n_kv = cfg.get("n_kv_heads")
    if cfg.get("multi_query_attention"):
        n_kv = 1
    hidden = cfg.get("mlp_hidden_size") or int(cfg.get("mlp_ratio", 4) * d_model)
    return ModelArgs(
        family="llada",
        vocab_size=int(cfg.get("embedding_size") or _need(cfg, "vocab_size", "LLaDA")),
        dim=d_model,
        n_layers=int(_need(cfg, "n_layers", "LLaDA")),
        n_heads=n_heads,
        n_kv_heads=int(n_kv or n_heads),
        intermediate_size=int(hidden),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        max_seq_len=int(cfg.get("max_sequence_length", 4096)),
        mask_token_id=int(cfg.get("mask_token_id", 126336)),
        eos_token_ids=_ids(cfg.get("eos_token_id", 126081)),
        pad_token_id=cfg.get("pad_token_id"),
        qkv_bias=bool(cfg.get("include_qkv_bias", False)),
        tie_embeddings=bool(cfg.get("weight_tying", False)),
        rope_fp32=bool(cfg.get("rope_full_precision", True)),
        input_emb_scale=bool(cfg.get("input_emb_norm", False)),
        scale_logits=bool(cfg.get("scale_logits", False)),
    )


def dream_args(cfg: dict) -> ModelArgs:
    """Dream's config.json (Qwen2 field names, model_type "Dream")."""
    if cfg.get("rope_scaling"):
        raise ModelLoadError("config.json sets rope_scaling; only plain RoPE is supported for Dream checkpoints.")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ModelLoadError(f"config.json has hidden_act={cfg['hidden_act']!r}; only 'silu' is supported.")
    n_heads = int(_need(cfg, "num_attention_heads", "Dream"))
    return ModelArgs(
        family="dream",
        vocab_size=int(_need(cfg, "vocab_size", "Dream")),
        dim=int(_need(cfg, "hidden_size", "Dream")),
        n_layers=int(_need(cfg, "num_hidden_layers", "Dream")),
        n_heads=n_heads,
        n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
        intermediate_size=int(_need(cfg, "intermediate_size", "Dream")),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        max_seq_len=int(cfg.get("max_position_embeddings", 32768)),
        mask_token_id=int(cfg.get("mask_token_id", 151666)),
        eos_token_ids=_ids(cfg.get("eos_token_id", 151643)),
        pad_token_id=cfg.get("pad_token_id"),
        qkv_bias=True,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        rope_fp32=False,
        shift_logits=True,
    )


def _plain_rope(cfg: dict, family: str) -> float:
    """rope_theta of a config that must use plain RoPE (no scaling, full rotary dimension).

    transformers < 5 writes `rope_theta` and `rope_scaling` at the top level; >= 5 writes
    `rope_parameters` = {"rope_type": ..., "rope_theta": ...}. Either layout is read.
    """
    params = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    for spec in (cfg.get("rope_scaling"), params):
        if spec is None:
            continue
        kind = spec.get("rope_type", spec.get("type", "default")) if isinstance(spec, dict) else spec
        if kind not in ("default", None):
            raise ModelLoadError(
                f"config.json asks for rope scaling {kind!r}; dllm supports only plain RoPE for {family} models.")
    if float(cfg.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0))) != 1.0:
        raise ModelLoadError(f"config.json sets partial_rotary_factor; dllm rotates the full head dimension of {family} models.")
    return float(cfg.get("rope_theta", params.get("rope_theta", 10000.0)))


def _causal_args(cfg: dict, family: str, name: str, qkv_bias: bool) -> ModelArgs:
    """Shared part of the autoregressive Hugging Face families (Llama, Qwen2): same field names,
    rotate-half RoPE in the model dtype (rope_fp32=False), causal attention, no mask token."""
    if cfg.get("hidden_act", "silu") != "silu":
        raise ModelLoadError(f"config.json has hidden_act={cfg['hidden_act']!r}; only 'silu' is supported.")
    if cfg.get("mlp_bias"):
        raise ModelLoadError(f"config.json has mlp_bias=true, which dllm does not support for {name} models.")
    theta = _plain_rope(cfg, name)
    dim = int(_need(cfg, "hidden_size", name))
    n_heads = int(_need(cfg, "num_attention_heads", name))
    head_dim = cfg.get("head_dim")
    if head_dim is not None and n_heads and int(head_dim) * n_heads != dim:
        raise ModelLoadError(
            f"config.json has head_dim={head_dim} with {n_heads} heads and hidden_size {dim}; dllm needs "
            "head_dim * heads = hidden_size.")
    return ModelArgs(
        family=family,
        vocab_size=int(_need(cfg, "vocab_size", name)),
        dim=dim,
        n_layers=int(_need(cfg, "num_hidden_layers", name)),
        n_heads=n_heads,
        n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
        intermediate_size=int(_need(cfg, "intermediate_size", name)),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        max_seq_len=int(cfg.get("max_position_embeddings", 2048 if family == "llama" else 32768)),
        mask_token_id=-1,
        eos_token_ids=_ids(cfg.get("eos_token_id")),
        pad_token_id=cfg.get("pad_token_id") if isinstance(cfg.get("pad_token_id"), int) else None,
        qkv_bias=qkv_bias,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        rope_fp32=False,     # HF Llama/Qwen2: cos/sin rounded to the model dtype, rotation in that dtype
        causal=True,
    )


def llama_args(cfg: dict) -> ModelArgs:
    """Llama-family config.json (model_type "llama": Llama 2/3 without rope scaling, SmolLM, TinyLlama)."""
    if cfg.get("attention_bias"):
        # HF Llama's attention_bias also puts a bias on o_proj, which dllm's transformer does not have
        raise ModelLoadError("config.json has attention_bias=true, which dllm does not support for Llama models.")
    return _causal_args(cfg, "llama", "Llama", qkv_bias=False)


def qwen2_args(cfg: dict) -> ModelArgs:
    """Qwen2-family config.json (model_type "qwen2": Qwen2, Qwen2.5): q/k/v biases, no o_proj bias."""
    if cfg.get("use_sliding_window"):
        raise ModelLoadError("config.json has use_sliding_window=true; dllm supports only full attention for Qwen2 models.")
    return _causal_args(cfg, "qwen2", "Qwen2", qkv_bias=True)


FAMILIES = {"llada": llada_args, "dream": dream_args, "llama": llama_args, "qwen2": qwen2_args}
# the block-diffusion families (SDAR, LLaDA2.x, Fast-dLLM v2) live in their own file
from dllm.models.block_families import BLOCK_FAMILIES, REFUSED  # noqa: E402  (needs ModelArgs above)

FAMILIES.update(BLOCK_FAMILIES)


def args_from_config(cfg: dict) -> ModelArgs:
    model_type = str(cfg.get("model_type", ""))
    family = model_type.lower()
    if family in REFUSED:
        raise ModelLoadError(REFUSED[family])
    if family not in FAMILIES:
        raise ModelLoadError(
            f"unknown model_type {model_type!r} in config.json; dllm loads 'llada', 'Dream', 'llama', 'qwen2', "
            "'sdar', 'llada2_moe' and 'Fast_dLLM_Qwen' checkpoints.")
    args = FAMILIES[family](cfg)
    if (args.dim % args.n_heads and not args.head_size) or args.n_heads % args.n_kv_heads:
        raise ModelLoadError(
            f"config.json has inconsistent attention shapes (dim {args.dim}, heads {args.n_heads}, "
            f"kv heads {args.n_kv_heads}).")
    return args
