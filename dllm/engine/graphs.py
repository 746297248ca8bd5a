"""The steady-state denoising step, replayed instead of dispatched op by op.

A cached step of a block (every forward of the block after its refresh) runs the same shapes
again and again: [B, T] window rows against the [B, Hkv, L, hd] cache buffers, logits for Q
rows. At batch 1 on a GPU, launching its ~15 kernels per layer from Python costs more than
running them (an 8B model: ~500 launches, ~8-13 ms of host time against ~5 ms of weight reads),
so dllm records the step once per window shape and replays it:

  graphs="cuda"     a CUDA graph (torch.cuda.CUDAGraph) per (B, T, Q, padded) key; a replay is
                    three small input copies and one graph launch
  graphs="compile"  torch.compile (inductor) of the step: fused elementwise ops and no Python
                    dispatch on any device; on CUDA the compiled step is also captured
  graphs="none"     the eager forward (the reference the others are tested against)
  graphs="auto"     the default ($DLLM_GRAPHS): AUTO_ON_CUDA on a CUDA device, "none" elsewhere.
                    AUTO_ON_CUDA stays "none" until tests/test_graphs.py's GPU tests and
                    benchmarks/step.py have run on a GPU (no session with one has yet)

What makes one recording serve every block: the step reads only tensors that are copied into
fixed buffers before each replay (the window's token ids and positions, the key-padding mask,
and the window's cache columns `KVCache.cols`, which replace the Python int `start`). Nothing
varies by Python value inside it, so a captured or compiled step cannot bake in one block's
columns; tests/test_graphs.py checks that through torch.compile (the same step with a
backend that replays one trace), and on a GPU against the eager step.
"""
from __future__ import annotations

import os

import torch

from dllm.errors import DllmError

CHOICES = ("auto", "cuda", "compile", "none")
COMPILE_BACKEND = "inductor"   # tests swap in a counting backend: the same trace, replayed without codegen
AUTO_ON_CUDA = "none"


def resolve_graphs(choice: str | None, device) -> str:
    """'auto' | 'cuda' | 'compile' | 'none' (None: $DLLM_GRAPHS, else 'auto') -> what runs on `device`."""
    name = choice if choice is not None else os.environ.get("DLLM_GRAPHS", "auto")
    if name not in CHOICES:
        source = "graphs" if choice is not None else "DLLM_GRAPHS"
        raise DllmError(f"{source} must be one of {', '.join(CHOICES)}, got {name!r}.")
    on_gpu = torch.device(device).type == "cuda"
    if name == "auto":
        return AUTO_ON_CUDA if on_gpu else "none"
    if name == "cuda" and not on_gpu:
        raise DllmError("graphs='cuda' needs the model on a CUDA device; use graphs='compile' or 'none' on a CPU.")
    return name


def _step(model, cache, ids, pos, valid, q: slice):
    return model(ids, pos, cache, q, valid)


class StepGraphs:
    """Runs cached steps through recordings keyed by shape; `reset()` when the cache is reallocated."""

    def __init__(self, model, cache, mode: str):
        assert mode in ("cuda", "compile")
        self.model, self.cache, self.mode = model, cache, mode
        # dynamic=None: specialised to the first shape, recompiled once with symbolic sizes when a
        # size changes (the batch when rows finish, the window of a prefix cache every block)
        self.fn = torch.compile(_step, backend=COMPILE_BACKEND) if mode == "compile" else _step
        self.cuda = cache.k[0].is_cuda
        self.pool = torch.cuda.graph_pool_handle() if self.cuda else None
        self.recorded: dict = {}

    def reset(self):
        """The cache's buffers were reallocated (finished rows left): recordings point at the old ones."""
        self.recorded.clear()

    def __call__(self, ids, pos, start: int, q: slice, valid):
        """ids, pos [B, T] window of the canvas starting at column `start`; valid [B, L] or None ->
        logits [B, Q, V] of rows q of the window (a fresh tensor, not a recording's buffer)."""
        B, T = ids.shape
        key = (B, T, q.start, q.stop, valid is not None)
        rec = self.recorded.get(key)
        first = rec is None
        if first:
            cols = torch.arange(start, start + T, device=ids.device)
            rec = self.recorded[key] = _Recording(ids.clone(), pos.clone(), cols,
                                                  None if valid is None else valid.clone())
        else:
            rec.ids.copy_(ids)
            rec.pos.copy_(pos)
            torch.arange(start, start + T, out=rec.cols)
            if valid is not None:
                rec.valid.copy_(valid)
        self.cache.cols = rec.cols
        try:
            if not self.cuda:
                return self.fn(self.model, self.cache, rec.ids, rec.pos, rec.valid, q)
            if first:
                return rec.capture(lambda: self.fn(self.model, self.cache, rec.ids, rec.pos, rec.valid, q), self.pool)
            rec.graph.replay()
            return rec.out.clone()
        finally:
            self.cache.cols = None


class _Recording:
    """The fixed input buffers of one window shape and, on CUDA, its graph and output buffer."""

    def __init__(self, ids, pos, cols, valid):
        self.ids, self.pos, self.cols, self.valid = ids, pos, cols, valid
        self.graph = self.out = None

    def capture(self, run, pool):
        """One real step on a side stream (it warms up cuBLAS and Triton, and its logits are this
        step's answer), then the same step recorded; the recording is not executed."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            logits = run()
        torch.cuda.current_stream().wait_stream(side)
        logits = logits.clone()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.out = run()
        return logits
