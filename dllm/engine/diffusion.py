"""The diffusion loop: one loop for every scheduler, semi-autoregressive over blocks.

for each block: the scheduler plans the step; one forward returns logits for the block's rows
only; propose() turns them into a token and a score per slot; the scheduler picks which
masked slots to commit; the canvas is written in place. Rows whose answer holds a stop token
in a finished block leave the batch (their later blocks cannot change their answer).

Capabilities a scheduler may declare (schedulers/base.py; each is one marked place below, helpers
in engine/capabilities.py and engine/special_forwards.py): lookahead / commits_ahead (logits of,
and commits to, the slots after the block), variable_blocks (per-row blocks decided on a round's
first forward), drafts (verify draft states in one counted forward, carry the accepted draft's
logits), shadow + revocable (a leave-one-out shadow of the block; decoded slots may go back to mask).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from dllm.engine.canvas import Canvas
from dllm.engine.capabilities import draft_round, plan_blocks, refill_after_stop
from dllm.engine.special_forwards import shadow_forward
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
    draft_rows: int = 0          # capability drafts: draft canvases the request's forwards ran


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
    delimiters: tuple = ()       # token ids that end a sentence or line (adablock: the tokenizer's newlines)


@torch.no_grad()
def diffusion_generate(model, args: ModelArgs, prompts: list[list[int]], params, stop_ids,
                       pad_id: int, model_path=None, on_step=None, dfa=None, answers=None,
                       kernels: str = "torch", graphs: str = "none", delimiters=()) -> list[RowResult]:
    """dfa: the compiled constraint (constraints/regex.py TokenDFA) or None; answers: per-row
    initial answer slots (templates) or None. on_step(step: Step): called after each step's
    selection (tools such as train-filter). graphs: "cuda" | "compile" | "none", how cached steps
    run (engine/graphs.py). delimiters: token ids of line ends, for schedulers that read them."""
    device = next(model.parameters()).device
    mask_id = args.mask_token_id
    canvas = Canvas.build(prompts, params.max_new_tokens, mask_id, pad_id, device, answers)
    P, bl = canvas.prompt_len, params.block
    style = schedule_style(params, args)
    sched = get_scheduler(params.scheduler)(params, style, SchedulerEnv(model_path, device, args.family, tuple(delimiters)))
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
    starts = [0] * len(prompts)   # capability variable_blocks: each row's next block start (answer offset)
    eot_filled = None             # capability revocable: the slots end-of-text prediction filled
    rounds = itertools.repeat(params.total_steps) if sched.variable_blocks else \
        steps_per_block(params.total_steps, params.num_blocks)
    for b, steps in enumerate(rounds):
        runner.begin_block()
        pre = None   # (logits, lo, counted): what a step uses instead of a forward of its own
        if sched.variable_blocks:   # each row's block is decided on the round's first forward
            blk, in_block, first, starts = plan_blocks(sched, runner, x, valid, pos, P, params.max_new_tokens, starts)
            pre = (*first, False)
        else:
            blk, in_block = canvas.block_slice(b * bl, bl), None
        sched.begin_block(_masked(x, blk, mask_id, in_block).sum(1).tolist(), steps)
        if constraint is not None:
            constraint.begin_block(x, blk)
        decoded = torch.zeros_like(x[:, blk], dtype=torch.bool) if sched.revocable else None
        step = 0
        while True:
            masked = _masked(x, blk, mask_id, in_block)
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
            counted = False
            if pre is not None:   # logits of this very state from an earlier forward (a plan or a draft)
                logits, lo, counted = pre
                pre = None
            elif sched.shadow:    # capability shadow: block rows, then their leave-one-out shadow rows
                logits, lo = shadow_forward(runner, x, valid, pos, blk), blk.start
            else:
                logits, lo = runner(x, valid, pos, blk, wide=sched.wide, ahead=sched.lookahead)
            raw = logits[:, blk.start - lo:blk.stop - lo]
            fused = sched.transform(raw, masked)
            if constraint is not None:   # DINGO: the masked slots take the best valid completion
                free = masked if in_block is None else x[:, blk] == mask_id   # other rows' slots stay free
                tokens, scores = constraint.restrict(fused, x[:, blk], free, lambda lg: propose(lg, **propose_kw))
            else:
                tokens, scores = propose(fused, **propose_kw)
            for r in active:
                results[r].nfe += 0 if counted else forward_cost
                results[r].steps += 1
            st = Step(index=step - 1, forwards=global_step + 1, logits=raw, tokens=tokens, scores=scores,
                      masked=masked, plan=plan, rows=active, block_start=blk.start, answer_start=P,
                      current=x[:, blk].clone())
            if sched.shadow:
                st.shadow_logits = logits[:, blk.stop - blk.start:]
            if sched.revocable:
                st.decoded = decoded
            if sched.drafts:   # capability drafts: select() may verify drafts in one counted forward

                def on_draft(k, active=active):
                    for r in active:
                        results[r].nfe += forward_cost
                        results[r].draft_rows += k
                st.draft = draft_round(runner, x, valid, pos, blk, constraint, lambda lg: propose(lg, **propose_kw),
                                       on_draft)
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
                commit, tokens = constraint.select(commit, tokens, scores, x, blk, in_block)
            x[:, blk] = torch.where(commit, tokens, x[:, blk])
            if st.ahead_commit is not None:   # capability commits_ahead: masked slots past the block
                ahead = slice(blk.stop, blk.stop + st.ahead_commit.shape[1])
                x[:, ahead] = torch.where(st.ahead_commit & st.ahead_masked, st.ahead_tokens, x[:, ahead])
            if st.revoke is not None:   # capability revocable: decoded slots go back to mask
                revoke = st.revoke & decoded & ~commit
                x[:, blk] = x[:, blk].masked_fill(revoke, mask_id)
                decoded = (decoded | commit) & ~revoke
            elif decoded is not None:
                decoded = decoded | commit
            if eot and sched.revocable:   # a revoked stop token takes its fill with it
                eot_filled = refill_after_stop(x, P, stop, mask_id, eot_filled)
            elif eot:   # end-of-text prediction: everything after a row's first stop token is that token
                _fill_after_stop(x, P, stop, mask_id)
            if st.carry is not None and torch.equal(x[:, blk], st.carry_state):   # capability drafts
                pre = (st.carry, blk.start, True)   # the accepted draft's logits are this state's
            if on_step is not None:
                st.commit = commit
                on_step(st)
            if params.trace:
                _record(results, active, before, x, scores, blk, P, global_step, b, mask_id, sched.revocable)
            global_step += 1
        if constraint is not None:
            constraint.finish_block(x, blk, in_block)
        answer = x[:, P:]
        finished = torch.tensor(starts, device=device)[:, None] if sched.variable_blocks else blk.stop - P
        before_end = torch.arange(answer.shape[1], device=device)[None, :] < finished   # each row's finished blocks
        done = (torch.isin(answer, stop) & before_end).any(1) | (answer != mask_id).all(1)
        done = done.tolist()
        if any(done):  # finished requests leave the batch: write them back, keep the others
            _write_back(canvas, rows, x)
            keep = torch.tensor([i for i, d in enumerate(done) if not d], device=device)
            active = [r for r, d in zip(active, done) if not d]
            if not active:
                break
            starts = [s for s, d in zip(starts, done) if not d]
            eot_filled = None if eot_filled is None else eot_filled[keep]
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


def _masked(x, blk, mask_id, in_block):
    """[B, W] bool: each row's masked slots of its own block inside the window."""
    masked = x[:, blk] == mask_id
    return masked if in_block is None else masked & in_block


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


def _record(results, active, before, x, scores, blk, P, global_step, block, mask_id, revocable=False):
    """One trace entry per row: every answer slot this step filled (selection, early commit or
    end-of-text fill), with its score where the selection scored it (None elsewhere); for revocable
    schedulers also "remasked", the answer slots that went back to mask."""
    filled = ((before == mask_id) & (x != mask_id)).cpu()
    revoked = ((before != mask_id) & (x == mask_id)).cpu()
    x, scores = x.cpu(), scores.float().cpu()
    for i, r in enumerate(active):
        idx = filled[i].nonzero().flatten()
        entry = {
            "step": global_step, "block": block,
            "positions": (idx - P).tolist(),
            "tokens": x[i, idx].tolist(),
            "scores": [round(scores[i, c - blk.start].item(), 6) if blk.start <= c < blk.stop else None
                       for c in idx.tolist()],
        }
        if revocable:
            entry["remasked"] = (revoked[i].nonzero().flatten() - P).tolist()
        results[r].trace.append(entry)
