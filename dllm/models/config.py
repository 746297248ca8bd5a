"""ModelArgs: one config shape for every family, built from the published config.json fields."""
from __future__ import annotations

import math
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
    # ---- block-diffusion families (SDAR, LLaDA2.x, Fast-dLLM v2; docs/specs/block-diffusion.md) ----
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


# ---- the field spec -------------------------------------------------------------------------------
# Every config.json field dllm reads: its kind and the interval it must lie in. The bounds hold every
# published checkpoint with room to spare; sizes in range whose weights would not fit in memory are
# refused by the loader's memory check (dllm/limits.py), before anything is allocated.
_SIZE, _HEADS, _LAYERS, _VOCAB = "[1, 131072]", "[1, 4096]", "[1, 4096]", "[1, 16777216]"
FIELDS = {
    **dict.fromkeys(("d_model", "hidden_size"), ("int", _SIZE)),
    **dict.fromkeys(("n_heads", "num_attention_heads", "n_kv_heads", "num_key_value_heads", "head_dim"),
                    ("int", _HEADS)),
    **dict.fromkeys(("n_layers", "num_hidden_layers"), ("int", _LAYERS)),
    **dict.fromkeys(("mlp_hidden_size", "intermediate_size"), ("int", "[1, 1048576]")),
    **dict.fromkeys(("vocab_size", "embedding_size"), ("int", _VOCAB)),
    **dict.fromkeys(("max_sequence_length", "max_position_embeddings"), ("int", "[1, 1099511627776]")),
    "mlp_ratio": ("float", "(0, 1024]"),
    "rms_norm_eps": ("float", "(0, 1)"),
    "rope_theta": ("float", "(0, 1e15]"),
    "partial_rotary_factor": ("float", "(0, 1]"),
    "mask_token_id": ("int", "[0, 16777216)"),
    "pad_token_id": ("int", "[-1, 16777216)"),          # -1: none, as some Llama exports write it
    "eos_token_id": ("ids", "[0, 16777216)"),
    **dict.fromkeys(("include_qkv_bias", "weight_tying", "rope_full_precision", "input_emb_norm", "scale_logits",
                     "tie_word_embeddings", "multi_query_attention", "include_bias", "alibi", "rope",
                     "use_sliding_window", "attention_bias", "mlp_bias"), ("bool", None)),
    **dict.fromkeys(("block_type", "layer_norm_type", "activation_type", "hidden_act"), ("str", None)),
}
_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "ids": "a token id or a list of token ids"}


def in_interval(v, spec: str) -> bool:
    """v in an interval written "[a, b]", "(a, b)" or half-open; "inf" is unbounded."""
    lo, hi = (float(x) for x in spec[1:-1].split(","))
    return (lo <= v if spec[0] == "[" else lo < v) and (v <= hi if spec[-1] == "]" else v < hi)


def check_field(key: str, v, kind: str, interval: str | None, where: str = "config.json"):
    """v as `kind`, inside `interval`, or ModelLoadError saying which field of `where` is wrong."""
    ok_int = isinstance(v, int) and not isinstance(v, bool)
    if kind == "int":
        ok = ok_int
    elif kind == "float":
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    elif kind == "ids":
        ok = ok_int or (isinstance(v, list) and bool(v) and all(isinstance(e, int) and not isinstance(e, bool)
                                                                  for e in v))
    else:
        ok = isinstance(v, {"bool": bool, "str": str}[kind])
    values = v if kind == "ids" and isinstance(v, list) else [v]
    if not ok or (interval is not None and not all(in_interval(e, interval) for e in values)):
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
        raise ModelLoadError(f"{where} has {key}={shown}; it must be {_KIND_WORDS[kind]}"
                             f"{f' in {interval}' if interval else ''}.")
    return v


def _get(cfg: dict, key: str, default=None, *, family: str | None = None):
    """Field `key` of config.json checked against FIELDS; null or absent -> default, or an error
    when `family` is given (a field that family needs)."""
    v = cfg.get(key)
    if v is None:
        if family is not None:
            raise ModelLoadError(f"config.json of this {family} checkpoint has no {key!r} field.")
        return default
    kind, interval = FIELDS[key]
    return check_field(key, v, kind, interval)


def _ids(v) -> tuple:
    if v is None:
        return ()
    return tuple(v) if isinstance(v, list) else (v,)


def _pad(v):
    return None if v is None or v < 0 else v


