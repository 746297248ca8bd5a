"""One transformer for every family (gpt-fast style): pre-norm blocks, RMSNorm, rotate-half RoPE,
GQA attention (bidirectional for diffusion models), SiLU-gated MLP. Family differences live in
ModelArgs (config.py) and the weight-name maps (loader.py), never in a second copy of this file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dllm.models.config import ModelArgs
from dllm.models.packing import PackedLinear


class RMSNorm(nn.Module):
    triton = False            # Transformer.set_kernels: the fused kernels of dllm/kernels/fused.py

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x, residual=None):
        """x [..., dim] -> the normalised x; with residual: (normalised x + residual, x + residual)."""
        if self.triton:
            from dllm.kernels.fused import rms_norm
            return rms_norm(x, self.weight, self.eps, residual)
        if residual is not None:
            h = x + residual
            return self(h), h
        # x * rsqrt(mean(x^2) + eps) in float32, rounded to the model dtype, then scaled (LLaDA and
        # Dream agree); F.rms_norm upcasts internally and is one op instead of seven (bit-equal on
        # CPU to the spelled-out formula, kernels/fused.py rms_norm_torch)
        return self.weight * F.rms_norm(x, self.weight.shape, eps=self.eps)


class Rotary(nn.Module):
    """cos/sin tables of rotate-half RoPE, grown on demand and gathered by position.

    inv_freq_j = 1 / theta^(2j/d); angle(p, j) = p * inv_freq_j, duplicated over both halves.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self._cos = self._sin = None

    def tables(self, n: int, device):
        if self._cos is None or self._cos.shape[0] < n or self._cos.device != torch.device(device):
            n = max(n, 64)
            inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float) / self.head_dim))
            freqs = torch.arange(n, device=device, dtype=torch.float)[:, None] * inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)           # [n, head_dim]
            self._cos, self._sin = emb.cos(), emb.sin()
        return self._cos, self._sin

    def forward(self, positions, bound: int):
        """positions [B, T], all < bound -> cos, sin [B, T, 1, head_dim] in float32 (broadcast over heads).

        The caller gives the bound so that no host sync is spent reading positions.max().
        """
        cos, sin = self.tables(bound, positions.device)
        return cos[positions][:, :, None], sin[positions][:, :, None]


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin, fp32: bool):
    """x * cos + rotate_half(x) * sin; x [..., hd], cos/sin broadcastable float32 tables [..., rot].

    rot < hd is partial rotary (LLaDA2, dInfer modeling_llada2_moe.py:456-467): the first rot
    dimensions turn, the rest pass through unchanged."""
    rot = cos.shape[-1]
    if rot < x.shape[-1]:
        return torch.cat((apply_rope(x[..., :rot], cos, sin, fp32), x[..., rot:]), -1)
    # LLaDA rotates in float32 and rounds back; Dream rounds cos/sin to the model dtype first
    if fp32:
        x32 = x.float()
        return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


def split_linear(x, lin: nn.Linear | PackedLinear, parts, one_gemm: bool | None = None, join: bool = True):
    """x @ lin.weight.T (+ bias) for a fused projection whose row blocks are parts ((lo, hi)
    ranges) -> one tensor (join) or one per block. On a GPU, or with the weight packed for oneDNN
    (models/packing.py), one GEMM: a small-batch step is bound by launches on a GPU. With a dense
    weight on a CPU one GEMM per row block: MKL runs the narrower GEMMs faster at a 32-row step
    (about 5% of a 110M model's step). one_gemm: None = that choice by device; True/False forces it
    (Transformer.set_one_gemm: the tests run both paths against the references)."""
    if (x.is_cuda if one_gemm is None else one_gemm) or isinstance(lin, PackedLinear):
        y = lin(x)
        return y if join else y.split([hi - lo for lo, hi in parts], -1)
    w, b = lin.weight, lin.bias
    ys = [F.linear(x, w[lo:hi], None if b is None else b[lo:hi]) for lo, hi in parts]
    return torch.cat(ys, -1) if join else ys


