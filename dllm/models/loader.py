"""Load a local checkpoint directory in the published Hugging Face layout, offline.

config.json picks the family; weights come from *.safetensors (sharded with
model.safetensors.index.json or not), one tensor at a time into a model allocated once in the
target dtype/device, so no second full copy is ever held. Pickle files are refused.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from dllm.errors import ModelLoadError, UnsupportedError
from dllm.models.block_families import REFUSED
from dllm.models.config import FAMILIES, ModelArgs, args_from_config
from dllm.models.transformer import Transformer

# checkpoint name -> dllm name, per family; {i} is the layer index
_LLADA = {
    "model.transformer.wte.weight": "tok_embeddings.weight",
    "model.transformer.ln_f.weight": "norm.weight",
    "model.transformer.ff_out.weight": "output.weight",
    "model.transformer.blocks.{i}.q_proj.weight": "layers.{i}.attention.wq.weight",
    "model.transformer.blocks.{i}.q_proj.bias": "layers.{i}.attention.wq.bias",
    "model.transformer.blocks.{i}.k_proj.weight": "layers.{i}.attention.wk.weight",
    "model.transformer.blocks.{i}.k_proj.bias": "layers.{i}.attention.wk.bias",
    "model.transformer.blocks.{i}.v_proj.weight": "layers.{i}.attention.wv.weight",
    "model.transformer.blocks.{i}.v_proj.bias": "layers.{i}.attention.wv.bias",
    "model.transformer.blocks.{i}.attn_out.weight": "layers.{i}.attention.wo.weight",
    "model.transformer.blocks.{i}.attn_norm.weight": "layers.{i}.attention_norm.weight",
    "model.transformer.blocks.{i}.ff_norm.weight": "layers.{i}.ffn_norm.weight",
    "model.transformer.blocks.{i}.ff_proj.weight": "layers.{i}.feed_forward.w1.weight",
    "model.transformer.blocks.{i}.up_proj.weight": "layers.{i}.feed_forward.w3.weight",
    "model.transformer.blocks.{i}.ff_out.weight": "layers.{i}.feed_forward.w2.weight",
}
_DREAM = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
    **{f"model.layers.{{i}}.self_attn.{p}_proj.{t}": f"layers.{{i}}.attention.w{p}.{t}"
       for p in "qkv" for t in ("weight", "bias")},
    "model.layers.{i}.self_attn.o_proj.weight": "layers.{i}.attention.wo.weight",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.attention_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "layers.{i}.feed_forward.w1.weight",
    "model.layers.{i}.mlp.up_proj.weight": "layers.{i}.feed_forward.w3.weight",
    "model.layers.{i}.mlp.down_proj.weight": "layers.{i}.feed_forward.w2.weight",
}
# SDAR (Qwen3 names): Qwen2's plus QK-norm and, with attention_bias, an o_proj bias
_SDAR = {
    **_DREAM,
    "model.layers.{i}.self_attn.o_proj.bias": "layers.{i}.attention.wo.bias",
    "model.layers.{i}.self_attn.q_norm.weight": "layers.{i}.attention.q_norm.weight",
    "model.layers.{i}.self_attn.k_norm.weight": "layers.{i}.attention.k_norm.weight",
}
# LLaDA2.x (dInfer modeling_llada2_moe.py): one fused q|k|v matrix, dense first layer(s), then experts ({j})
_LLADA2 = {
    "model.word_embeddings.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.attention_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.ffn_norm.weight",
    "model.layers.{i}.attention.query_key_value.weight": "layers.{i}.attention.wqkv.weight",
    "model.layers.{i}.attention.query_key_value.bias": "layers.{i}.attention.wqkv.bias",
    "model.layers.{i}.attention.query_layernorm.weight": "layers.{i}.attention.q_norm.weight",
    "model.layers.{i}.attention.key_layernorm.weight": "layers.{i}.attention.k_norm.weight",
    "model.layers.{i}.attention.dense.weight": "layers.{i}.attention.wo.weight",
    "model.layers.{i}.attention.dense.bias": "layers.{i}.attention.wo.bias",
    "model.layers.{i}.mlp.gate.weight": "layers.{i}.feed_forward.gate.weight",
    "model.layers.{i}.mlp.gate.expert_bias": "layers.{i}.feed_forward.expert_bias",
    **{f"model.layers.{{i}}.mlp.{src}{p}_proj.weight": f"layers.{{i}}.feed_forward.{dst}{w}.weight"
       for src, dst in (("", ""), ("shared_experts.", "shared."), ("experts.{j}.", "experts.{j}."))
       for p, w in (("gate", "w1"), ("up", "w3"), ("down", "w2"))},
}
# Hugging Face Llama and Qwen2 use Dream's (Qwen2's) tensor names; q/k/v biases only where the config
# has them; Fast-dLLM v2 is Qwen2.5
WEIGHT_MAPS = {"llada": _LLADA, "dream": _DREAM, "llama": _DREAM, "qwen2": _DREAM,
               "sdar": _SDAR, "llada2": _LLADA2, "fast_dllm": _DREAM}
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")  # recomputed buffers some exports carry


def _compile(name_map: dict):
    out = {}
    for src, dst in name_map.items():
        pattern = "^" + re.escape(src).replace(re.escape("{i}"), r"(?P<i>\d+)").replace(re.escape("{j}"), r"(?P<j>\d+)") + "$"
        out[re.compile(pattern)] = dst
    return out


def rename(key: str, family: str) -> str | None:
    """Checkpoint tensor name -> dllm parameter name (None when the name is not known); {i} is the
    layer index, {j} the expert index."""
    for pattern, dst in _COMPILED[family].items():
        m = pattern.match(key)
        if m:
            for k, v in m.groupdict().items():
                dst = dst.replace("{" + k + "}", v)
            return dst
    return None


_COMPILED = {f: _compile(m) for f, m in WEIGHT_MAPS.items()}


def read_config(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model path {str(path)!r} does not exist.")
    if path.is_file():
        if path.suffix == ".gguf":   # load_model reads these itself; read_config has no config.json to give
            raise UnsupportedError("a GGUF file has no config.json; load it with load_model or LLM.")
        raise ModelLoadError(f"{str(path)!r} is a file; give the checkpoint directory that holds config.json.")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"{str(path)!r} has no config.json; it is not a Hugging Face checkpoint directory.")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"config.json in {str(path)!r} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}).") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"config.json in {str(path)!r} is not a JSON object.")
    return cfg


# safetensors files that dllm's tools save into a checkpoint directory and that hold no model
# weights (schedulers/learned_filter.py FILTER_FILE: the `dllm train-filter` MLP)
SIDE_FILES = frozenset({"learned_filter.safetensors"})


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ModelLoadError(f"{index.name} in {str(path)!r} is not a valid safetensors index.") from None
        files = [path / f for f in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"the checkpoint index names shard {missing[0]!r}, which is not in {str(path)!r}.")
        return files
    files = sorted(f for f in path.glob("*.safetensors") if f.name not in SIDE_FILES)
    if files:
        return files
    if list(path.glob("*.bin")) or list(path.glob("*.pt")) or list(path.glob("*.pth")):
        raise ModelLoadError(
            f"{str(path)!r} holds only pickle weights (e.g. pytorch_model.bin); dllm never loads pickle files, "
            "convert them to safetensors first.")
    raise ModelLoadError(f"{str(path)!r} has no *.safetensors weight files.")


def is_causal_lm(cfg: dict) -> bool:
    """config.json names a Hugging Face causal-LM class (architectures ...ForCausalLM / ...LMHeadModel)."""
    return any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in cfg.get("architectures") or [])


def load_model(path, device="cpu", dtype=torch.float32) -> tuple[Transformer, ModelArgs]:
    from safetensors import safe_open

    path = Path(path)
    if path.suffix == ".gguf" and path.is_file():   # llama.cpp's single-file format (models/gguf.py)
        from dllm.models.gguf import load_gguf_model

        return load_gguf_model(path, device, dtype)
    cfg = read_config(path)
    if str(cfg.get("model_type", "")).lower() in REFUSED:   # published variants dllm refuses by name
        raise ModelLoadError(REFUSED[str(cfg["model_type"]).lower()])
    if str(cfg.get("model_type", "")).lower() not in FAMILIES and is_causal_lm(cfg):
        weight_files(path)   # safetensors only: refuses pickle-only directories like every other load
        from dllm.models.hf_fallback import load_hf_causal

        return load_hf_causal(path, cfg, device, dtype)
    args = args_from_config(cfg)
    files = weight_files(path)
    with torch.device("meta"):
        model = Transformer(args)
    model = model.to(dtype=dtype)
    model.keep_fp32()   # e.g. the MoE expert bias stays float32 (models/moe.py)
    model = model.to_empty(device=device)
    params = model.named_weights()   # the fused projections as views of their row ranges
    loaded: set[str] = set()
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for key in f.keys():
                    name = rename(key, args.family)
                    if name is None or name not in params:
                        if _IGNORED.match(key):
                            continue
                        if args.causal and args.tie_embeddings and key == "lm_head.weight":
                            continue   # some tied Llama/Qwen2 exports also save the head: it is the embedding
                        raise ModelLoadError(
                            f"{file.name} holds tensor {key!r}, which is not a weight of a {args.family} model "
                            "with this config.json.")
                    tensor = f.get_tensor(key)
                    if tuple(tensor.shape) != tuple(params[name].shape):
                        raise ModelLoadError(
                            f"tensor {key!r} in {file.name} has shape {tuple(tensor.shape)}, but config.json "
                            f"implies {tuple(params[name].shape)}.")
                    params[name].data.copy_(tensor)   # casts to the model dtype on the model device
                    loaded.add(name)
        except ModelLoadError:
            raise
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise ModelLoadError(f"cannot read weight file {file.name}: it is corrupt or not safetensors ({e}).") from None
    missing = sorted(set(params) - loaded)
    if missing:
        raise ModelLoadError(f"the checkpoint lacks {len(missing)} weight(s) this config needs, e.g. {missing[0]!r}.")
    model.eval()
    return model, args
