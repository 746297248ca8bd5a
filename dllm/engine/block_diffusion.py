"""One request decoded by a block-diffusion family (SDAR, LLaDA2.x, Fast-dLLM v2) with an exact block
KV cache. Semantics: each reference's decoding loop (tests/reference_block.py writes them out, citing them).

Attention is block-causal and blocks are aligned to absolute position 0 (column = position: a
request's canvas has no padding), so every committed block has an exact KV cache:

  prefill   the prompt's whole blocks [0, P // B), block-causal, written to the request's pool columns
            (none when the prompt is shorter than a block)
  block k   columns [kB, (k+1)B), the prompt's tail included: denoising steps run the block's B tokens
            against the cached columns [0, kB) and the block itself (its own columns are written by
            every step and overwritten by the commit), the scheduler commits masked slots
  commit    the finished block once more, writing its keys/values; token-shift families (Fast-dLLM v2)
            fill the next block's first slot with the argmax of its last row
  stop      checked when a block is committed: a stop token in the answer so far, or the last block

The references run the prefill and each commit as forwards of their own. Nothing in them depends on the
next block's tokens, and the next block's first step only reads the columns they write, so dllm runs
them as extra rows of that step's forward ("riders", one forward, one nfe): a ragged forward writes
every row's keys/values at a layer before any row attends (models/context.py), so the step's queries
see exactly the keys a separate forward would have written. A commit after which the request stops is
not run at all (nobody reads those keys). nfe is therefore the reference's count minus the prefill
and one forward per block. Token-shift families keep separate forwards: the next block's first token
is the commit forward's output.

The canvas is the prompt and masks up to the end of the block holding answer slot max_new_tokens - 1:
every whole block is decoded, as the references do, and the answer is cut to max_new_tokens. A
constrained request has its slots past max_new_tokens fixed to the end token instead (outside the
answer, so the constraint sees an answer that ends there). The step itself (transform, propose or the
constraint's witness, select, the engine's invariants, end-of-text fill, trace) is the diffusion
decoder's (engine/diffusion.py); only the windows and the block geometry differ.
"""
from __future__ import annotations

import torch

from dllm.engine.diffusion import DiffusionDecoder
from dllm.engine.runner import ForwardRow
from dllm.errors import PromptError, UnsupportedError


def check_supported(params, args):
    """One sentence for what block-diffusion decoding does not do."""
    if params.steps is not None:
        raise UnsupportedError("block-diffusion models take denoising_steps (steps per block), not steps.")
    unsupported = {"cache": params.cache != "none", "cfg_scale": params.cfg_scale > 0,
                   "early_commit": params.scheduler == "early_commit", "apd": params.scheduler == "apd"}
    bad = next((k for k, v in unsupported.items() if v), None)
    from dllm.schedulers import get_scheduler
    sched = get_scheduler(params.scheduler, args.scheduler)
    if bad is None and (sched.variable_blocks or sched.drafts or sched.shadow):
        raise UnsupportedError(f"scheduler {params.scheduler!r} is not supported for block-diffusion models (their "
                               "blocks, attention and cache are the model's own).")
    if bad == "cache":
        raise UnsupportedError("block-diffusion models always decode with their exact block KV cache; leave cache "
                               "at 'none'.")
    if bad is not None:
        raise UnsupportedError(f"{bad} is not supported for block-diffusion models.")


class BlockWindows:
    """The rows of a block-causal request: its denoising step is the block against its own pool columns."""

    def __init__(self, B: int, token_shift: bool, L: int):
        self.B, self.shift = B, token_shift
        self.ranges, self.bases, self.lo, self.width = 1, [None], 0, L
        self.drafts, self.draft_width = 0, 0              # FreeDave's drafts are refused here

    def bind(self, bases):
        self.bases = list(bases)

    def rows(self, x, blk: slice, forwards: int, wide: bool, ahead: int = 0, head: slice | None = None
             ) -> list[ForwardRow]:
        """ahead is ignored: a block-causal step runs no column after its block. head: only these
        columns of the block are scored (never with token shift: BlockDecoder)."""
        head = head or blk
        self.lo = head.start
        return [ForwardRow(ids=x[blk], start=blk.start, keys=blk.stop, q=(head.start - blk.start, head.stop - blk.start),
                           base=self.bases[0], steady=forwards > 0)]

    def guide(self, outs):
        logits = outs[0]                                             # [B, V]
        if self.shift:   # slot j is scored by the hidden state of slot j - 1 (slot 0 keeps its own)
            logits = torch.cat((logits[:1], logits[:-1]))
        return logits