class Attention(nn.Module):
    """GQA attention. The q, k, v projections are one [(H + 2 Hkv) hd, dim] matrix (wqkv): on a GPU
    one GEMM and one launch instead of three; the checkpoint's separate matrices load into its row
    ranges (Transformer.named_weights)."""
    triton = False
    one_gemm: bool | None = None   # split_linear's choice (Transformer.set_one_gemm)

    def __init__(self, a: ModelArgs, layer: int):
        super().__init__()
        self.a, self.layer = a, layer
        hd = a.head_dim
        self.wqkv = nn.Linear(a.dim, (a.n_heads + 2 * a.n_kv_heads) * hd, bias=a.qkv_bias)
        self.wo = nn.Linear(a.n_heads * hd, a.dim, bias=a.o_bias)
        nq, nk = a.n_heads * hd, a.n_kv_heads * hd
        self._parts = {"wq": (0, nq), "wk": (nq, nq + nk), "wv": (nq + nk, nq + 2 * nk)}
        if a.fused_qkv:   # the checkpoint's own q|k|v matrix (LLaDA2 query_key_value): one part, all rows
            self._parts = {"wqkv": (0, nq + 2 * nk)}
        # QK-norm (Qwen3 / SDAR, LLaDA2): RMSNorm over head_dim on q and k, before RoPE
        self.q_norm = RMSNorm(hd, a.norm_eps) if a.qk_norm else None
        self.k_norm = RMSNorm(hd, a.norm_eps) if a.qk_norm else None
        self.fused_rope = a.rope_dim == hd   # the Triton RoPE kernel turns whole heads only

    def parts(self) -> dict[str, tuple[int, int]]:
        """Row ranges of the checkpoint's q/k/v projections inside wqkv."""
        return self._parts

    def forward(self, x, cos, sin, ctx, rows=None):
        """x [B, T, dim] -> [B, T', dim]: every row's keys/values are computed (and written where the
        context keeps them, models/context.py), but only the queries of `rows` (all T when None; a slice,
        or flat indices in a ragged step) attend and are projected out."""
        B, T, _ = x.shape
        a, hd, H = self.a, self.a.head_dim, self.a.n_heads
        qkv = split_linear(x, self.wqkv, self.parts().values(), self.one_gemm).view(B, T, H + 2 * a.n_kv_heads, hd)
        if self.q_norm is not None:   # [B, T, H | Hkv, hd] normalised over hd; v untouched
            Hq = H + a.n_kv_heads
            qkv = torch.cat((self.q_norm(qkv[:, :, :H]), self.k_norm(qkv[:, :, H:Hq]), qkv[:, :, Hq:]), 2)
        v = qkv[:, :, H + a.n_kv_heads:].transpose(1, 2)                  # [B, Hkv, T, hd]
        if self.triton and self.fused_rope:   # the kernel writes the RoPE'd keys into `out` (the cache's window)
            from dllm.kernels.fused import rope
            cos, sin = cos.transpose(1, 2), sin.transpose(1, 2)           # [B, 1, T, hd]
            q = rope(qkv[:, :, :H].transpose(1, 2), cos, sin, a.rope_fp32)
            k = qkv[:, :, H:H + a.n_kv_heads].transpose(1, 2)
            rope_k = lambda out=None: rope(k, cos, sin, a.rope_fp32, out=out)             # noqa: E731
        else:   # q and k rotated together: [B, T, H + Hkv, hd] against cos/sin [B, T, 1, hd]
            qk = apply_rope(qkv[:, :, :H + a.n_kv_heads], cos, sin, a.rope_fp32).transpose(1, 2)
            q, k = qk[:, :H], qk[:, H:]
            rope_k = lambda out=None: k if out is None else out.copy_(k)   # noqa: E731
        return self.wo(ctx.attend(self.layer, q, rope_k, v, rows, self.triton))


