"""The diffusion loop: one loop for every scheduler, semi-autoregressive over blocks.

for each block: the scheduler plans the step; one forward returns logits for the block's rows
only; propose() turns them into a token and a score per slot; the scheduler picks which
masked slots to commit; the canvas is written in place. Rows whose answer holds a stop token
in a finished block leave the batch (their later blocks cannot change their answer).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dllm.engine.canvas import Canvas
from dllm.engine.kv_cache import BlockRunner
from dllm.engine.scoring import propose
from dllm.errors import UnsupportedError
from dllm.models.config import ModelArgs
from dllm.schedulers import get_scheduler


@dataclass
class RowResult:
    answer: list                 # all N answer slots (mask id where never decoded)
    nfe: int = 0
    steps: int = 0
    trace: list = field(default_factory=list)
    cache_bytes: int = 0


def schedule_style(params, args: ModelArgs) -> str:
    if params.schedule != "auto":
        return params.schedule
    return "dream" if args.family == "dream" and params.num_blocks == 1 else "llada"


def steps_per_block(total: int, blocks: int) -> list[int]:
    # LLaDA requires blocks | steps; dllm spreads a remainder over the earliest blocks
    return [total // blocks + (1 if b < total % blocks else 0) for b in range(blocks)]


@torch.no_grad()
def diffusion_generate(model, args: ModelArgs, prompts: list[list[int]], params, stop_ids,
                       pad_id: int) -> list[RowResult]:
    if params.regex or params.json_schema or params.grammar:
        raise UnsupportedError("constrained decoding (regex, json_schema, grammar) is not available in this build of dllm yet.")
    device = next(model.parameters()).device
    mask_id = args.mask_token_id
    canvas = Canvas.build(prompts, params.max_new_tokens, mask_id, pad_id, device)
    P, bl = canvas.prompt_len, params.block
    style = schedule_style(params, args)
    sched = get_scheduler(params.scheduler)(params, style)
    gen = None
    if params.seed is not None:
        gen = torch.Generator(device=device).manual_seed(params.seed)
    stop = torch.tensor(sorted(stop_ids) or [-1], device=device)
    results = [RowResult(answer=[]) for _ in prompts]
    runner = BlockRunner(model, args, params, canvas, len(prompts))
    forward_cost = 2 if runner.cfg else 1
    active = list(range(len(prompts)))
    rows = torch.arange(len(prompts), device=device)
    x, valid, pos = canvas.x, canvas.valid, canvas.positions
    global_step = 0
    for b, steps in enumerate(steps_per_block(params.total_steps, params.num_blocks)):
        blk = canvas.block_slice(b * bl, bl)
        sched.begin_block((x[:, blk] == mask_id).sum(1).tolist(), steps)
        runner.begin_block()
        step = 0
        while True:
            masked = x[:, blk] == mask_id
            if sched.fixed:
                if sched.block_done(step):
                    break
                plan = sched.plan(step)
                step += 1
                if not any(plan):
                    continue
            else:
                if not bool(masked.any()):   # adaptive schedulers: the one host check they need
                    break
                plan = None
                step += 1
            logits = runner(x, valid, pos, blk)
            tokens, scores = propose(
                logits, remasking=params.remasking, temperature=params.temperature, top_p=params.top_p,
                top_k=params.top_k, style=style, generator=gen, banned=mask_id)
            commit = sched.select(step - 1, scores, masked, plan)
            x[:, blk] = torch.where(commit, tokens, x[:, blk])
            for r in active:
                results[r].nfe += forward_cost
                results[r].steps += 1
            if params.trace:
                _record(results, active, commit, tokens, scores, b * bl, global_step, b)
            global_step += 1
        done = torch.isin(x[:, P:blk.stop], stop).any(1).tolist()   # one host sync per block
        if any(done):  # finished requests leave the batch: write them back, keep the others
            _write_back(canvas, rows, x)
            keep = torch.tensor([i for i, d in enumerate(done) if not d], device=device)
            active = [r for r, d in zip(active, done) if not d]
            if not active:
                break
            runner.keep_rows(keep, len(done))
            rows, x, valid, pos = rows[keep], x[keep], valid[keep], pos[keep]
    else:
        _write_back(canvas, rows, x)
    for r in results:
        r.cache_bytes = runner.cache.nbytes if runner.cache is not None else 0
    answers = canvas.answers().tolist()
    for r, res in enumerate(results):
        res.answer = answers[r]
    return results


def _write_back(canvas, rows, x):
    if x is not canvas.x:   # a compacted copy once some requests have finished
        canvas.x[rows] = x


def _record(results, active, commit, tokens, scores, offset, global_step, block):
    commit, tokens, scores = commit.cpu(), tokens.cpu(), scores.float().cpu()
    for i, r in enumerate(active):
        idx = commit[i].nonzero().flatten()
        results[r].trace.append({
            "step": global_step, "block": block,
            "positions": (idx + offset).tolist(),
            "tokens": tokens[i, idx].tolist(),
            "scores": [round(s, 6) for s in scores[i, idx].tolist()],
        })
