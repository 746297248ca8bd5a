"""Serving benchmark: N concurrent streaming clients against `dllm serve`, and the in-process engine.

python -m benchmarks.serve                                # from the repository root: dllm-tiny and the
                                                          # synthetic ~110M LLaDA-shaped model
python -m benchmarks.serve --models tiny --clients 1,4,16 --rounds 4 --repeats 3 --cache dual

For each model, `dllm serve` runs as a subprocess on 127.0.0.1 (tests/serve_process.py); at each
concurrency level N, N clients (asyncio + httpx, streaming /v1/completions with token-id prompts and
stream_options.include_usage) share max(N x rounds, min_requests) requests, each client sending its next request
when the previous one ends. Then the same requests through dllm.LLMEngine in this process, N at a time
(a new one added when one finishes): what the engine does without HTTP, so that each level shows what the
server adds and what the engine itself allows. Per level: requests/s, output tokens/s, time to first token
(first chunk with answer tokens) and latency p50/p99, and for the server the CPU time its event-loop
thread spent per request (Linux: HTTP, JSON and SSE work; the engine and parse threads are not in it).
--repeats R runs every level R times, server and in-process alternating, and the summary takes medians.
Targets (issue 22): at 16 clients >= 3x the 1-client throughput on dllm-tiny; the server adds <= 10%
latency over the in-process engine at 1 client. Writes JSON, prints a table, plots output tokens/s
against clients. Never run as a test.
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


def loop_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of process pid's main thread, which runs the server's event loop;
    None where /proc is missing."""
    import os

    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime, stime (fields 14, 15)


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


def in_process(engine, prompts: list, params, clients: int) -> tuple[list[dict], float]:
    """The same requests through the engine in this process, `clients` at a time (a new one added when
    one finishes). The engine is built and stepped on this thread, as `dllm serve` does (on a CPU, a
    model stepped on another thread than the one that loaded it runs much slower: README, "Serving
    benchmark")."""
    todo = list(enumerate(prompts))[::-1]
    live: dict[str, dict] = {}
    done = []

    def add():
        i, ids = todo.pop()
        engine.add_request(f"r{i}", {"prompt_token_ids": ids}, params)
        live[f"r{i}"] = dict(t0=time.perf_counter(), first=None, tokens=0)

    t_all = time.perf_counter()
    for _ in range(min(clients, len(todo))):
        add()
    while engine.has_unfinished_requests():
        for out in engine.step():
            r = live[out.request_id]
            r["tokens"] += len(out.delta_token_ids)
            if r["first"] is None and out.delta_token_ids:
                r["first"] = time.perf_counter() - r["t0"]
            if out.finished:
                latency = time.perf_counter() - live.pop(out.request_id)["t0"]
                done.append(dict(latency=latency, ttft=r["first"] if r["first"] is not None else latency,
                                 tokens=min(r["tokens"], params.max_new_tokens), nfe=out.stats.nfe))
                if todo:
                    add()
    return done, time.perf_counter() - t_all


