"""Fusions that cut launches in a transformer block, each beside its PyTorch reference.

A masked-diffusion step at small batch is bound by the host (37 ops dispatched per layer on a GPU,
README "Performance"); each kernel here replaces several of them with one launch:
  rms_norm(x, w, eps [, residual])  h = x + residual (rounded to the dtype, as torch's add);
                                    y = w * (h32 * rsqrt(mean(h32^2) + eps)).to(dtype)   -> y (, h)
  silu_mul(g, u)                    silu(g) (rounded to the dtype, as F.silu) * u        -> one launch;
                                    g, u may be the halves of one gate|up GEMM (strided rows)
  rope(x, cos, sin, fp32)           rotate-half RoPE of x [B, H, T, hd] (any strides); fp32: in float32,
                                    rounded once (LLaDA); else cos/sin and every product rounded to the
                                    dtype, as Dream's code does
The math matches the references operation by operation, including where they round to the model
dtype; only the order of the sum in the mean differs.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Triton's interpreter rounds float32 -> bfloat16 by truncation; under it (only) the kernels round to
# nearest-even by hand first, so that their bf16 results are the GPU's
EMULATE_RNE = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _to(x, dt: tl.constexpr, EMULATE: tl.constexpr):
    """float32 x -> dtype dt, rounding to nearest even."""
    if EMULATE:
        if dt == tl.bfloat16:
            bits = x.to(tl.int32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
            x = bits.to(tl.float32, bitcast=True)
    return x.to(dt)


@triton.jit
def _rms_norm(X, R, W, Y, H, N, D, eps, HAS_RES: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
              EMULATE: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]          # [ROWS, 1]
    cols = tl.arange(0, BLOCK)[None, :]                                    # [1, BLOCK]
    ok = (rows < N) & (cols < D)
    off = rows * D + cols
    x = tl.load(X + off, mask=ok, other=0.0)
    if HAS_RES:
        x = _to(x.to(tl.float32) + tl.load(R + off, mask=ok, other=0.0).to(tl.float32), X.dtype.element_ty, EMULATE)
        tl.store(H + off, x, mask=ok)
    h = x.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(h * h, 1) / D + eps)                         # [ROWS]
    n = _to(h * inv[:, None], X.dtype.element_ty, EMULATE).to(tl.float32)
    w = tl.load(W + cols, mask=cols < D, other=0.0).to(tl.float32)
    tl.store(Y + off, _to(w * n, Y.dtype.element_ty, EMULATE), mask=ok)


@triton.jit
def _silu_mul(G, U, Y, N, M, sg, su, BLOCK: tl.constexpr, EMULATE: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)   # flat index into the [N / M, M] output
    ok = i < N
    r, c = i // M, i % M                                  # rows of G and U are sg and su elements apart
    g = tl.load(G + r * sg + c, mask=ok, other=0.0).to(tl.float32)
    s = _to(g / (1.0 + tl.exp(-g)), G.dtype.element_ty, EMULATE).to(tl.float32)
    u = tl.load(U + r * su + c, mask=ok, other=0.0).to(tl.float32)
    tl.store(Y + i, _to(s * u, Y.dtype.element_ty, EMULATE), mask=ok)


@triton.jit
def _rope(X, C, S, Y, sxb, sxh, sxt, syb, syh, syt, scb, sct, N, H, T, HALF: tl.constexpr, FP32: tl.constexpr,
          ROWS: tl.constexpr, BLOCK: tl.constexpr, EMULATE: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]   # (b, h, t) rows of head_dim = 2 * HALF
    b, h, t = r // (H * T), (r // T) % H, r % T
    j = tl.arange(0, BLOCK)[None, :]
    ok = (r < N) & (j < HALF)
    xb = X + b * sxb + h * sxh + t * sxt
    x1 = tl.load(xb + j, mask=ok, other=0.0).to(tl.float32)
    x2 = tl.load(xb + HALF + j, mask=ok, other=0.0).to(tl.float32)
    cb, sb = C + b * scb + t * sct, S + b * scb + t * sct
    c1, c2 = tl.load(cb + j, mask=ok, other=0.0), tl.load(cb + HALF + j, mask=ok, other=0.0)
    s1, s2 = tl.load(sb + j, mask=ok, other=0.0), tl.load(sb + HALF + j, mask=ok, other=0.0)
    dt = X.dtype.element_ty
    if FP32:    # out = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1], all float32
        y1 = x1 * c1 - x2 * s1
        y2 = x2 * c2 + x1 * s2
    else:       # cos, sin rounded to the dtype; each product and the sum rounded as torch does
        c1, c2 = _to(c1, dt, EMULATE).to(tl.float32), _to(c2, dt, EMULATE).to(tl.float32)
        s1, s2 = _to(s1, dt, EMULATE).to(tl.float32), _to(s2, dt, EMULATE).to(tl.float32)
        y1 = _to(x1 * c1, dt, EMULATE).to(tl.float32) + _to(-x2 * s1, dt, EMULATE).to(tl.float32)
        y2 = _to(x2 * c2, dt, EMULATE).to(tl.float32) + _to(x1 * s2, dt, EMULATE).to(tl.float32)
    yb = Y + b * syb + h * syh + t * syt
    tl.store(yb + j, _to(y1, dt, EMULATE), mask=ok)
    tl.store(yb + HALF + j, _to(y2, dt, EMULATE), mask=ok)


def _rows(n: int) -> int:
    """Rows per program: 64 under the interpreter (each program is a Python call), else 8."""
    return min(64 if EMULATE_RNE else 8, triton.next_power_of_2(n))


def rms_norm(x, weight, eps: float, residual=None):
    """x [..., D] (+ residual) -> y, or (y, x + residual) when a residual is given."""
    D = x.shape[-1]
    x2 = x.reshape(-1, D).contiguous()
    y = torch.empty_like(x2, dtype=torch.promote_types(x.dtype, weight.dtype))
    h = torch.empty_like(x2) if residual is not None else x2
    r = residual.reshape(-1, D).contiguous() if residual is not None else x2
    N, rows = x2.shape[0], _rows(x2.shape[0])
    _rms_norm[(triton.cdiv(N, rows),)](x2, r, weight, y, h, N, D, float(eps), HAS_RES=residual is not None,
                                       ROWS=rows, BLOCK=triton.next_power_of_2(D), EMULATE=EMULATE_RNE)
    y = y.view(*x.shape[:-1], D)
    return (y, h.view(x.shape)) if residual is not None else y


def silu_mul(g, u):
    """g, u [..., M] (rows may be strided, e.g. the two halves of one gate|up GEMM) -> [..., M] contiguous."""
    M = g.shape[-1]
    g2, u2 = g.reshape(-1, M), u.reshape(-1, M)   # views when the rows are evenly spaced
    g2 = g2 if g2.stride(-1) == 1 else g2.contiguous()
    u2 = u2 if u2.stride(-1) == 1 else u2.contiguous()
    y = torch.empty(g.shape, dtype=g.dtype, device=g.device)
    N, BLOCK = g.numel(), 4096 if EMULATE_RNE else 1024
    _silu_mul[(triton.cdiv(N, BLOCK),)](g2, u2, y, N, M, g2.stride(0), u2.stride(0), BLOCK=BLOCK, EMULATE=EMULATE_RNE)
    return y


def rope(x, cos, sin, fp32: bool, out=None):
    """x [B, H, T, hd] (any strides, last one 1), cos/sin [B, 1, T, hd] float32 -> [B, H, T, hd]:
    a new contiguous tensor, or written into `out` (e.g. the KV cache's window: RoPE fused with the
    cache write)."""
    B, H, T, hd = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    cos, sin = cos.contiguous(), sin.contiguous()
    y = torch.empty(B, H, T, hd, device=x.device, dtype=x.dtype) if out is None else out
    assert y.shape == x.shape and y.dtype == x.dtype and y.stride(-1) == 1
    N, rows = B * H * T, _rows(B * H * T)
    _rope[(triton.cdiv(N, rows),)](x, cos, sin, y, x.stride(0), x.stride(1), x.stride(2), y.stride(0), y.stride(1),
                                   y.stride(2), cos.stride(0),
                                   cos.stride(2), N, H, T, HALF=hd // 2, FP32=fp32, ROWS=rows,
                                   BLOCK=triton.next_power_of_2(hd // 2), EMULATE=EMULATE_RNE)
    return y


# the PyTorch references (what dllm/models/transformer.py computes without the kernels)

def rms_norm_torch(x, weight, eps: float, residual=None):
    h = x + residual if residual is not None else x
    h32 = h.float()
    y = weight * (h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype)
    return (y, h) if residual is not None else y


def silu_mul_torch(g, u):
    return torch.nn.functional.silu(g) * u


def rope_torch(x, cos, sin, fp32: bool):
    from dllm.models.transformer import apply_rope
    return apply_rope(x, cos, sin, fp32)
