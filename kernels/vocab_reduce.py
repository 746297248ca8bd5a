"""Fused vocabulary reduction: one streaming pass over the logits of the rows that are scored.

Per row x = logits[b, l, :] (V values, any float dtype, read once, math in float32):
  lse    = log sum_v exp(x_v)                                 (online: running max + rescaled sum)
  token  = first argmax over v != banned of key_v,  key = x  (greedy)
                                                    key = x / T - log(-log u_v)  (Gumbel-max, LLaDA)
  conf   = exp(x_token - lse)                                 (low_confidence score)
  margin = exp(x_(1) - lse) - exp(x_(2) - lse)                (top-2 of x, banned included, as torch.topk)
  entropy= sum_v p_v log(p_v + 1e-10),  p = exp(x - lse)      (a second pass, only when asked)
No [rows, V] float32/float64 probability tensor is written. Every row is split over `splits`
programs (grid rows x splits) so that a batch-1 block of 32 rows still fills the GPU; each
program keeps per-lane partials ([BLOCK] vectors) and writes 7 numbers, which
`vocab_reduce` combines in PyTorch. u is drawn by torch with the caller's generator, exactly as
engine/sampling.py (propose) draws it, so that sampled tokens equal the reference path's.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

NEG = float("-inf")


@triton.jit
def _partials(X, U, P, sxb, sxl, sub, sul, L, V, span, banned, temperature,
              HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    r, split = tl.program_id(0), tl.program_id(1)
    b, l = r // L, r % L
    lo = split * span
    hi = tl.minimum(lo + span, V)
    lanes = tl.arange(0, BLOCK)
    m = tl.full([BLOCK], NEG, tl.float32)        # per-lane running max of x
    s = tl.zeros([BLOCK], tl.float32)            # per-lane sum exp(x - m)
    bk = tl.full([BLOCK], NEG, tl.float32)       # per-lane best key, its index and its x
    bi = tl.zeros([BLOCK], tl.int32)
    bx = tl.full([BLOCK], NEG, tl.float32)
    t1 = tl.full([BLOCK], NEG, tl.float32)       # per-lane top-2 of x
    t2 = tl.full([BLOCK], NEG, tl.float32)
    for start in range(lo, hi, BLOCK):
        idx = start + lanes
        ok = idx < hi
        # upcast right after loading: the math is float32 (and the interpreter gets bf16 wrong otherwise)
        x = tl.load(X + b * sxb + l * sxl + idx, mask=ok, other=NEG).to(tl.float32)
        m_new = tl.maximum(m, x)
        alpha = tl.where(m_new == NEG, 1.0, tl.exp(m - m_new))
        s = s * alpha + tl.where(x == NEG, 0.0, tl.exp(x - m_new))
        m = m_new
        if HAS_NOISE:
            u = tl.load(U + b * sub + l * sul + idx, mask=ok, other=0.5).to(tl.float32)
            key = x / temperature - tl.log(-tl.log(u))
        else:
            key = x
        key = tl.where(ok & (idx != banned), key, NEG)
        better = key > bk                         # strict: a lane keeps its first maximum
        bk = tl.where(better, key, bk)
        bi = tl.where(better, idx, bi)
        bx = tl.where(better, x, bx)
        t2 = tl.maximum(t2, tl.minimum(t1, x))
        t1 = tl.maximum(t1, x)
    # across lanes
    M = tl.max(m, 0)
    S = tl.sum(tl.where(m == NEG, 0.0, s * tl.exp(m - M)), 0)
    K = tl.max(bk, 0)
    I = tl.min(tl.where(bk == K, bi, 2147483647), 0)          # first index among the best keys
    XI = tl.max(tl.where((bk == K) & (bi == I), bx, NEG), 0)
    T1 = tl.max(t1, 0)
    a = tl.argmax(t1, 0, tie_break_left=True)
    T2 = tl.maximum(tl.max(tl.where(lanes != a, t1, NEG), 0), tl.max(t2, 0))
    out = P + (r * tl.num_programs(1) + split) * 7
    tl.store(out + 0, M)
    tl.store(out + 1, S)
    tl.store(out + 2, K)
    tl.store(out + 3, I.to(tl.float32))                       # exact below 2^24 (vocabularies are smaller)
    tl.store(out + 4, XI)
    tl.store(out + 5, T1)
    tl.store(out + 6, T2)


@triton.jit
def _entropy(X, LSE, E, sxb, sxl, L, V, span, BLOCK: tl.constexpr):
    r, split = tl.program_id(0), tl.program_id(1)
    b, l = r // L, r % L
    lo = split * span
    hi = tl.minimum(lo + span, V)
    lse = tl.load(LSE + r)
    acc = tl.zeros([BLOCK], tl.float32)
    for start in range(lo, hi, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        ok = idx < hi
        x = tl.load(X + b * sxb + l * sxl + idx, mask=ok, other=NEG).to(tl.float32)
        p = tl.exp(x - lse)
        acc += tl.where(ok, p * tl.log(p + 1e-10), 0.0)
    tl.store(E + r * tl.num_programs(1) + split, tl.sum(acc, 0))


def _grid(R: int, V: int, device, splits: int | None):
    if device.type == "cuda":
        block = 1024
        if splits is None:   # about two programs per SM, never a split shorter than 4 tiles
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            splits = max(1, min(math.ceil(2 * sms / R), math.ceil(V / (4 * block))))
    else:                    # the interpreter: small tiles, one program per row unless asked
        block = min(256, triton.next_power_of_2(V))
        splits = splits or 1
    span = math.ceil(math.ceil(V / splits) / block) * block   # whole tiles per split
    return block, math.ceil(V / span), span


def vocab_reduce(logits, *, score: str = "low_confidence", banned: int | None = None, temperature: float = 0.0,
                 generator=None, splits: int | None = None):
    """logits [B, L, V] (last dim contiguous) -> tokens [B, L] long, scores [B, L] float32.
    score: low_confidence (conf) | margin | entropy | random (U(0, 1), drawn after the noise)."""
    B, L, V = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    dev, R = logits.device, B * L
    block, n, span = _grid(R, V, dev, splits)
    u = None
    if temperature > 0:      # the reference's draw: same shape, generator and clamp
        u = torch.rand(logits.shape, generator=generator, device=dev).clamp_(min=1e-20)
    part = torch.empty(R, n, 7, device=dev, dtype=torch.float32)
    _partials[(R, n)](logits, u if u is not None else logits, part, logits.stride(0), logits.stride(1),
                      u.stride(0) if u is not None else 0, u.stride(1) if u is not None else 0, L, V, span,
                      -1 if banned is None else int(banned), float(temperature) if temperature > 0 else 1.0,
                      HAS_NOISE=u is not None, BLOCK=block)
    m, s, key, idx, xi, t1, t2 = part.unbind(-1)                                       # each [R, n]
    M = m.max(1).values                                                                 # [R]
    lse = M + torch.where(m == NEG, 0.0, s * (m - M[:, None]).exp()).sum(1).log()
    j = key.argmax(1, keepdim=True)                           # first split on ties = lowest index
    tokens = idx.gather(1, j).squeeze(1).long()
    conf = (xi.gather(1, j).squeeze(1) - lse).exp()
    if score == "low_confidence":
        out = conf
    elif score == "margin":
        top = torch.cat([t1, t2], 1).topk(2, dim=1).values                              # [R, 2]
        out = (top[:, 0] - lse).exp() - (top[:, 1] - lse).exp()
    elif score == "entropy":
        ent = torch.empty(R, n, device=dev, dtype=torch.float32)
        _entropy[(R, n)](logits, lse.contiguous(), ent, logits.stride(0), logits.stride(1), L, V, span, BLOCK=block)
        out = ent.sum(1)
    elif score == "random":
        out = torch.rand((B, L), generator=generator, device=dev).reshape(R)
    else:
        raise AssertionError(score)
    return tokens.view(B, L), out.view(B, L)


def vocab_reduce_torch(logits, *, score: str = "low_confidence", banned: int | None = None,
                       temperature: float = 0.0, generator=None, splits=None):
    """The PyTorch reference of vocab_reduce: the engine's own proposal (dllm/engine/sampling.py
    propose, LLaDA's Gumbel-max at T > 0, no top-k / top-p), so that kernel and engine agree by one
    tested definition."""
    from dllm.engine.sampling import propose

    return propose(logits, remasking=score, temperature=temperature, top_p=None, top_k=None, style="llada",
                   generator=generator, banned=banned)
