"""How a method declares its own SamplingParams fields (a scheduler file's PARAMS): adding a scheduler is
one file and one registry line, and SamplingParams, its checks and the CLI's flags and help come from the
declarations (dllm/sampling_params.py, dllm/cli.py). Torch-free."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Param:
    default: object
    type: object                      # the field's annotation: int, float, str, bool, tuple, Optional[int], ...
    help: str = ""
    range: Optional[str] = None       # numbers: an interval "[a, b]", "(a, b)" or half-open ("inf" unbounded)
    choices: Optional[tuple] = None   # strings: the values allowed
    items: Optional[type] = None      # tuples: the element type (the CLI reads "a,b,c")
    # a relation to other fields: check(value, params) -> an error sentence, or None when it holds
    check: Optional[Callable] = None
