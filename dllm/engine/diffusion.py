"""One request decoded by a masked-diffusion model: semi-autoregressive over blocks, any scheduler.

Per block: the scheduler plans its steps; each step is one forward (its rows: the window the cache
policy asks for, engine/windows.py) that returns logits for the block's rows only; `propose` (or the
constraint's witness) turns them into a token and a score per slot; the scheduler picks which masked
slots to commit; the engine's invariants hold whatever it returns (at least one commit while a mask is
left, never the mask token, finite logits); the canvas is written in place. A request finishes when a
finished block holds a stop token (later blocks cannot change its answer) or no slot is masked.

Early commit may need logits the step's forward did not compute (the rest of the answer under a cache,
or Prophet's watched positions): it raises `NeedForward`, the request asks for that forward at the next
engine step (counted in nfe) and the step resumes with it, so every forward goes through the runner.
FreeDave's draft rounds do the same (capabilities.NeedDrafts). Other declared scheduler capabilities
(lookahead, variable blocks, drafts, the shadow block, revocable slots) are honoured through
engine/capabilities.py and engine/windows.py, each at one marked place below.
"""
from __future__ import annotations

import torch

from dllm.engine import capabilities as cap
from dllm.engine.request import Decoder
from dllm.engine.runner import ForwardRow
from dllm.engine.sampling import generator, propose
from dllm.engine.windows import Windows
from dllm.errors import InvalidParamsError, NumericError
from dllm.schedulers import get_scheduler
from dllm.schedulers.base import SchedulerEnv, Step, best_slot


def schedule_style(params, args) -> str:
    if params.schedule != "auto":
        return params.schedule
    return "dream" if args.family == "dream" and params.num_blocks == 1 else "llada"


