"""Unmasking policies, one file each, chosen by name in SamplingParams.scheduler.

SCHEDULERS maps a name to "module:Class" and stays torch-free, so that SamplingParams can
validate names without importing the implementations.
"""
from __future__ import annotations

if __name__ != "dllm.schedulers":   # imported from a checkout's root under its own name: see dllm/_shadow.py
    from dllm._shadow import defer
    defer(__name__, __file__)

import importlib

SCHEDULERS = {
    "topk": "dllm.schedulers.topk:TopK",
    "threshold": "dllm.schedulers.threshold:Threshold",
    "factor": "dllm.schedulers.factor:Factor",
    "credit": "dllm.schedulers.credit:Credit",
    "early_commit": "dllm.schedulers.early_commit:EarlyCommit",
    "learned_filter": "dllm.schedulers.learned_filter:LearnedFilter",
    "ltr": "dllm.schedulers.ltr:LeftToRight",
    # the block-diffusion families' own strategies (the families' defaults, ModelArgs.scheduler)
    "sdar": "dllm.schedulers.sdar:SDAR",
    "dinfer": "dllm.schedulers.dinfer:DInfer",
    "fast_dllm_v2": "dllm.schedulers.fast_dllm_v2:FastDLLMv2",
}
# decoding modes chosen by name too, that are not step policies: "apd" runs the request with an
# autoregressive checker (dllm/engine/apd.py APDDecoder), chosen with SamplingParams(draft_model=...)
MODES = ("apd",)
# SamplingParams(scheduler="auto"), the default: the model family's own strategy (ModelArgs.scheduler;
# "topk" for LLaDA, Dream and the autoregressive families)
AUTO = "auto"


def get_scheduler(name: str, default: str = "topk"):
    """The Scheduler class registered under `name` ("auto": under `default`)."""
    module, cls = SCHEDULERS[default if name == AUTO else name].split(":")
    return getattr(importlib.import_module(module), cls)
