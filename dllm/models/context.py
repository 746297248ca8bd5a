"""What one forward attends to: the batch layout behind the model's attention.

The Transformer computes q, k, v the same way for every batch; where the keys/values are written and
which keys each query reads is the context's job (vLLM's attention metadata, in miniature):

  DenseContext   a [B, T] window per row (left-padded batches): no cache (the window's own keys), or a
                 KVCache of L columns per row written at its `start` column (engine/kv_cache.py). The
                 classic forward `Transformer(token_ids, positions, cache, query_slice, attn_mask)`.
  RaggedContext  the engine's step (engine/runner.py builds it): the windows of every running row
                 flattened into one row of N tokens, so that the projections and the MLP run on exactly
                 the tokens there are (no padding); each row's keys/values live in its own contiguous
                 columns of the KV pool (engine/kv_pool.py), written by one index_copy per layer;
                 attention runs per bucket of rows with the same query count (a single row reads its
                 pool columns as views; several rows are gathered and padded with a key mask).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _sdpa(q, k, v, mask, triton: bool, causal_kernel_ok: bool):
    """Bidirectional/masked attention: the split-KV Triton kernel where it applies (key padding only),
    else PyTorch's SDPA. q [B, H, T, hd], k/v [B, Hkv, S, hd], mask None | [B, 1, 1, S] | [B, 1, T, S]."""
    hd = q.shape[-1]
    if triton and causal_kernel_ok and (mask is None or mask.shape[2] == 1) and hd >= 16 and hd & (hd - 1) == 0:
        from dllm.kernels.attention import attention   # split-KV over the cache views, key padding only
        return attention(q, k, v, None if mask is None else mask[:, 0, 0, :])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])


class DenseContext:
    """[B, T] windows; cache None or a KVCache; mask [B, 1, 1, S] key padding or [B, 1, T, S] per query."""

    def __init__(self, cache, mask, causal: bool):
        self.cache, self.mask, self.causal = cache, mask, causal

    def attend(self, layer: int, q, rope_k, v, rows, triton: bool):
        """q [B, H, T, hd] (rotated), rope_k(out=None) -> rotated keys [B, Hkv, T, hd] (written into `out`
        when given: the fused RoPE kernel writes the cache window itself), v [B, Hkv, T, hd] ->
        o [B, T', H * hd] for the query rows `rows` (all T when None)."""
        B, H, T, hd = q.shape
        cache, mask = self.cache, self.mask
        if cache is not None:   # write this window's k/v in place, attend over every cached column
            k, v = cache.update(layer, None, v, k_writer=rope_k)
        else:
            k = rope_k()
        if rows is not None:
            q = q[:, :, rows]
            if mask is not None and mask.shape[2] != 1:   # a per-query mask: its rows of the queries kept
                mask = mask[:, :, rows]
        if self.causal:
            # query i sits at key column start + i (start = the cache's write column, 0 without a
            # cache) and sees keys j <= start + i; skipped when that already admits every key
            # (one new token attending a cache that ends at it: the decode step of the AR loop)
            start, S = (cache.start if cache is not None else 0), k.shape[2]
            if start + 1 < S:
                causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=start)
                causal = causal if rows is None else causal[rows]
                mask = causal if mask is None else mask & causal
        o = _sdpa(q, k, v, mask, triton, not self.causal)
        return o.transpose(1, 2).reshape(B, q.shape[2], H * hd)


@dataclass
class Bucket:
    """Rows of a ragged step that attend together: nb rows of Tb queries (padded) over Sb keys (padded).

    single: one row whose queries are the flat tokens [q_lo, q_hi) and whose keys are the pool columns
    [k_lo, k_hi): everything is a view, nothing is gathered. Otherwise q_idx [nb, Tb] are flat token
    indices, k_cols [nb, Sb] pool columns (padding: the pool's spare column), o_idx [nb * Tb] output
    rows; the sizes are read from these tensors' shapes (not from the ints), so that a compiled step
    can treat them as dynamic."""
    single: bool
    mask: torch.Tensor | None            # None | [nb, 1, 1, Sb] | [nb, 1, Tb, Sb] bool, True = attend
    nb: int = 1
    Tb: int = 0
    Sb: int = 0
    q_lo: int = 0
    q_hi: int = 0
    k_lo: int = 0
    k_hi: int = 0
    o_lo: int = 0
    q_idx: torch.Tensor | None = None
    k_cols: torch.Tensor | None = None
    o_idx: torch.Tensor | None = None


class RaggedContext:
    """The engine's step: N flat tokens; per-layer pool tensors k, v [1, Hkv, C + 1, hd] (column C spare).

    write_cols [N]: the pool column each token's keys/values go to. buckets: the attention plan of every
    layer but the last; last_buckets, n_last: the plan of the last layer, whose queries are only the
    rows the LM head reads (the Transformer passes their flat indices as `rows`)."""

    def __init__(self, pool_k, pool_v, write_cols, buckets, last_buckets, n_tokens: int, n_last: int):
        self.k, self.v, self.write_cols = pool_k, pool_v, write_cols
        self.buckets, self.last_buckets = buckets, last_buckets
        self.n, self.n_last = n_tokens, n_last

    def attend(self, layer: int, q, rope_k, v, rows, triton: bool):
        """q [1, H, N, hd], v [1, Hkv, N, hd] -> o [1, N', H * hd] (N' = len(rows) when rows is given)."""
        H, hd = q.shape[1], q.shape[3]
        K, V = self.k[layer], self.v[layer]                       # [1, Hkv, C + 1, hd]
        K.index_copy_(2, self.write_cols, rope_k())
        V.index_copy_(2, self.write_cols, v)
        plan, n_out = (self.buckets, q.shape[2]) if rows is None else (self.last_buckets, rows.shape[0])
        if len(plan) == 1 and plan[0].single:   # one row (e.g. a request alone): nothing to scatter back
            b = plan[0]
            o = _sdpa(q[:, :, b.q_lo:b.q_hi], K[:, :, b.k_lo:b.k_hi], V[:, :, b.k_lo:b.k_hi], b.mask, triton, True)
            return o.transpose(1, 2).reshape(1, n_out, H * hd)
        out = q.new_empty(n_out + 1, H, hd)                       # + the spare row padded queries write
        for b in plan:
            if b.single:
                ob = _sdpa(q[:, :, b.q_lo:b.q_hi], K[:, :, b.k_lo:b.k_hi], V[:, :, b.k_lo:b.k_hi], b.mask, triton, True)
                out[b.o_lo:b.o_lo + ob.shape[2]] = ob[0].transpose(0, 1)
            else:
                qb = q[0].transpose(0, 1)[b.q_idx].transpose(1, 2)                   # [nb, H, Tb, hd]
                kb = K[0][:, b.k_cols].transpose(0, 1)                                # [nb, Hkv, Sb, hd]
                vb = V[0][:, b.k_cols].transpose(0, 1)
                ob = _sdpa(qb, kb, vb, b.mask, triton, True)
                out[b.o_idx] = ob.transpose(1, 2).flatten(0, 1)
        return out[:n_out].reshape(1, n_out, H * hd)
