"""Autoregressive architectures dllm's own transformer does not implement (GPT-2, Phi, Gemma, ...)
run through transformers' AutoModelForCausalLM, from local safetensors files only: no download,
no trust_remote_code, no pickle.

HFCausal adapts the Hugging Face model to dllm's forward signature, so the autoregressive loop
(engine/autoregressive.py: sampling, stop tokens, batches, constraint masks, streaming) is the
same for every causal model. The keys/values live in transformers' own cache object; the dllm
KVCache the loop passes only says where the window starts (start == 0: a new prefill).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dllm.errors import ModelLoadError
from dllm.models.config import ModelArgs


class HFCausal(nn.Module):
    def __init__(self, hf):
        super().__init__()
        self.hf = hf
        self.past = None

    @torch.no_grad()
    def forward(self, token_ids, positions, cache=None, query_slice=None, attn_mask=None):
        """token_ids, positions [B, T] -> logits [B, Q, V]. attn_mask: None, [B, T, T] (prefill:
        causal & key valid) or [B, keys] (decode: key valid)."""
        from transformers import DynamicCache

        B, T = token_ids.shape
        start = 0 if cache is None else cache.start
        if start == 0:
            self.past = DynamicCache()
        if attn_mask is None:
            keys = torch.ones(B, start + T, dtype=torch.long, device=token_ids.device)
        elif attn_mask.dim() == 3:
            keys = attn_mask[:, -1, :].long()          # the last query sees every valid key
        else:
            keys = attn_mask.long()
        out = self.hf(input_ids=token_ids, attention_mask=keys, position_ids=positions,
                      past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        logits = out.logits
        return logits if query_slice is None else logits[:, query_slice]


# config.json size fields of the architectures transformers builds (GPT-2, Phi, Gemma, ...), bounded
# before transformers allocates anything: a layer count of 10**6 would otherwise hang the load
_SIZES = {**dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers"), "[1, 4096]"),
          **dict.fromkeys(("hidden_size", "n_embd", "d_model"), "[1, 131072]"),
          **dict.fromkeys(("num_attention_heads", "n_head", "num_key_value_heads"), "[1, 4096]"),
          **dict.fromkeys(("intermediate_size", "n_inner", "ffn_dim"), "[1, 1048576]"),
          "vocab_size": "[1, 16777216]",
          **dict.fromkeys(("max_position_embeddings", "n_positions", "n_ctx"), "[1, 16777216]")}


def _check_sizes(cfg: dict, path, device, dtype, headers: dict) -> None:
    """The size fields in range, and the weights (counted on the meta device) within memory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from dllm.limits import require_memory
    from dllm.models.config import check_field

    for key, interval in _SIZES.items():
        if cfg.get(key) is not None:
            check_field(key, cfg[key], "int", interval)
    config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in meta.parameters())
    _check_weight_dtypes(meta, headers)
    stored = sum(int(torch.Size(shape).numel()) for _, shape, _ in headers.values())
    require_memory(max(n, stored) * torch.empty((), dtype=dtype).element_size(), device,
                   f"the weights of this model ({max(n, stored):,} parameters)", error=ModelLoadError)


def _check_weight_dtypes(meta, headers: dict) -> None:
    """A stored tensor that is one of the model's parameters must be floating point: transformers would
    cast a quantised int8 weight to float and run it as garbage. Integer or boolean buffers (GPT-J's
    causal mask, position ids) are the architecture's own and pass."""
    from dllm.models.loader import FLOAT_DTYPES

    params = {name for name, _ in meta.named_parameters()}
    prefix = meta.base_model_prefix + "."
    for key, (file, _, dtype) in headers.items():
        names = {key, prefix + key, key.removeprefix(prefix)}
        if dtype not in FLOAT_DTYPES and names & params:
            raise ModelLoadError(f"tensor {key!r} in {Path(file).name} is stored as {dtype}; models loaded "
                                 "through transformers are loaded from floating-point weights only (quantised "
                                 "or integer weights are not supported).")


def load_hf_causal(path, cfg: dict, device, dtype, headers: dict) -> tuple[HFCausal, ModelArgs]:
    """headers: {tensor name: (file, shape, dtype)} of the safetensors files (loader.read_headers)."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise ModelLoadError(
            f"model_type {cfg.get('model_type')!r} is loaded through transformers, which is not installed "
            "(pip install transformers).") from None
    try:
        _check_sizes(cfg, path, device, dtype, headers)
        hf = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, trust_remote_code=False,
                                                  use_safetensors=True, dtype=dtype)
    except ModelLoadError:
        raise
    except Exception as e:   # transformers raises many types for a model it cannot build
        raise ModelLoadError(f"transformers could not load {str(path)!r} offline: {str(e).splitlines()[0]}") from None
    hf = hf.to(device).eval()
    c = hf.config
    V = int(hf.get_output_embeddings().weight.shape[0])
    eos = c.eos_token_id
    eos = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (eos,))
    pad = c.pad_token_id
    if not all(isinstance(e, int) and 0 <= e < V for e in eos) or not (pad is None or isinstance(pad, int)):
        raise ModelLoadError(f"config.json of {str(path)!r} has end-of-sequence or pad ids that are not token ids "
                             f"of its {V}-token vocabulary.")
    max_len = getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None) or 2048
    args = ModelArgs(
        family=f"hf-{c.model_type}", vocab_size=V, dim=1,
        n_layers=0, n_heads=1, n_kv_heads=1, intermediate_size=1, norm_eps=0.0, rope_theta=0.0,
        max_seq_len=int(max_len), mask_token_id=-1, eos_token_ids=eos,
        pad_token_id=pad if pad is not None and 0 <= pad < V else None, causal=True)
    return HFCausal(hf), args
