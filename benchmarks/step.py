"""Cached denoising-step latency against the weight-bandwidth floor.

python benchmarks/step.py                          # LLaDA-8B shape, random bf16 weights, on the GPU
python benchmarks/step.py --kernels torch,triton --batch 1,8 --cache-len 1024 --block 32
python benchmarks/step.py --shape small --device cpu --dtype float32   # a smoke run without a GPU

One step = the dual-cache step of Fast-dLLM: a forward over the 32 block rows that attends over
a `--cache-len`-column KV cache (model(token_ids [B, 32], positions, cache)), LM head on the block.
floor = bytes of all weights / the device's measured copy bandwidth (a device-to-device copy of
1 GiB: read + write bytes / time), the time it takes to read the weights once; "x floor" is
step time / floor. `--graph` also times the step replayed from a CUDA graph (torch.cuda.graphs).
Writes JSON and prints a table. Never run as a test.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import timed, write  # noqa: E402
from dllm.engine.kv_cache import KVCache  # noqa: E402
from dllm.models.config import llada_args  # noqa: E402
from dllm.models.transformer import Transformer  # noqa: E402

SHAPES = {   # LLaDA-8B-Instruct's config.json fields, and a small one for smoke runs
    "llada-8b": dict(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, mlp_hidden_size=12288, vocab_size=126464),
    "small": dict(d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden_size=512, vocab_size=4096),
}


def build(shape: str, device, dtype):
    cfg = {"model_type": "llada", "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "mask_token_id": 126336,
           "eos_token_id": 126081, "max_sequence_length": 4096, "weight_tying": False, **SHAPES[shape]}
    args = llada_args(cfg)
    with torch.device("meta"):
        model = Transformer(args)
    model = model.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0)
    return model.eval(), args


def bandwidth(device) -> float:
    """Bytes per second of a device-to-device copy (read + write)."""
    if device.type != "cuda":
        return float("nan")
    a = torch.empty(2 ** 30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    times = [timed(lambda: b.copy_(a), device)[1] for _ in range(10)]
    return 2 * a.numel() / statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llada-8b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--cache-len", type=int, default=1024)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--kernels", default="torch,triton")
    ap.add_argument("--graph", action="store_true", help="also replay the step from a CUDA graph")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--output", default="bench_step.json")
    a = ap.parse_args()
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    model, args = build(a.shape, device, dtype)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = bandwidth(device)
    floor = weight_bytes / bw
    rows = []
    for B in map(int, a.batch.split(",")):
        cache = KVCache(args, B, a.cache_len, dtype, device)
        cache.k.normal_(), cache.v.normal_()
        cache.start = a.cache_len // 2                       # the block sits inside the cache window
        ids = torch.randint(0, args.vocab_size, (B, a.block), device=device)
        pos = torch.arange(cache.start, cache.start + a.block, device=device).expand(B, -1)
        for kernels in a.kernels.split(","):
            model.set_kernels(kernels)
            step = lambda: model(ids, pos, cache=cache)      # noqa: E731
            for _ in range(3):
                step()
            t = statistics.median(timed(step, device)[1] for _ in range(a.repeats))
            row = {"batch": B, "kernels": kernels, "mode": "eager", "ms": t * 1e3, "floor_ms": floor * 1e3,
                   "x_floor": t / floor}
            rows.append(row)
            if a.graph and device.type == "cuda":
                g = torch.cuda.CUDAGraph()
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    step()
                torch.cuda.current_stream().wait_stream(s)
                with torch.cuda.graph(g):
                    step()
                tg = statistics.median(timed(g.replay, device)[1] for _ in range(a.repeats))
                rows.append({**row, "mode": "cuda_graph", "ms": tg * 1e3, "x_floor": tg / floor})
    write(a.output, {**vars(a), "weight_bytes": weight_bytes, "bandwidth_Bps": bw, "parameters": args.__dict__},
          rows, ["batch", "kernels", "mode", "ms", "floor_ms", "x_floor"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
