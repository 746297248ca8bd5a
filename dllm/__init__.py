"""dllm: an inference engine for masked-diffusion language models.

Imports stay light: `LLM` and `LLMEngine` (which pull in torch) are loaded on first use.
"""
from dllm.errors import DllmError
from dllm.outputs import GenerationStats, RequestOutput
from dllm.sampling_params import SamplingParams

__version__ = "0.1.0"
__all__ = ["LLM", "LLMEngine", "SamplingParams", "RequestOutput", "GenerationStats", "DllmError"]


def __getattr__(name):
    if name == "LLM":
        from dllm.llm import LLM

        return LLM
    if name == "LLMEngine":
        from dllm.engine.llm_engine import LLMEngine

        return LLMEngine
    raise AttributeError(f"module 'dllm' has no attribute {name!r}")
