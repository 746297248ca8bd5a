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
    """x * cos + rotate_half(x) * sin; x [..., hd], cos/sin broadcastable float32 tables."""
    # LLaDA rotates in float32 and rounds back; Dream rounds cos/sin to the model dtype first
    if fp32:
        x32 = x.float()
        return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


# None: one GEMM per fused projection on a GPU, one per row block on a CPU (split_linear); tests
# set True/False to run either path anywhere
ONE_GEMM: bool | None = None


def one_gemm(x) -> bool:
    return x.is_cuda if ONE_GEMM is None else ONE_GEMM


def split_linear(x, lin: nn.Linear | PackedLinear, parts, join: bool = True):
    """x @ lin.weight.T (+ bias) for a fused projection whose row blocks are parts ((lo, hi)
    ranges) -> one tensor (join) or one per block. On a GPU, or with the weight packed for oneDNN
    (models/packing.py), one GEMM: a small-batch step is bound by launches on a GPU. With a dense
    weight on a CPU one GEMM per row block: MKL runs the narrower GEMMs faster at a 32-row step
    (about 5% of a 110M model's step)."""
    if one_gemm(x) or isinstance(lin, PackedLinear):
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

    def __init__(self, a: ModelArgs, layer: int):
        super().__init__()
        self.a, self.layer = a, layer
        hd = a.head_dim
        self.wqkv = nn.Linear(a.dim, (a.n_heads + 2 * a.n_kv_heads) * hd, bias=a.qkv_bias)
        self.wo = nn.Linear(a.n_heads * hd, a.dim, bias=False)
        nq, nk = a.n_heads * hd, a.n_kv_heads * hd
        self._parts = {"wq": (0, nq), "wk": (nq, nq + nk), "wv": (nq + nk, nq + 2 * nk)}

    def parts(self) -> dict[str, tuple[int, int]]:
        """Row ranges of the checkpoint's q/k/v projections inside wqkv."""
        return self._parts

    def forward(self, x, cos, sin, mask, cache, rows: slice | None = None):
        """x [B, T, dim] -> [B, T', dim]: every row's keys/values are computed (and cached), but only
        the queries of `rows` (all T when None) attend and are projected out."""
        B, T, _ = x.shape
        a, hd, H = self.a, self.a.head_dim, self.a.n_heads
        qkv = split_linear(x, self.wqkv, self.parts().values()).view(B, T, H + 2 * a.n_kv_heads, hd)
        v = qkv[:, :, H + a.n_kv_heads:].transpose(1, 2)                  # [B, Hkv, T, hd]
        if self.triton:   # the kernel writes the RoPE'd keys into `out` (the cache's window) itself
            from dllm.kernels.fused import rope
            cos, sin = cos.transpose(1, 2), sin.transpose(1, 2)           # [B, 1, T, hd]
            q = rope(qkv[:, :, :H].transpose(1, 2), cos, sin, a.rope_fp32)
            k = qkv[:, :, H:H + a.n_kv_heads].transpose(1, 2)
            rope_k = lambda out=None: rope(k, cos, sin, a.rope_fp32, out=out)             # noqa: E731
        else:   # q and k rotated together: [B, T, H + Hkv, hd] against cos/sin [B, T, 1, hd]
            qk = apply_rope(qkv[:, :, :H + a.n_kv_heads], cos, sin, a.rope_fp32).transpose(1, 2)
            q, k = qk[:, :H], qk[:, H:]
            rope_k = lambda out=None: k if out is None else out.copy_(k)   # noqa: E731
        if cache is not None:   # write this window's k/v in place, attend over every cached column
            k, v = cache.update(self.layer, None, v, k_writer=rope_k)
        else:
            k = rope_k()
        if rows is not None:
            q = q[:, :, rows]
            if mask is not None and mask.shape[2] != 1:   # a per-query mask: its rows of the queries kept
                mask = mask[:, :, rows]
        if a.causal:
            # query i sits at key column start + i (start = the cache's write column, 0 without a
            # cache) and sees keys j <= start + i; skipped when that already admits every key
            # (one new token attending a cache that ends at it: the decode step of the AR loop)
            start, S = (cache.start if cache is not None else 0), k.shape[2]
            if start + 1 < S:
                causal = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=start)
                causal = causal if rows is None else causal[rows]
                mask = causal if mask is None else mask & causal
        if self.triton and not a.causal and (mask is None or mask.shape[2] == 1) and hd >= 16 and hd & (hd - 1) == 0:
            from dllm.kernels.attention import attention   # split-KV over the cache views, key padding only
            o = attention(q, k, v, None if mask is None else mask[:, 0, 0, :])
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=a.n_kv_heads != a.n_heads)
        return self.wo(o.transpose(1, 2).reshape(B, q.shape[2], H * hd))


