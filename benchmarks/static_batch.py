"""A static batch through LLM.generate, timed; and the same against another dllm install, alternating.

python -m benchmarks.static_batch --model tiny                      # this install: best of --runs, JSON line
python -m benchmarks.static_batch --against OTHER/.venv/bin/python --pairs 3 --output static_batch.json

--against runs this file (it uses only the public API, so any dllm version can run it) under both
interpreters in turn, pairs times per case (dllm-tiny with 16 prompts; the synthetic 110M LLaDA-shaped
model of benchmarks/cache.py with 1 and 4 prompts; threshold decoding, dual cache), and reports per case the
median over pairs of the other install's time / this one's (> 1: this install is faster) and whether both
gave the same tokens and forwards. Issue 21: a static batch through the step machine is no slower than
through the batched loop it replaced. Writes JSON and prints a table; never run as a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [("tiny", 16), ("synthetic", 1), ("synthetic", 4)]


def measure(model: str, batch: int, runs: int, workdir: str) -> dict:
    """This install: best wall time of `runs` LLM.generate calls over the case's batch."""
    import torch

    from dllm import LLM, SamplingParams

    if model == "tiny":
        llm = LLM(str(Path(workdir, "dllm-tiny")) if Path(workdir, "dllm-tiny").exists() else "default")
        prompts = [f"Copy the list exactly: [{', '.join(str(i * 7 % 13) for i in range(k, k + 6))}]"
                   for k in range(batch)]
        params = SamplingParams(max_new_tokens=64, block_length=32, scheduler="threshold", cache="dual")
    else:
        llm = LLM(str(Path(workdir, "synthetic")))   # written once by the comparing process
        g = torch.Generator().manual_seed(0)
        prompts = [{"prompt_token_ids": torch.randint(0, 16000, (64 + 8 * i,), generator=g).tolist()}
                   for i in range(batch)]
        params = SamplingParams(max_new_tokens=128, block_length=32, scheduler="threshold", cache="dual")
    llm.generate(prompts[:2], params)                                    # warm-up
    best, outs = float("inf"), []
    for _ in range(runs):
        t = time.perf_counter()
        outs = llm.generate(prompts, params)
        best = min(best, time.perf_counter() - t)
    return dict(best_s=best, nfe=[o.stats.nfe for o in outs], tokens=[o.token_ids for o in outs])


def compare(other: str, pairs: int, runs: int, threads: int) -> list[dict]:
    from benchmarks.cache import synthetic_checkpoint

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    workdir = tempfile.mkdtemp()
    synthetic_checkpoint(Path(workdir, "synthetic"))
    from dllm.default_model import resolve_model        # the shipped model, for installs that predate "default"
    (Path(workdir) / "dllm-tiny").symlink_to(Path(resolve_model("default")).resolve())
    rows = []
    for model, batch in CASES:
        times = {"this": [], "other": []}
        last = {}
        for _ in range(pairs):
            for who, python in (("this", sys.executable), ("other", other)):
                # the file by path, from the work directory: each interpreter imports its own installed dllm
                cmd = [python, str(Path(__file__).resolve()), "--model", model, "--batch", str(batch),
                       "--runs", str(runs), "--threads", str(threads), "--workdir", workdir]
                res = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                                                cwd=workdir).stdout.splitlines()[-1])
                times[who].append(res["best_s"])
                last[who] = res
        ratios = [o / t for o, t in zip(times["other"], times["this"])]
        rows.append(dict(model=model, batch=batch, this_s=statistics.median(times["this"]),
                         other_s=statistics.median(times["other"]), ratio=statistics.median(ratios),
                         ratio_min=min(ratios), ratio_max=max(ratios),
                         same_tokens=last["this"]["tokens"] == last["other"]["tokens"],
                         nfe_this=sum(last["this"]["nfe"]), nfe_other=sum(last["other"]["nfe"])))
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["tiny", "synthetic"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    ap.add_argument("--against", help="another install's python: compare this one with it")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--output", default="static_batch.json")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    if a.against is None:
        print(json.dumps(measure(a.model or "tiny", a.batch, a.runs, a.workdir)))
        return 0
    from benchmarks.common import write
    rows = compare(a.against, a.pairs, a.runs, a.threads)
    write(a.output, dict(against=a.against, pairs=a.pairs, runs=a.runs, threads=a.threads), rows,
          ["model", "batch", "this_s", "other_s", "ratio", "ratio_min", "ratio_max", "same_tokens", "nfe_this",
           "nfe_other"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
