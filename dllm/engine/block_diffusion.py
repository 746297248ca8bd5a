"""The interim decoding loop of the block-diffusion families (SDAR, LLaDA2.x, Fast-dLLM v2).

INTERIM: issue 21 folds this into the request-level step machine; tests/test_block_diffusion*.py are
the contract the port keeps green. Semantics: /work/shared/specs/block-diffusion.md part 1.

Attention is block-causal and blocks are aligned to absolute position 0, so every committed block
has an exact KV cache. Each row's canvas is left-aligned (column = position): [prompt | masks up to
the end of the block holding answer slot max_new_tokens - 1 | pad]. All rows work on the same block
index k at once (block k = columns [kB, (k+1)B)), so the visible keys are columns [0, (k+1)B) for
every row and no mask is needed after the prefill:

  prefill   one forward over the blocks [0, k0) every prompt fills (k0 = min_r floor(P_r / B)),
            block-causal mask, writing the cache
  block k   denoising steps: forward the B tokens at their positions against the cache, the
            scheduler commits masked slots; rows whose block k is pure prompt ride along
            the commit forward: the full block once more, writing its keys/values (counted in nfe)
            stop: a row leaves when its answer so far holds a stop id, or its last block is done

Every whole block is decoded (the last block is never cut); each row returns max_new_tokens slots.
The cache is allocated once for the whole canvas ([R, Hkv, L, hd] per layer): no per-step
allocation. Token-shift families (Fast-dLLM v2) score slot j by the hidden state of slot j - 1 and
fill a block's first slot with the argmax of the previous block's last row (prefill or commit).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm.engine.diffusion import RowResult
from dllm.engine.kv_cache import KVCache
from dllm.engine.scoring import propose
from dllm.errors import PromptError, UnsupportedError
from dllm.models.config import ModelArgs
from dllm.models.masks import block_causal_mask
from dllm.schedulers import get_scheduler
from dllm.schedulers.base import Step


@dataclass
class BlockEnv:
    """What a scheduler may need besides SamplingParams (schedulers/dinfer.py reads mask_id)."""
    model_path: str | None
    device: torch.device
    mask_id: int


@dataclass
class _Rows:
    """The requests still decoding: their indices and canvas rows (compacted between blocks)."""
    ids: list
    x: torch.Tensor          # [R, L] token ids
    pos: torch.Tensor        # [R, L] positions (= columns)


def check_supported(params, args: ModelArgs):
    """One sentence for what the interim loop does not do yet."""
    if params.steps is not None:
        raise UnsupportedError("block-diffusion models take denoising_steps (steps per block), not steps.")
    unsupported = {"cache": params.cache != "none", "cfg_scale": params.cfg_scale > 0, "trace": params.trace,
                   "eot_prediction": params.eot_prediction,
                   "constraints": params.regex is not None or params.json_schema is not None or params.grammar}
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise UnsupportedError(f"{bad[0]} is not supported for block-diffusion models yet (they always decode with "
                               "an exact block KV cache).")
    if params.scheduler in ("early_commit", "apd"):
        raise UnsupportedError(f"scheduler {params.scheduler!r} is not supported for block-diffusion models yet.")


def _canvas(prompts, N: int, B: int, mask_id: int, pad_id: int, device):
    """-> x, pos [R, L], first/end block index per row (end exclusive)."""
    first = [len(p) // B for p in prompts]
    end = [-(-(len(p) + N) // B) for p in prompts]
    L = max(end) * B
    x = torch.full((len(prompts), L), mask_id, dtype=torch.long)
    for r, p in enumerate(prompts):
        x[r, :len(p)] = torch.tensor(p, dtype=torch.long)
        x[r, end[r] * B:] = pad_id                       # past the row's last block: never decoded
    pos = torch.arange(L).expand(len(prompts), L)
    return x.to(device), pos.contiguous().to(device), first, end


@torch.no_grad()
def block_diffusion_generate(model, args: ModelArgs, prompts: list[list[int]], params, stop_ids, pad_id: int,
                             model_path=None, on_step=None, kernels: str = "torch") -> list[RowResult]:
    check_supported(params, args)
    device = next(model.parameters()).device
    B, N, mask_id = params.block_length or args.block_size, params.max_new_tokens, args.mask_token_id
    x, pos, first, end = _canvas(prompts, N, B, mask_id, pad_id, device)
    if x.shape[1] > args.max_seq_len:
        raise PromptError(f"prompt + answer, rounded up to whole blocks of {B}, is {x.shape[1]} positions; the model's "
                          f"context is {args.max_seq_len}.")
    plen = [len(p) for p in prompts]
    results = [RowResult(answer=[]) for _ in prompts]
    cache = KVCache(args, len(prompts), x.shape[1], next(model.parameters()).dtype, device)
    style = params.schedule if params.schedule != "auto" else "llada"   # topk's per-step counts
    sched = get_scheduler(params.scheduler, args.scheduler)(params, style, BlockEnv(model_path, device, mask_id))
    gen = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    kw = dict(remasking=params.remasking, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
              style=args.sampler, generator=gen, banned=mask_id, kernels=kernels)
    stop = torch.tensor(sorted(stop_ids) or [-1], device=device)
    rows = _Rows(list(range(len(prompts))), x, pos)
    k0 = min(first)
    if k0 > 0:   # prefill of the blocks every prompt fills
        T = k0 * B
        cache.start, cache.end = 0, T
        mask = block_causal_mask(pos[0, :T], pos[0, :T], B)                       # [1, T, T]
        logits = model(x[:, :T], pos[:, :T], cache, slice(T - 1, T), mask)
        _shift_token(args, rows.x, T, logits)
        for r in rows.ids:
            results[r].nfe += 1
    steps = min(params.denoising_steps or B, B)   # more steps than slots only adds empty ones (SDAR, topk)
    for k in range(k0, max(end)):
        blk = slice(k * B, (k + 1) * B)
        cache.start, cache.end = blk.start, blk.stop
        _denoise_block(model, args, sched, rows, cache, blk, steps, kw, results, on_step)
        # the commit forward: rewrites the block's columns, which the denoising steps also wrote
        logits = model(rows.x[:, blk], rows.pos[:, blk], cache, slice(B - 1, B))
        _shift_token(args, rows.x, blk.stop, logits)
        for r in rows.ids:
            results[r].nfe += 1
        done = [blk.stop >= end[r] * B or bool(torch.isin(rows.x[i, plen[r]:blk.stop], stop).any())
                for i, r in enumerate(rows.ids)]
        if any(done):
            for i, r in enumerate(rows.ids):
                if done[i]:
                    results[r].answer = rows.x[i, plen[r]:plen[r] + N].tolist()
            keep = [i for i, d in enumerate(done) if not d]
            if not keep:
                break
            idx = torch.tensor(keep, device=device)
            cache.keep_rows(idx)
            rows = _Rows([rows.ids[i] for i in keep], rows.x[idx], rows.pos[idx])
    for r in results:
        r.cache_bytes = cache.nbytes
    return results


def _denoise_block(model, args, sched, rows: _Rows, cache, blk: slice, steps: int, kw, results, on_step):
    """Denoising steps of block `blk` until no row has a mask in it (or a fixed schedule ends)."""
    mask_id = args.mask_token_id
    masked = rows.x[:, blk] == mask_id
    sched.begin_block(masked.sum(1).tolist(), steps)
    step = 0
    while True:
        masked = rows.x[:, blk] == mask_id
        if sched.fixed:
            if sched.block_done(step):
                break
            plan = sched.plan(step)
            step += 1
            if not any(plan):
                continue
        else:
            if not bool(masked.any()):
                break
            plan, step = None, step + 1
        # writes the block's own cache columns; the commit forward overwrites them with the final block
        logits = model(rows.x[:, blk], rows.pos[:, blk], cache)                 # [R, B, V]
        if args.token_shift:   # slot j <- hidden state of slot j - 1; slot 0 keeps its own
            logits = torch.cat((logits[:, :1], logits[:, :-1]), 1)
        fused = sched.transform(logits, masked)
        tokens, scores = propose(fused, **kw)
        # forwards: of this block (no scheduler that reads it runs here); answer_start differs per row (unused)
        st = Step(index=step - 1, forwards=step, logits=logits, tokens=tokens, scores=scores, masked=masked,
                  plan=plan, rows=rows.ids, block_start=blk.start, answer_start=0)
        commit = sched.select(st) & masked
        rows.x[:, blk] = torch.where(commit, tokens, rows.x[:, blk])
        for i, r in enumerate(rows.ids):
            if bool(masked[i].any()):
                results[r].nfe += 1
                results[r].steps += 1
        if on_step is not None:
            st.commit = commit
            on_step(st)
    assert not bool((rows.x[:, blk] == mask_id).any()), "a fixed schedule ended with masks left in the block"


def _shift_token(args, x, col: int, logits):
    """Token-shift families: the slot at column `col` (a block's first), if it is a masked answer slot,
    takes the argmax of the logits of column col - 1 (Fast-dLLM v2's autoregressive token)."""
    if not args.token_shift or col >= x.shape[1]:
        return
    tok = logits[:, -1].argmax(-1)
    x[:, col] = torch.where(x[:, col] == args.mask_token_id, tok, x[:, col])
