"""Canvas: the batch state of a diffusion generate call.

Row r is [pad ... pad | prompt_r | answer slots], left-padded to the longest prompt so that
every row's answer starts at the same column P. Pads are never attended (key mask) and
positions skip them, so a request's output does not depend on the batch it is in.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Canvas:
    x: torch.Tensor          # [B, P + N] token ids; answer slots start as mask_id
    valid: torch.Tensor      # [B, P + N] bool, False on left padding
    positions: torch.Tensor  # [B, P + N] RoPE positions, counting real tokens only
    prompt_len: int          # P (padded)
    answer_len: int          # N
    mask_id: int
    padded: bool = False     # any left padding; without it attention needs no key mask

    @classmethod
    def build(cls, prompts: list[list[int]], answer_len: int, mask_id: int, pad_id: int, device,
              answers: list | None = None) -> "Canvas":
        """answers: per row None (all slots masked) or answer_len initial slots (templates: fixed
        text tokens, mask_id in the gaps)."""
        B, P = len(prompts), max(len(p) for p in prompts)
        x = torch.full((B, P + answer_len), mask_id, dtype=torch.long)
        for r, a in enumerate(answers or []):
            if a is not None:
                x[r, P:] = torch.tensor(a, dtype=torch.long)
        valid = torch.ones((B, P + answer_len), dtype=torch.bool)
        for r, p in enumerate(prompts):
            pad = P - len(p)
            x[r, :pad] = pad_id
            valid[r, :pad] = False
            x[r, pad:P] = torch.tensor(p, dtype=torch.long)
        positions = (valid.long().cumsum(-1) - 1).clamp_(min=0)
        padded = any(len(p) < P for p in prompts)
        return cls(x.to(device), valid.to(device), positions.to(device), P, answer_len, mask_id, padded)

    def block_slice(self, start: int, length: int) -> slice:
        """Canvas columns of answer slots [start, start + length)."""
        return slice(self.prompt_len + start, self.prompt_len + start + length)

    def answers(self) -> torch.Tensor:
        return self.x[:, self.prompt_len:]