def llada_args(cfg: dict) -> ModelArgs:
    """LLaDA's config.json (OLMo-style field names, model_type "llada")."""
    refuse = {
        "block_type": ("llama", "only LLaDA's 'llama' block is supported"),
        "layer_norm_type": ("rms", "only RMSNorm is supported"),
        "activation_type": ("silu", "only the SiLU-gated MLP is supported"),
    }
    for key, (want, why) in refuse.items():
        if _get(cfg, key, want) != want:
            raise ModelLoadError(f"config.json has {key}={cfg[key]!r}; {why}.")
    if _get(cfg, "alibi", False) or _get(cfg, "rope", True) is False:
        raise ModelLoadError("config.json asks for ALiBi or no RoPE; only rotary position embeddings are supported.")
    if _get(cfg, "include_bias", False):
        raise ModelLoadError("config.json has include_bias=true, which no published LLaDA checkpoint uses and dllm does not support.")
    d_model = _get(cfg, "d_model", family="LLaDA")
    n_heads = _get(cfg, "n_heads", family="LLaDA")
    n_kv = 1 if _get(cfg, "multi_query_attention", False) else _get(cfg, "n_kv_heads", n_heads)
    hidden = _get(cfg, "mlp_hidden_size") or int(_get(cfg, "mlp_ratio", 4) * d_model)
    if not 1 <= hidden <= 1 << 20:
        raise ModelLoadError(f"config.json implies an MLP width of {hidden}; it must be in [1, 1048576].")
    return ModelArgs(
        family="llada",
        vocab_size=_get(cfg, "embedding_size") or _get(cfg, "vocab_size", family="LLaDA"),
        dim=d_model,
        n_layers=_get(cfg, "n_layers", family="LLaDA"),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        intermediate_size=hidden,
        norm_eps=float(_get(cfg, "rms_norm_eps", 1e-5)),
        rope_theta=float(_get(cfg, "rope_theta", 10000.0)),
        max_seq_len=_get(cfg, "max_sequence_length", 4096),
        mask_token_id=_get(cfg, "mask_token_id", 126336),
        eos_token_ids=_ids(_get(cfg, "eos_token_id", 126081)),
        pad_token_id=_pad(_get(cfg, "pad_token_id")),
        qkv_bias=_get(cfg, "include_qkv_bias", False),
        tie_embeddings=_get(cfg, "weight_tying", False),
        rope_fp32=_get(cfg, "rope_full_precision", True),
        input_emb_scale=_get(cfg, "input_emb_norm", False),
        scale_logits=_get(cfg, "scale_logits", False),
    )