class BlockDecoder(DiffusionDecoder):
    def __init__(self, prompt, params, args, stop_ids, env, constraint=None, end_token: int = 0):
        B = params.block_length or args.block_size
        P, N = len(prompt), params.max_new_tokens
        self.B, self.first, self.end = B, P // B, -(-(P + N) // B)        # blocks [first, end) are decoded
        extra = self.end * B - P - N
        if self.end * B > args.max_seq_len:
            raise PromptError(f"prompt + answer, rounded up to whole blocks of {B}, is {self.end * B} positions; "
                              f"the model's context is {args.max_seq_len}.")
        answer = [args.mask_token_id] * N + [end_token if constraint is not None else args.mask_token_id] * extra
        self.N_out = N
        steps = min(params.denoising_steps or B, B)   # more steps than slots only adds empty ones
        super().__init__(prompt, answer, params, args, stop_ids, env, constraint, n_slots=N + extra,
                         block_steps=[steps] * (self.end - self.first))
        self.windows = BlockWindows(B, args.token_shift, self.L)
        self.token_shift = args.token_shift
        self.span_ok &= not args.token_shift      # a shifted slot is scored by the row before it
        self.phase = "prefill" if self.first > 0 else "denoise"
        self.riders: list[ForwardRow] = []     # prefill / commit rows that ride with the next step's forward
        self.n_riders = 0                      # how many of the planned rows are riders (advance drops them)

    @property
    def blk(self) -> slice:
        k = self.first + self.b
        return slice(k * self.B, (k + 1) * self.B)

    def answer(self) -> list[int]:
        return self.x[self.P:self.P + self.N_out].tolist()

    def final_len(self) -> int:
        return min(super().final_len(), self.N_out)

    def plan(self) -> list[ForwardRow]:
        rows = super().plan()
        riders, self.riders = self.riders, []
        assert rows or self.done or not riders, "riders without a step to ride with"
        self.n_riders = len(riders) if rows else 0     # the request stopped: their keys are never read
        return riders + rows if rows else rows

    def advance(self, outs):
        outs, self.n_riders = outs[self.n_riders:], 0
        super().advance(outs)

    def _phase_rows(self):
        """The prefill and commit forwards (None: a denoising step comes next; [] the request stopped).
        Without token shift they become riders of the next step's forward (see the module's docstring)."""
        if self.phase not in ("prefill", "commit"):
            return None
        base = self.windows.bases[0]
        if self.phase == "prefill":
            T = self.first * self.B
            row = ForwardRow(ids=self.x[:T], start=0, keys=T, q=(T - 1, T), base=base, attn=("block", self.B))
        else:
            blk = self.committed
            row = ForwardRow(ids=self.x[blk], start=blk.start, keys=blk.stop, q=(self.B - 1, self.B), base=base)
        if self.token_shift:
            return [row]
        if self.phase == "commit" and self._stops():
            self.done = True
            return []
        self.riders.append(row)
        self.phase = "denoise"
        return None

    def _stops(self) -> bool:
        """After the committed block: a stop token in the answer so far, or the last block."""
        ans = self.x[self.P:self.committed.stop]
        return self.b == len(self.block_steps) or bool(torch.isin(ans, self.stop_t).any())

    def _phase_advance(self, outs) -> bool:
        """Consume a prefill or commit forward; False when the step is a denoising one."""
        if self.phase not in ("prefill", "commit"):
            return False
        self.nfe += 1
        col = self.first * self.B if self.phase == "prefill" else self.committed.stop
        if self.token_shift and col < self.L and int(self.x[col]) == self.mask_id:
            self.x[col] = outs[0][-1].argmax(-1)      # Fast-dLLM v2's autoregressive token of the next block
        if self.phase == "commit":
            self.done = self._stops()
        self.phase = "denoise"
        return True

    def _close_block(self, blk) -> bool:
        """The block is full: its commit forward comes next (the stop rule runs after it)."""
        self.committed, self.phase = blk, "commit"
        self.b, self.in_block = self.b + 1, False
        return False
