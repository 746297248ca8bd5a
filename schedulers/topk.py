"""topk: the fixed-count schedules of LLaDA and Dream.

llada: a block with m masked slots and s steps commits m // s slots per step, the remainder
(m % s) going one each to the earliest steps (LLaDA's get_num_transfer_tokens).
dream: timesteps t_i = linspace(1, eps, s + 1); step i commits int(m_i * (1 - t_{i+1} / t_i))
of the m_i slots still masked (all of them at the last step), computed in float32 as Dream does.
Steps whose count is 0 change nothing at any temperature and are skipped without a forward.
"""
from __future__ import annotations

from dllm._lazy import torch
from dllm.schedulers.base import Scheduler, commit_top


class TopK(Scheduler):
    masked_only = True

    def begin_block(self, masked_counts, steps):
        self.remaining = list(masked_counts)
        self.steps = steps
        if self.style == "dream":
            self.t = torch.linspace(1, self.params.eps, steps + 1)
        else:
            self.masked = list(masked_counts)       # counts are computed per step: O(rows), not O(rows x steps)

    def block_done(self, step):
        return step >= self.steps

    def plan(self, step):
        if self.style == "dream":
            if step == self.steps - 1:
                ks = list(self.remaining)
            else:
                frac = 1 - self.t[step + 1] / self.t[step]
                ks = [int(torch.tensor(float(m)) * frac) for m in self.remaining]
        else:
            ks = [m // self.steps + (1 if step < m % self.steps else 0) for m in self.masked]
        ks = [min(k, m) for k, m in zip(ks, self.remaining)]
        self.remaining = [m - k for m, k in zip(self.remaining, ks)]
        return ks

    def select(self, st):
        return commit_top(st.scores, st.masked, st.plan)
