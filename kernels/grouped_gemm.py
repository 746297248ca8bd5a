"""Grouped GEMM for mixture-of-experts FFNs, beside its PyTorch reference.

  grouped_gemm(x, w, counts) -> y     x [M, K] rows grouped by expert (counts[e] rows of expert e,
                                      experts in order), w [E, N, K] -> y [M, N], y[r] = x[r] @ w[e(r)].T

One launch covers every active expert: the host turns counts into a list of row tiles (expert,
first row, rows), one program per (tile, column tile) accumulates in float32 with tl.dot and rounds
once to x's dtype. The reference (dllm/models/moe.py grouped_gemm_torch, what the model runs without
the kernels) is one F.linear per active expert. Both need counts on the host (one sync per MoE layer),
as every sorted-token MoE does to size its work.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from dllm.models.moe import grouped_gemm_torch  # noqa: F401  (the reference, re-exported beside the kernel)


@triton.jit
def _grouped_gemm(X, W, Y, TE, TS, TN, K, N, sxm, swe, swn, swk, sym,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    t, pn = tl.program_id(0), tl.program_id(1)
    e = tl.load(TE + t)                      # this tile's expert
    row0 = tl.load(TS + t)                   # its first row of x / y
    rows = tl.load(TN + t)                   # rows in the tile (<= BM)
    rm = tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        a = tl.load(X + (row0 + rm)[:, None] * sxm + rk[None, :],
                    mask=(rm[:, None] < rows) & (rk[None, :] < K), other=0.0)
        b = tl.load(W + e * swe + rn[None, :] * swn + rk[:, None] * swk,
                    mask=(rn[None, :] < N) & (rk[:, None] < K), other=0.0)
        acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    tl.store(Y + (row0 + rm)[:, None] * sym + rn[None, :], acc.to(Y.dtype.element_ty),
             mask=(rm[:, None] < rows) & (rn[None, :] < N))


def _tiles(counts: list[int], bm: int, device):
    """Row tiles of at most bm rows that never straddle two experts -> (expert, start, rows) int32 tensors."""
    te, ts, tn = [], [], []
    start = 0
    for e, c in enumerate(counts):
        for r in range(0, c, bm):
            te.append(e)
            ts.append(start + r)
            tn.append(min(bm, c - r))
        start += c
    as_t = lambda v: torch.tensor(v, dtype=torch.int32, device=device)   # noqa: E731
    return as_t(te), as_t(ts), as_t(tn)


def grouped_gemm(x, w, counts):
    """x [M, K] (rows grouped by expert), w [E, N, K], counts [E] (sum M) -> [M, N] in x.dtype."""
    M, K = x.shape
    E, N, _ = w.shape
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0:
        return y
    x = x if x.stride(-1) == 1 else x.contiguous()
    bm = 16 if M <= 256 else 64
    te, ts, tn = _tiles([int(c) for c in counts.tolist()], bm, x.device)
    bn, bk = 64, 32
    _grouped_gemm[(te.numel(), triton.cdiv(N, bn))](
        x, w, y, te, ts, tn, K, N, x.stride(0), w.stride(0), w.stride(1), w.stride(2), y.stride(0),
        BM=bm, BN=bn, BK=bk)
    return y