class FeedForward(nn.Module):
    """SiLU-gated MLP, w2(silu(x w1) * x w3), with the gate and up projections as one
    [2 hidden, dim] matrix (w13: gate rows first), one GEMM instead of two on a GPU."""
    triton = False
    one_gemm: bool | None = None

    def __init__(self, a: ModelArgs, hidden: int | None = None):
        super().__init__()
        n = hidden or a.intermediate_size   # hidden: e.g. LLaDA2's shared experts (moe.py)
        self.w13 = nn.Linear(a.dim, 2 * n, bias=False)   # gate (LLaDA ff_proj) | up
        self.w2 = nn.Linear(n, a.dim, bias=False)         # down (LLaDA ff_out)
        self._parts = {"w1": (0, n), "w3": (n, 2 * n)}

    def parts(self) -> dict[str, tuple[int, int]]:
        """Row ranges of the checkpoint's gate and up projections inside w13."""
        return self._parts

    def forward(self, x):
        g, u = split_linear(x, self.w13, self.parts().values(), self.one_gemm, join=False)
        if self.triton:
            from dllm.kernels.fused import silu_mul
            return self.w2(silu_mul(g, u))
        return self.w2(F.silu(g) * u)


class Block(nn.Module):
    def __init__(self, a: ModelArgs, layer: int):
        super().__init__()
        self.attention_norm = RMSNorm(a.dim, a.norm_eps)
        self.attention = Attention(a, layer)
        self.ffn_norm = RMSNorm(a.dim, a.norm_eps)
        if a.moe is not None and layer >= a.moe.first_dense:   # LLaDA2: routed experts after the dense layers
            from dllm.models.moe import MoE
            self.feed_forward = MoE(a)
        else:
            self.feed_forward = FeedForward(a)

    def forward(self, x, cos, sin, ctx, rows=None):
        """rows: only these rows of the output are needed (the last layer: the LM head's rows); the
        others still write their keys/values where the context keeps them."""
        o = self.attention(self.attention_norm(x), cos, sin, ctx, rows)
        n, h = self.ffn_norm(o, residual=x if rows is None else x[:, rows])
        return h + self.feed_forward(n)


