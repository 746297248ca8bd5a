"""Triton kernels for the denoising step (installed as dllm.kernels), each beside its PyTorch reference.

Selection: LLM(..., kernels=...) or the DLLM_KERNELS environment variable, one of
  auto    Triton on CUDA tensors when triton imports, the PyTorch reference elsewhere (default)
  triton  the kernels always; on a machine without a GPU they run under Triton's interpreter
          (TRITON_INTERPRET=1, set here when no kernel module has been imported yet)
  torch   the PyTorch reference always
"""
from __future__ import annotations

if __name__ != "dllm.kernels":   # imported from a checkout's root under its own name: see dllm/_shadow.py
    from dllm._shadow import defer
    defer(__name__, __file__)

import os
import sys

from dllm.errors import DllmError



def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_kernels(choice: str | None, device) -> str:
    """'auto' | 'triton' | 'torch' (None: $DLLM_KERNELS, else 'auto') -> 'triton' or 'torch' for `device`."""
    import torch

    from dllm.choices import resolve_choice

    name = resolve_choice("kernels", choice)
    on_gpu = torch.device(device).type == "cuda"
    if name == "torch" or (name == "auto" and not (on_gpu and triton_available())):
        return "torch"
    if not triton_available():
        raise DllmError("kernels='triton' needs the triton package (pip install triton).")
    if not on_gpu and os.environ.get("TRITON_INTERPRET") != "1":
        # the interpreter is chosen when @triton.jit runs, i.e. when the kernel module is imported
        if any(m.startswith("dllm.kernels.") for m in sys.modules):
            raise DllmError("kernels='triton' on a CPU needs Triton's interpreter: set TRITON_INTERPRET=1 "
                            "before the first kernel is imported.")
        os.environ["TRITON_INTERPRET"] = "1"
    return "triton"
