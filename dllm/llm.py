"""LLM: load a checkpoint once, generate many times (the public API)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from dllm.errors import DllmError, PromptError, TokenizerError
from dllm.outputs import GenerationStats, RequestOutput
from dllm.sampling_params import SamplingParams

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype, device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise DllmError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16.")
    return _DTYPES[dtype]


def resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DllmError(f"unknown device {device!r}.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DllmError("device 'cuda' was asked for, but no CUDA GPU is available.")
    return dev


class LLM:
    """A masked-diffusion language model loaded from a local directory.

    LLM("path/to/LLaDA-8B-Instruct", device="cuda", dtype="bfloat16").generate(prompts, params)
    """

    def __init__(self, model, device=None, dtype=None):
        from dllm.models import load_model
        from dllm.tokenizer import Tokenizer

        self.path = Path(model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model, self.args = load_model(self.path, self.device, self.dtype)
        self.tokenizer = Tokenizer.from_pretrained(self.path)
        self.stop_ids = set(self.args.eos_token_ids) | self._generation_config_eos()
        if self.tokenizer is not None:
            self.stop_ids |= self.tokenizer.stop_token_ids()
        self.stop_ids.discard(self.args.mask_token_id)
        pad = self.args.pad_token_id
        self.pad_id = int(pad) if pad is not None else (min(self.stop_ids) if self.stop_ids else 0)

    def _generation_config_eos(self) -> set[int]:
        f = self.path / "generation_config.json"
        try:
            eos = json.loads(f.read_text()).get("eos_token_id") if f.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return set()
        if eos is None:
            return set()
        return {int(e) for e in (eos if isinstance(eos, list) else [eos])}

    # ---- prompts -> token ids ---------------------------------------------------------------
    def _encode(self, prompt, apply_chat_template: bool) -> list[int]:
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                ids = prompt["prompt_token_ids"]
                if not isinstance(ids, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                    raise PromptError("prompt_token_ids must be a list of integers.")
                ids = list(ids)
            elif "prompt" in prompt:
                if "template" in prompt:
                    raise DllmError("infilling templates are not available in this build of dllm yet.")
                return self._encode(prompt["prompt"], apply_chat_template)
            else:
                raise PromptError("a dict prompt needs a 'prompt' or 'prompt_token_ids' key.")
        elif isinstance(prompt, str):
            if self.tokenizer is None:
                raise TokenizerError(
                    f"{str(self.path)!r} has no tokenizer files, so text prompts cannot be encoded; pass "
                    "{'prompt_token_ids': [...]} instead.")
            if apply_chat_template and self.tokenizer.chat_template:
                ids = self.tokenizer.encode_chat([{"role": "user", "content": prompt}])
            else:
                ids = self.tokenizer.encode(prompt)
        else:
            raise PromptError(f"a prompt must be a string or a dict, got {type(prompt).__name__}.")
        if not ids:
            raise PromptError("a prompt is empty; give at least one token.")
        bad = [i for i in ids if not 0 <= i < self.args.vocab_size]
        if bad:
            raise PromptError(f"token id {bad[0]} is outside the model's vocabulary (0..{self.args.vocab_size - 1}).")
        return ids

    # ---- generation --------------------------------------------------------------------------
    def generate(self, prompts, params: SamplingParams | None = None, *, apply_chat_template: bool = False,
                 on_step=None):
        """prompts: a string, a dict, or a list of them -> one RequestOutput per prompt, in order.

        on_step: for tools (e.g. train-filter), called with every engine step (schedulers.base.Step).
        """
        from dllm.engine.diffusion import diffusion_generate

        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise DllmError("params must be a SamplingParams.")
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise PromptError("the prompt list is empty; give at least one prompt.")
        ids = [self._encode(p, apply_chat_template) for p in prompts]
        longest = max(len(i) for i in ids)
        if longest + params.max_new_tokens > self.args.max_seq_len:
            raise PromptError(
                f"prompt ({longest} tokens) + answer ({params.max_new_tokens}) exceeds the model's context "
                f"of {self.args.max_seq_len} tokens.")
        t0 = time.perf_counter()
        rows = diffusion_generate(self.model, self.args, ids, params, self.stop_ids, self.pad_id,
                                  model_path=str(self.path), on_step=on_step)
        elapsed = time.perf_counter() - t0
        return [self._output(p, r, params, elapsed) for p, r in zip(ids, rows)]

    def _output(self, prompt_ids, row, params, elapsed) -> RequestOutput:
        answer, reason = row.answer, "length"
        for i, t in enumerate(answer):
            if t in self.stop_ids:
                answer, reason = answer[:i], "eos"
                break
        text = None
        if self.tokenizer is not None:
            text = self.tokenizer.decode(answer)
            if params.stop:
                cut = min((text.find(s) for s in params.stop if s in text), default=-1)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
                    # keep the shortest token prefix whose text covers the kept text
                    n = next(n for n in range(len(answer) + 1) if len(self.tokenizer.decode(answer[:n])) >= cut)
                    answer = answer[:n]
        stats = GenerationStats(
            nfe=row.nfe, steps=row.steps, elapsed_s=elapsed, prompt_tokens=len(prompt_ids),
            answer_tokens=len(answer), tokens_per_forward=len(answer) / row.nfe if row.nfe else 0.0,
            trace=row.trace, cache_bytes=row.cache_bytes)
        return RequestOutput(text=text, token_ids=answer, prompt_token_ids=list(prompt_ids), stats=stats,
                             finish_reason=reason)
