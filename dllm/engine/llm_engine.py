"""LLMEngine: the request-level step machine every path runs on (LLM.generate / stream / chat, the server).

    engine.add_request(id, prompt, params)   validate now (encoding, context, constraint), then wait
    engine.step()                            admit what fits the KV pool; one forward per model over every
                                             running request's rows; each request commits; outputs of the
                                             requests whose final text changed or that finished
    engine.abort(id)                         the request leaves at the next step; its columns are reused

A request's state is its decoder (engine/diffusion.py, autoregressive.py, apd.py); the model runner
(engine/runner.py) prepares one ragged forward for all of them; the request scheduler
(engine/request_scheduler.py) admits and retires. A request that fails (a DllmError while it decodes,
e.g. a constraint that cannot be completed) finishes alone with finish_reason "error".
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

from dllm.engine.request import Request, Status, upto_stop
from dllm.engine.streaming import stop_cut
from dllm.errors import DllmError, InvalidParamsError
from dllm.outputs import GenerationStats, RequestOutput
from dllm.sampling_params import SamplingParams


@dataclass
class DecodeEnv:
    """What a decoder needs of the engine."""
    device: object
    kernels: str
    model_path: str | None
    classic: bool                  # the model runs row by row (no ragged path)
    on_step: object = None         # tools (train-filter): called with every diffusion Step
    newline_ids: object = None     # () -> the tokenizer's line-end token ids (adablock's delimiters)
    spans: bool = True             # steps may score only the block's masked span (False under recorded
                                   # graphs: every span length would be a shape of its own to record)


class LLMEngine:
    def __init__(self, model, device=None, dtype=None, kernels: str | None = None, graphs: str | None = None,
                 pack: str | None = None, kv_cache_memory=None, max_num_seqs: int | None = None):
        from dllm.engine.loading import load
        self._setup(load(model, device, dtype, kernels, graphs, pack), kv_cache_memory, max_num_seqs)

    @classmethod
    def from_model(cls, model, args, tokenizer, name: str = "<in-memory>", kv_cache_memory=None,
                   max_num_seqs: int | None = None) -> "LLMEngine":
        """An engine around a model object with the classic forward signature (e.g. the evaluation
        suite's exact-marginal oracles), its ModelArgs and Tokenizer (or None)."""
        from dllm.engine.loading import wrap
        self = cls.__new__(cls)
        self._setup(wrap(model, args, tokenizer, name), kv_cache_memory, max_num_seqs)
        return self

    @classmethod
    def from_llm(cls, llm, kv_cache_memory=None, max_num_seqs: int | None = None) -> "LLMEngine":
        """A new engine (its own queues and KV pool) around an LLM's loaded model."""
        self = cls.__new__(cls)
        self._setup(llm.engine.loaded, kv_cache_memory, max_num_seqs)
        return self

    def _setup(self, loaded, kv_cache_memory, max_num_seqs):
        from dllm.engine.kv_pool import KVPool, default_capacity
        from dllm.engine.request_scheduler import RequestScheduler
        from dllm.engine.runner import ModelRunner

        if max_num_seqs is not None and (isinstance(max_num_seqs, bool) or not isinstance(max_num_seqs, int)
                                         or max_num_seqs < 1):
            raise InvalidParamsError(f"max_num_seqs must be a positive integer, got {max_num_seqs!r}.")
        self.loaded = m = loaded
        self.kv_cache_memory = kv_cache_memory
        pool = None
        if not m.classic:
            pool = KVPool(m.args, m.dtype, m.device, default_capacity(m.args, m.dtype, m.device, kv_cache_memory))
        self.runners = {"main": ModelRunner(m.model, pool, graphs=m.graphs)}
        self.scheduler = RequestScheduler({"main": pool or _NoPool()}, max_num_seqs or 256)
        self.requests: dict[str, Request] = {}
        self._drafts: dict[str, object] = {}       # APD checkers, loaded once per path
        self._ids = itertools.count()

    # ---- the model --------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def max_seq_len(self) -> int:
        return self.loaded.args.max_seq_len

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # ---- requests -----------------------------------------------------------------------------------
    def add_request(self, request_id, prompt, params: SamplingParams | None = None, apply_chat_template: bool = False,
                    *, stream: bool = True, on_step=None, row: int = 0) -> None:
        """Validate and queue a request. stream=False: no deltas per step, only the finished output.
        on_step, row: for tools, see LLM.generate."""
        from dllm.engine.builder import build_request

        request_id = str(next(self._ids)) if request_id is None else str(request_id)
        if request_id in self.requests:
            raise DllmError(f"a request with id {request_id!r} is already running; ids must be unique.")
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise InvalidParamsError("params must be a SamplingParams.")
        req = build_request(self, request_id, prompt, params, apply_chat_template, stream, on_step, row)
        self.requests[request_id] = req
        self.scheduler.add(req)

    def abort(self, request_id) -> None:
        req = self.requests.get(str(request_id))
        if req is not None and req.finish_reason is None:
            req.finish_reason = "abort"

    def discard(self, request_id) -> None:
        """Remove a request now, without an output (LLM's cleanup after an error or a closed stream)."""
        req = self.requests.pop(str(request_id), None)
        if req is not None:
            self.scheduler.retire(req)

    def step(self) -> list[RequestOutput]:
        now = time.perf_counter()
        out: list[RequestOutput] = []
        for req in list(self.scheduler.waiting) + list(self.scheduler.running):
            if req.finish_reason == "abort":
                out.append(self._finish(req))
        for req in self.scheduler.admit(now):
            pool = self.scheduler.pools["main"]
            self._fail(req, DllmError(f"the request needs more KV-cache columns than the pool holds "
                                      f"({pool.capacity}); raise kv_cache_memory."), out)
        planned = self._plan(out)
        self._run(planned, out)
        for req in list(self.scheduler.running):
            if req.finish_reason is None:
                o = self._progress(req)
                if o is not None:
                    out.append(o)
                if self._stopped(req):   # a stop string in the final text: nothing after it can matter
                    out.append(self._finish(req))
        return out

    def _stopped(self, req) -> bool:
        """A stop string is in the request's final text (streaming requests: found by their stream)."""
        if not req.params.stop or self.tokenizer is None:
            return False
        if req.stream_deltas:
            return req.stream.stopped
        dec = req.decoder
        final, _ = upto_stop(dec.answer()[:dec.final_len()], dec.stop)
        if len(final) <= req.stop_checked:
            return False
        # only the new tail, from far enough back that a stop string ending there (<= 4 byte tokens per
        # character) starts inside it and not at its first token (which some decoders strip of a space)
        lo = max(0, req.stop_checked - 4 * max(map(len, req.params.stop)) - 1)
        req.stop_checked = len(final)
        return stop_cut(self.tokenizer.decode(final[lo:]), req.params.stop) >= 0

    def _plan(self, out):
        """Each running request's rows for this step, grouped by the model that runs them."""
        planned = []
        for req in list(self.scheduler.running):
            try:
                rows = req.decoder.plan()
            except DllmError as e:
                self._fail(req, e, out)
                continue
            if req.decoder.done:
                out.append(self._finish(req))
            elif rows:
                planned.append((req, rows))
        return planned

    def _run(self, planned, out):
        by_runner: dict[str, list] = {}
        for req, rows in planned:
            for r in rows:
                by_runner.setdefault(r.runner, []).append(r)
        logits = {}
        for key, rows in by_runner.items():
            logits[key] = iter(self.runners[key].run(rows))
        for req, rows in planned:
            outs = [next(logits[r.runner]) for r in rows]
            try:
                err = next((o for o in outs if isinstance(o, Exception)), None)
                if err is not None:
                    raise err
                req.decoder.advance(outs)
            except DllmError as e:
                self._fail(req, e, out)
                continue
            if req.decoder.done:
                out.append(self._finish(req))

    # ---- outputs --------------------------------------------------------------------------------------
    def _progress(self, req) -> RequestOutput | None:
        """The output of a running request whose final text grew (streaming requests only); a traced
        request (params.trace) also reports its canvas whenever a slot changed."""
        if not req.stream_deltas:
            return None
        dec = req.decoder
        answer = dec.answer()
        final, _ = upto_stop(answer[:dec.final_len()], dec.stop)
        delta_text, delta_ids = req.stream.update(final)
        canvas = None
        if req.params.trace:
            canvas = [None if t == dec.mask_id else t for t in answer] if hasattr(dec, "mask_id") else answer
            if canvas == req.last_canvas:
                canvas = None
            else:
                req.last_canvas = canvas
        if not delta_ids and canvas is None:
            return None
        if delta_ids and req.first_token_s is None:
            req.first_token_s = time.perf_counter() - req.arrival
        ids = final[:req.stream.n_tokens]
        return RequestOutput(text=req.stream.text if self.tokenizer is not None else None, token_ids=ids,
                             prompt_token_ids=req.prompt_ids, stats=self._stats(req, ids), finish_reason=None,
                             request_id=req.id, finished=False, delta_text=delta_text, delta_token_ids=delta_ids,
                             canvas=canvas)

    def _finish(self, req) -> RequestOutput:
        """The finished output (answer cut at its end token / stop string); the request leaves."""
        dec = req.decoder
        req.finished_at = time.perf_counter()
        # the final prefix (the whole answer once decoded; less for a request a stop string ended early)
        answer, eos = upto_stop(dec.answer()[:dec.final_len()], dec.stop)
        text, ids, stopped = req.stream.final(answer)
        if req.finish_reason is None:
            req.finish_reason = "stop" if stopped else "eos" if eos else "length"
        if req.finish_reason in ("abort", "error"):   # what was final when it ended
            text, ids = req.stream.text if self.tokenizer is not None else None, answer[:req.stream.n_tokens]
        delta_text, delta_ids = req.stream.rest(text, ids)
        if req.first_token_s is None and ids:
            req.first_token_s = req.finished_at - req.arrival
        stats = self._stats(req, ids)
        if req.params.json_schema is not None and req.finish_reason not in ("abort", "error") and text is not None:
            from dllm.constraints.json_schema import schema_violations   # keywords relaxed while decoding
            stats.schema_violations = schema_violations(req.params.json_schema, text)
        self.scheduler.retire(req)
        self.requests.pop(req.id, None)
        out = RequestOutput(text=text, token_ids=ids, prompt_token_ids=req.prompt_ids, stats=stats,
                            finish_reason=req.finish_reason, request_id=req.id, finished=True,
                            delta_text=delta_text, delta_token_ids=delta_ids, error=req.error,
                            canvas=dec.answer() if req.params.trace else None)
        out.exception = req.exc     # not a field: LLM re-raises it; servers answer with out.error
        return out

    def _fail(self, req, exc: DllmError, out):
        req.finish_reason, req.error, req.exc = "error", " ".join(str(exc).split()), exc
        out.append(self._finish(req))

    def _stats(self, req, ids) -> GenerationStats:
        dec = req.decoder
        pool_bytes = sum(self._pool(k).column_bytes * n for k, _, n in req.allocs) if req.allocs else req.pool_bytes
        req.pool_bytes = pool_bytes
        end = req.finished_at or time.perf_counter()
        return GenerationStats(
            nfe=dec.nfe, steps=dec.steps, elapsed_s=end - req.arrival, prompt_tokens=len(req.prompt_ids),
            answer_tokens=len(ids), tokens_per_forward=len(ids) / dec.nfe if dec.nfe else 0.0,
            trace=dec.trace, cache_bytes=pool_bytes, first_token_s=req.first_token_s or 0.0,
            draft_rows=getattr(dec, "draft_rows", 0))

    def _pool(self, key):
        return self.scheduler.pools[key]

    # ---- APD's checkers -------------------------------------------------------------------------------
    def draft(self, path: str):
        """APD's autoregressive checker for draft_model `path`: loaded once, with its own runner and pool."""
        from dllm.engine.builder import load_draft
        key = "draft:" + str(Path(path).resolve())
        if key not in self._drafts:
            self._drafts[key] = load_draft(self, path, key)
        return key, self._drafts[key]


class _NoPool:
    """Models without the ragged path keep no pool: every request fits."""
    capacity = 1 << 62
    column_bytes = 0

    def fits(self, n):
        return True

    def alloc(self, n):
        return 0

    def release(self, lo, n):
        pass
