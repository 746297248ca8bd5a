"""Cached denoising-step latency against the weight-bandwidth floor.

python -m benchmarks.step                          # LLaDA-8B shape, random bf16 weights, on the GPU
python -m benchmarks.step --kernels torch,triton --batch 1,8 --cache-len 1024 --block 32
python -m benchmarks.step --shape small --device cpu --dtype float32 --modes eager,packed,compile   # without a GPU

One step = the dual-cache step of Fast-dLLM as the engine runs it: B requests, each a forward over its
32 block rows that attends over its `--cache-len` columns of the KV pool, LM head on the block
(engine/runner.py ModelRunner.run of B steady ForwardRows: one ragged forward).
floor = bytes of all weights / the device's measured copy bandwidth (a device-to-device copy of
1 GiB: read + write bytes / time), the time it takes to read the weights once; "x floor" is
step time / floor. `--modes` picks how the step runs, through the engine's own replay
(dllm/engine/graphs.py): eager (op by op), cuda (a CUDA graph), compile (torch.compile; on CUDA
also captured), packed (eager with the weights packed for oneDNN, the CPU default of LLM,
dllm/models/packing.py). ops_per_layer: aten ops the eager PyTorch step dispatches per layer. Writes JSON
and prints a table. Never run as a test.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from benchmarks.common import timed, write
from dllm.engine.kv_pool import KVPool
from dllm.engine.runner import ForwardRow, ModelRunner
from dllm.models.config import llada_args
from dllm.models.packing import can_pack, pack_linears
from dllm.models.transformer import Transformer

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


def dispatched_ops(step) -> int:
    """aten ops one call of step() dispatches from Python (profiler events without an aten parent):
    the host cost of an eager step is about this count times a few microseconds."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for e in prof.events() if e.name.startswith("aten::")
               and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


def engine_step(model, args, B: int, cache_len: int, block: int, device, dtype, graphs: str):
    """The step as the engine runs it: B requests' block rows against their pool columns."""
    pool = KVPool(args, dtype, device, capacity=B * cache_len)
    bases = [pool.alloc(cache_len) for _ in range(B)]
    for t in pool.k + pool.v:
        t.normal_()
    runner = ModelRunner(model, pool, graphs=graphs)
    start = cache_len // 2                                   # the block sits inside the cached canvas
    ids = torch.randint(0, args.vocab_size, (B, block), device=device)
    rows = [ForwardRow(ids=ids[b], start=start, keys=cache_len, q=(0, block), base=bases[b], steady=True)
            for b in range(B)]
    return lambda: runner.run(rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llada-8b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--cache-len", type=int, default=1024)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--kernels", default="torch,triton")
    ap.add_argument("--modes", default=None,
                    help="eager,cuda,compile,packed (default: eager,cuda on CUDA, eager,packed on a CPU with oneDNN)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--output", default="bench_step.json")
    a = ap.parse_args()
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    model, args = build(a.shape, device, dtype)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = bandwidth(device)
    floor = weight_bytes / bw
    cpu_default = "eager,packed" if can_pack(device, dtype) else "eager"
    modes = (a.modes or ("eager,cuda" if device.type == "cuda" else cpu_default)).split(",")
    packed = None
    if "packed" in modes:
        packed = copy.deepcopy(model)
        pack_linears(packed)
    rows = []
    for B in map(int, a.batch.split(",")):
        for kernels in a.kernels.split(","):
            model.set_kernels(kernels)
            if packed is not None:
                packed.set_kernels(kernels)
            for mode in modes:
                m = packed if mode == "packed" else model
                step = engine_step(m, args, B, a.cache_len, a.block, device, dtype,
                                   "none" if mode in ("eager", "packed") else mode)
                t0 = time.perf_counter()
                for _ in range(3):
                    step()
                warm = time.perf_counter() - t0
                t = statistics.median(timed(step, device)[1] for _ in range(a.repeats))
                # Triton launches and replays are not aten ops: counted for the PyTorch eager step only
                ops = dispatched_ops(step) / args.n_layers if mode in ("eager", "packed") and kernels == "torch" else None
                rows.append({"batch": B, "kernels": kernels, "mode": mode, "ms": t * 1e3, "floor_ms": floor * 1e3,
                             "x_floor": t / floor, "first3_s": warm, "ops_per_layer": ops})
    write(a.output, {**vars(a), "weight_bytes": weight_bytes, "bandwidth_Bps": bw, "parameters": args.__dict__},
          rows, ["batch", "kernels", "mode", "ms", "floor_ms", "x_floor", "first3_s", "ops_per_layer"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
