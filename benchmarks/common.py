"""Shared helpers of the benchmark scripts: machine description and the JSON + table output.

The scripts run as modules from the repository root (`python -m benchmarks.cache ...`), so that
`benchmarks`, `tests` and `dllm` import without any sys.path edit (dllm/_shadow.py says why the root's
folders never shadow installed packages)."""
from __future__ import annotations

import json
import os
import platform
import time

import torch


def _cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo): shared machines change between runs, and the ratios
    a benchmark reports depend on the CPU's vector units."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def timed(fn, device) -> tuple[object, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def write(path: str, config: dict, rows: list[dict], columns: list[str]):
    with open(path, "w") as f:
        json.dump({"machine": machine(), "config": config, "rows": rows}, f, indent=2)
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))
    print(f"wrote {path}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
