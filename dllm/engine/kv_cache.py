"""A dense per-batch KV cache for the classic forward `Transformer(ids, positions, cache, ...)`.

The engine keeps its keys/values in the KV pool (engine/kv_pool.py) and runs ragged batches
(models/context.py RaggedContext); this cache serves the classic [B, T] forward that tests and
benchmarks call directly: one preallocated buffer per layer, [B, Hkv, L, hd] in the model dtype,
written by index at the window's `start` column, every one of its L columns attended.
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

    def update(self, layer: int, k, v, k_writer=None):
        """Write the window's k, v [B, Hkv, T, hd] at columns [start, start + T); return all L columns.
        k_writer(out): writes the keys into the window view `out` itself (a fused RoPE kernel) instead of k;
        k_writer(None) returns them."""
        end = self.start + v.shape[2]
        if k_writer is not None:
            k_writer(self.k[layer][:, :, self.start:end])
        else:
            self.k[layer][:, :, self.start:end] = k
        self.v[layer][:, :, self.start:end] = v
        return self.k[layer], self.v[layer]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