def row(model: str, mode: str, clients: int, repeat: int, done: list[dict], wall: float, loop_cpu=None) -> dict:
    lat = sorted(d["latency"] for d in done)
    tokens = sum(d["tokens"] for d in done)
    return dict(model=model, mode=mode, clients=clients, repeat=repeat, requests=len(done), wall_s=wall,
                loop_cpu_ms_per_request=None if loop_cpu is None else 1e3 * loop_cpu / len(done),
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
    from dllm import LLMEngine, SamplingParams

    params = SamplingParams(max_new_tokens=a.max_tokens, block_length=a.block_length, steps=a.steps,
                            scheduler=a.scheduler, cache=a.cache)
    engine = LLMEngine(path, device=a.device, dtype=a.dtype)
    in_process(engine, pool[:2], params, 1)   # warm-up
    with ServerProcess(*flags) as server:
        asyncio.run(level(server.url, bodies[:1], 1))   # warm-up
        for rep in range(a.repeats):
            for n in levels:
                cpu0 = loop_cpu_s(server.proc.pid)
                done, wall = asyncio.run(level(server.url, bodies[:count(n)], n))
                cpu1 = loop_cpu_s(server.proc.pid)
                rows.append(row(model, "server", n, rep, done, wall, None if cpu0 is None else cpu1 - cpu0))
                print(rows[-1], flush=True)
                done, wall = in_process(engine, pool[:count(n)], params, n)
                rows.append(row(model, "in-process", n, rep, done, wall))
                print(rows[-1], flush=True)
    if tmp is not None:
        tmp.cleanup()


def summary(rows: list) -> dict:
    """Per model: the issue's two targets (server throughput at 16 clients over 1; server latency p50 over
    in-process at 1 client, per repeat) and what the engine alone does at 16 over 1. Medians over repeats."""
    out = {}
    med = statistics.median
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]

        def tps(mode, n):
            v = [r["output_tokens_per_s"] for r in mine if r["mode"] == mode and r["clients"] == n]
            return med(v) if v else None

        over = sorted(s["latency_p50_s"] / e["latency_p50_s"] - 1 for s in mine for e in mine
                      if s["mode"] == "server" and e["mode"] == "in-process" and s["clients"] == e["clients"] == 1
                      and s["repeat"] == e["repeat"])
        cpu = [r["loop_cpu_ms_per_request"] for r in mine if r["mode"] == "server" and r["clients"] == 1
               and r["loop_cpu_ms_per_request"] is not None]
        ratio = lambda x, y: x / y if x and y else None   # noqa: E731
        out[model] = dict(
            speedup_16_over_1=ratio(tps("server", 16), tps("server", 1)),
            engine_speedup_16_over_1=ratio(tps("in-process", 16), tps("in-process", 1)),
            server_over_engine_16=ratio(tps("server", 16), tps("in-process", 16)),
            server_overhead_1=med(over) if over else None, server_overhead_1_runs=over,
            loop_cpu_ms_per_request_1=med(cpu) if cpu else None)
    return out


def plot(rows: list, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in sorted({r["model"] for r in rows}):
        for mode, style in (("server", "-"), ("in-process", "--")):
            levels = sorted({r["clients"] for r in rows if r["model"] == model and r["mode"] == mode})
            tps = [statistics.median(r["output_tokens_per_s"] for r in rows if r["model"] == model
                                     and r["mode"] == mode and r["clients"] == n) for n in levels]
            label = f"{model}: dllm serve" if mode == "server" else f"{model}: in-process engine"
            ax.plot(levels, tps, style, marker="o" if mode == "server" else "x", label=label)
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
    ap.add_argument("--repeats", type=int, default=1, help="runs of every level (server and in-process alternate)")
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
    write(a.output, config, rows, ["model", "mode", "clients", "repeat", "requests", "requests_per_s",
                                   "output_tokens_per_s", "ttft_p50_s", "latency_p50_s", "latency_p99_s", "mean_nfe",
                                   "mean_tokens", "loop_cpu_ms_per_request"])
    nan = float("nan")
    for model, s in config["summary"].items():
        print(f"{model}: 16 clients / 1 client throughput = {s['speedup_16_over_1'] or nan:.2f}x (target >= 3x on "
              f"tiny; the in-process engine: {s['engine_speedup_16_over_1'] or nan:.2f}x, server / engine at 16: "
              f"{s['server_over_engine_16'] or nan:.2f}); server latency over in-process at 1 client = "
              f"{100 * (s['server_overhead_1'] or nan):+.1f}% (target <= +10%; runs: "
              f"{', '.join(f'{100 * v:+.1f}%' for v in s['server_overhead_1_runs'])}); event loop CPU "
              f"{s['loop_cpu_ms_per_request_1'] or nan:.1f} ms per request at 1 client")
    if a.plot:
        plot(rows, a.plot)


if __name__ == "__main__":
    main()
