"""The KV pool: every running request's keys/values in one preallocated buffer per layer.

Per layer k, v [1, Hkv, C + 1, hd] in the model dtype (head-major, so that a row's keys are the view
k[:, :, lo:hi] that attention reads in place, already shaped as a batch of one). Column C is spare: padded tokens of a ragged step write
there and padded keys read it (masked). A request holds contiguous column ranges (its canvas, and a
second one for classifier-free guidance's unconditional copy), handed out first-fit and returned when
it finishes; a request that does not fit waits (engine/request_scheduler.py). Nothing is allocated per
step: the buffers grow (doubling, copying what is held) only when a request needs more than they hold,
up to `capacity` columns, the budget set by LLM(kv_cache_memory=...).
"""
from __future__ import annotations

import torch

from dllm.errors import DllmError


class KVPool:
    def __init__(self, args, dtype, device, capacity: int):
        self.args, self.dtype, self.device = args, dtype, torch.device(device)
        self.capacity = int(capacity)                     # columns the budget allows
        self.size = 0                                     # columns allocated in the buffers now
        self.free: list[tuple[int, int]] = []             # free ranges [lo, hi) of [0, size), sorted
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.generation = 0                               # bumped when the buffers are reallocated
        self._grow(0)

    @property
    def column_bytes(self) -> int:
        a = self.args
        return 2 * a.n_layers * a.n_kv_heads * a.head_dim * torch.empty((), dtype=self.dtype).element_size()

    @property
    def spare(self) -> int:
        return self.size

    def fits(self, n: int) -> bool:
        """Could `n` contiguous columns be held now (growing the buffers if the budget allows)?"""
        return self._find(n) is not None or self._growable(n)

    def alloc(self, n: int) -> int:
        """n contiguous columns -> their first column. Raises DllmError if the budget cannot hold them."""
        if n > self.capacity:
            raise DllmError(f"one request needs {n} KV-cache columns ({n * self.column_bytes / 2**20:.1f} MiB) "
                            f"but the pool holds {self.capacity}; raise kv_cache_memory.")
        i = self._find(n)
        if i is None:
            if not self._growable(n):
                raise DllmError("the KV pool is full; the request must wait for others to finish.")
            self._grow(n)
            i = self._find(n)
        lo, hi = self.free[i]
        if hi - lo == n:
            self.free.pop(i)
        else:
            self.free[i] = (lo + n, hi)
        return lo

    def release(self, lo: int, n: int):
        """Return columns [lo, lo + n), merging with free neighbours."""
        self.free.append((lo, lo + n))
        self.free.sort()
        merged = [self.free[0]]
        for a, b in self.free[1:]:
            if a == merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        self.free = merged

    @property
    def used(self) -> int:
        return self.size - sum(b - a for a, b in self.free)

    def _find(self, n: int):
        return next((i for i, (a, b) in enumerate(self.free) if b - a >= n), None)

    def _growable(self, n: int) -> bool:
        tail = self.free[-1][1] - self.free[-1][0] if self.free and self.free[-1][1] == self.size else 0
        return self.size + (n - tail) <= self.capacity

    def _grow(self, n: int):
        """Reallocate to hold a free tail of at least n columns: double, capped by the budget."""
        tail = self.free[-1][1] - self.free[-1][0] if self.free and self.free[-1][1] == self.size else 0
        need = self.size + max(n - tail, 0)
        new = min(self.capacity, max(need, 2 * self.size, 64))
        a = self.args
        shape = (1, a.n_kv_heads, new + 1, a.head_dim)
        k = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(a.n_layers)]
        v = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(a.n_layers)]
        for old, fresh in zip(self.k + self.v, k + v):   # keep what running requests hold
            fresh[:, :, :self.size] = old[:, :, :self.size]
        self.k, self.v = k, v
        if tail:
            self.free[-1] = (self.free[-1][0], new)
        elif new > self.size:
            self.free.append((self.size, new))
        self.size = new
        self.generation += 1


def default_capacity(args, dtype, device, budget) -> int:
    """Columns for LLM(kv_cache_memory=budget): bytes (int), a fraction of the device's memory (float in
    (0, 1]), or None (a quarter of the free memory, at most what the model's context needs 64 times)."""
    col = 2 * args.n_layers * args.n_kv_heads * args.head_dim * torch.empty((), dtype=dtype).element_size()
    if budget is None:
        return max(1, min(int(free_memory(device) * 0.25) // max(col, 1), 64 * args.max_seq_len))
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0 or budget != budget:
        raise DllmError(f"kv_cache_memory must be a number of bytes or a fraction in (0, 1], got {budget!r}.")
    if isinstance(budget, float):
        if budget > 1:
            raise DllmError(f"kv_cache_memory as a fraction must be in (0, 1], got {budget!r}.")
        budget = int(free_memory(device) * budget)
    cols = int(budget) // max(col, 1)
    if cols < 1:
        raise DllmError(f"kv_cache_memory={budget} bytes holds no KV-cache column ({col} bytes each).")
    return cols


def free_memory(device) -> int:
    """Bytes free on `device`: the GPU's free memory, or the machine's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30
