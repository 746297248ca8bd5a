"""`torch`, imported on first use: scheduler modules read `from dllm._lazy import torch`, so that importing
them for their declared parameters (SamplingParams, `dllm --help`) does not import torch."""
from __future__ import annotations

import importlib


class _Lazy:
    def __init__(self, name: str):
        self._name, self._module = name, None

    def __getattr__(self, attr):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


torch = _Lazy("torch")
