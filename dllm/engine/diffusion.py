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
from dllm.errors import ConstraintError
from dllm.models.config import ModelArgs
from dllm.schedulers import get_scheduler
from dllm.schedulers.base import Step


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


@dataclass
class SchedulerEnv:
    """What a scheduler may need besides SamplingParams (e.g. where its learned filter lives)."""
    model_path: str | None
    device: torch.device
    family: str = "llada"        # ModelArgs.family: papers with per-family defaults (freedave, adablock, klass)


@torch.no_grad()
def diffusion_generate(model, args: ModelArgs, prompts: list[list[int]], params, stop_ids,
                       pad_id: int, model_path=None, on_step=None, dfa=None, answers=None,
                       kernels: str = "torch", graphs: str = "none") -> list[RowResult]:
    """dfa: the compiled constraint (constraints/regex.py TokenDFA) or None; answers: per-row
    initial answer slots (templates) or None. on_step(step: Step): called after each step's
    selection (tools such as train-filter). graphs: "cuda" | "compile" | "none", how cached steps
    run (engine/graphs.py)."""
    device = next(model.parameters()).device
    mask_id = args.mask_token_id
    canvas = Canvas.build(prompts, params.max_new_tokens, mask_id, pad_id, device, answers)
    P, bl = canvas.prompt_len, params.block
    style = schedule_style(params, args)
    sched = get_scheduler(params.scheduler)(params, style, SchedulerEnv(model_path, device, args.family))
    gen = None
    if params.seed is not None:
        gen = torch.Generator(device=device).manual_seed(params.seed)
    stop = torch.tensor(sorted(stop_ids) or [-1], device=device)
    constraint = None
    if dfa is not None:
        from dllm.constraints.runtime import ConstrainedRows

        from dllm.constraints.cfg_rows import GrammarConstraint, GrammarRows

        if isinstance(dfa, GrammarConstraint):   # a CFG: checks with reject-and-repick
            constraint = GrammarRows(dfa, stop_ids, canvas)
        else:
            constraint = ConstrainedRows(dfa, stop_ids, canvas, params.temperature, gen, params.remasking)
        if not bool(constraint.completable(canvas.x).all()):
            raise ConstraintError(
                f"no answer of at most {params.max_new_tokens} tokens satisfies the constraint"
                + (" with the template's fixed text" if answers and any(a is not None for a in answers) else "")
                + "; allow more tokens or relax the constraint.")
    eot = params.eot_prediction and bool(stop_ids)
    results = [RowResult(answer=[]) for _ in prompts]
    runner = BlockRunner(model, args, params, canvas, len(prompts), graphs)
    forward_cost = 2 if runner.cfg else 1
    active = list(range(len(prompts)))
    rows = torch.arange(len(prompts), device=device)
    x, valid, pos = canvas.x, canvas.valid, canvas.positions
    L = x.shape[1]
    propose_kw = dict(remasking=params.remasking, temperature=params.temperature, top_p=params.top_p,
                      top_k=params.top_k, style=style, generator=gen, banned=mask_id, kernels=kernels)
    global_step = 0
    for b, steps in enumerate(steps_per_block(params.total_steps, params.num_blocks)):
        blk = canvas.block_slice(b * bl, bl)
        sched.begin_block((x[:, blk] == mask_id).sum(1).tolist(), steps)
        runner.begin_block()
        if constraint is not None:
            constraint.begin_block(x, blk)
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
                if (eot or sched.wide) and not bool(masked.any()):   # rows completed early: no forward
                    continue
            else:
                if not bool(masked.any()):   # adaptive schedulers: the one host check they need
                    break
                plan = None
                step += 1
            before = x.clone() if params.trace else None
            logits, lo = runner(x, valid, pos, blk, wide=sched.wide, ahead=sched.lookahead)
            raw = logits[:, blk.start - lo:blk.stop - lo]
            fused = sched.transform(raw, masked)
            if constraint is not None:   # DINGO: the masked slots take the best valid completion
                tokens, scores = constraint.restrict(fused, x[:, blk], masked, lambda lg: propose(lg, **propose_kw))
            else:
                tokens, scores = propose(fused, **propose_kw)
            for r in active:
                results[r].nfe += forward_cost
                results[r].steps += 1
            st = Step(index=step - 1, forwards=global_step + 1, logits=raw, tokens=tokens, scores=scores,
                      masked=masked, plan=plan, rows=active, block_start=blk.start, answer_start=P)
            if sched.wide:
                st.wide, st.wide_start = logits, lo
                st.wide_masked = x[:, lo:lo + logits.shape[1]] == mask_id

                def extra(col, x=x, valid=valid, pos=pos):
                    for r in active:
                        results[r].nfe += forward_cost
                    return runner.full(x, valid, pos, col)
                st.extra = extra
            if sched.lookahead:   # capability: the slots after the block that this forward scored
                _lookahead(st, sched, logits, lo, x, blk, mask_id, constraint, propose_kw)
            fill = sched.finish(st)
            if fill is not None and bool(fill.any()):   # early commit: complete these rows now
                wide, wlo = (st.wide, st.wide_start) if st.wide is not None and st.wide_start <= blk.start \
                    and st.wide_start + st.wide.shape[1] == L else st.extra(blk.start)
                if constraint is not None:
                    wtok = constraint.complete(wide[:, blk.start - wlo:], x, blk.start, fill)
                    wlo = blk.start
                else:
                    wtok, _ = propose(wide, **propose_kw)
                tail = x[:, wlo:]
                x[:, wlo:] = torch.where(fill[:, None] & (tail == mask_id), wtok, tail)
                masked = masked & ~fill[:, None]
                st.masked = masked
            commit = sched.select(st) & masked
            if constraint is not None:   # a CFG vets the commits (reject and re-pick); DINGO's are valid
                commit, tokens = constraint.select(commit, tokens, scores, x, blk)
            x[:, blk] = torch.where(commit, tokens, x[:, blk])
            if st.ahead_commit is not None:   # capability commits_ahead: masked slots past the block
                ahead = slice(blk.stop, blk.stop + st.ahead_commit.shape[1])
                x[:, ahead] = torch.where(st.ahead_commit & st.ahead_masked, st.ahead_tokens, x[:, ahead])
            if eot:   # end-of-text prediction: everything after a row's first stop token is that token
                _fill_after_stop(x, P, stop, mask_id)
            if on_step is not None:
                st.commit = commit
                on_step(st)
            if params.trace:
                _record(results, active, before, x, scores, blk, P, global_step, b, mask_id)
            global_step += 1
        if constraint is not None:
            constraint.finish_block(x, blk)
        answer = x[:, P:]
        done = (torch.isin(answer[:, :blk.stop - P], stop).any(1) | (answer != mask_id).all(1)).tolist()
        if any(done):  # finished requests leave the batch: write them back, keep the others
            _write_back(canvas, rows, x)
            keep = torch.tensor([i for i, d in enumerate(done) if not d], device=device)
            active = [r for r, d in zip(active, done) if not d]
            if not active:
                break
            runner.keep_rows(keep, len(done))
            sched.keep_rows(keep)
            if constraint is not None:
                constraint.keep_rows(keep)
            rows, x, valid, pos = rows[keep], x[keep], valid[keep], pos[keep]
    else:
        _write_back(canvas, rows, x)
    for r in results:
        r.cache_bytes = runner.cache.nbytes if runner.cache is not None else 0
    answers = canvas.answers().tolist()
    for r, res in enumerate(results):
        res.answer = answers[r]
    return results


