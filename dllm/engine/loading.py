"""A loaded model and what every request reads of it: arguments, tokenizer, stop ids, device choices."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from dllm.errors import DllmError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype, device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise DllmError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16.")
    return _DTYPES[dtype]


def resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DllmError(f"unknown device {device!r}.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DllmError("device 'cuda' was asked for, but no CUDA GPU is available.")
    return dev


@dataclass
class Loaded:
    model: object
    args: object                     # ModelArgs
    tokenizer: object                # dllm.tokenizer.Tokenizer or None
    path: Path
    device: torch.device
    dtype: torch.dtype
    kernels: str = "torch"
    graphs: str = "none"
    packed: bool = False
    classic: bool = False            # no ragged forward: the runner runs it row by row
    stop_ids: set = field(default_factory=set)
    pad_id: int = 0
    newlines: tuple | None = None    # newline_ids(), once computed (or set by tools for tokenizer-free models)

    def newline_ids(self) -> tuple:
        """Token ids whose text is whitespace holding a newline (adablock's delimiters), computed once."""
        if self.newlines is None:
            ids = ()
            if self.tokenizer is not None:
                from dllm.constraints.token_bytes import token_bytes
                tb = token_bytes(self.tokenizer, self.args.vocab_size)
                ids = tuple(t for t, b in enumerate(tb) if b and b"\n" in b and not b.strip()
                            and t not in self.stop_ids and t != self.args.mask_token_id)
            self.newlines = ids
        return self.newlines


def load(model, device=None, dtype=None, kernels=None, graphs=None, pack=None) -> Loaded:
    """Load a checkpoint directory or .gguf file. kernels / graphs / pack: see LLM."""
    from dllm.default_model import resolve_model
    from dllm.engine.graphs import resolve_graphs
    from dllm.kernels import resolve_kernels
    from dllm.models import load_model
    from dllm.models.packing import pack_linears, resolve_pack
    from dllm.tokenizer import Tokenizer

    if not isinstance(model, (str, Path)):
        raise DllmError(f"model must be a checkpoint directory or .gguf path, got {type(model).__name__}.")
    path = Path(resolve_model(str(model)))
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    kern = resolve_kernels(kernels, dev)
    gr = resolve_graphs(graphs, dev)
    if gr == "compile" and kern == "triton" and dev.type != "cuda":
        raise DllmError("graphs='compile' cannot trace Triton's CPU interpreter; use kernels='torch' on a CPU.")
    packed = resolve_pack(pack, dev, dt, gr)
    net, args = load_model(path, dev, dt)
    ours = hasattr(net, "set_kernels")   # our Transformer, not a transformers fallback model
    if ours:
        net.set_kernels(kern)
    packed = packed and ours
    if packed:
        pack_linears(net)
    tok = Tokenizer.from_gguf(path) if path.suffix == ".gguf" and path.is_file() else Tokenizer.from_pretrained(path)
    if ours:   # block-diffusion families: mask/EOS ids from generation_config, the tokenizer or constants
        from dllm.models.special_ids import resolve_special_ids
        args = resolve_special_ids(args, path, tok)
    out = Loaded(net, args, tok, path, dev, dt, kern, gr, packed, classic=not ours)
    _set_stop_ids(out)
    return out


def wrap(model, args, tokenizer, name: str) -> Loaded:
    """A model object with the classic forward signature (the evaluation oracles) as a Loaded."""
    from dllm.kernels import resolve_kernels

    p = next(model.parameters())
    out = Loaded(model, args, tokenizer, Path(name), p.device, p.dtype, resolve_kernels(None, p.device),
                 "none", False, classic=not hasattr(model, "run"))
    _set_stop_ids(out)
    return out


def _set_stop_ids(m: Loaded):
    from dllm.models.loader import generation_eos   # typed: a bad eos_token_id there is refused

    m.stop_ids = set(m.args.eos_token_ids) | (generation_eos(m.path, m.args.vocab_size) if m.path.is_dir() else set())
    if m.tokenizer is not None:
        m.stop_ids |= m.tokenizer.stop_token_ids()
    m.stop_ids.discard(m.args.mask_token_id)
    pad = m.args.pad_token_id
    m.pad_id = int(pad) if pad is not None else (min(m.stop_ids) if m.stop_ids else 0)
