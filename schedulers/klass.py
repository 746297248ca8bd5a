"""klass (KLASS, arXiv 2511.05664): commit the slots whose distribution has stopped moving.

Per step s of a block (shinkim0116/KLASS src/model/llada_klass.py:89-198), with the block's
logits z and p = softmax(float64(z)):
  c_i  = p_i[token_i];  KL_i = sum_v p_i (log(p_i + 1e-12) - log(p_prev_i + 1e-12))
  history: the last `klass_history` KLs of each slot (p_prev = the slot's distribution at the
           previous forward of this request)
  ready = masked & (s >= h - 1) & all(history < klass_kl_threshold) & (c > klass_conf_threshold)
  commit every ready slot; if a row has none, its top-count[s] masked slots by c, where count is
  LLaDA's per-block split of the block's masks over the block's steps (1 per step at the papers'
  steps = answer length). Defaults 0.6 / 0.015 / 2 (LLaDA GSM8K).
Dream checkpoints use the authors' Dream variant (src/model/dream_klass.py:492-548): c >= threshold,
and the fallback is the single best masked slot.

State, per request: the history [B, block, h] and log(p_prev + 1e-12) of the block's rows only
([B, block, V] float64; never the whole canvas). The first step of a block needs p_prev of the new
block's slots from the previous block's last forward: the engine hands the scheduler the logits
of the next block's slots (`lookahead`) where its forward computed them, i.e. without a cache or
with the prefix cache, and the completing step stores them. With the dual cache the forward
scores only the active block, so a block's first KL has no history (taken as +inf, not stable);
with the default history 2 that only matters on the block's second step, where the reference
could already commit. The very first step has no history either way (the reference's p_prev is
zeros, so its first KL is ~27.6 - H, never below the threshold).
At temperature > 0 the tokens are the engine's sample and c, KL use the unperturbed p (the
reference applies softmax to its Gumbel-perturbed scores).
A block runs until it has no mask (the reference stops after `steps` forwards per block and can
leave masks; past the planned steps the fallback commits one slot per step).
"""
from __future__ import annotations

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers.base import Scheduler, commit_top

PARAMS = {
    "klass_conf_threshold": Param(0.6, float, "klass scheduler: confidence a slot must exceed", range="[0, 1]"),
    "klass_kl_threshold": Param(0.015, float, "klass scheduler: KL to the previous step each of the last N steps "
                                "must stay below", range="[0, inf)"),
    "klass_history": Param(2, int, "klass scheduler: N, the steps of KL history", range="[1, 1024]"),
}

EPS = 1e-12


class KLASS(Scheduler):
    fixed = False

    def __init__(self, params, style, env=None):
        super().__init__(params, style, env)
        self.lookahead = params.block                # the next block's logits, where the forward has them
        self.next_prev = None                        # [B, block, V] log(p + eps) of the next block's slots
        self.has_next = None                         # [B] bool

    def begin_block(self, masked_counts, steps):
        self.counts = [[m // steps + (1 if i < m % steps else 0) for i in range(steps)] for m in masked_counts]
        self.step = 0
        self.hist = None
        self.prev, self.has_prev = self.next_prev, self.has_next      # None: no history yet
        self.next_prev = self.has_next = None

    def select(self, st):
        p, masked = self.params, st.masked
        live = masked.any(-1, keepdim=True)                                    # [B, 1] rows still decoding
        prob = torch.softmax(st.logits.double(), -1)                           # [B, W, V] float64
        logq = torch.log(prob + EPS)
        conf = prob.gather(-1, st.tokens[..., None]).squeeze(-1)                # [B, W] c of the proposed token
        kl = torch.full_like(conf, float("inf"))
        if self.prev is not None:
            kl = torch.where(self.has_prev[:, None], (prob * (logq - self.prev)).sum(-1), kl)
        h = p.klass_history
        if self.hist is None:
            self.hist = torch.full((*conf.shape, h), float("inf"), dtype=torch.float64, device=conf.device)
        # rows riding along (their block is done) keep their state, as if they had not run
        self.hist = torch.where(live[..., None], torch.cat([self.hist[..., 1:], kl[..., None]], -1), self.hist)
        self.prev = logq if self.prev is None else torch.where(live[..., None], logq, self.prev)
        self.has_prev = live[:, 0] | (self.has_prev if self.has_prev is not None else False)
        stable = (self.hist < p.klass_kl_threshold).all(-1) & (self.dream_family or self.step >= h - 1)
        sure = conf >= p.klass_conf_threshold if self.dream_family else conf > p.klass_conf_threshold
        ready = masked & stable & sure
        counts = [1 if self.dream_family else max(1, c[min(self.step, len(c) - 1)]) for c in self.counts]
        commit = torch.where(ready.any(-1, keepdim=True), ready, commit_top(conf, masked, counts))
        self.step += 1
        self._store_next(st, live[:, 0] & ~(masked & ~commit).any(-1))
        return commit

    def _store_next(self, st, done):
        """done [B]: rows whose block this step completes keep log(p + eps) of the next block's slots."""
        ahead = st.ahead_logits
        if ahead is None or ahead.shape[1] != st.masked.shape[1] or not bool(done.any()):
            return
        logq = torch.log(torch.softmax(ahead.double(), -1) + EPS)
        if self.next_prev is None:
            self.next_prev, self.has_next = logq, done
        else:
            self.next_prev = torch.where(done[:, None, None], logq, self.next_prev)
            self.has_next = self.has_next | done
