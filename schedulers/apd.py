"""apd: adaptive parallel decoding (Israel et al., arXiv 2506.00413) - a marker, not a step policy.

APD needs a second model (a small autoregressive draft checker with the same tokenizer), so it
does not fit the one-model step loop of dllm/engine/diffusion.py: LLM.generate routes
SamplingParams(scheduler="apd", draft_model=...) on a diffusion model to
dllm/engine/apd.py:apd_generate, where the whole loop lives. This class only reserves the name
(and refuses to run inside the ordinary diffusion loop).
"""
from __future__ import annotations

from dllm.errors import UnsupportedError
from dllm.schedulers.base import Scheduler


class APD(Scheduler):
    fixed = False

    def __init__(self, params, style: str, env=None):
        raise UnsupportedError("scheduler 'apd' runs through LLM.generate with a draft_model "
                               "(dllm/engine/apd.py), not inside the diffusion step loop.")
