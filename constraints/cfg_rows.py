"""The CFG check on the diffusion path: reject-and-repick over the scheduler's choices.

Per step and row, the slots the scheduler chose are tried in order of score; a (slot, token)
whose commit leaves the canvas uncompletable (constraints/cfg.py) is rejected and the slot's next
most probable tokens are tried, without a new forward pass. When a chosen slot has no valid token
among them, the next masked slot of the block takes its place, so the scheduler's count holds.

A canvas that passes the check always has a completion whose tail is spelled by single-byte
tokens, so filling the leftmost masked slot never gets stuck when nothing fixed follows it. Only
a middle gap can: the check grants it any number of bytes, and its k tokens may be unable to
spell what the grammar needs there. Then the row backtracks: the tokens it committed in the
active block go back to masks (template text stays) and the block is finished left to right.
Masks left when a fixed-step schedule runs out are filled the same way ("complete at the end").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm.constraints.cfg import Grammar, canvas_text
from dllm.constraints.cfg_chart import Chart
from dllm.errors import ConstraintError

_STUCK = "the grammar constraint cannot fill a gap of the template with its number of tokens; widen the gap or " \
         "change the template."


@dataclass
class GrammarConstraint:
    """What LLM hands the engine for a grammar: the compiled grammar and the vocabulary's bytes."""
    grammar: Grammar
    token_bytes: list       # [vocab_size] bytes or None


