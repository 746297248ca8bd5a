"""Scheduler benchmark: tokens per forward, wall time and agreement with careful decoding.

python -m benchmarks.schedulers                  # synthetic ~110M-parameter LLaDA-shaped model (random weights)
python -m benchmarks.schedulers --model DIR      # a real checkpoint (--text-prompts FILE for text prompts)

For every scheduler x cache mode: mean forwards per request, tokens committed per forward,
wall time, and `agree` = the fraction of answer slots equal to the reference decoding (topk,
one token per step, no cache) - the quality proxy that needs no task. learned_filter uses a
filter trained first on other prompts (timed separately). Writes JSON and prints a table.
Never run as a test.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.cache import SYNTHETIC, synthetic_checkpoint
from benchmarks.common import timed, write
from dllm import LLM, SamplingParams
from dllm.schedulers import SCHEDULERS


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--device")
    ap.add_argument("--dtype")
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--train-prompts", type=int, default=8)
    ap.add_argument("--caches", default="none,dual")
    ap.add_argument("--schedulers", default=",".join(sorted(set(SCHEDULERS) - {"apd"})))   # apd needs a draft model
    ap.add_argument("--output", default="bench_schedulers.json")
    a = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    path = a.model
    if path is None:
        path = tmp.name
        synthetic_checkpoint(Path(path))
    llm = LLM(path, device=a.device, dtype=a.dtype)
    V = llm.args.vocab_size
    g = torch.Generator().manual_seed(0)
    make = lambda n: [{"prompt_token_ids": torch.randint(0, V - 8, (a.prompt_len,), generator=g).tolist()}
                      for _ in range(n)]
    prompts, train_prompts = make(a.prompts), make(a.train_prompts)
    base = dict(max_new_tokens=a.length, block_length=a.block)

    ref = llm.generate(prompts, SamplingParams(**base, steps=a.length))
    ref_answers = [_full(o) for o in ref]
    rows = []
    filter_path = str(Path(tmp.name) / "filter.safetensors")
    if "learned_filter" in a.schedulers:
        from dllm.train_filter import train_filter

        info, wall = timed(lambda: train_filter(llm, train_prompts, output=filter_path, block_length=a.block,
                                                max_new_tokens=a.length, log=lambda m: print(m, file=sys.stderr)),
                           llm.device)
        print(f"filter trained in {wall:.1f}s: {info['held_out']}", file=sys.stderr)
    for name in a.schedulers.split(","):
        for cache in a.caches.split(","):
            params = SamplingParams(**base, scheduler=name, cache=cache, filter_path=filter_path)
            outs, wall = timed(lambda: llm.generate(prompts, params), llm.device)
            nfe = sum(o.stats.nfe for o in outs) / len(outs)
            agree = sum(_agree(_full(o), r) for o, r in zip(outs, ref_answers)) / len(outs)
            rows.append(dict(scheduler=name, cache=cache, nfe=nfe, tokens_per_forward=a.length / nfe, agree=agree,
                             wall_s=wall, ms_per_token=1000 * wall / (a.length * len(prompts))))
            print(rows[-1], file=sys.stderr)
    config = dict(model=a.model or f"synthetic LLaDA-shaped {SYNTHETIC}", length=a.length, block=a.block,
                  prompts=a.prompts, prompt_len=a.prompt_len, dtype=str(llm.dtype), device=str(llm.device),
                  reference_nfe=sum(o.stats.nfe for o in ref) / len(ref))
    write(a.output, config, rows, ["scheduler", "cache", "nfe", "tokens_per_forward", "agree", "wall_s", "ms_per_token"])


def _full(out):
    # answer slots, with the EOS cut marked so that a shorter answer does not count as agreeing
    return out.token_ids + [-1]


def _agree(a, b) -> float:
    n = max(len(a), len(b))
    return sum(x == y for x, y in zip(a, b)) / n


if __name__ == "__main__":
    main()
