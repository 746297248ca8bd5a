"""Mask and EOS ids of the block-diffusion families, from wherever the published directory has them.

Order (issue 23): config.json (read by models/block_families.py) -> generation_config.json ->
the tokenizer's special tokens (tokenizer_config / special_tokens_map `mask_token`, `eos_token`) ->
the family's published constants (block_families.FAMILY_IDS; LLaDA2's loops hard-code them).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dllm.errors import ModelLoadError
from dllm.models.block_families import FAMILY_IDS
from dllm.models.config import ModelArgs


def _generation_config(path: Path) -> dict:
    f = path / "generation_config.json"
    try:
        data = json.loads(f.read_text()) if f.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _as_ids(v) -> tuple:
    vals = v if isinstance(v, list) else [v]
    return tuple(int(i) for i in vals if isinstance(i, int) and not isinstance(i, bool))


def resolve_special_ids(args: ModelArgs, path, tokenizer) -> ModelArgs:
    """args with mask_token_id and eos_token_ids filled in for a block-causal family (others unchanged)."""
    if not args.block_causal:
        return args
    path = Path(path)
    gen = _generation_config(path) if path.is_dir() else {}
    const_mask, const_eos = FAMILY_IDS[args.family]
    named = getattr(tokenizer, "_template_tokens", {}) if tokenizer is not None else {}

    def tok_id(attr):
        text = named.get(attr)
        return tokenizer.token_to_id(text) if text else None

    mask = args.mask_token_id
    for candidate in (_as_ids(gen.get("mask_token_id")), (tok_id("mask_token"),), (const_mask,)):
        if mask >= 0:
            break
        mask = next((i for i in candidate if i is not None), -1)
    eos = args.eos_token_ids
    for candidate in (_as_ids(gen.get("eos_token_id")), _as_ids(tok_id("eos_token")), const_eos):
        if eos:
            break
        eos = tuple(candidate)
    if not 0 <= mask < args.vocab_size:
        raise ModelLoadError(f"the mask token id {mask} of this {args.family} checkpoint is outside its vocabulary "
                             f"of {args.vocab_size}; set mask_token_id in config.json.")
    eos = tuple(e for e in eos if 0 <= e < args.vocab_size and e != mask)
    return dataclasses.replace(args, mask_token_id=mask, eos_token_ids=eos)