class GrammarRows:
    def __init__(self, gc: GrammarConstraint, stop_ids, canvas, alternates: int = 8):
        self.g, self.tb = gc.grammar, gc.token_bytes
        self.stops = frozenset(int(s) for s in stop_ids)
        self.P, self.mask_id = canvas.prompt_len, canvas.mask_id
        self.template = (canvas.x[:, self.P:] != self.mask_id).cpu()      # [B, N] fixed from the start
        self.charts = [None] * canvas.x.shape[0]
        self.ltr = [False] * canvas.x.shape[0]                              # left to right after a backtrack
        self.m = alternates
        # the fallback candidates of a slot: every single-byte token and every end token
        single = [t for t, b in enumerate(self.tb) if b is not None and len(b) == 1 and t not in self.stops]
        self.fallback = torch.tensor(single + sorted(self.stops), dtype=torch.long)
        self.logits = None

    # ---- the interface shared with ConstrainedRows (constraints/base.py) ----------------------------
    def completable(self, x) -> torch.Tensor:
        self.charts = [self._check(r, row) for r, row in enumerate(x[:, self.P:].tolist())]
        return torch.tensor([c is not None for c in self.charts], device=x.device)

    def begin_block(self, x, blk):
        self.ltr = [False] * len(self.ltr)

    def witness(self, logits, xblk, masked, propose, keep: bool = True):
        """The unconstrained proposal; the step's logits are kept for re-picks (keep=False: a draft round's,
        FreeDave, whose commits are vetted against the step's own logits)."""
        if keep:
            self.logits = logits
        return propose(logits)

    def check(self, commit, tokens, scores, x, blk):
        """Vet the scheduler's commit [B, W] -> (commit, tokens) where every committed token keeps
        its row completable; rows that get stuck backtrack (x is changed in place)."""
        dev, off = commit.device, blk.start - self.P
        commit_c, tok_c = commit.cpu(), tokens.cpu().clone()
        masked_c = (x[:, blk] == self.mask_id).cpu()
        score_c = scores.float().cpu().masked_fill(~masked_c, float("-inf"))
        out = torch.zeros_like(commit_c)
        answers = x[:, self.P:].tolist()
        for r in range(commit_c.shape[0]):
            want = int(commit_c[r].sum())
            if want == 0:
                continue
            slots = answers[r]
            if self.ltr[r]:
                order, want = [int(masked_c[r].int().argmax())], 1
            else:
                order = sorted(masked_c[r].nonzero().flatten().tolist(),
                               key=lambda i: (not bool(commit_c[r, i]), -float(score_c[r, i])))
            got = 0
            for i in order:
                if got == want:
                    break
                t = self._pick(r, slots, off + i, self._candidates(r, i, int(tok_c[r, i]), wide=self.ltr[r]))
                if t is not None:
                    out[r, i], tok_c[r, i], got = True, t, got + 1
            if got == 0:                           # stuck: backtrack this row's commits in the block
                i = self._backtrack(r, slots, x, blk)
                t = self._pick(r, slots, off + i, self._candidates(r, i, int(tok_c[r, i]), wide=True))
                if t is None:
                    raise ConstraintError(_STUCK)
                out[r, i], tok_c[r, i] = True, t
        return out.to(dev), tok_c.to(dev)

    def complete(self, logits, x, col: int, rows=None):
        """Early commit: fill every masked column of x [B, L] from canvas column col on (logits
        [B, L - col, V]) left to right -> tokens [B, L - col]."""
        out = x[:, col:].clone()
        for r in range(x.shape[0]):
            if rows is None or bool(rows[r]):
                out[r] = self._fill_ltr(r, logits[r], x[r], col)[col - self.P:]
        return out

    def finish_block(self, x, blk):
        """Complete at the end: masks a fixed-step schedule left in the block, filled left to right."""
        masked = x[:, blk] == self.mask_id
        if self.logits is None or not bool(masked.any()):
            return
        for r in masked.any(1).nonzero().flatten().tolist():
            try:
                x[r, self.P:] = self._fill_ltr(r, self.logits[r], x[r], blk.start)
            except ConstraintError:
                # a masked slot before fixed text (e.g. end tokens) whose tokens cannot spell what the
                # grammar needs there (the check grants a gap any number of bytes): as in check(), the
                # row backtracks, re-masking its block, and the block is filled left to right, where
                # the leftmost masked slot never gets stuck (issue 25: fixed-step schedules failed here)
                self._backtrack(r, x[r, self.P:].tolist(), x, blk)
                x[r, self.P:] = self._fill_ltr(r, self.logits[r], x[r], blk.start)

    # ---- helpers --------------------------------------------------------------------------------
    def _check(self, r, slots) -> Chart | None:
        text = canvas_text(slots, self.mask_id, self.stops, self.tb)
        if text is None:
            return None
        chart = Chart(self.g, text, base=self.charts[r])
        return chart if chart.ok else None

    def _pick(self, r, slots, col, candidates):
        """The first candidate token that keeps row r completable at answer column col (committed
        into slots and the row's chart), or None."""
        for t in candidates:
            slots[col] = t
            chart = self._check(r, slots)
            if chart is not None:
                self.charts[r] = chart
                if t in self.stops:                # the answer ends here
                    slots[col + 1:] = [t if s == self.mask_id else s for s in slots[col + 1:]]
                return t
        slots[col] = self.mask_id
        return None

    def _candidates(self, r, i, proposed, wide=False, logits=None):
        lg = (self.logits[r, i] if logits is None else logits).float()
        top = lg.topk(min(self.m, lg.shape[0])).indices.tolist()
        cands = [proposed] + [t for t in top if t != proposed]
        if wide:   # then every single-byte and end token, most probable first
            fb = self.fallback[self.fallback < lg.shape[0]]
            fb = fb[lg[fb].argsort(descending=True)].tolist()
            seen = set(cands)
            cands += [t for t in fb if t not in seen]
        return [t for t in cands if t != self.mask_id]

    def _backtrack(self, r, slots, x, blk) -> int:
        """Re-mask row r's non-template tokens in the block -> the block's first masked slot."""
        off = blk.start - self.P
        tpl = self.template[r, off:blk.stop - self.P]
        for j in range(blk.stop - blk.start):
            if not tpl[j] and slots[off + j] != self.mask_id:
                slots[off + j] = self.mask_id
        # end tokens written after the block by the end-of-text fill go back too
        for j in range(blk.stop - self.P, len(slots)):
            if not self.template[r, j] and slots[j] in self.stops:
                slots[j] = self.mask_id
        x[r, self.P:] = torch.tensor(slots, device=x.device)
        self.charts[r] = None
        self.ltr[r] = True
        return next(j for j in range(blk.stop - blk.start) if slots[off + j] == self.mask_id)

    def _fill_ltr(self, r, logits, xrow, col: int) -> torch.Tensor:
        """Row r (xrow: its canvas row, possibly cut after the columns to fill; logits [W, V] for
        canvas columns col..col + W): masked columns filled left to right -> the answer slots."""
        slots = xrow[self.P:].tolist()
        n = min(logits.shape[0], xrow.shape[0] - col)
        for j in range(n):
            a = col - self.P + j
            if slots[a] != self.mask_id:
                continue
            lg = logits[j]
            t = self._pick(r, slots, a, self._candidates(r, j, int(lg.argmax()), wide=True, logits=lg))
            if t is None:
                raise ConstraintError(_STUCK)
        return torch.tensor(slots, device=xrow.device)
