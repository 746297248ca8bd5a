"""The one resolver for the engine's device choices: an argument, else its environment variable, else "auto".

    kernels  DLLM_KERNELS  auto | triton | torch            (dllm/kernels)
    graphs   DLLM_GRAPHS   auto | cuda | compile | none     (dllm/engine/graphs.py)
    pack     DLLM_PACK     auto | onednn | none             (dllm/models/packing.py)
"""
from __future__ import annotations

import os

from dllm.errors import DllmError

CHOICES = {
    "kernels": ("auto", "triton", "torch"),
    "graphs": ("auto", "cuda", "compile", "none"),
    "pack": ("auto", "onednn", "none"),
}
ENV = {name: f"DLLM_{name.upper()}" for name in CHOICES}


def resolve_choice(name: str, value: str | None) -> str:
    """value (None: $DLLM_<NAME>, else 'auto') -> a valid choice of `name`, or a one-sentence DllmError."""
    chosen = value if value is not None else os.environ.get(ENV[name], "auto")
    if chosen not in CHOICES[name]:
        source = name if value is not None else ENV[name]
        raise DllmError(f"{source} must be one of {', '.join(CHOICES[name])}, got {chosen!r}.")
    return chosen
