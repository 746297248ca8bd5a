"""Block-wise approximate KV caching (Fast-dLLM's prefix and dual cache) without per-step copies.

Bidirectional attention has no exact KV cache: every token's keys/values depend on every
other token. Fast-dLLM (arXiv 2505.22618) refreshes the cache with one full forward at the
start of each block and reuses it for the block's later steps:
  prefix: later steps run [block | suffix] against cached keys/values of the prefix;
  dual:   later steps run only the block against cached prefix and suffix.
Here the keys/values of every canvas column live in one preallocated buffer per layer,
[B, Hkv, L, hd] in the model dtype; a forward over a window of columns writes its fresh
keys/values into the buffer by index and attends over all L columns, which is the same
computation as the reference's concatenation (prefix) and in-place replacement (dual).
The layers' buffers are separate tensors (not views of one): torch.compile then writes a
window in place instead of copying the whole buffer back (engine/graphs.py).
"""
from __future__ import annotations

import torch

from dllm.models.config import ModelArgs


class KVCache:
    def __init__(self, args: ModelArgs, batch: int, length: int, dtype, device):
        shape = (batch, args.n_kv_heads, length, args.head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.length = length
        self.start = 0          # canvas column of the first row of the window being run
        self.cols = None        # or the window's columns as a [T] device tensor (a replayable step)
        self.write_rows = None  # or [B, T] bool: per-row windows (variable blocks), columns each row may write

    def update(self, layer: int, k, v, k_writer=None):
        """Write the window's k, v [B, Hkv, T, hd] at columns [start, start + T); return all L columns.
        k_writer(out): writes the keys into the window view `out` itself (a fused RoPE kernel) instead of k;
        k_writer(None) returns them. With `cols` set the columns come from that tensor, not from `start`,
        so that a captured or compiled step serves every block."""
        if self.cols is not None:
            self.k[layer].index_copy_(2, self.cols, k if k_writer is None else k_writer(None))
            self.v[layer].index_copy_(2, self.cols, v)
            return self.k[layer], self.v[layer]
        end = self.start + v.shape[2]
        if self.write_rows is not None:   # keep the cached columns outside each row's own window
            old = [t[layer][:, :, self.start:end].clone() for t in (self.k, self.v)]
        if k_writer is not None:
            k_writer(self.k[layer][:, :, self.start:end])
        else:
            self.k[layer][:, :, self.start:end] = k
        self.v[layer][:, :, self.start:end] = v
        if self.write_rows is not None:
            keep = self.write_rows[:, None, :, None]                       # [B, 1, T, 1]
            for t, o in zip((self.k, self.v), old):
                win = t[layer][:, :, self.start:end]
                win.copy_(torch.where(keep, win, o))
        return self.k[layer], self.v[layer]

    def repeated(self, k: int) -> "KVCache":
        """A copy whose row b * k + j is row b (FreeDave's draft rows, as its batch_expanding mode)."""
        out = KVCache.__new__(KVCache)
        out.k = [t.repeat_interleave(k, 0) for t in self.k]
        out.v = [t.repeat_interleave(k, 0) for t in self.v]
        out.length, out.start, out.cols, out.write_rows = self.length, self.start, None, None
        return out

    def keep_rows(self, idx: torch.Tensor):
        """Drop finished requests (between blocks only)."""
        self.k, self.v = [t[idx] for t in self.k], [t[idx] for t in self.v]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class BlockRunner:
    """Runs the model for the active block: cache mode, refresh policy and classifier-free guidance.

    Refresh (a forward over the whole canvas that rewrites the cache) happens at the first
    forward of each block and, with refresh_every = N, on every N-th forward of the block;
    refresh_window = w also recomputes w columns on each side of the block on cached steps
    (dInfer's vicinity refresh). cache_prompt keeps the prompt's keys/values from the
    request's first forward and starts later refreshes at the answer.
    """

    def __init__(self, model, args: ModelArgs, params, canvas, batch: int, graphs: str = "none"):
        self.model, self.args, self.p, self.canvas = model, args, params, canvas
        self.cfg = params.cfg_scale > 0
        self.shift = 1 if args.shift_logits else 0
        self.cache = None
        if params.cache != "none":
            rows = batch * (2 if self.cfg else 1)
            dtype = next(model.parameters()).dtype
            self.cache = KVCache(args, rows, canvas.x.shape[1], dtype, canvas.x.device)
        self.graphs = None   # cached steps replayed from recordings (engine/graphs.py)
        if self.cache is not None and graphs != "none":
            from dllm.engine.graphs import StepGraphs
            self.graphs = StepGraphs(model, self.cache, graphs)
        self.prompt_cached = False
        self._pair = None   # CFG: [cond | uncond] token buffer with its doubled valid/pos, per row set
        self.row_blocks = None   # variable blocks: (lo, hi) [B, 1] canvas columns of each row's own block

    def begin_block(self):
        self.forwards = 0

    def keep_rows(self, idx: torch.Tensor, batch: int):
        self._pair = None
        if self.cache is not None:
            self.cache.keep_rows(torch.cat([idx, idx + batch]) if self.cfg else idx)
        if self.graphs is not None:
            self.graphs.reset()

    def __call__(self, x, valid, pos, blk: slice, wide: bool = False, ahead: int = 0):
        """x, valid, pos [B, L] of the active rows -> (logits [B, Q, V], lo).

        The logits are for canvas columns [lo, lo + Q): the block's columns, or with wide=True
        every answer column this forward computes anyway (from the prompt's end, or from the
        block with a cache, to the last column the forward ran); ahead = n also scores up to n
        columns after the block that the forward runs anyway (schedulers' `lookahead`).
        """
        x, valid, pos = self._pair_rows(x, valid, pos)
        logits, lo = self._forward(x, valid, pos, blk, wide, ahead)
        self.forwards += 1
        return self._guide(logits), lo

    def full(self, x, valid, pos, lo: int):
        """One more forward over the whole canvas without touching the cache -> logits of columns [lo, L)."""
        x, valid, pos = self._pair_rows(x, valid, pos)
        valid = valid if self.canvas.padded else None
        return self._guide(self.model(x, pos, None, slice(lo, x.shape[1]), valid)), lo

    def _pair_rows(self, x, valid, pos):
        if not self.cfg:
            return x, valid, pos
        # unconditional copy: the prompt itself masked out (LLaDA's guidance)
        B, P = x.shape[0], self.canvas.prompt_len
        if self._pair is None:   # built once per set of rows, then written by index
            self._pair = torch.cat([x, x]), torch.cat([valid, valid]), torch.cat([pos, pos])
        pair, valid, pos = self._pair
        pair[:B], pair[B:] = x, x
        pair[B:, :P].masked_fill_(valid[:B, :P], self.args.mask_token_id)
        return pair, valid, pos

    def _guide(self, logits):
        if not self.cfg:
            return logits
        cond, uncond = logits.chunk(2)
        return uncond + (self.p.cfg_scale + 1) * (cond - uncond)

    def window(self, blk, L: int) -> tuple[int, int]:
        """Canvas columns [start, stop) a cached (not refreshing) step runs for block blk."""
        p = self.p
        start = blk.start - p.refresh_window - self.shift
        stop = L if p.cache == "prefix" else min(blk.stop + p.refresh_window, L)
        return max(start, 0), stop

    def _forward(self, x, valid, pos, blk, wide, ahead=0):
        valid = valid if self.canvas.padded else None   # no padding: plain bidirectional attention
        L, p = x.shape[1], self.p
        refresh = self.cache is None or self.forwards == 0 or bool(p.refresh_every and self.forwards % p.refresh_every == 0)
        if self.cache is None:
            start, stop = 0, L
        elif refresh:
            start = self.canvas.prompt_len - self.shift if (p.cache_prompt and self.prompt_cached) else 0
            stop = L
            self.prompt_cached = True
        else:
            start, stop = self.window(blk, L)
        start = max(start, 0)
        lo, hi = blk.start, blk.stop
        if wide:   # every answer column whose scoring row ran (Dream scores column i from row i - 1)
            lo, hi = min(lo, max(self.canvas.prompt_len, start + self.shift)), stop
        elif ahead:   # the columns after the block that this forward runs anyway
            hi = max(hi, min(blk.stop + ahead, stop))
        q = slice(lo - start, hi - start)
        if self.cache is None:
            return self.model(x, pos, None, q, valid), lo
        self.cache.start = start
        self.cache.write_rows = None if refresh else self._own_columns(start, stop, x.device)
        if self.graphs is not None and not refresh and self.cache.write_rows is None:   # the steady-state step
            return self.graphs(x[:, start:stop], pos[:, start:stop], start, q, valid), lo
        return self.model(x[:, start:stop], pos[:, start:stop], self.cache, q, valid), lo

    def _own_columns(self, start: int, stop: int, device):
        """Variable blocks (capability of AdaBlock): rows whose blocks differ share one window, but each
        row writes only the columns its own cached step would run ([B, T] bool, or None when all do), so
        that a request's keys/values, and hence its answer, do not depend on its batch."""
        if self.row_blocks is None:
            return None
        lo, hi = self.row_blocks
        p, cols = self.p, torch.arange(start, stop, device=device)[None, :]
        own = cols >= lo - p.refresh_window - self.shift
        if p.cache != "prefix":
            own = own & (cols < hi + p.refresh_window)
        if bool(own.all()):
            return None
        return torch.cat([own, own]) if self.cfg else own
