"""adablock (AdaBlock-dLLM, arXiv 2509.26432): semi-autoregressive blocks whose length follows the text.

At the first forward of each block (lgxi24/AdaBlock-dLLM llada/generate_adablock.py:39-88, 119-141),
for each request with `done` answer slots decoded and G = max_new_tokens:
  window = the next W = min(int(0.25 G), G - done) slots;  pred = argmax of the logits there
  D = window slots whose pred is a delimiter (the tokenizer's newline tokens)
  if D is empty: length = min(block_length, G - done)
  else d* = the delimiter slot of highest confidence softmax(z)[pred] (logsumexp in the logits'
       dtype; the first on ties): length = d* - start + 1 if that confidence >= the delimiter
       threshold (0.3 for LLaDA, 0.5 for Dream), else min(block_length, G - done)
and the same forward already commits in the new block. Every step commits the masked slots with
confidence >= threshold (0.9) and always the most confident one (Fast-dLLM's rule), until the
block is full. block_length is the fallback length (the papers' 32); the first block is adaptive
too. A delimiter in the block's first slot gives a block of one slot. Delimiters are every token
whose text is whitespace holding a newline (the authors list "\\n" = 198 for LLaDA and 24 newline
tokens for Dream); a model without a tokenizer has none, so its blocks are block_length long.
Blocks differ per request, and each request decodes its own (engine/diffusion.py: the block's first
forward is a refresh over plan_span slots that sizes it, then its first step; capability variable_blocks).
At temperature > 0 the block length is decided on the argmax (the authors: on the Gumbel sample).
"""
from __future__ import annotations

from typing import Optional

from dllm._lazy import torch
from dllm.params import Param
from dllm.schedulers.base import Scheduler, commit_best_and_above

PARAMS = {"adablock_delimiter_threshold": Param(None, Optional[float], "adablock scheduler: a predicted delimiter "
                                                "this confident ends the block (default: 0.3 for LLaDA, 0.5 for "
                                                "Dream)", range="[0, 1]")}


class AdaBlock(Scheduler):
    fixed = False
    variable_blocks = True

    def __init__(self, params, style, env=None):
        super().__init__(params, style, env)
        tau_d = params.adablock_delimiter_threshold
        self.tau_d = tau_d if tau_d is not None else (0.5 if self.dream_family else 0.3)
        self.delimiters = torch.tensor(sorted(getattr(env, "delimiters", ()) or ()), dtype=torch.long)
        G = params.max_new_tokens
        self.window = int(0.25 * G)
        self.plan_span = max(self.window, params.block)

    def block_lengths(self, logits, lo, starts, remaining):
        out = []
        fallback = self.params.block
        delim = self.delimiters.to(logits.device)
        for r, (s, left) in enumerate(zip(starts, remaining)):
            W = min(self.window, left)
            z = logits[r, s - lo:s - lo + W]                                  # [W, V]
            pred = z.argmax(-1)
            hit = torch.isin(pred, delim).nonzero().flatten()
            if hit.numel() == 0:
                out.append(min(fallback, left))
                continue
            zd = z[hit]
            conf = torch.exp(zd.gather(-1, pred[hit, None]).squeeze(-1) - torch.logsumexp(zd, -1))
            best = int(conf.argmax())                                          # the first on ties
            out.append(int(hit[best]) + 1 if float(conf[best]) >= self.tau_d else min(fallback, left))
        return out

    def select(self, st):
        return commit_best_and_above(st.scores, st.masked, self.params.threshold)
