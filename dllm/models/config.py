"""ModelArgs: one config shape for every family, built from the published config.json fields."""
from __future__ import annotations

from dataclasses import dataclass

from dllm.errors import ModelLoadError


@dataclass(frozen=True)
class ModelArgs:
    family: str              # "llada" | "dream"
    vocab_size: int          # rows of the embedding = columns of the logits
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    norm_eps: float
    rope_theta: float
    max_seq_len: int
    mask_token_id: int
    eos_token_ids: tuple = ()
    pad_token_id: int | None = None
    qkv_bias: bool = False
    tie_embeddings: bool = False
    rope_fp32: bool = False      # LLaDA rotates q/k in float32 (rope_full_precision); Dream in the model dtype
    shift_logits: bool = False   # Dream: the hidden state at i-1 scores token i
    causal: bool = False
    input_emb_scale: bool = False  # LLaDA input_emb_norm: embeddings * sqrt(dim)
    scale_logits: bool = False     # LLaDA scale_logits: logits / sqrt(dim)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


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


FAMILIES = {"llada": llada_args, "dream": dream_args}


def args_from_config(cfg: dict) -> ModelArgs:
    model_type = str(cfg.get("model_type", ""))
    family = model_type.lower()
    if family not in FAMILIES:
        raise ModelLoadError(
            f"unknown model_type {model_type!r} in config.json; dllm loads 'llada' and 'Dream' checkpoints.")
    args = FAMILIES[family](cfg)
    if args.dim % args.n_heads or args.n_heads % args.n_kv_heads:
        raise ModelLoadError(
            f"config.json has inconsistent attention shapes (dim {args.dim}, heads {args.n_heads}, "
            f"kv heads {args.n_kv_heads}).")
    return args
