"""Which columns a diffusion request's forward runs: the cache policy, and classifier-free guidance.

Bidirectional attention has no exact KV cache: every token's keys/values depend on every other token.
Fast-dLLM (arXiv 2505.22618) refreshes the cache with one full forward at the start of each block and
reuses it for the block's later steps:
  prefix: later steps run [block | suffix] against cached keys/values of the prefix;
  dual:   later steps run only the block against cached prefix and suffix.
Here a request's keys/values live in its own pool columns (engine/kv_pool.py, one column per canvas
column); a forward over a window writes its fresh keys/values there by index and attends over all L
columns, the same computation as the reference's concatenation (prefix) and in-place replacement (dual).
Without a cache every forward is the whole canvas. refresh_every = N also refreshes on every N-th forward
of a block; refresh_window = w recomputes w columns on each side of the block on cached steps (dInfer's
vicinity refresh); cache_prompt keeps the prompt's keys/values from the first forward and starts later
refreshes at the answer. Classifier-free guidance runs a second row per step, the canvas with its prompt
masked (LLaDA's unconditional copy), in its own pool columns; the logits are combined
uncond + (scale + 1)(cond - uncond).
"""
from __future__ import annotations

import torch

from dllm.engine.runner import ForwardRow


class _Handle:
    """A classic model's cache handle (the row's window start; transformers' fallback keeps its own
    cache object on it)."""
    start = 0


class Windows:
    def __init__(self, params, args, P: int, L: int, classic: bool, extra_scratch: bool):
        self.p, self.args, self.P, self.L = params, args, P, L
        self.cfg = params.cfg_scale > 0
        self.shift = 1 if args.shift_logits else 0
        self.cached = params.cache != "none"
        # pool ranges: the canvas (+ its unconditional copy); with a cache, an early-commit extra forward
        # must not overwrite the cached keys/values, so it gets scratch ranges of its own
        rows = 2 if self.cfg else 1
        self.ranges = rows * (2 if extra_scratch else 1)
        self.classic = classic
        self.handles = [_Handle() for _ in range(rows)] if classic and self.cached else [None] * rows
        self.prompt_cached = False
        self.xu = None      # the unconditional canvas (prompt masked), written by index each step
        self.bases = [None] * self.ranges
        self.lo = 0

    def bind(self, bases):
        self.bases = list(bases)

    def _canvases(self, x):
        if not self.cfg:
            return [x]
        if self.xu is None:
            self.xu = x.clone()
            self.xu[:self.P] = self.args.mask_token_id
        self.xu[self.P:] = x[self.P:]
        return [x, self.xu]

    def rows(self, x, blk: slice, forwards: int, wide: bool) -> list[ForwardRow]:
        """The step's rows for block `blk` at the block's forward number `forwards` (0 = the first)."""
        p, L = self.p, self.L
        refresh = not self.cached or forwards == 0 or bool(p.refresh_every and forwards % p.refresh_every == 0)
        if not self.cached:
            start, stop = 0, L
        elif refresh:
            start = self.P - self.shift if (p.cache_prompt and self.prompt_cached) else 0
            stop = L
            self.prompt_cached = True
        else:
            start = blk.start - p.refresh_window - self.shift
            stop = L if p.cache == "prefix" else min(blk.stop + p.refresh_window, L)
        start = max(start, 0)
        lo, hi = blk.start, blk.stop
        if wide:   # every answer column whose scoring row ran (Dream scores column i from row i - 1)
            lo, hi = min(lo, max(self.P, start + self.shift)), stop
        self.lo = lo
        return [ForwardRow(ids=c[start:stop], start=start, keys=L, q=(lo - start, hi - start), base=base,
                           handle=h, steady=not refresh)
                for c, base, h in zip(self._canvases(x), self.bases, self.handles)]

    def extra_rows(self, x, col: int) -> list[ForwardRow]:
        """One more forward over the whole canvas without touching the cache -> logits of [col, L)."""
        n = 2 if self.cfg else 1
        bases = self.bases[n:] if self.ranges > n else self.bases[:n]
        return [ForwardRow(ids=c, start=0, keys=self.L, q=(col, self.L), base=base)
                for c, base in zip(self._canvases(x), bases)]

    def guide(self, outs: list[torch.Tensor]) -> torch.Tensor:
        if not self.cfg:
            return outs[0]
        cond, uncond = outs
        return uncond + (self.p.cfg_scale + 1) * (cond - uncond)
