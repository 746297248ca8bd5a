"""Continuous batching: a stream of requests through LLMEngine at several concurrency levels.

python -m benchmarks.engine                                  # dllm-tiny and the synthetic 110M LLaDA-shaped model
python -m benchmarks.engine --models tiny --concurrency 1,4,16 --requests 48 --rate 4
python -m benchmarks.engine --plot engine.png                # also plot throughput against concurrency

Requests arrive as a Poisson process (--rate per second; inf = all at once) with mixed prompt lengths and
mixed decoding, as a server would run them: threshold, top-k, credit and factor schedulers with the dual
or prefix cache, and (on a model with a tokenizer) one request in eight constrained by a regex. At concurrency c the engine
holds at most c requests; an arrival waits until one leaves (c = 1 is one request at a time). Reported per
level: output tokens/s, requests/s, time to the first final token and latency (p50/p99, from arrival),
the mean number of requests in the engine over the run's time (below c while the last requests drain:
give enough requests that the run is mostly at its level),
and the speed-up over c = 1 on the same requests in the same run (--repeats R: R rounds over the levels,
the median run per level and the median, min and max of the per-round speed-ups). Writes JSON and prints a table.
Never run as a test.
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.cache import synthetic_checkpoint
from benchmarks.common import write
from dllm import LLMEngine, SamplingParams



def workload(engine, n: int, seed: int) -> list[tuple[dict, SamplingParams]]:
    """n (prompt, params) pairs: mixed lengths, schedulers, caches, and a constrained share."""
    rng = random.Random(seed)
    tok = engine.tokenizer
    if tok is not None:   # dllm-tiny: the evaluation suite's task prompts, through the chat template
        from dllm.evals.tasks import get_task, make_examples
        exs = [ex for t in ("copy", "reverse", "sort") for ex in make_examples(get_task(t), None, n, seed)]
        prompts = [{"prompt_token_ids": tok.encode_chat([{"role": "user", "content": ex.prompt}])} for ex in exs]
    else:
        V = engine.loaded.args.vocab_size
        prompts = [{"prompt_token_ids": [rng.randrange(V - 8) for _ in range(rng.choice((32, 64, 96, 128)))]}
                   for _ in range(n)]
    kinds = [dict(scheduler="threshold", cache="dual"), dict(scheduler="topk", cache="dual", steps=32),
             dict(scheduler="credit", cache="dual"), dict(scheduler="threshold", cache="prefix", threshold=0.7),
             dict(scheduler="factor", cache="dual"), dict(scheduler="threshold", cache="dual", threshold=0.8)]
    if tok is not None:   # one request in eight constrained
        kinds += [dict(scheduler="threshold", cache="dual", regex=r"\[[A-Za-z ,\"]*\]"),
                  dict(scheduler="threshold", cache="dual", threshold=0.7)]
    out = []
    for i in range(n):
        kw = kinds[i % len(kinds)]
        N = rng.choice((32, 64))
        out.append((prompts[rng.randrange(len(prompts))],
                    SamplingParams(max_new_tokens=N, block_length=32, **kw)))
    return out


def run(engine, reqs, concurrency: int, rate: float, seed: int) -> dict:
    """All requests through the engine: arrivals at `rate`, at most `concurrency` at once."""
    rng = random.Random(seed)
    gaps = [0.0 if rate == float("inf") else rng.expovariate(rate) for _ in reqs]
    arrive = [sum(gaps[:i + 1]) for i in range(len(reqs))]
    t0 = time.perf_counter()
    nxt, first, done, tokens = 0, {}, {}, 0
    busy = 0.0   # sum over steps of (requests in the engine, running or waiting) x (the step's seconds)
    while len(done) < len(reqs):
        now = time.perf_counter() - t0
        while nxt < len(reqs) and arrive[nxt] <= now and engine.num_running + engine.num_waiting < concurrency:
            engine.add_request(str(nxt), *reqs[nxt])
            nxt += 1
        if not engine.has_unfinished_requests():
            time.sleep(max(0.0, min(arrive[nxt] - now, 0.05)))
            continue
        ts, running = time.perf_counter(), engine.num_running + engine.num_waiting
        outs = engine.step()
        busy += running * (time.perf_counter() - ts)
        for o in outs:
            t = time.perf_counter() - t0
            i = int(o.request_id)
            if o.delta_token_ids and i not in first:
                first[i] = t - arrive[i]
            if o.finished:
                if o.finish_reason == "error":
                    raise RuntimeError(o.error)
                done[i] = t - arrive[i]
                tokens += len(o.token_ids)
    wall = time.perf_counter() - t0
    lat = sorted(done.values())
    ttft = sorted(first.values()) or [float("nan")]
    return dict(concurrency=concurrency, requests=len(reqs), output_tokens=tokens, wall_s=wall,
                tokens_per_s=tokens / wall, requests_per_s=len(reqs) / wall, mean_running=busy / wall,
                ttft_p50_s=statistics.median(ttft), latency_p50_s=statistics.median(lat),
                latency_p99_s=lat[min(len(lat) - 1, int(0.99 * len(lat)))])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,synthetic", help="tiny (the shipped dllm-tiny), synthetic (110M), or DIRs")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", default="32",
                    help="requests per level: one count, or one per model (enough that the run is mostly at its level)")
    ap.add_argument("--rate", type=float, default=float("inf"), help="arrivals per second (inf: all at once)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default="bench_engine.json")
    ap.add_argument("--plot", help="PNG of output tokens/s against concurrency")
    ap.add_argument("--repeats", type=int, default=1, help="rounds over the levels (medians reported)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (on a loaded machine 1 avoids OpenMP spinning)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows, tmp = [], None
    names = a.models.split(",")
    counts = [int(n) for n in a.requests.split(",")]
    counts = counts * len(names) if len(counts) == 1 else counts
    if len(counts) != len(names):
        ap.error("--requests: one count, or one per model")
    for name, n_req in zip(names, counts):
        path = name
        if name == "tiny":
            path = "default"
        elif name == "synthetic":
            tmp = tempfile.TemporaryDirectory()
            synthetic_checkpoint(Path(tmp.name))
            path = tmp.name
        engine = LLMEngine(path)
        reqs = workload(engine, n_req, a.seed)
        engine.add_request("warm", *reqs[0])
        while engine.has_unfinished_requests():
            engine.step()
        levels = list(map(int, a.concurrency.split(",")))
        runs = {c: [] for c in levels}
        for _ in range(a.repeats):   # rounds over every level, so that the machine's drift hits each alike
            for c in levels:
                runs[c].append(run(engine, reqs, c, a.rate, a.seed))
                print(name, c, round(runs[c][-1]["tokens_per_s"], 1), flush=True)
        for c in levels:
            # the run of median throughput; speed-up = median over rounds of this level / the first level
            row = dict(model=name, **sorted(runs[c], key=lambda r: r["tokens_per_s"])[len(runs[c]) // 2])
            ratios = sorted(r["tokens_per_s"] / b["tokens_per_s"] for r, b in zip(runs[c], runs[levels[0]]))
            row["speedup"] = ratios[len(ratios) // 2]
            row["speedup_min"], row["speedup_max"] = ratios[0], ratios[-1]
            rows.append(row)
            print(row, flush=True)
    config = dict(models=a.models, requests=a.requests, rate=a.rate, seed=a.seed, threads=torch.get_num_threads(),
                  repeats=a.repeats)
    write(a.output, config, rows, ["model", "concurrency", "output_tokens", "wall_s", "tokens_per_s", "requests_per_s",
                                   "ttft_p50_s", "latency_p50_s", "latency_p99_s", "mean_running", "speedup", "speedup_min",
                                   "speedup_max"])
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name in dict.fromkeys(r["model"] for r in rows):
            rs = [r for r in rows if r["model"] == name]
            ax.plot([r["concurrency"] for r in rs], [r["speedup"] for r in rs], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel("output tokens/s vs one at a time")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)
        print(f"wrote {a.plot}")


if __name__ == "__main__":
    main()