def steps_per_block(total: int, blocks: int) -> list[int]:
    # LLaDA requires blocks | steps; dllm spreads a remainder over the earliest blocks
    return [total // blocks + (1 if b < total % blocks else 0) for b in range(blocks)]


def check_finite(scores, raw, masked, remasking: str, step: int):
    """The engine's invariant that a request never decodes from broken logits: NaN or +-inf logits make
    the masked slots' scores NaN (for remasking="random", whose scores do not show the logits, the
    logits' max is read instead). One host read of a [1, block] tensor per step."""
    bad = (~torch.isfinite(raw.amax(-1)) & masked) if remasking == "random" else (torch.isnan(scores) & masked)
    if bool(bad.any()):
        raise NumericError(f"the model's logits hold NaN or infinity (step {step}); its weights are broken or "
                           "overflow in this dtype (try dtype float32 or bfloat16).")


class NeedForward(Exception):
    """Raised by Step.extra(col): logits of canvas columns [col, L) are needed from one more forward."""

    def __init__(self, col: int):
        super().__init__(col)
        self.col = col


class DiffusionDecoder(Decoder):
    def __init__(self, prompt, answer_init, params, args, stop_ids, env, constraint=None, n_slots=None,
                 block_steps=None):
        """env: engine/llm_engine.py DecodeEnv (device, kernels, model path, on_step, classic);
        constraint: the compiled constraint (constraints/base.py), bound to this request here.
        n_slots, block_steps: the answer slots and the steps of each block, when a subclass lays its
        blocks out otherwise (engine/block_diffusion.py)."""
        sched_cls = get_scheduler(params.scheduler, args.scheduler)
        variable = sched_cls.variable_blocks and block_steps is None
        if block_steps is None and not variable and params.max_new_tokens % params.block:   # LLaDA's blocks tile the answer
            raise InvalidParamsError(f"block_length {params.block} does not divide max_new_tokens "
                                     f"{params.max_new_tokens}; choose a block length that divides the answer length.")
        super().__init__(prompt, answer_init, n_slots or params.max_new_tokens, args.mask_token_id, stop_ids,
                         env.device)
        self.p, self.args, self.mask_id = params, args, args.mask_token_id
        self.style = schedule_style(params, args)
        sched_env = SchedulerEnv(env.model_path, env.device, args.mask_token_id, args.family, env.newline_ids)
        self.sched = s = sched_cls(params, self.style, sched_env)
        self.gen = generator(params.seed, env.device)
        self.eot = params.eot_prediction and bool(self.stop)
        self.stop_t = torch.tensor(sorted(self.stop) or [-1], device=env.device)
        self.cost = 2 if params.cfg_scale > 0 else 1        # a guided step runs the prompt-masked copy too
        self.windows = Windows(params, args, self.P, self.L, classic=env.classic,
                               extra_scratch=s.wide and params.cache != "none", drafts=int(s.drafts), shadow=s.shadow)
        # variable blocks: each is sized by its first forward, at most one per answer slot
        self.block_steps = block_steps or ([params.total_steps] * self.N if variable else
                                           steps_per_block(params.total_steps, params.num_blocks))
        self.b, self.in_block, self.step, self.forwards = 0, False, 0, 0
        sampler = args.sampler if args.block_causal else self.style   # how the family's reference draws
        self.propose_kw = dict(remasking=params.remasking, temperature=params.temperature, top_p=params.top_p,
                               top_k=params.top_k, style=sampler, generator=self.gen, banned=self.mask_id,
                               kernels=env.kernels)
        self.on_step, self.row = env.on_step, 0
        self.pending: Step | None = None      # a step waiting for the logits of an extra forward
        self.extra = None                     # (logits [1, L - col, V], col) of that forward
        # capabilities (schedulers/base.py): a variable block and whether this forward sizes it; the draft
        # states a pending step waits for and their results; logits carried to the next step; the block's
        # decoded slots and the end-of-text fill (revocable)
        self.var_blk, self.sizing, self.next_start = None, False, 0
        self.pending_drafts, self.draft_out, self.draft_rows = None, None, 0
        self.carry = None
        self.decoded, self.eot_filled = None, None
        self.constraint = None if constraint is None else constraint.bind(self)
        # a step may score only the block's masked span (schedulers/base.py masked_only): deterministic
        # proposals (a sampled one draws noise for every row of the block), no constraint (it reads the
        # whole block), no observer (tools read the whole block's logits), no recorded graphs (one shape per
        # span length); self.sb: that span this step
        self.span_ok = (s.masked_only and params.temperature == 0 and params.remasking != "random"
                        and constraint is None and env.on_step is None and env.spans)
        self.sb = None
        # the scheduler reads which sampled slots drew the mask token (greedy: from the logits themselves)
        self.report_banned = s.sees_banned and params.temperature > 0

    # ---- what the engine asks ---------------------------------------------------------------------
    def needs(self) -> list[tuple[str, int]]:
        w = self.windows
        return [("main", w.width)] * (w.ranges - w.drafts) + [("main", w.draft_width)] * w.drafts

    def bind(self, bases):
        super().bind(bases)
        self.windows.bind(bases)

    @property
    def blk(self) -> slice:
        if self.var_blk is not None:
            return self.var_blk
        bl = self.p.block
        return slice(self.P + self.b * bl, self.P + (self.b + 1) * bl)

    def final_len(self) -> int:
        if self.done:
            return self.N
        masked = (self.x[self.P:] == self.mask_id).nonzero()
        n = int(masked[0]) if len(masked) else self.N
        if self.sched.revocable and self.in_block:   # the active block's slots (and fills after it) may change
            n = min(n, self.blk.start - self.P)
        return n

    def plan(self) -> list[ForwardRow]:
        if self.done:
            return []
        if self.pending_drafts is not None:   # the draft states a pending step waits for
            return self.windows.draft_rows(cap.draft_canvases(self.x, self.blk, self.pending_drafts), self.blk)
        if self.pending is not None:     # the extra forward a pending step waits for
            return self.windows.extra_rows(self.x, self.pending_col)
        while True:
            rows = self._phase_rows()
            if rows is not None:
                return rows
            if not self.in_block and self.sched.variable_blocks:   # the block's first forward sizes it
                start = self.P + self.next_start
                span = slice(start, min(self.L, start + max(self.sched.plan_span, 1)))
                self.sizing, self.forwards, self.step, self.cur_plan = True, 0, 1, None
                return self.windows.rows(self.x, span, 0, wide=False)
            blk = self.blk
            if not self.in_block:
                self._begin_block(blk)
            at = (self.x[blk] == self.mask_id).nonzero().flatten()      # the block's masked slots (one host sync)
            masked_any = len(at) > 0
            if self.sched.fixed:
                if self.sched.block_done(self.step):
                    self._end_block(blk)
                    if self.done:
                        return []
                    continue
                self.cur_plan = self.sched.plan(self.step)
                self.step += 1
                if not any(self.cur_plan) or ((self.eot or self.sched.wide) and not masked_any):
                    continue   # a step that would commit nothing: skipped without a forward
            else:
                if not masked_any:
                    self._end_block(blk)
                    if self.done:
                        return []
                    continue
                self.cur_plan = None
                self.step += 1
            if self.sched.shadow:
                return [self.windows.shadow_row(self.x, blk, self.mask_id)]
            # the masked span (first to last masked slot) when the step may score only that
            self.sb = (slice(blk.start + int(at[0]), blk.start + int(at[-1]) + 1) if self.span_ok and masked_any
                       else None)
            return self.windows.rows(self.x, blk, self.forwards, wide=self.sched.wide, ahead=self.sched.lookahead,
                                     head=self.sb)

    def advance(self, outs: list[torch.Tensor]):
        if self._phase_advance(outs):
            return
        if self.pending_drafts is not None:   # FreeDave: the K draft rows, counted as one forward
            self.nfe += self.cost
            self.draft_rows += len(outs)
            self.draft_out = (self.pending_drafts, self._propose_drafts(torch.stack(outs)))
            st, self.pending, self.pending_drafts = self.pending, None, None
            self._finish_step(st)
        elif self.pending is not None:
            self.nfe += self.cost
            self.extra = (self.windows.guide(outs)[None], self.pending_col)
            st, self.pending = self.pending, None
            self._finish_step(st)
        else:
            logits = self.windows.guide(outs)                               # [Q, V] canvas columns lo..
            if self.sizing:   # variable blocks: this forward sizes the block, then is its first step
                self.sizing = False
                start, lo = self.P + self.next_start, self.windows.lo
                n = cap.size_block(self.sched, logits, lo, start, self.L - start)
                self.var_blk = slice(start, start + n)
                self._begin_block(self.var_blk)
                self.step = 1
            self._step(logits, self.windows.lo, counted=False)
        # drafts: a step whose state is the accepted draft's runs now on its logits, without a forward
        while self.carry is not None and self.pending is None and not self.done and self.in_block:
            (logits, lo), self.carry = self.carry, None
            self.step += 1
            self._step(logits, lo, counted=True)

    def _step(self, logits, lo: int, counted: bool):
        """One step on the logits [Q, V] of canvas columns lo.. (counted: they come from an earlier
        forward, already in nfe)."""
        self.forwards += 0 if counted else 1
        blk, x = self.sb or self.blk, self.x            # the block, or the masked span this step scores
        raw = logits[blk.start - lo:blk.stop - lo][None]                    # [1, block, V]
        masked = (x[blk] == self.mask_id)[None]
        fused = self.sched.transform(raw, masked)
        hit = None
        if self.constraint is not None:   # DINGO: the masked slots take the best valid completion
            tokens, scores = self._witness(fused, blk, masked)
        elif self.report_banned:
            tokens, scores, hit = propose(fused, **self.propose_kw, report_banned=True)
        else:
            tokens, scores = propose(fused, **self.propose_kw)
        check_finite(scores, raw, masked, self.p.remasking, self.steps + 1)
        self.nfe += 0 if counted else self.cost
        self.steps += 1
        st = Step(index=self.step - 1, forwards=self.steps, logits=raw, tokens=tokens, scores=scores,
                  masked=masked, plan=self.cur_plan, rows=[self.row], block_start=blk.start, answer_start=self.P,
                  banned_hit=hit)
        s = self.sched
        if s.drafts or s.revocable:   # the block as it stands before this step's commits
            st.current = x[blk].clone()[None]
        if s.lookahead:   # the slots after the block that this forward scored
            free = s.commits_ahead and self.constraint is None
            cap.ahead_fields(st, s.lookahead, logits, lo, x, blk, self.mask_id,
                             (lambda lg: propose(lg, **self.propose_kw)) if free else None)
        if s.drafts:
            st.draft = self._draft
        if s.shadow:      # the shadow row's logits follow the block's
            st.shadow_logits = logits[blk.stop - lo:blk.stop - lo + (blk.stop - blk.start)][None]
        if s.revocable:
            st.decoded = self.decoded[None]
        if self.sched.wide:
            st.wide, st.wide_start = logits[None], lo
            st.wide_masked = (x[lo:lo + logits.shape[0]] == self.mask_id)[None]
        st.extra = self._extra
        st.before = x.clone() if self.p.trace else None
        self.extra = None
        self._finish_step(st)

    # ---- capability drafts (FreeDave) -------------------------------------------------------------------
    def _draft(self, drafts):
        """Step.draft: drafts [1, K, W] -> (logits [1, K, W, V], tokens, scores [1, K, W]) once the request's
        next forward has run them (NeedDrafts until then)."""
        if self.draft_out is not None and torch.equal(self.draft_out[0], drafts):
            out, self.draft_out = self.draft_out[1], None
            return out
        raise cap.NeedDrafts(drafts)

    def _propose_drafts(self, logits):
        """logits [K, W, V] of the pending drafts' block rows -> each draft's proposal on its own logits (under
        a constraint, the witness for that draft's canvas)."""
        drafts = self.pending_drafts[0]                                   # [K, W]
        if self.constraint is not None:
            tokens, scores = self.constraint.witness(logits, drafts, drafts == self.mask_id,
                                                     lambda lg: propose(lg, **self.propose_kw), keep=False)
        else:
            tokens, scores = propose(logits.clone(), **self.propose_kw)
        return logits[None], tokens[None], scores[None]

    # ---- the constraint sees the answer's columns only (a block-diffusion block may start in the prompt) -
    def _answer_part(self, blk) -> tuple[slice, int]:
        """-> (the block's answer columns, how many prompt columns precede them in the block)."""
        off = max(self.P - blk.start, 0)
        return slice(blk.start + off, blk.stop), off

    def _witness(self, fused, blk, masked):
        ab, off = self._answer_part(blk)
        tokens, scores = self.constraint.witness(fused[:, off:], self.x[None, ab], masked[:, off:],
                                                 lambda lg: propose(lg, **self.propose_kw))
        if off:   # the prompt's columns: kept as they are, never committed (not masked)
            tokens = torch.cat((self.x[None, blk.start:ab.start], tokens), 1)
            scores = torch.cat((scores.new_full((1, off), float("-inf")), scores), 1)
        return tokens, scores

    # ---- one step after its forward -----------------------------------------------------------------
    def _extra(self, col: int):
        """Step.extra: logits of canvas columns [col, L) from one more forward (counted in nfe)."""
        if self.extra is not None and self.extra[1] <= col:
            logits, c0 = self.extra
            return logits[:, col - c0:], col
        raise NeedForward(col)

    def _finish_step(self, st: Step):
        x, blk, masked = self.x, self.sb or self.blk, st.masked
        try:
            fill = self.sched.finish(st)
            if fill is not None and bool(fill.any()):   # early commit: complete the answer now
                self._fill(st, blk)
                masked = st.masked = masked & ~fill[:, None]
        except NeedForward as need:
            self.pending, self.pending_col = st, need.col
            return
        try:
            commit = self.sched.select(st) & masked
        except cap.NeedDrafts as need:   # FreeDave: the draft states' logits come from the next forward
            self.pending, self.pending_drafts = st, need.drafts
            return
        # the invariant, whatever the scheduler returned: a row with a mask left commits its best slot
        commit = commit | (best_slot(st.scores, masked) & ~commit.any(-1, keepdim=True))
        tokens = st.tokens
        if self.constraint is not None:   # a CFG vets the commits (reject and re-pick); DINGO's are valid
            ab, off = self._answer_part(blk)
            c, t = self.constraint.check(commit[:, off:], tokens[:, off:], st.scores[:, off:], x[None], ab)
            commit, tokens = torch.cat((commit[:, :off], c), 1), torch.cat((tokens[:, :off], t), 1)
        x[blk] = torch.where(commit[0], tokens[0], x[blk])
        cap.commit_ahead(st, x, blk)                 # commits_ahead: masked slots past the block
        if self.decoded is not None:                 # revocable: decoded slots may go back to mask
            self.decoded = cap.revoke(st, x, blk, commit[0], self.decoded, self.mask_id)
        if self.eot and self.sched.revocable:        # a revoked stop token takes its fill with it
            self.eot_filled = cap.refill_after_stop(self, self.eot_filled)
        elif self.eot:   # end-of-text prediction: everything after the first stop token is that token
            self._fill_after_stop()
        if st.carry is not None and torch.equal(x[blk], st.carry_state[0]):   # drafts: the accepted state's logits
            self.carry = (st.carry[0], blk.start)
        if self.on_step is not None:
            st.commit = commit
            self.on_step(st)
        if self.p.trace:
            self._record(st, blk)
        if (self.sched.fixed and self.sched.block_done(self.step)) or \
                (not self.sched.fixed and not bool((x[self.blk] == self.mask_id).any())):
            self._end_block(self.blk)

    def _fill(self, st, blk):
        """Early commit: every masked slot from the block's start to the end takes its argmax (or the
        constraint's completion)."""
        x, L = self.x, self.L
        if st.wide is not None and st.wide_start <= blk.start and st.wide_start + st.wide.shape[1] == L:
            wide, wlo = st.wide, st.wide_start
        else:
            wide, wlo = st.extra(blk.start)
        if self.constraint is not None:
            wtok = self.constraint.complete(wide[:, blk.start - wlo:], x[None], blk.start)[0]
            wlo = blk.start
        else:
            wtok = propose(wide, **self.propose_kw)[0][0]
        tail = x[wlo:]
        x[wlo:] = torch.where(tail == self.mask_id, wtok, tail)

    def _fill_after_stop(self):
        """Masked answer slots after the first stop token take that token (no host sync)."""
        ans = self.x[self.P:]
        is_stop = torch.isin(ans, self.stop_t)
        first = torch.where(is_stop.any(), is_stop.int().argmax(), ans.shape[0])
        tok = ans[first.clamp(max=ans.shape[0] - 1)]
        after = torch.arange(ans.shape[0], device=ans.device) > first
        self.x[self.P:] = torch.where(after & (ans == self.mask_id), tok, ans)

    # ---- blocks ---------------------------------------------------------------------------------------
    def _begin_block(self, blk):
        self.sched.begin_block([int((self.x[blk] == self.mask_id).sum())], self.block_steps[self.b])
        if self.constraint is not None:
            self.constraint.begin_block(self.x[None], self._answer_part(blk)[0])
        self.in_block, self.step, self.forwards, self.carry = True, 0, 0, None
        if self.sched.revocable:
            self.decoded = torch.zeros(blk.stop - blk.start, dtype=torch.bool, device=self.x.device)

    def _end_block(self, blk):
        if self.constraint is not None:
            self.constraint.finish_block(self.x[None], self._answer_part(blk)[0])
        self._close_block(blk)

    def _close_block(self, blk):
        """The request is finished when a stop token is in the answer up to here, no mask is left, or
        this was the last block."""
        ans = self.x[self.P:]
        done = bool(torch.isin(ans[:blk.stop - self.P], self.stop_t).any()) or not bool((ans == self.mask_id).any())
        self.b, self.in_block = self.b + 1, False
        if self.var_blk is not None:   # variable blocks: the next one starts where this one ended
            self.next_start, self.var_blk = blk.stop - self.P, None
        self.done = done or self.b == len(self.block_steps)

    # ---- hooks of decoders with forwards besides the denoising steps (engine/block_diffusion.py) ---
    def _phase_rows(self):
        """Rows of a forward that is not a denoising step, or None."""
        return None

    def _phase_advance(self, outs) -> bool:
        """Consume such a forward's logits; False when the step is a denoising one."""
        return False

    def _record(self, st, blk):
        """One trace entry: every answer slot this step filled (selection, early commit or end-of-text
        fill), with its score where the selection scored it (None elsewhere)."""
        filled = ((st.before == self.mask_id) & (self.x != self.mask_id)).nonzero().flatten().tolist()
        scores = st.scores[0].float().cpu()
        xs = self.x.tolist()
        self.trace.append({
            "step": self.steps - 1, "block": self.b,
            "positions": [c - self.P for c in filled],
            "tokens": [xs[c] for c in filled],
            "scores": [round(scores[c - blk.start].item(), 6) if blk.start <= c < blk.stop else None for c in filled],
        })
        if self.sched.revocable:   # and the answer slots that went back to mask
            back = ((st.before != self.mask_id) & (self.x == self.mask_id)).nonzero().flatten().tolist()
            self.trace[-1]["remasked"] = [c - self.P for c in back]
