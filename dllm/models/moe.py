"""LLaDA2's mixture-of-experts FFN, swapped into a Transformer block for layers >= first_dense.

Routing (dInfer modeling_llada2_moe.py:510-566), all in float32:
  s      = sigmoid(h @ W_gate^T)                         [N, E]   (h and W_gate cast to float32)
  groups = sum of the top-2 of (s + expert_bias) in each of n_group groups; keep topk_group groups
  idx    = top-k of (s + expert_bias) over the kept groups' experts   (the bias only chooses)
  w      = s[idx] / (sum_k s[idx] + 1e-20) * routed_scaling              (unbiased scores)
Output (:614-633): shared(h) + sum_k w_k * expert_{idx_k}(h), expert(h) = w2(silu(h w1) * h w3).

No per-token Python loop: the N*k (token, expert) pairs are sorted by expert and each active expert
runs one GEMM over its rows (kernels/grouped_gemm.py: a Triton grouped GEMM on CUDA, one F.linear
per expert elsewhere); the weighted sum is accumulated in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dllm.models.config import ModelArgs


class MoE(nn.Module):
    triton = False                 # Transformer.set_kernels: the grouped GEMM as a Triton kernel
    fp32 = ("expert_bias",)        # Transformer.keep_fp32: ranks experts; a bfloat16 copy would change choices

    def __init__(self, a: ModelArgs):
        super().__init__()
        from dllm.models.transformer import FeedForward

        m = self.m = a.moe
        E, I = m.n_experts, m.intermediate_size
        self.gate = nn.Parameter(torch.empty(E, a.dim), requires_grad=False)        # router, used in float32
        self.expert_bias = nn.Parameter(torch.empty(E), requires_grad=False)
        self.w13 = nn.Parameter(torch.empty(E, 2 * I, a.dim), requires_grad=False)  # per expert: gate rows | up rows
        self.w2 = nn.Parameter(torch.empty(E, a.dim, I), requires_grad=False)
        self.shared = FeedForward(a, m.n_shared * I) if m.n_shared else None

    def weight_views(self, leaf: str, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors as views of the stacked parameters (Transformer.named_weights)."""
        I = self.m.intermediate_size
        if leaf == "gate":
            return {"gate.weight": p}
        if leaf == "w13":
            return {f"experts.{e}.{n}.weight": p[e, lo:lo + I] for e in range(p.shape[0])
                    for n, lo in (("w1", 0), ("w3", I))}
        if leaf == "w2":
            return {f"experts.{e}.w2.weight": p[e] for e in range(p.shape[0])}
        return {leaf: p}

    def route(self, h):
        """h [N, dim] -> (expert ids [N, k] long, combine weights [N, k] float32)."""
        m = self.m
        N = h.shape[0]
        scores = F.linear(h.float(), self.gate.float()).sigmoid()                 # [N, E]
        biased = scores + self.expert_bias.float()
        group = biased.view(N, m.n_group, -1).topk(2, dim=-1).values.sum(-1)       # [N, G]
        keep = torch.zeros_like(group).scatter_(1, group.topk(m.topk_group, dim=-1, sorted=False).indices, 1.0)
        keep = keep.bool()[:, :, None].expand(N, m.n_group, m.n_experts // m.n_group).reshape(N, -1)
        idx = biased.masked_fill(~keep, float("-inf")).topk(m.top_k, dim=-1).indices
        w = scores.gather(1, idx)
        if m.norm_topk and m.top_k > 1:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        return idx, w * m.routed_scaling

    def experts(self, h, idx, w):
        """h [N, dim], idx/w [N, k] -> sum_k w_k * expert_{idx_k}(h) [N, dim] (float32 sum, h's dtype)."""
        if self.triton:
            from dllm.kernels.grouped_gemm import grouped_gemm as gemm
        else:
            gemm = grouped_gemm_torch
        k, I = idx.shape[1], self.m.intermediate_size
        flat = idx.reshape(-1)
        order = torch.argsort(flat, stable=True)                    # (token, slot) pairs grouped by expert
        counts = torch.bincount(flat, minlength=self.m.n_experts)  # rows per expert, in expert order
        token = order // k
        y = gemm(h[token], self.w13, counts)                        # [N*k, 2I]
        y = gemm(F.silu(y[:, :I]) * y[:, I:], self.w2, counts)      # [N*k, dim]
        out = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
        out.index_add_(0, token, y.float() * w.reshape(-1)[order, None])
        return out.to(h.dtype)

    def forward(self, x):
        """x [B, T, dim] -> [B, T, dim]."""
        h = x.reshape(-1, x.shape[-1])
        idx, w = self.route(h)
        y = self.experts(h, idx, w).view(x.shape)
        return y + self.shared(x) if self.shared is not None else y


def grouped_gemm_torch(x, w, counts):
    """x [M, K] rows grouped by expert (counts[e] rows of expert e, in order), w [E, N, K] -> [M, N]:
    one F.linear per active expert (the reference of kernels/grouped_gemm.py)."""
    y = x.new_empty(x.shape[0], w.shape[1])
    start = 0
    for e, c in enumerate(counts.tolist()):
        if c:
            y[start:start + c] = F.linear(x[start:start + c], w[e])
            start += c
    return y
