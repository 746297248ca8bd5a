"""LLM: load a checkpoint once, generate many times (the public API): loops over the step machine."""
from __future__ import annotations

import itertools

from dllm.errors import DllmError, PromptError
from dllm.outputs import RequestOutput
from dllm.sampling_params import SamplingParams


class LLM:
    """A diffusion (or autoregressive) language model loaded from a local directory or .gguf file.

    LLM("path/to/LLaDA-8B-Instruct", device="cuda", dtype="bfloat16").generate(prompts, params)
    model: a directory, a .gguf file, or "default" (the small model shipped in models/).
    kernels: "auto" | "triton" | "torch" (default: $DLLM_KERNELS, else "auto"), see dllm/kernels.
    graphs: "auto" | "cuda" | "compile" | "none" (default: $DLLM_GRAPHS, else "auto"): how steady-state
    steps are replayed, see dllm/engine/graphs.py.
    pack: "auto" | "onednn" | "none" (default: $DLLM_PACK, else "auto"): whether the linear weights
    are packed for oneDNN, the fast CPU path (auto: on a CPU, unless graphs="compile"), see
    dllm/models/packing.py.
    kv_cache_memory: the KV pool's budget, bytes (int) or a fraction (float) of the free device memory
    (default: a quarter); requests wait until their canvas fits. max_num_seqs: most requests at once.
    """

    def __init__(self, model, device=None, dtype=None, kernels: str | None = None, graphs: str | None = None,
                 pack: str | None = None, kv_cache_memory=None, max_num_seqs: int | None = None):
        from dllm.engine.llm_engine import LLMEngine
        self.engine = LLMEngine(model, device, dtype, kernels, graphs, pack, kv_cache_memory, max_num_seqs)
        self._ids = itertools.count()

    @classmethod
    def from_model(cls, model, args, tokenizer, name: str = "<in-memory>") -> "LLM":
        """An LLM around a model object that has the engine's classic forward signature (e.g. the
        evaluation suite's exact-marginal oracles), its ModelArgs and Tokenizer (or None)."""
        from dllm.engine.llm_engine import LLMEngine
        self = cls.__new__(cls)
        self.engine = LLMEngine.from_model(model, args, tokenizer, name)
        self._ids = itertools.count()
        return self

    # what the loaded model is (read-only views of the engine's)
    model = property(lambda self: self.engine.loaded.model)
    args = property(lambda self: self.engine.loaded.args)
    tokenizer = property(lambda self: self.engine.loaded.tokenizer)
    path = property(lambda self: self.engine.loaded.path)
    device = property(lambda self: self.engine.loaded.device)
    dtype = property(lambda self: self.engine.loaded.dtype)
    kernels = property(lambda self: self.engine.loaded.kernels)
    graphs = property(lambda self: self.engine.loaded.graphs)
    packed = property(lambda self: self.engine.loaded.packed)
    stop_ids = property(lambda self: self.engine.loaded.stop_ids,
                        lambda self, ids: setattr(self.engine.loaded, "stop_ids", set(ids)))
    pad_id = property(lambda self: self.engine.loaded.pad_id)

    # ---- generation ------------------------------------------------------------------------------
    def generate(self, prompts, params: SamplingParams | list | None = None, *, apply_chat_template: bool = False,
                 on_step=None) -> list[RequestOutput]:
        """prompts: a string, a dict, or a list of them -> one RequestOutput per prompt, in order.

        params: one SamplingParams for all, or a list, one per prompt. Every request is checked (encoded,
        its constraint compiled) before any runs. on_step: for tools (e.g. train-filter), called with every
        diffusion step (schedulers.base.Step; its `rows` holds the prompt's index in `prompts`).
        """
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        if prompts is None or not isinstance(prompts, (list, tuple)):
            raise PromptError(f"prompts must be a string, a dict or a list of them, got {type(prompts).__name__}.")
        if not prompts:
            raise PromptError("the prompt list is empty; give at least one prompt.")
        per = self._params(params, len(prompts))
        ids = [f"generate-{next(self._ids)}" for _ in prompts]
        try:
            for i, (rid, prompt, p) in enumerate(zip(ids, prompts, per)):
                self.engine.add_request(rid, prompt, p, apply_chat_template, stream=False, on_step=on_step, row=i)
            done = {}
            while self.engine.has_unfinished_requests():
                for out in self.engine.step():
                    if out.finished:
                        self._raise_if_failed(out)
                        done[out.request_id] = out
        except BaseException:
            for rid in ids:
                self._drop(rid)
            raise
        return [done[rid] for rid in ids]

    def stream(self, prompt, params: SamplingParams | None = None, *, apply_chat_template: bool = False):
        """Yield RequestOutputs as the answer's text becomes final (delta_text / delta_token_ids); the last
        one has finished=True and the whole answer. Closing the generator aborts the request."""
        rid = f"stream-{next(self._ids)}"
        self.engine.add_request(rid, prompt, params or SamplingParams(), apply_chat_template)
        try:
            while True:
                for out in self.engine.step():
                    if out.request_id == rid:
                        if out.finished:
                            self._raise_if_failed(out)
                        yield out
                        if out.finished:
                            return
        finally:
            self._drop(rid)

    def chat(self, messages, params: SamplingParams | None = None) -> RequestOutput:
        """One conversation ([{"role": ..., "content": ...}, ...]) through the tokenizer's chat template
        -> its RequestOutput (vLLM's LLM.chat, for one conversation)."""
        if self.tokenizer is None:
            raise DllmError(f"{str(self.path)!r} has no tokenizer files, so it has no chat template.")
        if not isinstance(messages, (list, tuple)) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages) or not messages:
            raise PromptError("messages must be a non-empty list of {'role': str, 'content': str} dicts.")
        ids = self.tokenizer.encode_chat(list(messages))
        return self.generate({"prompt_token_ids": ids}, params)[0]

    # ---- helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _params(params, n: int) -> list:
        if params is None:
            return [SamplingParams()] * n
        if isinstance(params, SamplingParams):
            return [params] * n
        if isinstance(params, (list, tuple)) and len(params) == n and all(isinstance(p, SamplingParams) for p in params):
            return list(params)
        raise DllmError("params must be a SamplingParams or a list of them, one per prompt.")

    @staticmethod
    def _raise_if_failed(out: RequestOutput):
        if out.finish_reason == "error":   # the request's own DllmError (its type tells what failed)
            raise getattr(out, "exception", None) or DllmError(out.error)

    def _drop(self, rid: str):
        """Remove a request this call added, so an error or an early exit leaves nothing behind."""
        self.engine.discard(rid)
