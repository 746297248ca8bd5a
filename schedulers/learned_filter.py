"""learned_filter (Learn2PD, arXiv 2509.25188): a small MLP reads the active block's
confidence vector and predicts, per slot, whether the slot's current argmax already equals
the token it will finally get. Each step commits the masked slots it accepts
(probability >= filter_threshold, 0.96) and always the most confident one.

The filter is trained per model and block length by `dllm train-filter` (dllm/train_filter.py)
and stored as safetensors (weights + JSON metadata, no pickle): by default
learned_filter.safetensors in the model directory, or SamplingParams.filter_path.
Input features per block: [confidence of masked slots (1 for committed ones) | masked flag],
2 * block values; output: one logit per slot.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from dllm._lazy import torch
from dllm.errors import InvalidParamsError, ModelLoadError
from dllm.params import Param
from dllm.schedulers.base import Scheduler, best_slot

PARAMS = {
    "filter_path": Param(None, Optional[str], "learned_filter scheduler: the filter file (default: "
                         "MODEL/learned_filter.safetensors)"),
    "filter_threshold": Param(0.96, float, "learned_filter scheduler: acceptance probability", range="[0, 1]"),
}

FILTER_FILE = "learned_filter.safetensors"
FORMAT = "dllm-learned-filter/1"


def filter_mlp_class():
    """The FilterMLP class, defined on first use (this module is imported for its PARAMS without torch)."""
    if "FilterMLP" not in _CLASSES:
        from torch import nn

        class FilterMLP(nn.Module):
            def __init__(self, block: int, hidden: int = 128):
                super().__init__()
                self.block, self.hidden = block, hidden
                self.net = nn.Sequential(nn.Linear(2 * block, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                         nn.Linear(hidden, block))

            @staticmethod
            def features(conf: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
                """conf, masked [N, block] -> [N, 2 * block] float32."""
                m = masked.float()
                return torch.cat([conf.float() * m + (1 - m), m], -1)

            def forward(self, conf, masked):
                return self.net(self.features(conf, masked))       # [N, block] logits

        _CLASSES["FilterMLP"] = FilterMLP
    return _CLASSES["FilterMLP"]


_CLASSES: dict = {}


def __getattr__(name):   # `from dllm.schedulers.learned_filter import FilterMLP`
    if name == "FilterMLP":
        return filter_mlp_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def save_filter(model: FilterMLP, path, meta: dict):
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info = {"format": FORMAT, "block_length": model.block, "hidden": model.hidden, **meta}
    save_file(tensors, str(path), metadata={"dllm": json.dumps(info)})


# the metadata fields a filter file must carry: type and range (the MLP is built from them)
META = {"block_length": (1, 4096), "hidden": (1, 65536)}
MAX_FILE_BYTES = 1 << 30


def _cached_filter(path, device):
    """load_filter, once per file version and device: every request builds its own scheduler."""
    import os

    st = os.stat(path) if os.path.exists(path) else None
    key = (os.path.realpath(path), st and st.st_mtime_ns, st and st.st_size, str(device))
    if key not in _LOADED:
        if len(_LOADED) >= 8:
            _LOADED.clear()
        _LOADED[key] = load_filter(path, device)
    return _LOADED[key]


_LOADED: dict = {}


def load_filter(path, device="cpu") -> tuple[FilterMLP, dict]:
    import os
    import stat

    from safetensors import safe_open

    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(f"the filter file {str(path)!r} is not a regular file.")
    if st is None:
        raise ModelLoadError(
            f"scheduler 'learned_filter' needs a trained filter, and there is none at {str(path)!r}; train one "
            "with `dllm train-filter --model DIR --prompts FILE` or pass filter_path.")
    if st.st_size > MAX_FILE_BYTES:
        raise ModelLoadError(f"the filter file {str(path)!r} is larger than {MAX_FILE_BYTES >> 20} MiB; it is not a "
                             "dllm learned filter.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            info = json.loads((f.metadata() or {}).get("dllm", "{}"))
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            if isinstance(info, dict) and info.get("format") == FORMAT and _meta_ok(info):
                tensors = {k: f.get_tensor(k) for k in f.keys() if _expected(info).get(k) == shapes[k]}
    except Exception as e:   # safetensors raises several types for corrupt files; json for bad metadata
        raise ModelLoadError(f"cannot read the filter file {str(path)!r}: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ModelLoadError(f"{str(path)!r} is not a dllm learned-filter file (no '{FORMAT}' metadata).")
    if not _meta_ok(info):
        raise ModelLoadError(f"the filter file {str(path)!r} has metadata block_length={info.get('block_length')!r}, "
                             f"hidden={info.get('hidden')!r}; both must be integers (block_length <= 4096, "
                             "hidden <= 65536).")
    if shapes != _expected(info):
        raise ModelLoadError(f"the filter file {str(path)!r} does not match its own metadata (its tensors are not "
                             f"those of a filter for block_length {info['block_length']}, hidden {info['hidden']}).")
    model = filter_mlp_class()(info["block_length"], info["hidden"])
    model.load_state_dict(tensors)
    return model.to(device).eval(), info


def _meta_ok(info: dict) -> bool:
    return all(isinstance(info.get(k), int) and not isinstance(info.get(k), bool) and lo <= info[k] <= hi
               for k, (lo, hi) in META.items())


def _expected(info: dict) -> dict:
    """{tensor name: shape} of a FilterMLP with this metadata (nothing is allocated)."""
    b, h = info["block_length"], info["hidden"]
    return {"net.0.weight": (h, 2 * b), "net.0.bias": (h,), "net.2.weight": (h, h), "net.2.bias": (h,),
            "net.4.weight": (b, h), "net.4.bias": (b,)}


class LearnedFilter(Scheduler):
    fixed = False

    def __init__(self, params, style, env=None):
        super().__init__(params, style, env)
        path = params.filter_path or (Path(env.model_path) / FILTER_FILE if env and env.model_path else None)
        if path is None:
            raise InvalidParamsError("scheduler 'learned_filter' needs filter_path (no model directory to look in).")
        self.filter, self.info = _cached_filter(path, env.device if env else "cpu")
        if self.info["block_length"] != params.block:
            raise InvalidParamsError(
                f"the learned filter in {str(path)!r} was trained for block_length {self.info['block_length']}, "
                f"not {params.block}; decode with that block length or train a filter for this one.")

    def select(self, st):
        with torch.no_grad():
            prob = torch.sigmoid(self.filter(st.scores, st.masked))
        return (st.masked & (prob >= self.params.filter_threshold)) | best_slot(st.scores, st.masked)
