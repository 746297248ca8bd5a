"""LLMEngine: requests come and go; step() advances them and returns what changed.

# interim: replaced by the step-machine core (issue 21)
This stand-in has the API of the coming engine (add_request / step / abort), so that callers such as
`dllm serve` can be built and tested now. It has no continuous batching: step() runs the waiting
requests (at most max_num_seqs) to completion through LLM.generate, one call per group of equal
params, and returns each one finished, with the whole answer as its delta. kv_cache_memory is
accepted and ignored. Not thread-safe: call it from one thread.
"""
from __future__ import annotations

from dllm.errors import DllmError, PromptError
from dllm.outputs import GenerationStats, RequestOutput
from dllm.sampling_params import SamplingParams


class LLMEngine:
    def __init__(self, model, device=None, dtype=None, kernels=None, graphs=None, pack=None,
                 kv_cache_memory=None, max_num_seqs=None):
        from dllm.llm import LLM

        self._setup(LLM(model, device=device, dtype=dtype, kernels=kernels, graphs=graphs, pack=pack), max_num_seqs)

    @classmethod
    def from_llm(cls, llm, max_num_seqs=None) -> "LLMEngine":
        """An engine around an already loaded dllm.LLM."""
        self = cls.__new__(cls)
        self._setup(llm, max_num_seqs)
        return self

    def _setup(self, llm, max_num_seqs):
        if max_num_seqs is not None and (not isinstance(max_num_seqs, int) or max_num_seqs < 1):
            raise DllmError(f"max_num_seqs must be a positive integer, got {max_num_seqs!r}.")
        self.llm, self.max_num_seqs = llm, max_num_seqs
        self.tokenizer = llm.tokenizer
        self.max_seq_len = llm.args.max_seq_len
        self._waiting: dict[str, tuple] = {}   # request_id -> (prompt, params, apply_chat_template, prompt ids)
        self._aborted: list[RequestOutput] = []
        self.num_running = 0

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def has_unfinished_requests(self) -> bool:
        return bool(self._waiting or self._aborted)

    def add_request(self, request_id: str, prompt, params: SamplingParams, apply_chat_template: bool = False):
        """Validate now (encoding, context, constraint), raise a DllmError with one sentence, else queue."""
        if not isinstance(request_id, str) or not request_id:
            raise DllmError("request_id must be a non-empty string.")
        if request_id in self._waiting:
            raise DllmError(f"request {request_id!r} already exists.")
        if not isinstance(params, SamplingParams):
            raise DllmError("params must be a SamplingParams.")
        llm = self.llm
        ids = llm._encode(prompt, apply_chat_template)
        templated = llm._template(prompt, params.max_new_tokens) is not None
        if len(ids) + params.max_new_tokens > self.max_seq_len:
            raise PromptError(f"prompt ({len(ids)} tokens) + answer ({params.max_new_tokens}) exceeds the "
                              f"model's context of {self.max_seq_len} tokens.")
        if params.scheduler == "apd":
            llm._apd_draft(params, templated)
        llm._compile(params, templated)   # compiled DFAs are cached, so generate() reuses this one
        self._waiting[request_id] = (prompt, params, apply_chat_template, ids)

    def abort(self, request_id: str):
        """Drop a waiting request; its next output (from step()) says finish_reason='abort'. Unknown: no-op."""
        entry = self._waiting.pop(request_id, None)
        if entry is not None:
            self._aborted.append(_final(request_id, entry[3], "abort"))

    def step(self) -> list[RequestOutput]:
        outs, self._aborted = self._aborted, []
        take = list(self._waiting.items())[:self.max_num_seqs]
        for rid, _ in take:
            del self._waiting[rid]
        groups: dict = {}   # equal params (and chat flag) decode as one batch
        for rid, (prompt, params, chat, ids) in take:
            groups.setdefault((_params_key(params), chat), []).append((rid, prompt, params, ids))
        self.num_running = len(take)
        try:
            for (_, chat), reqs in groups.items():
                outs += self._run(reqs, chat)
        finally:
            self.num_running = 0
        return outs

    def _run(self, reqs, chat: bool) -> list[RequestOutput]:
        try:
            results = self.llm.generate([r[1] for r in reqs], reqs[0][2], apply_chat_template=chat)
        except DllmError as e:   # fails this group alone; the others go on
            return [_final(rid, ids, "error", error=" ".join(str(e).split())) for rid, _, _, ids in reqs]
        for (rid, _, params, _), out in zip(reqs, results):
            out.request_id, out.finished = rid, True
            out.delta_text, out.delta_token_ids = out.text or "", list(out.token_ids)
            out.canvas = list(out.token_ids) if params.trace else None   # only the final canvas here
        return results


def _final(request_id, prompt_ids, reason, error=None) -> RequestOutput:
    return RequestOutput(text="", token_ids=[], prompt_token_ids=list(prompt_ids),
                         stats=GenerationStats(prompt_tokens=len(prompt_ids)), finish_reason=reason,
                         request_id=request_id, finished=True, error=error)


def _params_key(params):
    from dllm.llm import _key

    return _key(params)