class Transformer(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.args = a
        # weights always come from a checkpoint: skip Embedding's normal_ init (on the meta device it
        # pulls in torch._dynamo, ~1.5 s of start-up for nothing)
        self.tok_embeddings = nn.Embedding(a.vocab_size, a.dim, _weight=torch.empty(a.vocab_size, a.dim))
        self.layers = nn.ModuleList(Block(a, i) for i in range(a.n_layers))
        self.norm = RMSNorm(a.dim, a.norm_eps)
        self.output = None if a.tie_embeddings else nn.Linear(a.dim, a.vocab_size, bias=False)
        self.rotary = Rotary(a.rope_dim, a.rope_theta)

    def named_weights(self) -> dict[str, torch.Tensor]:
        """The weights under the checkpoint's layout: every parameter by name, with the fused
        projections split into views of their row ranges (layers.{i}.attention.wq.weight,
        ...wk..., ...wv..., layers.{i}.feed_forward.w1.weight, ...w3...). Loaders copy into these
        views; savers read them. With packed weights (models/packing.py) they are dense copies."""
        out = {}
        for name, p in self.named_parameters():
            if p.is_mkldnn:
                if name == "output.weight" and self.args.tie_embeddings:
                    continue   # the tied head's packed copy of the embedding
                p = p.to_dense()
            mod_name, _, leaf = name.rpartition(".")
            direct = self.get_submodule(mod_name) if mod_name else None
            if hasattr(direct, "weight_views"):   # stacked experts (moe.py): one view per checkpoint tensor
                out.update({f"{mod_name}.{k}": v for k, v in direct.weight_views(leaf, p.detach()).items()})
                continue
            owner, _, proj = mod_name.rpartition(".")
            mod = self.get_submodule(owner) if owner else None
            if proj in ("wqkv", "w13") and hasattr(mod, "parts"):
                for part, (lo, hi) in mod.parts().items():
                    out[f"{owner}.{part}.{leaf}"] = p.detach()[lo:hi]
            else:
                out[name] = p.detach()
        return out

    def set_kernels(self, name: str):
        """'triton': RMSNorm (+ residual add), SiLU-mul, RoPE, bidirectional attention and the MoE
        grouped GEMM run as Triton kernels (dllm/kernels); 'torch': PyTorch."""
        for m in self.modules():
            if hasattr(type(m), "triton"):   # RMSNorm, FeedForward, Attention, MoE
                m.triton = name == "triton"

    def set_one_gemm(self, one: bool | None):
        """None: one GEMM per fused projection on a GPU, one per row block on a CPU (split_linear);
        True/False: that path on any device."""
        for m in self.modules():
            if isinstance(m, (FeedForward, Attention)):
                m.one_gemm = one

    def keep_fp32(self):
        """Parameters a module lists in `fp32` (e.g. the MoE expert bias, which only ranks experts)
        back to float32 after the model was cast to its dtype (loaders call this before to_empty)."""
        for m in self.modules():
            for name in getattr(m, "fp32", ()):
                setattr(m, name, nn.Parameter(getattr(m, name).float(), requires_grad=False))

    @torch.no_grad()
    def forward(self, token_ids, positions, cache=None, query_slice: slice | None = None, attn_mask=None):
        """token_ids, positions [B, T]: the rows to run (a window of the canvas when cached).

        cache: None (keys = these T rows) or a KVCache (engine/kv_cache.py) that receives
        these rows' keys/values at its `start` column and supplies all of its L columns.
        attn_mask [B, keys] bool: False on padding, never attended; or [B, T, keys] bool, a full
        per-query mask (the AR prefill, where a padding query must still see one key; the
        block-causal prefill, models/masks.py).
        Returns logits [B, Q, vocab] for the rows in query_slice (all rows when None): the LM
        head, and the last layer's attention output and MLP, never run on rows nobody reads. For
        shift_logits families (Dream) row i is scored by the hidden state at i-1 (row 0 by
        itself, as Dream does).
        """
        from dllm.models.context import DenseContext

        mask = None if attn_mask is None else attn_mask[:, None] if attn_mask.dim() == 3 else attn_mask[:, None, None, :]
        L = token_ids.shape[1]
        q = query_slice if query_slice is not None else slice(0, L)
        if q.start is not None and q.stop is not None and 0 <= q.start <= q.stop:
            start, stop = q.start, q.stop   # callers keep stop <= L; q.indices(L) would pin L under torch.compile
        else:
            start, stop, _ = q.indices(L)
        # the head reads rows [start, stop) ([start - 1, stop - 1) with shift_logits): the last layer
        # runs attention output and MLP on those rows only (every row still caches its keys/values)
        lo = max(start - 1, 0) if self.args.shift_logits else start
        last_rows = slice(lo, stop)
        start, stop = start - lo, stop - lo             # the head's rows among the last layer's [lo, stop)
        if self.args.shift_logits:
            head = torch.arange(start - 1, stop - 1, device=token_ids.device).clamp_(min=0)
        else:
            head = slice(start, stop)
        ctx = DenseContext(cache, mask, self.args.causal)
        bound = L if cache is None else cache.length
        return self.run(token_ids, positions, ctx, last_rows, head, bound)

    @torch.no_grad()
    def run(self, token_ids, positions, ctx, last_rows, head_rows, bound: int):
        """The layers and the head for any batch layout (models/context.py): token_ids, positions [B, T];
        last_rows: the rows the last layer runs attention output and MLP on (a slice or flat indices);
        head_rows: the rows of that output the LM head scores; bound: > every position. -> logits."""
        a = self.args
        h = self.tok_embeddings(token_ids)
        if a.input_emb_scale:
            h = h * (a.dim ** 0.5)
        cos, sin = self.rotary(positions, bound)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, ctx, last_rows if i == last else None)
        h = self.norm(h[:, head_rows])
        logits = F.linear(h, self.tok_embeddings.weight) if self.output is None else self.output(h)
        if a.scale_logits:
            logits = logits * (1.0 / a.dim ** 0.5)
        return logits
