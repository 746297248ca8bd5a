"""One transformer implementation configured per family, and its checkpoint loader."""
from dllm.models.config import ModelArgs
from dllm.models.loader import load_model

__all__ = ["ModelArgs", "load_model"]
