"""Kernel benchmark: each Triton kernel against its PyTorch reference (time, GB/s read).

python -m benchmarks.kernels                     # on a CUDA machine; shapes: rows x vocabulary, bf16
python -m benchmarks.kernels --rows 32,256 --vocab 126464,152064

The fused vocabulary reduction (kernels/vocab_reduce.py) reads each logit once; "GB/s" counts
those bytes only (rows x V x element size) over the median time of --repeats calls. Writes JSON
and prints a table. Never run as a test; on a machine without a GPU it refuses (the interpreter
says nothing about speed).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from benchmarks.common import timed, write


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,32,256")
    ap.add_argument("--vocab", default="126464,152064")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--scores", default="low_confidence,margin,entropy")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--output", default="bench_kernels.json")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py times the Triton kernels on a CUDA GPU; none is available here.", file=sys.stderr)
        return 2
    from dllm.kernels.vocab_reduce import vocab_reduce, vocab_reduce_torch
    from dllm.engine.sampling import propose

    dev, dtype = torch.device("cuda"), getattr(torch, a.dtype)
    rows = []
    for R in map(int, a.rows.split(",")):
        for V in map(int, a.vocab.split(",")):
            x = torch.randn(1, R, V, device=dev).mul_(3).to(dtype)
            for score in a.scores.split(","):
                fns = {"triton": lambda: vocab_reduce(x, score=score, banned=V - 1),
                       "torch_reference": lambda: vocab_reduce_torch(x, score=score, banned=V - 1),
                       "engine_propose": lambda: propose(x, remasking=score, temperature=0.0, top_p=None,
                                                         top_k=None, style="llada", generator=None, banned=V - 1)}
                times = {}
                for name, fn in fns.items():
                    for _ in range(3):
                        fn()
                    times[name] = statistics.median(timed(fn, dev)[1] for _ in range(a.repeats))
                gb = R * V * x.element_size() / 1e9
                rows.append({"rows": R, "vocab": V, "score": score, "triton_ms": times["triton"] * 1e3,
                             "torch_ms": times["torch_reference"] * 1e3, "propose_ms": times["engine_propose"] * 1e3,
                             "triton_GBps": gb / times["triton"], "speedup_vs_torch": times["torch_reference"] / times["triton"]})
    write(a.output, vars(a), rows, ["rows", "vocab", "score", "triton_ms", "torch_ms", "propose_ms", "triton_GBps",
                                    "speedup_vs_torch"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