class FeedForward(nn.Module):
    """SiLU-gated MLP, w2(silu(x w1) * x w3), with the gate and up projections as one
    [2 hidden, dim] matrix (w13: gate rows first), one GEMM instead of two on a GPU."""
    triton = False

    def __init__(self, a: ModelArgs):
        super().__init__()
        self.w13 = nn.Linear(a.dim, 2 * a.intermediate_size, bias=False)   # gate (LLaDA ff_proj) | up
        self.w2 = nn.Linear(a.intermediate_size, a.dim, bias=False)         # down (LLaDA ff_out)
        n = a.intermediate_size
        self._parts = {"w1": (0, n), "w3": (n, 2 * n)}

    def parts(self) -> dict[str, tuple[int, int]]:
        """Row ranges of the checkpoint's gate and up projections inside w13."""
        return self._parts

    def forward(self, x):
        g, u = split_linear(x, self.w13, self.parts().values(), join=False)
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
        self.feed_forward = FeedForward(a)

    def forward(self, x, cos, sin, mask, cache, rows: slice | None = None):
        """rows: only these rows of the output are needed (the last layer: the LM head's rows); the
        others still write their keys/values into the cache."""
        o = self.attention(self.attention_norm(x), cos, sin, mask, cache, rows)
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
        self.rotary = Rotary(a.head_dim, a.rope_theta)

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
            owner, _, proj = mod_name.rpartition(".")
            mod = self.get_submodule(owner) if owner else None
            if proj in ("wqkv", "w13") and hasattr(mod, "parts"):
                for part, (lo, hi) in mod.parts().items():
                    out[f"{owner}.{part}.{leaf}"] = p.detach()[lo:hi]
            else:
                out[name] = p.detach()
        return out

    def set_kernels(self, name: str):
        """'triton': RMSNorm (+ residual add), SiLU-mul, RoPE and bidirectional attention run as
        Triton kernels (dllm/kernels); 'torch': PyTorch."""
        for m in self.modules():
            if isinstance(m, (RMSNorm, FeedForward, Attention)):
                m.triton = name == "triton"

    def _rows_by_index(self, h, cos, sin, mask, cache, rows: torch.Tensor):
        """The forward's tail for query rows given as a [Q] index tensor (not shift_logits families)."""
        assert not self.args.shift_logits, "index query rows are for families without the logit shift"
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, cache, rows if i == last else None)
        h = self.norm(h)
        logits = F.linear(h, self.tok_embeddings.weight) if self.output is None else self.output(h)
        return logits * (1.0 / self.args.dim ** 0.5) if self.args.scale_logits else logits

    @torch.no_grad()
    def forward(self, token_ids, positions, cache=None, query_slice: slice | None = None, attn_mask=None):
        """token_ids, positions [B, T]: the rows to run (a window of the canvas when cached).

        cache: None (keys = these T rows) or a KVCache (engine/kv_cache.py) that receives
        these rows' keys/values at its `start` column and supplies all of its L columns.
        attn_mask [B, keys] bool: False on padding, never attended; or [B, T, keys] bool, a full
        per-query mask (the AR prefill, where a padding query must still see one key).
        query_slice may also be a [Q] index tensor of rows (WINO: the block's rows and its shadow rows).
        Returns logits [B, Q, vocab] for the rows in query_slice (all rows when None): the LM
        head, and the last layer's attention output and MLP, never run on rows nobody reads. For
        shift_logits families (Dream) row i is scored by the hidden state at i-1 (row 0 by
        itself, as Dream does).
        """
        a = self.args
        h = self.tok_embeddings(token_ids)
        if a.input_emb_scale:
            h = h * (a.dim ** 0.5)
        cos, sin = self.rotary(positions, token_ids.shape[1] if cache is None else cache.length)
        mask = None if attn_mask is None else attn_mask[:, None] if attn_mask.dim() == 3 else attn_mask[:, None, None, :]
        L = token_ids.shape[1]
        if isinstance(query_slice, torch.Tensor):   # rows given by index (WINO's block + shadow rows)
            return self._rows_by_index(h, cos, sin, mask, cache, query_slice)
        q = query_slice if query_slice is not None else slice(0, L)
        if q.start is not None and q.stop is not None and 0 <= q.start <= q.stop:
            start, stop = q.start, q.stop   # callers keep stop <= L; q.indices(L) would pin L under torch.compile
        else:
            start, stop, _ = q.indices(L)
        # the head reads rows [start, stop) ([start - 1, stop - 1) with shift_logits): the last layer
        # runs attention output and MLP on those rows only (every row still caches its keys/values)
        lo = max(start - 1, 0) if a.shift_logits else start
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, cache, slice(lo, stop) if i == last else None)
        start, stop = start - lo, stop - lo             # h [B, stop - lo, dim]: rows lo.. of the window
        if a.shift_logits:
            rows = torch.arange(start - 1, stop - 1, device=h.device).clamp_(min=0)
            h = h[:, rows]
        else:
            h = h[:, start:stop]
        h = self.norm(h)
        logits = F.linear(h, self.tok_embeddings.weight) if self.output is None else self.output(h)
        if a.scale_logits:
            logits = logits * (1.0 / a.dim ** 0.5)
        return logits
