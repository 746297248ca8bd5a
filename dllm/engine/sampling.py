"""The one sampling module: the top-k / top-p chain, the diffusion proposal (a token and a score per
slot) and the autoregressive choice.

Everything here works on float32 copies of the rows that are read (never the whole canvas,
never float64). Scores stay in float32: closer to Fast-dLLM's float64 ranking than the
model dtype, and identical to every reference in float32 models. The Triton vocabulary
reduction (kernels/vocab_reduce.py) is tested against `propose`.
"""
from __future__ import annotations

import torch


def generator(seed, device) -> torch.Generator:
    """A request's own random stream: seeded, or from torch's global RNG (so that torch.manual_seed
    still makes unseeded runs repeatable); never shared between requests."""
    g = torch.Generator(device=device)
    return g.manual_seed(seed % 2**64 if seed is not None else int(torch.randint(0, 2**62, ()).item()))


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


def filtered(logits, top_k, top_p):
    """The filter chain every sampler uses, in Hugging Face's warper order: top-k, then top-p."""
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1:
        logits = top_p_filter(logits, top_p)
    return logits


def propose(logits, *, remasking: str, temperature: float, top_p, top_k, style: str,
            generator: torch.Generator | None, banned: int | None = None, kernels: str = "torch",
            report_banned: bool = False):
    """logits [B, L, V] -> (tokens [B, L] long, scores [B, L] float32). May overwrite `logits`.
    report_banned: return (tokens, scores, hit) with hit [B, L] bool = the draw before the ban was the
    banned token (the same noise: Gumbel-max and greedy), or None where no such draw exists (no banned
    token; the "dream" sampler at T > 0, whose draw is taken from the banned-free distribution).

    style "llada": token = argmax(logits / T + Gumbel) (Gumbel-max sampling; plain argmax at
    T = 0); low_confidence score = softmax(logits)[token] of the untempered logits.
    style "dream": q = softmax(filter(logits / T)); token = sample(q) (argmax at T = 0);
    score = q[token]. margin = p1 - p2, entropy = sum p log(p + 1e-10) (higher = more certain),
    random = U(0, 1), over the distribution that scores the token.
    The banned (mask) token is never proposed, but the normalisers keep its mass, so scores
    equal the references' unless those would commit the mask token itself. Probabilities are
    exp(logit - logsumexp): no [L, V] probability tensor is written unless sampling or
    entropy needs one.
    """
    if kernels == "triton" and top_k is None and (top_p is None or top_p >= 1) and not report_banned \
            and not (temperature > 0 and style == "dream"):
        # the fused kernel (kernels/vocab_reduce.py): the same tokens and scores, no [L, V] float32 copy
        from dllm.kernels.vocab_reduce import vocab_reduce
        return vocab_reduce(logits, score=remasking, banned=banned, temperature=temperature, generator=generator)
    l32 = logits.float()
    scored = filtered(l32 / temperature if (temperature > 0 and style == "dream") else l32, top_k, top_p)
    lse = torch.logsumexp(scored, -1, keepdim=True)              # [B, L, 1]
    probs, hit = None, None
    if remasking == "entropy" or (temperature > 0 and style == "dream"):
        probs = (scored - lse).exp()
    if temperature > 0:
        if style == "dream":
            pick = probs.clone()
            if banned is not None:
                pick[..., banned] = 0
            flat = pick.reshape(-1, pick.shape[-1])
            tokens = torch.multinomial(flat, 1, generator=generator).view(pick.shape[:-1])
        else:
            tempered = filtered(l32 / temperature, top_k, top_p)
            u = torch.rand(tempered.shape, generator=generator, device=tempered.device).clamp_(min=1e-20)
            noisy = tempered - torch.log(-torch.log(u))
            if banned is not None:
                hit = noisy.argmax(-1) == banned if report_banned else None
                noisy[..., banned] = float("-inf")
            tokens = noisy.argmax(-1)
    elif banned is not None:   # hide the banned column for the argmax only, then put it back
        hit = scored.argmax(-1) == banned if report_banned else None
        saved = scored[..., banned].clone()
        scored[..., banned] = float("-inf")
        tokens = scored.argmax(-1)
        scored[..., banned] = saved
    else:
        tokens = scored.argmax(-1)
    score = _score(remasking, scored, lse, probs, tokens, generator)
    return (tokens, score, hit) if report_banned else (tokens, score)


def _score(remasking: str, scored, lse, probs, tokens, generator):
    """propose()'s score of each slot's token: scored [B, L, V] float32 logits of the scoring distribution,
    lse [B, L, 1] their logsumexp, probs its probabilities (entropy only) -> [B, L] float32."""
    if remasking == "low_confidence":
        return (scored.gather(-1, tokens[..., None]) - lse).exp().squeeze(-1)
    if remasking == "margin":
        top2 = (scored.topk(2, dim=-1).values - lse).exp()
        return top2[..., 0] - top2[..., 1]
    if remasking == "entropy":
        return (probs * torch.log(probs + 1e-10)).sum(-1)
    if remasking == "random":
        return torch.rand(tokens.shape, generator=generator, device=tokens.device)
    raise AssertionError(remasking)   # validated by SamplingParams


def choose(logits, temperature: float, top_k, top_p, generator, allowed=None):
    """The autoregressive choice: logits [B, V] (model dtype) -> (tokens [B] long, float32 scores [B, V]
    the token was drawn from).

    allowed [B, V] bool or None: disallowed tokens get -inf first (rows with nothing allowed are
    left unconstrained rather than turned into NaN). Greedy = argmax; sampling = softmax of
    top_p(top_k(logits / T)) drawn with `generator` (the order of Hugging Face's warpers).
    """
    scores = logits.float()
    if allowed is not None:
        keep = allowed | ~allowed.any(-1, keepdim=True)
        scores = scores.masked_fill(~keep, float("-inf"))
    if temperature == 0:
        return scores.argmax(-1), scores
    scores = filtered(scores / temperature, top_k, top_p)
    probs = scores.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1), scores
