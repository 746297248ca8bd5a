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
    # issue 20: the seed papers' parallel decoders
    "localleap": "dllm.schedulers.localleap:LocalLeap",
    "eb": "dllm.schedulers.eb:EBSampler",
    "klass": "dllm.schedulers.klass:KLASS",
    "ete": "dllm.schedulers.ete:ExploreThenExploit",
    "adablock": "dllm.schedulers.adablock:AdaBlock",
    "freedave": "dllm.schedulers.freedave:FreeDave",
    "wino": "dllm.schedulers.wino:WINO",
}


def get_scheduler(name: str):
    module, cls = SCHEDULERS[name].split(":")
    return getattr(importlib.import_module(module), cls)
