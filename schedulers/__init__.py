"""Unmasking policies, one file each, chosen by name in SamplingParams.scheduler.

SCHEDULERS maps a name to "module:Class" and stays torch-free, so that SamplingParams can
validate names without importing the implementations.
"""
from __future__ import annotations

import importlib

SCHEDULERS = {
    "topk": "dllm.schedulers.topk:TopK",
    "threshold": "dllm.schedulers.threshold:Threshold",
    "factor": "dllm.schedulers.factor:Factor",
    "credit": "dllm.schedulers.credit:Credit",
    "early_commit": "dllm.schedulers.early_commit:EarlyCommit",
    "learned_filter": "dllm.schedulers.learned_filter:LearnedFilter",
    "ltr": "dllm.schedulers.ltr:LeftToRight",
    "apd": "dllm.schedulers.apd:APD",
    # the block-diffusion families' own strategies (the families' defaults, ModelArgs.scheduler)
    "sdar": "dllm.schedulers.sdar:SDAR",
    "dinfer": "dllm.schedulers.dinfer:DInfer",
    "fast_dllm_v2": "dllm.schedulers.fast_dllm_v2:FastDLLMv2",
}
# SamplingParams(scheduler="auto"), the default: the model family's own strategy (ModelArgs.scheduler;
# "topk" for LLaDA, Dream and the autoregressive families)
AUTO = "auto"


def get_scheduler(name: str, default: str = "topk"):
    """The Scheduler class registered under `name` ("auto": under `default`)."""
    module, cls = SCHEDULERS[default if name == AUTO else name].split(":")
    return getattr(importlib.import_module(module), cls)
