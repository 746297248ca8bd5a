"""Per-slot statistics of the active block from its logits: the proposed token and its score.

Everything here works on float32 copies of the rows that are read (never the whole canvas,
never float64). Scores stay in float32: closer to Fast-dLLM's float64 ranking than the
model dtype, and identical to every reference in float32 models.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def top_k_filter(logits, k: int):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def top_p_filter(logits, p: float):
    # keep the smallest prefix of the sorted distribution whose mass reaches p (always the top-1)
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove = cum > p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    drop = torch.zeros_like(remove).scatter_(-1, order, remove)
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)


def propose(logits, *, remasking: str, temperature: float, top_p, top_k, style: str,
            generator: torch.Generator | None, banned: int | None = None):
    """logits [B, L, V] -> (tokens [B, L] long, scores [B, L] float32).

    style "llada": token = argmax(logits / T + Gumbel) (Gumbel-max sampling; plain argmax at
    T = 0); low_confidence score = softmax(logits)[token] of the untempered logits.
    style "dream": probs = softmax(filter(logits / T)); token = sample(probs) (max at T = 0);
    score = probs[token]. margin = p1 - p2, entropy = sum p log p (higher = more certain),
    random = U(0, 1), each over the same probabilities.
    """
    l32 = logits.float()
    tempered = l32 / temperature if temperature > 0 else l32
    if top_k is not None:
        tempered = top_k_filter(tempered, top_k)
    if top_p is not None and top_p < 1:
        tempered = top_p_filter(tempered, top_p)
    # the banned (mask) token is never proposed, but probabilities keep the full softmax so
    # scores equal the references' unless they would commit the mask token itself
    if style == "dream":
        probs = tempered.softmax(-1)
        pick = probs if banned is None else probs.index_fill(-1, torch.tensor([banned], device=probs.device), 0.0)
        if temperature > 0:
            flat = pick.reshape(-1, pick.shape[-1])
            tokens = torch.multinomial(flat, 1, generator=generator).view(pick.shape[:-1])
            conf = probs.gather(-1, tokens[..., None]).squeeze(-1)
        else:
            conf, tokens = pick.max(-1)
    else:
        pick = tempered if banned is None else tempered.index_fill(
            -1, torch.tensor([banned], device=tempered.device), float("-inf"))
        if temperature > 0:
            u = torch.rand(pick.shape, generator=generator, device=pick.device).clamp_(min=1e-20)
            tokens = (pick - torch.log(-torch.log(u))).argmax(-1)
        else:
            tokens = pick.argmax(-1)
        probs = l32.softmax(-1)
        conf = probs.gather(-1, tokens[..., None]).squeeze(-1)
    if remasking == "low_confidence":
        score = conf
    elif remasking == "margin":
        top2 = probs.topk(2, dim=-1).values
        score = top2[..., 0] - top2[..., 1]
    elif remasking == "entropy":
        score = (probs * torch.log(probs + 1e-10)).sum(-1)
    elif remasking == "random":
        score = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    else:  # validated by SamplingParams
        raise AssertionError(remasking)
    return tokens, score
