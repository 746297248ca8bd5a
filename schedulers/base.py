"""The scheduler interface: which masked slots of the active block to commit at each step.

Per step the engine composes, in this order:
  transform(logits, masked)   logit transform (credit fusion); identity by default
  propose(...)                per-slot token and score (confidence / margin / entropy)
  finish(step)                stop rule: rows to complete now (early commit); None = none
  select(step)                commit mask [B, block] over masked slots
and then writes the canvas; the engine enforces the invariants (commits only on masked
slots of the active block, never the mask id, at least one per row with a mask left).

Per block the engine calls begin_block(masked_counts, steps). Fixed-count schedulers
(fixed = True) run exactly the planned steps with host-side counts from plan(step) and
need no host sync; adaptive ones step until the block has no mask. Add a method = add one
file with a Scheduler subclass and one line in SCHEDULERS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from dllm._lazy import torch


@dataclass
class Step:
    """What a scheduler sees at one step (rows = the requests still in the batch)."""
    index: int                      # forward index within the block, from 0
    forwards: int                   # base-schedule forwards of this generate call, this one included
    logits: torch.Tensor            # [B, block, V] raw model logits (before transform); for masked_only
                                    # schedulers at temperature 0 "block" is its masked span (block_start on)
    tokens: torch.Tensor            # [B, block] proposed token per slot (never the mask token)
    scores: torch.Tensor            # [B, block] float32 score per slot (params.remasking)
    masked: torch.Tensor            # [B, block] bool, still masked before this step
    banned_hit: Optional[torch.Tensor] = None   # [B, block] bool, sees_banned schedulers when sampling: the
                                                # draw before the mask token's ban was the mask token
    plan: Optional[list] = None     # fixed schedulers: host-side commit counts per row
    rows: Optional[list] = None     # request index of each batch row
    wide: Optional[torch.Tensor] = None   # [B, W, V] raw logits of canvas columns wide_start.. (if asked and computed)
    wide_start: int = 0
    wide_masked: Optional[torch.Tensor] = None   # [B, W] bool, still-masked canvas columns of `wide`
    commit: Optional[torch.Tensor] = None     # [B, block] what was committed (set for on_step observers)
    extra: Optional[Callable] = None     # extra(lo) -> (logits [B, L - lo, V], lo): one more forward, counted
    block_start: int = 0            # canvas column of the block's first slot
    answer_start: int = 0           # canvas column of the first answer slot
    before: Optional[torch.Tensor] = None   # the canvas before this step's commits (when tracing)
    # capability `lookahead`: the slots just after the active block, where the forward scored them
    ahead_logits: Optional[torch.Tensor] = None   # [B, A, V] raw logits of columns block end.. (A may be 0)
    ahead_masked: Optional[torch.Tensor] = None   # [B, A] bool
    ahead_tokens: Optional[torch.Tensor] = None   # [B, A] proposals (commits_ahead schedulers, unconstrained)
    ahead_commit: Optional[torch.Tensor] = None   # [B, A] set by select(): slots past the block to commit
    # capability `drafts` (FreeDave): draft(D [B, K, W] token ids) -> (logits [B, K, W, V], tokens, scores
    # [B, K, W]) of the K draft states, one forward counted once (the engine runs it: select() is called
    # again with the same Step once the logits are there); select() may set carry (the logits of the state
    # it commits to, [B, W, V]) and carry_state ([B, W]): the next step reuses them without a forward
    draft: Optional[Callable] = None
    carry: Optional[torch.Tensor] = None
    carry_state: Optional[torch.Tensor] = None
    # capabilities `shadow` + `revocable` (WINO): leave-one-out logits of the block's slots, the block's
    # current tokens, the slots decoded in this block; select() may set revoke [B, W]
    shadow_logits: Optional[torch.Tensor] = None   # [B, W, V]
    current: Optional[torch.Tensor] = None         # [B, W]
    decoded: Optional[torch.Tensor] = None         # [B, W] bool
    revoke: Optional[torch.Tensor] = None          # [B, W] bool, decoded slots that go back to mask


@dataclass
class SchedulerEnv:
    """What a scheduler may need besides SamplingParams (e.g. where its learned filter lives)."""
    model_path: Optional[str]
    device: object
    mask_id: int = -1            # the model's mask token (dinfer skips slots whose proposal is it)
    family: str = "llada"        # ModelArgs.family: papers with per-family defaults (freedave, adablock, klass)
    newline_ids: Optional[Callable] = None   # () -> token ids whose text is whitespace with a newline

    @property
    def delimiters(self) -> tuple:
        """Token ids that end a line (adablock's delimiters), computed on first use."""
        return tuple(self.newline_ids()) if self.newline_ids is not None else ()


class Scheduler:
    #: "llada" | "dream": which published definition of the proposal and its score to use
    style: str = "llada"
    #: True: a fixed number of steps per block with counts known in advance (no host sync)
    fixed: bool = True
    #: True: wants logits for every answer column the forward computed (Step.wide)
    wide: bool = False
    # ---- capabilities the engine honours (engine/diffusion.py, engine/capabilities.py; declared here,
    # never branched on by name) ----
    #: answer slots after the active block whose logits select() reads (Step.ahead_logits), where the
    #: forward computes them anyway (no cache, prefix cache, a refresh) -- KLASS, ETE
    lookahead: int = 0
    #: True: select() may also commit masked slots among those (Step.ahead_commit) -- ETE
    commits_ahead: bool = False
    #: True: a block's length is decided on its first forward, by block_lengths(), which reads up to
    #: plan_span slots from the block's start -- AdaBlock
    variable_blocks: bool = False
    plan_span: int = 0
    #: select() may verify draft states (Step.draft) and carry logits to the next step: the most drafts per
    #: round (an instance sets its K; a class declares True) -- FreeDave
    drafts: int = 0
    #: True: the step's forward also scores a leave-one-out shadow of the block (Step.shadow_logits) -- WINO
    shadow: bool = False
    #: True: committed slots are not final: select() may send decoded slots back to mask (Step.revoke) -- WINO
    revocable: bool = False
    #: True: transform() and select() read nothing of the unmasked slots and no slot's place in the block,
    #: so at temperature 0 a step may be given only the block's masked span (its first to its last masked
    #: slot: the forward's LM head and the proposal then skip the committed rows around it)
    masked_only: bool = False
    #: True: when sampling, the step also says which slots' draw was the mask token before its ban
    #: (Step.banned_hit; propose(report_banned=True)) -- dInfer, whose proposal may be the mask token
    sees_banned: bool = False

    def __init__(self, params, style: str, env=None):
        self.params, self.style, self.env = params, style, env

    @property
    def dream_family(self) -> bool:
        """The model is Dream-family (papers with per-family defaults: adablock, freedave, klass, wino)."""
        return getattr(self.env, "family", None) == "dream"

    def begin_block(self, masked_counts: list[int], steps: int) -> None:
        pass

    def block_lengths(self, logits: torch.Tensor, lo: int, starts: list[int], remaining: list[int]) -> list[int]:
        """variable_blocks: logits [B, Q, V] of canvas columns lo.. (a block's first forward), each row's
        block start column and answer slots left -> each row's block length (>= 1, <= remaining)."""
        raise NotImplementedError

    def block_done(self, step: int) -> bool:
        raise NotImplementedError   # fixed schedulers only

    def plan(self, step: int) -> list[int] | None:
        return None

    def transform(self, logits: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        return logits

    def finish(self, step: Step) -> torch.Tensor | None:
        return None

    def select(self, step: Step) -> torch.Tensor:
        raise NotImplementedError


def commit_top(scores: torch.Tensor, masked: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Commit the counts[r] highest-scoring masked slots of each row r. scores, masked [B, L]."""
    ranked = scores.masked_fill(~masked, float("-inf"))
    commit = torch.zeros_like(masked)
    if len(set(counts)) == 1:
        # one torch.topk over the batch, as the reference generate functions call it
        k = counts[0]
        if k:
            commit.scatter_(1, torch.topk(ranked, k, dim=-1).indices, True)
        return commit & masked
    for r, k in enumerate(counts):  # rows at different counts (e.g. infill canvases)
        if k:
            commit[r, torch.topk(ranked[r], k).indices] = True
    return commit & masked


def best_slot(scores: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: each row's highest-scoring masked slot (none for rows without a mask)."""
    ranked = scores.masked_fill(~masked, float("-inf"))
    best = ranked.argmax(-1, keepdim=True)
    return torch.zeros_like(masked).scatter_(1, best, masked.gather(1, best))


def commit_best_and_above(scores: torch.Tensor, masked: torch.Tensor, threshold: float) -> torch.Tensor:
    """Every masked slot scoring >= threshold, and always each row's best masked slot."""
    return (masked & (scores >= threshold)) | best_slot(scores, masked)


def commit_near_best(scores: torch.Tensor, masked: torch.Tensor, threshold: float) -> torch.Tensor:
    """Every masked slot scoring >= min(best - 1e-5, threshold): all above the threshold, else the best
    and any within 1e-5 of it (dInfer's get_transfer_index_threshold, parallel_strategy.py:283-284)."""
    ranked = scores.masked_fill(~masked, float("-inf"))
    cut = (ranked.max(-1, keepdim=True).values - 1e-5).clamp(-1000, threshold)
    return masked & (ranked >= cut)
