"""Linear weights packed for oneDNN: the CPU path of every projection and the LM head.

A 32-row denoising step multiplies a thin [32, dim] activation by every weight matrix. Through
F.linear (MKL sgemm on a row-major [out, in] matrix) that runs at ~115 GFLOP/s on two AVX-512
cores; oneDNN on a weight reordered once into its blocked layout runs the same product at
~205 GFLOP/s (the LM head, [32, 768] x [16384, 768]: 10.7 -> 4.2 ms), because the per-call
repacking of the weight is gone. Each output row is the same dot product up to float32
summation order (|diff| ~1e-4 on unit-scale logits; identical in bfloat16, where F.linear
already calls oneDNN).

pack_linears(model) swaps each nn.Linear of a loaded Transformer for a PackedLinear that holds
only the packed weight (no second copy); the tied LM head gets its own packed copy of the
embedding (the lookup needs the dense one). Loaders run before packing: named_weights() of a
packed model returns dense copies, not views.
"""
from __future__ import annotations

import torch
from torch import nn

from dllm.errors import DllmError

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)


def resolve_pack(choice: str | None, device, dtype, graphs: str) -> bool:
    """'auto' | 'onednn' | 'none' (None: $DLLM_PACK, else 'auto') -> whether to pack the weights.
    auto: on a CPU whose torch has oneDNN, for float32/bfloat16, unless graphs='compile' (inductor
    cannot lower the packed op; it would need its own freezing pass)."""
    from dllm.choices import resolve_choice

    name = resolve_choice("pack", choice)
    if name == "none":
        return False
    ok = can_pack(device, dtype)
    if name == "auto":
        return ok and graphs != "compile"
    if not ok:
        raise DllmError(f"pack='onednn' needs float32 or bfloat16 weights on a CPU whose torch has oneDNN "
                        f"(got {dtype} on {torch.device(device).type}).")
    if graphs == "compile":
        raise DllmError("pack='onednn' cannot run under graphs='compile'; use graphs='none' or pack='none'.")
    return True


def can_pack(device, dtype) -> bool:
    """oneDNN's packed linear exists for this device and dtype (x86 CPU builds of torch)."""
    if torch.device(device).type != "cpu" or dtype not in PACKABLE_DTYPES:
        return False
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    try:   # some builds list the ops but lack the kernel for a dtype (e.g. bf16 without AVX-512)
        w = torch.ones(4, 8, dtype=dtype)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 8, dtype=dtype),
                                               torch.ops.mkldnn._reorder_linear_weight(w, None), None, "none", [], "")
        return bool((y == 8).all())
    except RuntimeError:
        return False


class PackedLinear(nn.Module):
    """y = x @ W.T + b with W held in oneDNN's blocked layout (an opaque mkldnn tensor)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    def forward(self, x):
        # x [..., in] (any strides) -> [..., out]
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")

    def dense(self) -> torch.Tensor:
        return self.weight.to_dense()


def pack_linears(model) -> None:
    """Every nn.Linear of `model` (a loaded Transformer) -> PackedLinear, in place; a tied LM head
    gets a packed copy of the embedding as model.output."""
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if type(child) is nn.Linear:
                setattr(mod, child_name, PackedLinear(child.weight, child.bias))
    if model.output is None:
        model.output = PackedLinear(model.tok_embeddings.weight, None)
