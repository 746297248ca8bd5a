"""Prompts -> token ids, and infilling templates -> initial answer slots (checked before anything runs)."""
from __future__ import annotations

from dllm.errors import PromptError, TokenizerError


def encode(prompt, tokenizer, vocab_size: int, apply_chat_template: bool, name: str) -> list[int]:
    """A string, {"prompt_token_ids": [...]} or {"prompt": ...} -> token ids (chat template optional)."""
    if isinstance(prompt, dict):
        if "prompt_token_ids" in prompt:
            ids = prompt["prompt_token_ids"]
            if not isinstance(ids, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise PromptError("prompt_token_ids must be a list of integers.")
            ids = list(ids)
        elif "prompt" in prompt:
            return encode(prompt["prompt"], tokenizer, vocab_size, apply_chat_template, name)
        else:
            raise PromptError("a dict prompt needs a 'prompt' or 'prompt_token_ids' key.")
    elif isinstance(prompt, str):
        if tokenizer is None:
            raise TokenizerError(f"{name!r} has no tokenizer files, so text prompts cannot be encoded; pass "
                                 "{'prompt_token_ids': [...]} instead.")
        if apply_chat_template and tokenizer.chat_template:
            ids = tokenizer.encode_chat([{"role": "user", "content": prompt}])
        else:
            ids = tokenizer.encode(prompt)
    else:
        raise PromptError(f"a prompt must be a string or a dict, got {type(prompt).__name__}.")
    if not ids:
        raise PromptError("a prompt is empty; give at least one token.")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise PromptError(f"token id {bad[0]} is outside the model's vocabulary (0..{vocab_size - 1}).")
    return ids


def template(prompt, n: int, tokenizer, mask_id: int, end: int, name: str):
    """{"template": [fixed text | gap length, ...]} -> the n initial answer slots (mask id in the gaps,
    `end` after the template), or None without a template."""
    tpl = prompt.get("template") if isinstance(prompt, dict) else None
    if tpl is None:
        return None
    if not isinstance(tpl, (list, tuple)) or not tpl or not all(
            isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool) and p > 0) for p in tpl):
        raise PromptError("a template is a non-empty list of fixed strings and positive gap lengths.")
    gaps = sum(p for p in tpl if not isinstance(p, str))
    if gaps > n:   # checked before any list is built: a gap of 10**9 must not allocate 10**9 slots
        raise PromptError(f"the template's gaps need {gaps} answer tokens but max_new_tokens is {n}.")
    if tokenizer is None:
        raise TokenizerError(f"{name!r} has no tokenizer files, so a template's text cannot be encoded.")
    slots = []
    for part in tpl:
        slots += tokenizer.encode(part, add_special_tokens=False) if isinstance(part, str) else [mask_id] * part
        if len(slots) > n:
            raise PromptError(f"the template needs more than {n} answer tokens but max_new_tokens is {n}.")
    return slots + [end] * (n - len(slots))
