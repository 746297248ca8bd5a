"""KV cache benchmark: none vs prefix vs dual across answer lengths and block sizes.

python -m benchmarks.cache                       # synthetic ~110M-parameter LLaDA-shaped model, random weights
python -m benchmarks.cache --model DIR           # a real checkpoint
PYTHONPATH=PATH python -m benchmarks.cache --fast-dllm
                                                 # also time Fast-dLLM's own code (PATH = its llada/ folder;
                                                 # needs transformers + einops) on the same weights and
                                                 # check that the tokens agree

Writes JSON (machine, versions, config, forwards, wall time, tokens/s, cache bytes, peak
memory) and prints a table. With --fast-dllm: speedup = Fast-dLLM's best time / dllm's best,
pair_median = the median over the alternating repeats of Fast-dLLM's time / dllm's (the figure
to quote on a noisy machine). Never run as a test.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import timed, write
from dllm import LLM, SamplingParams

# ~110M parameters; the head is scaled so that a fair share of slots are confident (random
# weights otherwise give near-uniform predictions and threshold decoding would never fire)
SYNTHETIC = dict(dim=768, n_layers=12, n_heads=12, hidden=2048, vocab_size=16384, scale=0.06, head_scale=0.3,
                 max_len=4096)


def synthetic_checkpoint(path: Path):
    from tests.checkpoints import write_llada

    cfg, _, _ = write_llada(path, tokenizer=False, shards=2, **SYNTHETIC)
    return cfg


def peak_memory(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # process high-water mark


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--lengths", default="256,512,1024")
    ap.add_argument("--blocks", default="32")
    ap.add_argument("--modes", default="none,prefix,dual")
    ap.add_argument("--scheduler", default="threshold")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--fast-dllm", action="store_true",
                    help="also time Fast-dLLM's generate functions (its llada/ folder on PYTHONPATH) in the same run")
    ap.add_argument("--graphs", default=None, help="LLM(graphs=...): auto | cuda | compile | none")
    ap.add_argument("--pack", default=None, help="LLM(pack=...): auto | onednn | none")
    ap.add_argument("--output", default="bench_cache.json")
    a = ap.parse_args(argv)

    tmp = None
    path = a.model
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = tmp.name
        synthetic_checkpoint(Path(path))
    llm = LLM(path, device=a.device, dtype=a.dtype, graphs=a.graphs, pack=a.pack)
    n_params = sum(p.numel() for p in llm.model.parameters())
    g = torch.Generator().manual_seed(0)
    V = llm.args.vocab_size
    prompts = [{"prompt_token_ids": torch.randint(0, V - 8, (a.prompt_len,), generator=g).tolist()}
               for _ in range(a.batch)]
    fd = load_fast_dllm(path, llm) if a.fast_dllm else None

    rows = []
    for n in map(int, a.lengths.split(",")):
        for bl in map(int, a.blocks.split(",")):
            for mode in a.modes.split(","):
                params = SamplingParams(max_new_tokens=n, block_length=bl, steps=n, scheduler=a.scheduler,
                                        threshold=a.threshold, cache=mode)
                # warm-up; torch.compile compiles for these exact shapes, so it warms up on the real run
                warm = params if llm.graphs == "compile" else \
                    SamplingParams(**{**params.to_dict(), "max_new_tokens": bl, "steps": bl})
                llm.generate(prompts, warm)
                best = fd_row = None
                run_fd = fd is not None and len(prompts) == 1 and mode in fd["fns"]
                ratios = []   # Fast-dLLM's wall time / dllm's, per alternating pair: robust to a drifting machine
                for _ in range(a.repeats):   # the two engines alternate, each keeps its best time
                    outs, wall = timed(lambda: llm.generate(prompts, params), llm.device)
                    best = wall if best is None else min(best, wall)
                    if run_fd:
                        fd_row, fd_wall = run_fast_dllm(fd, prompts[0], params, outs[0], llm, fd_row)
                        ratios.append(fd_wall / wall)
                tokens = n * len(prompts)
                row = dict(engine="dllm", length=n, block=bl, cache=mode, nfe=outs[0].stats.nfe,
                           tokens_per_forward=n / outs[0].stats.nfe, wall_s=best, tokens_per_s=tokens / best,
                           ms_per_token=1000 * best / tokens, cache_bytes=outs[0].stats.cache_bytes,
                           peak_bytes=peak_memory(llm.device))
                rows.append(row)
                if run_fd:
                    fd_row["speedup"] = fd_row["wall_s"] / best
                    fd_row["pair_speedups"] = sorted(ratios)
                    fd_row["pair_median"] = statistics.median(ratios)
                    rows.append(fd_row)
                print(rows[-1], file=sys.stderr)
    config = dict(model=a.model or f"synthetic LLaDA-shaped {SYNTHETIC}", params=n_params, dtype=str(llm.dtype),
                  device=str(llm.device), scheduler=a.scheduler, threshold=a.threshold, prompt_len=a.prompt_len,
                  batch=a.batch, repeats=a.repeats, graphs=llm.graphs, packed=llm.packed)
    write(a.output, config, rows, ["engine", "length", "block", "cache", "nfe", "tokens_per_forward", "wall_s",
                                   "ms_per_token", "tokens_per_s", "cache_bytes", "same_tokens", "speedup", "pair_median"])


def load_fast_dllm(path, llm):
    try:   # Fast-dLLM's own model code and loops, from its llada/ folder on PYTHONPATH; not part of dllm
        from model.modeling_llada import LLaDAModelLM
        import generate as fd_generate
    except ImportError as e:
        raise SystemExit(f"--fast-dllm needs Fast-dLLM's llada/ folder on PYTHONPATH ({e}).") from None

    model = LLaDAModelLM.from_pretrained(path, torch_dtype=llm.dtype).to(llm.device).eval()
    return {"model": model, "fns": {"none": fd_generate.generate, "prefix": fd_generate.generate_with_prefix_cache,
                                    "dual": fd_generate.generate_with_dual_cache}}


def run_fast_dllm(fd, prompt, params, ours, llm, previous=None):
    fn = fd["fns"][params.cache]
    x = torch.tensor([prompt["prompt_token_ids"]], device=llm.device)
    kw = dict(steps=params.max_new_tokens, gen_length=params.max_new_tokens, block_length=params.block,
              temperature=0.0, remasking="low_confidence", mask_id=llm.args.mask_token_id,
              threshold=params.threshold if params.scheduler == "threshold" else None)
    if previous is None:
        fn(fd["model"], x, **{**kw, "gen_length": params.block, "steps": params.block})   # warm-up
    (out, nfe), this = timed(lambda: fn(fd["model"], x, **kw), llm.device)
    wall = this if previous is None else min(this, previous["wall_s"])
    answer = out[0, x.shape[1]:].tolist()
    cut = next((i for i, t in enumerate(answer) if t in llm.stop_ids), len(answer))
    n = params.max_new_tokens
    return dict(engine="fast-dllm", length=n, block=params.block, cache=params.cache, nfe=int(nfe),
                tokens_per_forward=n / int(nfe), wall_s=wall, tokens_per_s=n / wall, ms_per_token=1000 * wall / n,
                same_tokens=answer[:cut] == ours.token_ids), this


if __name__ == "__main__":
    main()
