"""Bidirectional attention of a block of queries over every cached key, split over the keys.

q [B, H, Tq, hd] (the block's rows), k, v [B, Hkv, S, hd] (the cache's per-layer views:
[prefix | block | suffix] read where they lie, never concatenated), key padding [B, S] (False:
never attended), GQA (query head h reads kv head h // (H / Hkv)), scale 1/sqrt(hd).
A diffusion step has few queries (a 32-slot block) and many keys, so each (b, h, query tile)
is split over `splits` programs along the keys (flash-decoding); each writes its normalised
partial output o_s and its log-sum-exp, and the partials are merged in PyTorch:
  lse = log sum_s exp(lse_s),  o = sum_s exp(lse_s - lse) o_s.
Matmuls accumulate in float32; float32 inputs use IEEE products (no TF32).
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _attn_partial(Q, K, V, KM, O, LSE, sqb, sqh, sqt, skb, skh, sks, svb, svh, svs, smb,
                  H, G, Tq, S, span, scale, HD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                  HAS_MASK: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    bh, mt, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    kvh = h // G
    rows = mt * BM + tl.arange(0, BM)                                   # query rows   [BM]
    d = tl.arange(0, HD)
    qm = rows[:, None] < Tq
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + d[None, :], mask=qm, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    m = tl.full([BM], float("-inf"), tl.float32)
    l = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, HD], tl.float32)
    lo = split * span
    hi = tl.minimum(lo + span, S)
    for start in range(lo, hi, BN):
        cols = start + tl.arange(0, BN)                                  # keys [BN]
        live = cols < hi
        if HAS_MASK:
            live = live & (tl.load(KM + b * smb + cols, mask=cols < hi, other=0) != 0)
        k = tl.load(K + b * skb + kvh * skh + cols[None, :] * sks + d[:, None], mask=cols[None, :] < hi, other=0.0)
        v = tl.load(V + b * svb + kvh * svh + cols[:, None] * svs + d[None, :], mask=cols[:, None] < hi, other=0.0)
        if UPCAST:
            k, v = k.to(tl.float32), v.to(tl.float32)
        if IEEE:
            s = tl.dot(q, k, input_precision="ieee") * scale                # [BM, BN]
        else:
            s = tl.dot(q, k) * scale
        s = tl.where(live[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.where(m_new == float("-inf"), 1.0, tl.exp(m - m_new))
        p = tl.where(live[None, :], tl.exp(s - m_new[:, None]), 0.0)
        l = l * alpha + tl.sum(p, 1)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    out = acc / tl.where(l == 0.0, 1.0, l)[:, None]
    lse = tl.where(l == 0.0, float("-inf"), m + tl.log(l))
    base = (bh * tl.num_programs(2) + split) * Tq
    tl.store(O + (base + rows[:, None]) * HD + d[None, :], out, mask=qm)
    tl.store(LSE + base + rows, lse, mask=rows < Tq)


def attention(q, k, v, key_mask=None, splits: int | None = None):
    """q [B, H, Tq, hd], k/v [B, Hkv, S, hd] (last dim contiguous), key_mask [B, S] bool or None
    -> [B, H, Tq, hd] in q's dtype. hd must be a power of two >= 16 (every published dLLM's is)."""
    B, H, Tq, hd = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    BM, BN = 16, (32 if INTERPRET else 64)
    if splits is None:       # enough programs to fill the GPU at batch 1; whole key tiles per split
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 1
        splits = max(1, min(math.ceil(2 * sms / (B * H * triton.cdiv(Tq, BM))), triton.cdiv(S, 4 * BN)))
    span = triton.cdiv(triton.cdiv(S, splits), BN) * BN
    n = triton.cdiv(S, span)
    o = torch.empty(B * H, n, Tq, hd, device=q.device, dtype=torch.float32)
    lse = torch.empty(B * H, n, Tq, device=q.device, dtype=torch.float32)
    km = key_mask.to(torch.int8).contiguous() if key_mask is not None else q
    _attn_partial[(B * H, triton.cdiv(Tq, BM), n)](
        q, k, v, km, o, lse, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), km.stride(0) if key_mask is not None else 0,
        H, H // Hkv, Tq, S, span, 1.0 / math.sqrt(hd), HD=hd, BM=BM, BN=BN, HAS_MASK=key_mask is not None,
        IEEE=q.dtype == torch.float32, UPCAST=INTERPRET)
    total = torch.logsumexp(lse, 1, keepdim=True)                        # [B*H, 1, Tq]
    w = (lse - total).exp().nan_to_num_(0.0)                             # splits with no live key weigh 0
    out = (w[..., None] * o).sum(1)                                      # [B*H, Tq, hd]
    return out.view(B, H, Tq, hd).to(q.dtype)


def attention_torch(q, k, v, key_mask=None, splits=None):
    """The PyTorch reference: scaled_dot_product_attention with the padding mask and GQA."""
    mask = key_mask[:, None, None, :] if key_mask is not None else None
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                            enable_gqa=k.shape[1] != q.shape[1])
