"""The model runner: prepares and runs ONE forward for every row the running requests asked for.

A request asks for rows (ForwardRow): a window of its canvas (columns [start, start + T), positions =
columns: a request's canvas has no padding), the keys it attends (its pool columns [0, S)), the attention
pattern, and the window rows whose logits it reads. The runner flattens all windows into N tokens
(models/context.py RaggedContext), so the projections and the MLP run on exactly the tokens there are;
attention runs per bucket of rows with the same query count; the last layer and the LM head run only on
the rows some request reads. Models without the ragged path (the evaluation oracles, transformers'
fallback models) run row by row through the classic forward.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dllm.models.context import Bucket, RaggedContext


@dataclass
class ForwardRow:
    """One row of a step. ids [T]: the window's tokens (canvas columns start..start + T - 1, which are
    also their positions); base: the pool column of canvas column 0 (None: the row keeps no keys, a
    classic model; a row writes only its window, so a range narrower than the canvas has base < its first
    column); keys: S, the row attends canvas columns [0, S); q: the window rows [lo, hi) whose logits are
    returned; attn: "full" (bidirectional), "causal", ("block", size) (block-causal from
    position 0) or a [T, S] bool tensor (True = attend). positions [T]: the tokens' positions when they are
    not their columns (WINO's shadow slots sit after the block at the block's positions); cols [S]: the pool
    column of each key when the row reads keys outside its own range (FreeDave's draft rows read the
    request's cached columns and their own window); leave_one_out: the block (canvas columns) of a shadow
    row, for classic models that compute leave-one-out marginals themselves (the evaluation oracle)."""
    ids: torch.Tensor
    start: int
    keys: int
    q: tuple[int, int]
    base: int | None = None
    attn: object = "full"
    handle: object = field(default=None, repr=False)   # classic models: the request's cache handle
    runner: str = "main"                                # which model runs it (APD's checker: its own key)
    steady: bool = False     # a cached step whose shapes repeat (replayed when graphs != "none")
    positions: torch.Tensor | None = None
    cols: torch.Tensor | None = None
    leave_one_out: slice | None = None

    @property
    def T(self) -> int:
        return self.ids.shape[0]


def _query_mask(row: ForwardRow, lo: int, hi: int, S: int, device):
    """[hi - lo, S] bool for window rows [lo, hi) over keys [0, S), or None when every key is visible."""
    a = row.attn
    if isinstance(a, torch.Tensor):   # the row's own [T, keys] mask, padded with False to S keys
        m = a[lo:hi, :S]
        return m if m.shape[1] == S else torch.nn.functional.pad(m, (0, S - m.shape[1]), value=False)
    if a == "full":
        return None
    q = torch.arange(row.start + lo, row.start + hi, device=device)[:, None]         # query columns
    k = torch.arange(S, device=device)[None, :]
    if a == "causal":
        return None if row.start + lo + 1 >= S else k <= q
    size = a[1]
    return None if (row.start + lo) // size == (S - 1) // size else k // size <= q // size


@dataclass
class StepInputs:
    """Everything one ragged forward reads: what a replayed step copies into its recorded buffers."""
    ids: torch.Tensor            # [1, N]
    positions: torch.Tensor      # [1, N]
    ctx: RaggedContext
    last_rows: torch.Tensor      # [n_last] flat token indices the last layer runs
    head: torch.Tensor           # [sum Q] rows of the last layer's output the head scores
    bound: int                   # > every position (the rotary tables' length)

    def tensors(self) -> list[torch.Tensor]:
        out = [self.ids, self.positions, self.ctx.write_cols, self.last_rows, self.head]
        for b in self.ctx.buckets + self.ctx.last_buckets:
            out += [t for t in (b.q_idx, b.k_cols, b.o_idx, b.mask) if t is not None]
        return out

    def signature(self) -> tuple:
        """What a recording depends on besides tensor contents: shapes and the Python ints it reads."""
        def sig(b):
            return (b.single, b.nb, b.Tb, b.Sb, b.q_lo, b.q_hi, b.k_lo, b.k_hi, b.o_lo,
                    None if b.mask is None else tuple(b.mask.shape))
        c = self.ctx
        return (self.ids.shape[1], c.n_last, self.head.shape[0], self.bound,
                tuple(map(sig, c.buckets)), tuple(map(sig, c.last_buckets)))


class ModelRunner:
    def __init__(self, model, pool, graphs: str = "none"):
        self.model, self.pool = model, pool
        self.ragged = hasattr(model, "run") and pool is not None
        self.device = next(model.parameters()).device
        self.replay = None       # engine/graphs.py: steady steps recorded once and replayed
        if graphs != "none" and self.ragged:
            from dllm.engine.graphs import StepGraphs
            self.replay = StepGraphs(model, graphs)

    @torch.no_grad()
    def run(self, rows: list[ForwardRow]) -> list[torch.Tensor]:
        """-> logits [Q_r, V] per row (views of one [sum Q, V] tensor on the ragged path)."""
        if not rows:
            return []
        if not self.ragged:
            return [self._classic(r) for r in rows]
        replay = self.replay is not None and all(r.steady for r in rows)
        inp = self.inputs(rows, views=not replay)
        if replay:
            logits = self.replay(inp, self.pool.generation)[0]
        else:
            logits = self.model.run(inp.ids, inp.positions, inp.ctx, inp.last_rows, inp.head, inp.bound)[0]
        return list(logits.split([r.q[1] - r.q[0] for r in rows]))             # [sum Q, V] -> per row

    def inputs(self, rows: list[ForwardRow], views: bool = True) -> StepInputs:
        """The flat batch of `rows`. views: a bucket of one row reads its pool columns in place (eager);
        False: every bucket gathers by index tensors, so that a recording reads no Python int that
        changes between blocks."""
        ids = torch.cat([r.ids for r in rows])[None]                                   # [1, N]
        positions = torch.cat([r.positions if r.positions is not None else
                               torch.arange(r.start, r.start + r.T, device=self.device) for r in rows])[None]
        ctx, last_rows, head = self._context(rows, views)
        return StepInputs(ids, positions, ctx, last_rows, head, max(r.keys for r in rows))

    def _classic(self, r: ForwardRow):
        """A model with only the classic forward: one row at a time (a DllmError is returned, not raised,
        so that it fails its own request only)."""
        from dllm.errors import DllmError

        pos = (r.positions if r.positions is not None else torch.arange(r.start, r.start + r.T, device=self.device))[None]
        if r.handle is not None:
            r.handle.start = r.start
        mask = r.attn[None] if isinstance(r.attn, torch.Tensor) else None
        try:
            blk = r.leave_one_out
            if blk is not None and hasattr(self.model, "leave_one_out"):   # [block | its shadow] rows, exactly
                W = blk.stop - blk.start                                     # the W shadow ids follow the block
                canvas = torch.cat((r.ids[:blk.stop], r.ids[blk.stop + W:]))
                return self.model.leave_one_out(canvas[None], None, blk)[0]
            return self.model(r.ids[None], pos, r.handle, slice(*r.q), mask)[0]
        except DllmError as e:
            return e

    def _head_span(self, r: ForwardRow) -> tuple[int, int]:
        """Window rows [a, b) the last layer must run for the head rows q (shifted families score
        row i from the hidden state at i - 1, row 0 from itself)."""
        lo, hi = r.q
        if not self.model.args.shift_logits:
            return lo, hi
        a = max(lo - 1, 0)
        return a, max(hi - 1, a + 1)

    def _context(self, rows, views: bool):
        dev, pool = self.device, self.pool
        offs, n = [], 0
        for r in rows:
            offs.append(n)
            n += r.T
        write = torch.cat([torch.arange(r.base + r.start, r.base + r.start + r.T, device=dev) for r in rows])
        spans = [self._head_span(r) for r in rows]
        buckets = self._buckets(rows, offs, [(0, r.T) for r in rows], offs, views)
        last_offs, m = [], 0
        for a, b in spans:
            last_offs.append(m)
            m += b - a
        last = self._buckets(rows, offs, spans, last_offs, views)
        last_rows = torch.cat([torch.arange(o + a, o + b, device=dev) for o, (a, b) in zip(offs, spans)])
        shift = self.model.args.shift_logits
        head = torch.cat([torch.arange(lo, hi, device=dev).sub_(1 if shift else 0).clamp_(min=0).sub_(a).add_(lo_out)
                          for r, (a, _), lo_out in zip(rows, spans, last_offs) for lo, hi in [r.q]])
        ctx = RaggedContext(pool.k, pool.v, write, buckets, last, n, m)
        return ctx, last_rows, head

    def _buckets(self, rows, offs, spans, out_offs, views: bool):
        """Group rows by query count (spans: the window rows [a, b) whose queries attend)."""
        groups: dict = {}
        per_row = views and self.device.type == "cpu"   # CPU: reading keys in place beats gathering them
        for i, (a, b) in enumerate(spans):
            groups.setdefault((b - a, i) if per_row else b - a, []).append(i)
        return [self._bucket([rows[i] for i in idx], [offs[i] for i in idx], [spans[i] for i in idx],
                             [out_offs[i] for i in idx], spans[idx[0]][1] - spans[idx[0]][0], views)
                for idx in groups.values()]

    def _bucket(self, rows, offs, spans, outs, T, views: bool) -> Bucket:
        dev = self.device
        if len(rows) == 1 and views and rows[0].cols is None:
            r, (a, b) = rows[0], spans[0]
            mask = _query_mask(r, a, b, r.keys, dev)
            return Bucket(single=True, mask=None if mask is None else mask[None, None], Tb=T, Sb=r.keys,
                          q_lo=offs[0] + a, q_hi=offs[0] + b, k_lo=r.base, k_hi=r.base + r.keys, o_lo=outs[0])
        S = max(r.keys for r in rows)
        spare = self.pool.spare
        j = torch.arange(S, device=dev)
        k_cols = torch.stack([torch.where(j < r.keys, r.base + j if r.cols is None else
                                          torch.nn.functional.pad(r.cols, (0, S - r.keys)), spare)
                              for r in rows])                                                # [nb, S]
        valid = torch.stack([j < r.keys for r in rows])                                           # [nb, S]
        q_idx = torch.stack([torch.arange(o + a, o + b, device=dev) for o, (a, b) in zip(offs, spans)])
        o_idx = torch.stack([torch.arange(o, o + T, device=dev) for o in outs])
        per_query = [_query_mask(r, a, b, S, dev) for r, (a, b) in zip(rows, spans)]
        if all(m is None for m in per_query):
            mask = None if all(r.keys == S for r in rows) else valid[:, None, None, :]
        else:
            full = torch.ones(T, S, dtype=torch.bool, device=dev)
            mask = torch.stack([(full if m is None else m) & v for m, v in zip(per_query, valid)])[:, None]
        return Bucket(single=False, mask=mask, nb=len(rows), Tb=T, Sb=S, q_idx=q_idx, k_cols=k_cols,
                      o_idx=o_idx.flatten())
