"""Unmasking policies, one file each, chosen by name in SamplingParams.scheduler.

SCHEDULERS maps a name to "module:Class". A scheduler file declares its own SamplingParams fields in
PARAMS (dllm/params.py Param: default, type, help, range / choices, relations), so adding a scheduler is
one file and one line here; the files import torch lazily (dllm._lazy), so reading the declarations
stays torch-free.
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
    # the seed papers' parallel decoders (issue 20)
    "localleap": "dllm.schedulers.localleap:LocalLeap",
    "eb": "dllm.schedulers.eb:EBSampler",
    "klass": "dllm.schedulers.klass:KLASS",
    "ete": "dllm.schedulers.ete:ExploreThenExploit",
    "adablock": "dllm.schedulers.adablock:AdaBlock",
    "freedave": "dllm.schedulers.freedave:FreeDave",
    "wino": "dllm.schedulers.wino:WINO",
}
# decoding modes chosen by name too, that are not step policies: "apd" runs the request with an
# autoregressive checker (dllm/engine/apd.py APDDecoder), chosen with SamplingParams(draft_model=...)
MODES = ("apd",)
# SamplingParams(scheduler="auto"), the default: the model family's own strategy (ModelArgs.scheduler;
# "topk" for LLaDA, Dream and the autoregressive families)
AUTO = "auto"


def declared_params() -> dict:
    """{field name: dllm.params.Param} that the scheduler files declare (their PARAMS), in registry order.
    Importing them stays torch-free (they use dllm._lazy.torch), so SamplingParams builds its fields from
    these and `dllm --help` lists them without torch."""
    out = {}
    for spec in SCHEDULERS.values():
        module = importlib.import_module(spec.split(":")[0])
        for name, param in getattr(module, "PARAMS", {}).items():
            if name in out:
                raise AssertionError(f"{name!r} is declared by two schedulers")
            out[name] = param
    return out


def default_threshold(name: str) -> float:
    """SamplingParams.threshold when not given: the scheduler module's THRESHOLD (its paper's value), else 0.9."""
    spec = SCHEDULERS.get(name)
    module = importlib.import_module(spec.split(":")[0]) if spec else None
    return float(getattr(module, "THRESHOLD", 0.9))


def get_scheduler(name: str, default: str = "topk"):
    """The Scheduler class registered under `name` ("auto": under `default`)."""
    module, cls = SCHEDULERS[default if name == AUTO else name].split(":")
    return getattr(importlib.import_module(module), cls)
