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

Two rows serve declared scheduler capabilities (schedulers/base.py): FreeDave's K draft rows (each the
canvas with the block replaced by a draft, a cached step's window written into the draft's own scratch
range while the other keys are read from the request's cached columns, so the cache is not touched) and
WINO's shadow row (the canvas with W extra mask slots after the block, at the block's positions, under a
per-query mask: the canvas never sees them, shadow slot i sees everything but block slot i).
"""
from __future__ import annotations

import torch

from dllm.engine.runner import ForwardRow


class _Handle:
    """A classic model's cache handle (the row's window start; transformers' fallback keeps its own
    cache object on it)."""
    start = 0


class Windows:
    def __init__(self, params, args, P: int, L: int, classic: bool, extra_scratch: bool, drafts: int = 0,
                 shadow: bool = False):
        self.p, self.args, self.P, self.L = params, args, P, L
        self.cfg = params.cfg_scale > 0
        self.shift = 1 if args.shift_logits else 0
        self.cached = params.cache != "none"
        # pool ranges: the canvas (+ its unconditional copy); with a cache, an early-commit extra forward
        # must not overwrite the cached keys/values, so it gets scratch ranges of its own
        rows = 2 if self.cfg else 1
        self.ranges = rows * (2 if extra_scratch else 1) + drafts     # FreeDave: one scratch range per draft
        self.drafts = drafts
        self.width = L + (params.block if shadow else 0)                  # WINO: the shadow slots' columns
        # a draft range holds only the widest cached window (its other keys are the request's cached
        # columns): dual [block start - w - shift, block end + w), prefix [block start - w - shift, L) from
        # the first block on; the whole canvas without a cache
        w = params.refresh_window + self.shift
        self.draft_width = (min(L, params.block + 2 * w) if params.cache == "dual" else
                            L - max(P - w, 0) if self.cached else L)
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

    def _span(self, blk: slice, refresh: bool) -> tuple[int, int]:
        """Canvas columns [start, stop) a forward runs (a cached step's window, or a refresh)."""
        p, L = self.p, self.L
        if not self.cached:
            return 0, L
        if refresh:
            start = self.P - self.shift if (p.cache_prompt and self.prompt_cached) else 0
            self.prompt_cached = True
            return max(start, 0), L
        start = blk.start - p.refresh_window - self.shift
        return max(start, 0), L if p.cache == "prefix" else min(blk.stop + p.refresh_window, L)

    def rows(self, x, blk: slice, forwards: int, wide: bool, ahead: int = 0, head: slice | None = None
             ) -> list[ForwardRow]:
        """The step's rows for block `blk` at the block's forward number `forwards` (0 = the first).
        ahead: also return the logits of up to that many columns after the block, where the window runs
        them anyway (lookahead schedulers). head: only these columns of the block are scored."""
        p, L = self.p, self.L
        refresh = not self.cached or forwards == 0 or bool(p.refresh_every and forwards % p.refresh_every == 0)
        start, stop = self._span(blk, refresh)
        lo, hi = (head.start, head.stop) if head is not None else (blk.start, max(blk.stop, min(blk.stop + ahead, stop)))
        if wide:   # every answer column whose scoring row ran (Dream scores column i from row i - 1)
            lo, hi = min(lo, max(self.P, start + self.shift)), stop
        self.lo = lo
        return [ForwardRow(ids=c[start:stop], start=start, keys=L, q=(lo - start, hi - start), base=base,
                           handle=h, steady=not refresh)
                for c, base, h in zip(self._canvases(x), self.bases, self.handles)]

    def draft_rows(self, drafts: torch.Tensor, blk: slice) -> list[ForwardRow]:
        """FreeDave: drafts [K, L] canvases -> K rows, each a cached step's window (the whole canvas without
        a cache) written into its own scratch range; keys outside the window are the request's cached
        columns. Logits of the block's rows."""
        start, stop = self._span(blk, refresh=False)
        main, L = self.bases[0], self.L
        j = torch.arange(L, device=drafts.device)
        inside = (j >= start) & (j < stop)
        out = []
        for d, base in zip(drafts, self.bases[-self.drafts:]):
            if self.cached:   # the window's column j sits at base + j - start of the draft's narrow range
                assert stop - start <= self.draft_width, "a cached window wider than its draft range"
                base -= start
            cols = None if not self.cached else torch.where(inside, base + j, main + j)
            out.append(ForwardRow(ids=d[start:stop], start=start, keys=L, q=(blk.start - start, blk.stop - start),
                                  base=base, cols=cols))
        return out

    def shadow_row(self, x, blk: slice, mask_id: int) -> ForwardRow:
        """WINO: [canvas up to the block's end | W shadow masks | the rest of the canvas] with the shadow at the
        block's positions -> logits of the block's W rows, then of its W shadow rows (leave-one-out)."""
        L, W, dev = self.L, blk.stop - blk.start, x.device
        e = blk.stop
        ids = torch.cat((x[:e], torch.full((W,), mask_id, dtype=x.dtype, device=dev), x[e:]))      # [L + W]
        cols = torch.arange(L, device=dev)
        positions = torch.cat((cols[:e], cols[blk], cols[e:]))
        shadow = torch.zeros(L + W, dtype=torch.bool, device=dev)
        shadow[e:e + W] = True
        allow = ~shadow[None, :].expand(L + W, -1).clone()           # the canvas never attends to the shadow
        allow[e:e + W] = True                                        # the shadow sees every slot ...
        own = torch.arange(W, device=dev)
        allow[e + own, blk.start + own] = False                      # ... but block slot i is hidden from shadow i
        self.lo = blk.start
        return ForwardRow(ids=ids, start=0, keys=L + W, q=(blk.start, e + W), base=self.bases[0], attn=allow,
                          positions=positions, leave_one_out=blk)

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
