"""Serving benchmark: N concurrent streaming clients against `dllm serve`, and the in-process engine.

python -m benchmarks.serve                                # from the repository root: dllm-tiny and the
                                                          # synthetic ~110M LLaDA-shaped model
python -m benchmarks.serve --models tiny --clients 1,4,16 --rounds 4 --device cuda

For each model, `dllm serve` runs as a subprocess on 127.0.0.1 (tests/serve_process.py); at each
concurrency level N, N clients (asyncio + httpx, streaming /v1/completions with token-id prompts and
stream_options.include_usage) share max(N x rounds, min_requests) requests, each client sending its next request
when the previous one ends. Per level: requests/s, output tokens/s, time to first token (first chunk
with answer tokens) and latency p50/p99. Then the same requests, one at a time, through the
in-process engine (dllm.LLMEngine: add_request, step until finished), to show the server's overhead
at 1 client. Targets (issue 22): at 16 clients >= 3x the 1-client throughput on dllm-tiny; the server
adds <= 10% latency over the in-process engine at 1 client. Writes JSON, prints a table, plots
output tokens/s against clients. Never run as a test.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import write
from dllm.default_model import DEFAULT_MODEL
from tests.serve_process import ServerProcess


def prompts_for(model: str, count: int, prompt_len: int) -> list[list[int]]:
    """Token-id prompts: dllm-tiny's task prompts through its chat template, or random ids."""
    if model == "tiny":
        from dllm.tokenizer import Tokenizer
        from tests.serve_process import waiting_line

        tok = Tokenizer.from_pretrained(DEFAULT_MODEL)
        return [tok.encode_chat([{"role": "user", "content": waiting_line(i)}]) for i in range(count)]
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 16000, (prompt_len,), generator=g).tolist() for _ in range(count)]


async def one(client, url: str, body: dict) -> dict:
    t0 = time.perf_counter()
    first, usage = None, {}
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            usage = chunk.get("usage") or usage
            if first is None and any(c.get("token_ids") for c in chunk["choices"]):
                first = time.perf_counter() - t0
    latency = time.perf_counter() - t0
    return dict(latency=latency, ttft=first if first is not None else latency,
                tokens=usage.get("completion_tokens", 0), nfe=usage.get("nfe", 0))


async def level(url: str, bodies: list[dict], clients: int) -> tuple[list[dict], float]:
    import httpx

    todo = list(reversed(bodies))
    done: list[dict] = []

    async def client_loop(client):
        while todo:
            done.append(await one(client, url, todo.pop()))

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        return done, time.perf_counter() - t0


def in_process(path: str, prompts: list, params, a) -> tuple[list[dict], float]:
    """The same requests one at a time through dllm.LLMEngine in this process, built and stepped on one
    EngineThread as `dllm serve` builds and steps its engine (dllm/serve/async_engine.py: on a CPU, a
    model stepped on another thread than the one that loaded it runs much slower, which would swamp the
    server overhead this row is meant to show)."""
    from dllm import LLMEngine
    from dllm.serve.async_engine import EngineThread

    home = EngineThread()
    engine = home.call(lambda: LLMEngine(path, device=a.device, dtype=a.dtype))
    return home.call(lambda: _in_process(engine, prompts, params))


def _in_process(engine, prompts: list, params) -> tuple[list[dict], float]:
    engine.add_request("warm", {"prompt_token_ids": prompts[0]}, params)
    while engine.has_unfinished_requests():
        engine.step()
    done = []
    t_all = time.perf_counter()
    for i, ids in enumerate(prompts):
        t0, first, tokens, nfe = time.perf_counter(), None, 0, 0
        engine.add_request(f"r{i}", {"prompt_token_ids": ids}, params)
        while engine.has_unfinished_requests():
            for out in engine.step():
                tokens += len(out.delta_token_ids)
                if first is None and out.delta_token_ids:
                    first = time.perf_counter() - t0
                nfe = out.stats.nfe
        latency = time.perf_counter() - t0
        done.append(dict(latency=latency, ttft=first if first is not None else latency,
                         tokens=min(tokens, params.max_new_tokens), nfe=nfe))
    return done, time.perf_counter() - t_all


def row(model: str, mode: str, clients: int, done: list[dict], wall: float) -> dict:
    lat = sorted(d["latency"] for d in done)
    tokens = sum(d["tokens"] for d in done)
    return dict(model=model, mode=mode, clients=clients, requests=len(done), wall_s=wall,
                requests_per_s=len(done) / wall, output_tokens_per_s=tokens / wall,
                ttft_p50_s=statistics.median(d["ttft"] for d in done), latency_p50_s=statistics.median(lat),
                latency_p99_s=lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))],
                mean_nfe=statistics.fmean(d["nfe"] for d in done), mean_tokens=tokens / len(done))