def _lookahead(st, sched, logits, lo, x, blk, mask_id, constraint, propose_kw):
    """Step.ahead_*: raw logits (and, for commits_ahead schedulers without a constraint, proposals) of
    the answer slots after the active block, up to sched.lookahead of them, that the forward scored."""
    hi = min(blk.stop + sched.lookahead, lo + logits.shape[1])
    st.ahead_logits = logits[:, blk.stop - lo:max(hi, blk.stop) - lo]
    st.ahead_masked = x[:, blk.stop:max(hi, blk.stop)] == mask_id
    if sched.commits_ahead and constraint is None and hi > blk.stop:
        st.ahead_tokens, _ = propose(st.ahead_logits.clone(), **propose_kw)


def _fill_after_stop(x, P, stop, mask_id):
    """x [B, L]: masked answer slots after each row's first stop token take that token (no host sync)."""
    ans = x[:, P:]
    is_stop = torch.isin(ans, stop)
    first = torch.where(is_stop.any(1), is_stop.int().argmax(1), ans.shape[1])      # [B]
    tok = ans.gather(1, first.clamp(max=ans.shape[1] - 1)[:, None])                 # [B, 1]
    after = torch.arange(ans.shape[1], device=x.device)[None, :] > first[:, None]
    x[:, P:] = torch.where(after & (ans == mask_id), tok, ans)


def _write_back(canvas, rows, x):
    if x is not canvas.x:   # a compacted copy once some requests have finished
        canvas.x[rows] = x


def _record(results, active, before, x, scores, blk, P, global_step, block, mask_id):
    """One trace entry per row: every answer slot this step filled (selection, early commit or
    end-of-text fill), with its score where the selection scored it (None elsewhere)."""
    filled = ((before == mask_id) & (x != mask_id)).cpu()
    x, scores = x.cpu(), scores.float().cpu()
    for i, r in enumerate(active):
        idx = filled[i].nonzero().flatten()
        results[r].trace.append({
            "step": global_step, "block": block,
            "positions": (idx - P).tolist(),
            "tokens": x[i, idx].tolist(),
            "scores": [round(scores[i, c - blk.start].item(), 6) if blk.start <= c < blk.stop else None
                       for c in idx.tolist()],
        })