def dream_args(cfg: dict) -> ModelArgs:
    """Dream's config.json (Qwen2 field names, model_type "Dream")."""
    if cfg.get("rope_scaling"):
        raise ModelLoadError("config.json sets rope_scaling; only plain RoPE is supported for Dream checkpoints.")
    if _get(cfg, "hidden_act", "silu") != "silu":
        raise ModelLoadError(f"config.json has hidden_act={cfg['hidden_act']!r}; only 'silu' is supported.")
    n_heads = _get(cfg, "num_attention_heads", family="Dream")
    return ModelArgs(
        family="dream",
        vocab_size=_get(cfg, "vocab_size", family="Dream"),
        dim=_get(cfg, "hidden_size", family="Dream"),
        n_layers=_get(cfg, "num_hidden_layers", family="Dream"),
        n_heads=n_heads,
        n_kv_heads=_get(cfg, "num_key_value_heads", n_heads),
        intermediate_size=_get(cfg, "intermediate_size", family="Dream"),
        norm_eps=float(_get(cfg, "rms_norm_eps", 1e-6)),
        rope_theta=float(_get(cfg, "rope_theta", 10000.0)),
        max_seq_len=_get(cfg, "max_position_embeddings", 32768),
        mask_token_id=_get(cfg, "mask_token_id", 151666),
        eos_token_ids=_ids(_get(cfg, "eos_token_id", 151643)),
        pad_token_id=_pad(_get(cfg, "pad_token_id")),
        qkv_bias=True,
        tie_embeddings=_get(cfg, "tie_word_embeddings", False),
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
    merged = {**{k: params[k] for k in ("partial_rotary_factor", "rope_theta") if k in params},
              **{k: cfg[k] for k in ("partial_rotary_factor", "rope_theta") if cfg.get(k) is not None}}
    if _get(merged, "partial_rotary_factor", 1.0) != 1.0:
        raise ModelLoadError(f"config.json sets partial_rotary_factor; dllm rotates the full head dimension of {family} models.")
    return float(_get(merged, "rope_theta", 10000.0))


def _causal_args(cfg: dict, family: str, name: str, qkv_bias: bool) -> ModelArgs:
    """Shared part of the autoregressive Hugging Face families (Llama, Qwen2): same field names,
    rotate-half RoPE in the model dtype (rope_fp32=False), causal attention, no mask token."""
    if _get(cfg, "hidden_act", "silu") != "silu":
        raise ModelLoadError(f"config.json has hidden_act={cfg['hidden_act']!r}; only 'silu' is supported.")
    if _get(cfg, "mlp_bias", False):
        raise ModelLoadError(f"config.json has mlp_bias=true, which dllm does not support for {name} models.")
    theta = _plain_rope(cfg, name)
    dim = _get(cfg, "hidden_size", family=name)
    n_heads = _get(cfg, "num_attention_heads", family=name)
    head_dim = _get(cfg, "head_dim")
    if head_dim is not None and head_dim * n_heads != dim:
        raise ModelLoadError(
            f"config.json has head_dim={head_dim} with {n_heads} heads and hidden_size {dim}; dllm needs "
            "head_dim * heads = hidden_size.")
    return ModelArgs(
        family=family,
        vocab_size=_get(cfg, "vocab_size", family=name),
        dim=dim,
        n_layers=_get(cfg, "num_hidden_layers", family=name),
        n_heads=n_heads,
        n_kv_heads=_get(cfg, "num_key_value_heads", n_heads),
        intermediate_size=_get(cfg, "intermediate_size", family=name),
        norm_eps=float(_get(cfg, "rms_norm_eps", 1e-6)),
        rope_theta=theta,
        max_seq_len=_get(cfg, "max_position_embeddings", 2048 if family == "llama" else 32768),
        mask_token_id=-1,
        eos_token_ids=_ids(_get(cfg, "eos_token_id")),
        pad_token_id=_pad(_get(cfg, "pad_token_id")),
        qkv_bias=qkv_bias,
        tie_embeddings=_get(cfg, "tie_word_embeddings", False),
        rope_fp32=False,     # HF Llama/Qwen2: cos/sin rounded to the model dtype, rotation in that dtype
        causal=True,
    )


def llama_args(cfg: dict) -> ModelArgs:
    """Llama-family config.json (model_type "llama": Llama 2/3 without rope scaling, SmolLM, TinyLlama)."""
    if _get(cfg, "attention_bias", False):
        # HF Llama's attention_bias also puts a bias on o_proj, which dllm's transformer does not have
        raise ModelLoadError("config.json has attention_bias=true, which dllm does not support for Llama models.")
    return _causal_args(cfg, "llama", "Llama", qkv_bias=False)


def qwen2_args(cfg: dict) -> ModelArgs:
    """Qwen2-family config.json (model_type "qwen2": Qwen2, Qwen2.5): q/k/v biases, no o_proj bias."""
    if _get(cfg, "use_sliding_window", False):
        raise ModelLoadError("config.json has use_sliding_window=true; dllm supports only full attention for Qwen2 models.")
    return _causal_args(cfg, "qwen2", "Qwen2", qkv_bias=True)


FAMILIES = {"llada": llada_args, "dream": dream_args, "llama": llama_args, "qwen2": qwen2_args}
# the block-diffusion families (SDAR, LLaDA2.x, Fast-dLLM v2) live in their own file
from dllm.models.block_families import BLOCK_FAMILIES, REFUSED  # noqa: E402  (needs ModelArgs above)

FAMILIES.update(BLOCK_FAMILIES)


def args_from_config(cfg: dict) -> ModelArgs:
    model_type = cfg.get("model_type", "")
    family = model_type.lower() if isinstance(model_type, str) else ""
    if family in REFUSED:
        raise ModelLoadError(REFUSED[family])
    if family not in FAMILIES:
        raise ModelLoadError(
            f"unknown model_type {model_type!r} in config.json; dllm loads 'llada', 'Dream', 'llama', 'qwen2', "
            "'sdar', 'llada2_moe' and 'Fast_dLLM_Qwen' checkpoints.")
    return check_args(FAMILIES[family](cfg))


def check_args(args: ModelArgs, where: str = "config.json") -> ModelArgs:
    """What must hold between the fields, whatever file they came from (config.json, GGUF metadata)."""
    if (args.dim % args.n_heads and not args.head_size) or args.n_heads % args.n_kv_heads or args.head_dim % 2:
        raise ModelLoadError(
            f"{where} has inconsistent attention shapes (dim {args.dim}, heads {args.n_heads}, kv heads "
            f"{args.n_kv_heads}): dim must be heads x an even head size (or head_dim given), and heads a "
            "multiple of kv heads.")
    V = args.vocab_size
    # a block-diffusion family may leave its mask id to generation_config / the tokenizer (special_ids.py)
    named = [("mask_token_id", args.mask_token_id)] if not args.causal and args.mask_token_id >= 0 else []
    named += [("eos_token_id", e) for e in args.eos_token_ids]
    named += [("pad_token_id", args.pad_token_id)] if args.pad_token_id is not None else []
    for key, idx in named:
        if not 0 <= idx < V:
            raise ModelLoadError(f"{where} has {key} {idx}, outside the vocabulary of {V} tokens.")
    return args