def run_model(model: str, a, rows: list):
    tmp = None
    path = str(DEFAULT_MODEL)
    if model == "synthetic":
        from benchmarks.cache import synthetic_checkpoint

        tmp = tempfile.TemporaryDirectory()
        path = tmp.name
        synthetic_checkpoint(Path(path))
    levels = [int(c) for c in a.clients.split(",")]
    count = lambda n: max(n * a.rounds, a.min_requests)   # noqa: E731  (requests at level n)
    pool = prompts_for(model, max(map(count, levels)), a.prompt_len)
    sampling = dict(max_tokens=a.max_tokens, block_length=a.block_length, steps=a.steps, scheduler=a.scheduler,
                    cache=a.cache)
    bodies = [dict(prompt=ids, stream=True, stream_options={"include_usage": True}, return_token_ids=True, **sampling)
              for ids in pool]
    flags = ["--model", path, "--max-waiting", str(len(pool) + 1)]
    flags += [f for k in ("device", "dtype") if getattr(a, k) for f in (f"--{k}", getattr(a, k))]
    with ServerProcess(*flags) as server:
        asyncio.run(level(server.url, bodies[:1], 1))   # warm-up
        for n in levels:
            done, wall = asyncio.run(level(server.url, bodies[:count(n)], n))
            rows.append(row(model, "server", n, done, wall))
            print(rows[-1], flush=True)
    from dllm import SamplingParams

    params = SamplingParams(max_new_tokens=a.max_tokens, block_length=a.block_length, steps=a.steps,
                            scheduler=a.scheduler, cache=a.cache)
    done, wall = in_process(path, pool[:count(1)], params, a)
    rows.append(row(model, "in-process", 1, done, wall))
    print(rows[-1], flush=True)
    if tmp is not None:
        tmp.cleanup()


def summary(rows: list) -> dict:
    """The issue's two targets, per model: throughput at 16 clients over 1, server latency over in-process."""
    out = {}
    for model in sorted({r["model"] for r in rows}):
        by = {(r["mode"], r["clients"]): r for r in rows if r["model"] == model}
        one, sixteen, local = by.get(("server", 1)), by.get(("server", 16)), by.get(("in-process", 1))
        out[model] = dict(
            speedup_16_over_1=sixteen["output_tokens_per_s"] / one["output_tokens_per_s"] if one and sixteen else None,
            server_overhead_1=one["latency_p50_s"] / local["latency_p50_s"] - 1 if one and local else None)
    return out


def plot(rows: list, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in sorted({r["model"] for r in rows}):
        server = sorted((r["clients"], r["output_tokens_per_s"]) for r in rows if r["model"] == model and r["mode"] == "server")
        line, = ax.plot(*zip(*server), marker="o", label=f"{model}: dllm serve")
        for r in rows:
            if r["model"] == model and r["mode"] == "in-process":
                ax.scatter([1], [r["output_tokens_per_s"]], marker="x", color=line.get_color(),
                           label=f"{model}: in-process engine, 1 client")
    ax.set_xscale("log", base=2)
    levels = sorted({r["clients"] for r in rows})
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.set_xlabel("concurrent streaming clients")
    ax.set_ylabel("output tokens / s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,synthetic", help="tiny (the shipped dllm-tiny), synthetic (~110M)")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--rounds", type=int, default=1, help="requests per client at each level")
    ap.add_argument("--min-requests", type=int, default=8, help="at least this many requests per level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--block-length", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--scheduler", default="topk")
    ap.add_argument("--cache", default="none", choices=("none", "prefix", "dual"),
                    help="KV cache mode of every request (none: every step a full-canvas forward)")
    ap.add_argument("--prompt-len", type=int, default=64, help="synthetic model's prompt length")
    ap.add_argument("--device")
    ap.add_argument("--dtype")
    ap.add_argument("--output", default="bench_serve.json")
    ap.add_argument("--plot", default="bench_serve.png")
    a = ap.parse_args(argv)
    rows: list = []
    for model in a.models.split(","):
        run_model(model, a, rows)
    config = dict(vars(a), engine="dllm.LLMEngine", summary=summary(rows))
    write(a.output, config, rows, ["model", "mode", "clients", "requests", "requests_per_s", "output_tokens_per_s",
                                   "ttft_p50_s", "latency_p50_s", "latency_p99_s", "mean_nfe", "mean_tokens"])
    for model, s in config["summary"].items():
        print(f"{model}: 16 clients / 1 client throughput = {s['speedup_16_over_1'] or float('nan'):.2f}x "
              f"(target >= 3x on tiny); server latency over in-process at 1 client = "
              f"{100 * (s['server_overhead_1'] or float('nan')):+.1f}% (target <= +10%)")
    if a.plot:
        plot(rows, a.plot)


if __name__ == "__main__":
    main()
