"""Block-diffusion decoding: dllm vs the reference loops on the same weights, identical tokens.

python -m benchmarks.block_diffusion                         # both families, 256 and 1024 new tokens, 4 prompts
python -m benchmarks.block_diffusion --families llada2 --batch 16,8   # 16 prompts at 256, 8 at 1024
python -m benchmarks.block_diffusion --lengths 256 --batch 8 --families sdar --repeats 3

Models (random weights, written in the published layouts by tests/block_checkpoints.py):
  sdar    ~100M SDAR-shaped (Qwen3 layout, QK-norm, GQA 12/4, 12 layers, dim 768, vocab 16384), block 4
          (SDAR-*-Chat's block_size), 4 denoising steps, low_confidence_dynamic at threshold 0.9;
          reference: SDAR's block_diffusion_generate as tests/reference_block.py writes it, driving
          transformers' Qwen3ForCausalLM with a DynamicCache (SDAR's modeling file is Qwen3 + mask)
  llada2  ~95M LLaDA2-shaped MoE (fused QKV, QK-norm, half rotary, layer 0 dense, 16 experts top-4 in
          4 groups, a shared expert), block 32, dInfer's threshold rule at 0.9; reference: dInfer's
          loop and the LLaDA2-MoE forward written out in tests/reference_block.py (plain torch)
Each prompt is decoded by the reference (batch 1: the references' loops are), by dllm one prompt at a
time (b1) and by dllm with all prompts in one call (batch). Runs alternate ref / dllm per repeat;
`ratio_b1` and `ratio_batch` are the medians over repeats of (reference time / dllm time) for the
same prompts — the figures to quote on a shared machine. Threads default to 1: on a loaded 2-core box
two OpenMP threads spend most of their time waiting for each other (8x slower GEMMs measured).
Writes JSON + prints a table. Never run as a test.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import timed, write
from dllm import LLM, SamplingParams

V = 16384
SDAR = dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=4, head_dim=64, hidden=2048, vocab_size=V,
            block_size=4, scale=0.06, head_scale=0.6, tokenizer=False, quiet=(V - 2,))   # V - 2 = EOS, never drawn
LLADA2 = dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=2, head_dim=64, hidden=1536, moe_hidden=384, n_experts=16,
              top_k=4, n_group=4, topk_group=2, n_shared=1, first_dense=1, vocab_size=V, scale=0.06,
              head_scale=0.6, with_ids=True, quiet=(V - 2,))


def checkpoint(family: str, root: Path) -> Path:
    from tests.block_checkpoints import write_llada2, write_sdar

    path = root / family
    if not (path / "config.json").is_file():
        (write_sdar if family == "sdar" else write_llada2)(path, **(SDAR if family == "sdar" else LLADA2))
    return path


def reference(family: str, path: Path, llm: LLM, prompts, N: int, threshold: float):
    from tests.helpers import upto_stop
    from tests.reference_block import HFBlockModel, LLaDA2Model, dinfer_generate, sdar_generate

    a = llm.args
    if family == "sdar":
        model = HFBlockModel(path, a.block_size)
        run = lambda p: sdar_generate(model, p, a.mask_token_id, N, a.block_size, a.block_size,   # noqa: E731
                                      threshold=threshold, stop_ids=llm.stop_ids)
    else:
        model = LLaDA2Model(path, a.block_size)
        run = lambda p: dinfer_generate(model, p, a.mask_token_id, a.eos_token_ids[0], N, a.block_size,  # noqa: E731
                                        threshold)
    return lambda: [upto_stop(run(p)[len(p):len(p) + N], llm.stop_ids) for p in prompts]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="sdar,llada2")
    ap.add_argument("--lengths", default="256,1024")
    ap.add_argument("--batch", default="4", help="prompts per run, one per length (or one for all)")
    ap.add_argument("--prompt-len", type=int, default=61)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-b1", action="store_true", help="skip dllm one prompt at a time (long batches)")
    ap.add_argument("--workdir", help="keep the checkpoints here (default: a temporary directory)")
    ap.add_argument("--out", default="block_diffusion.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    root = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="dllm-bd-"))
    rows = []
    for family in a.families.split(","):
        path = checkpoint(family, root)
        llm = LLM(path)
        dev = llm.device
        n_params = sum(p.numel() for p in llm.model.named_weights().values())
        lengths = [int(n) for n in a.lengths.split(",")]
        batches = [int(b) for b in a.batch.split(",")]
        for N, nb in zip(lengths, batches * len(lengths) if len(batches) == 1 else batches):
            g = torch.Generator().manual_seed(N)
            prompts = [torch.randint(0, V - 3, (a.prompt_len + 3 * i,), generator=g).tolist() for i in range(nb)]
            params = SamplingParams(max_new_tokens=N, threshold=a.threshold, sdar_threshold=a.threshold)
            ref_fn = reference(family, path, llm, prompts, N, a.threshold)
            ids = [{"prompt_token_ids": p} for p in prompts]
            llm.generate(ids[:1], SamplingParams(max_new_tokens=8))             # warm-up
            t_ref, t_b1, t_batch, same = [], [], [], True
            for _ in range(a.repeats):
                want, t = timed(ref_fn, dev)
                t_ref.append(t)
                if not a.no_b1:
                    solo, t = timed(lambda: [llm.generate([i], params)[0] for i in ids], dev)
                    t_b1.append(t)
                outs, t = timed(lambda: llm.generate(ids, params), dev)
                t_batch.append(t)
                same &= want == [o.token_ids for o in outs] and (a.no_b1 or [o.token_ids for o in solo] == want)
            tokens = sum(len(w) for w in want)
            nfe = sum(o.stats.nfe for o in outs)
            rows.append(dict(
                family=family, params_m=round(n_params / 1e6, 1), new_tokens=N, prompts=nb, block=llm.args.block_size,
                scheduler=llm.args.scheduler, identical=same, tokens=tokens, nfe=nfe,
                ref_tok_s=tokens / min(t_ref), dllm_b1_tok_s=tokens / min(t_b1) if t_b1 else None,
                dllm_batch_tok_s=tokens / min(t_batch),
                ratio_b1=statistics.median(r / d for r, d in zip(t_ref, t_b1)) if t_b1 else None,
                ratio_batch=statistics.median(r / d for r, d in zip(t_ref, t_batch)),
                ref_s=t_ref, dllm_b1_s=t_b1, dllm_batch_s=t_batch))
            print(rows[-1], flush=True)
    write(a.out, dict(threads=a.threads, threshold=a.threshold, prompt_len=a.prompt_len, repeats=a.repeats,
                      sdar=SDAR, llada2=LLADA2), rows,
          ["family", "params_m", "new_tokens", "prompts", "identical", "tokens", "ref_tok_s", "dllm_b1_tok_s",
           "dllm_batch_tok_s", "ratio_b1", "ratio_batch"])


if __name__ == "__main__":
    main()
