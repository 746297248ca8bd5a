"""APD: adaptive parallel decoding (Israel et al., arXiv 2506.00413) - a diffusion model drafts,
a small autoregressive model checks, left to right.

One step for a request whose answer has c committed tokens:
  1. the diffusion model runs one forward over [prompt | committed answer | W masks]
     (W = min(apd_window, slots left): the masked lookahead; the canvas is cut after it) and
     gives marginals p_D for the first k = min(apd_max_draft, W) masked slots (mask id banned);
  2. k tokens are drafted from them independently: argmax at temperature 0, otherwise sampled
     from softmax(filter(logits / T)) (top_k, then top_p);
  3. the autoregressive model runs ONE forward over [prompt | committed | drafted] (teacher
     forcing) and gives p_AR at each drafted position, conditioned on the drafts before it;
  4. the target at each position is the product of experts
        log q = R * log softmax(l_D / T) + (1 - R) * log softmax(l_AR / T), renormalised
     (then top_k / top_p filtered like the draft; the mask id is never allowed; R = apd_r;
     at temperature 0 only its argmax matters, so T is taken as 1 there);
  5. acceptance, left to right, stopping at the first rejection:
       temperature 0: drafted token i is accepted iff it equals argmax q_i; at the first
         rejection argmax q_i is committed instead;
       temperature > 0: speculative sampling (Leviathan et al. 2023) with p_D as the proposal
         and q as the target: accept token t_i with probability min(1, q_i(t_i) / p_D,i(t_i)); at
         the first rejection commit a token drawn from norm(max(0, q_i - p_D,i)) (q_i itself if
         that residual is numerically empty). Each committed token is then an exact sample of
         q_i given the tokens before it. When every draft is accepted no bonus token is added
         (q at slot k + 1 would need p_D there, which the forward did not draft).
     So every step commits at least one token, the target's choice at the first position when
     the draft there is rejected. (The paper couples draft and target samples with shared
     randomness instead of the speculative accept/resample rule; both accept exactly the drafts
     that agree with the target at temperature 0.)
  6. a committed stop token ends the request: the rest of its answer is that stop token.

R = 1: q = p_D, every draft is accepted (k tokens per forward). R = 0: q = p_AR, and at
temperature 0 the answer is the autoregressive model's own greedy answer.

SamplingParams read: max_new_tokens, temperature, top_k, top_p, seed, trace, stop (by LLM) and the
apd_* fields; block_length, steps, cache, cfg_scale and remasking do not apply and are ignored
(constraints and templates are refused by LLM.generate).
Requests are decoded one at a time (accepted lengths differ per request); neither model keeps a
KV cache (each step is a full forward of both). Stats: nfe = steps = diffusion forwards; the
autoregressive model runs one forward per step as well (none when apd_r = 1, where it has no say),
so its forwards equal `steps` and are not counted separately.
"""
from __future__ import annotations

import torch

from dllm.engine.diffusion import RowResult
from dllm.engine.scoring import top_k_filter, top_p_filter
from dllm.errors import PromptError
from dllm.models.config import ModelArgs


def _filtered(logits, params):
    if params.top_k is not None:
        logits = top_k_filter(logits, params.top_k)
    if params.top_p is not None and params.top_p < 1:
        logits = top_p_filter(logits, params.top_p)
    return logits


def mixture(d_logits, ar_logits, r: float, temperature: float):
    """float32 logits [k, V] of both models -> log q [k, V] (normalised), q ∝ p_D^r · p_AR^(1-r)."""
    t = temperature if temperature > 0 else 1.0
    if r >= 1:
        mix = torch.log_softmax(d_logits / t, -1)
    elif r <= 0:
        mix = torch.log_softmax(ar_logits / t, -1)
    else:
        mix = r * torch.log_softmax(d_logits / t, -1) + (1 - r) * torch.log_softmax(ar_logits / t, -1)
    return torch.log_softmax(mix, -1)


def accept(log_draft, log_target, drafted, temperature: float, generator=None):
    """Which prefix of `drafted` [k] to keep. log_draft, log_target [k, V]: the (normalised)
    distributions the drafts were drawn from and the target. Returns (n accepted, correction
    token or None): the correction is given iff n < k, so at least one token is always committed."""
    k = drafted.shape[0]
    if temperature == 0:
        best = log_target.argmax(-1)
        ok = (drafted == best).int().cumprod(0)
        n = int(ok.sum())
        return n, (int(best[n]) if n < k else None)
    idx = drafted[:, None]
    ratio = (log_target.gather(-1, idx) - log_draft.gather(-1, idx)).squeeze(-1).exp()   # q(t) / p(t)
    u = torch.rand(k, generator=generator, device=drafted.device)
    ok = (u < ratio).int().cumprod(0)
    n = int(ok.sum())
    if n == k:
        return n, None
    q, p = log_target[n].exp(), log_draft[n].exp()
    residual = (q - p).clamp_(min=0)
    if not float(residual.sum()) > 0:
        residual = q
    return n, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))


@torch.no_grad()
def apd_generate(model, args: ModelArgs, draft, prompts: list[list[int]], params, stop_ids,
                 pad_id: int) -> list[RowResult]:
    """model/args: the diffusion model; draft: the autoregressive checker (an LLM, or anything
    with .model and .args); prompts: token ids per request (the two models share the tokenizer,
    LLM.generate checks it). pad_id is unused (no batch padding: one request at a time)."""
    device = next(model.parameters()).device
    mask_id = args.mask_token_id
    N, T, R = params.max_new_tokens, float(params.temperature), float(params.apd_r)
    d_vocab = draft.args.vocab_size
    for p in prompts:
        if any(i >= d_vocab for i in p):
            raise PromptError(f"a prompt token id is outside the draft model's vocabulary (0..{d_vocab - 1}).")
        if len(p) + N > draft.args.max_seq_len:
            raise PromptError(f"prompt ({len(p)} tokens) + answer ({N}) exceeds the draft model's context "
                              f"of {draft.args.max_seq_len} tokens.")
    gen = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    stop = set(stop_ids)
    results = []
    for prompt in prompts:
        res = RowResult(answer=[])
        P = len(prompt)
        answer: list[int] = []
        while len(answer) < N:
            c = len(answer)
            W = min(params.apd_window, N - c)
            k = min(params.apd_max_draft, W)
            x = torch.tensor(prompt + answer + [mask_id] * W, dtype=torch.long, device=device)[None]
            pos = torch.arange(x.shape[1], device=device)[None]
            d_logits = model(x, pos, None, slice(P + c, P + c + k), None)[0].float()      # [k, V]
            res.nfe += 1
            res.steps += 1
            V = d_logits.shape[-1]
            if 0 <= mask_id < V:
                d_logits[:, mask_id] = float("-inf")
            if T > 0:
                log_d = torch.log_softmax(_filtered(d_logits / T, params), -1)
                drafted = torch.multinomial(log_d.exp(), 1, generator=gen).squeeze(-1)
            else:
                log_d = torch.log_softmax(d_logits, -1)
                drafted = log_d.argmax(-1)
            if R < 1:
                seq = torch.cat([x[0, :P + c], drafted.clamp(max=d_vocab - 1)])[None]
                a = draft.model(seq, torch.arange(seq.shape[1], device=device)[None], None,
                                slice(P + c - 1, P + c + k - 1), None)[0].float()            # [k, Va]
                ar_logits = torch.full((k, V), float("-inf"), device=device)
                ar_logits[:, :min(V, a.shape[-1])] = a[:, :V]
                if 0 <= mask_id < V:
                    ar_logits[:, mask_id] = float("-inf")
            else:
                ar_logits = d_logits   # unused: q = p_D
            log_q = mixture(d_logits, ar_logits, R, T)
            if T > 0:
                log_q = torch.log_softmax(_filtered(log_q, params), -1)
            n, fix = accept(log_d, log_q, drafted, T, gen)
            new = drafted[:n].tolist() + ([fix] if fix is not None else [])
            if params.trace:
                probs = log_q.exp()
                res.trace.append({"step": res.steps - 1, "block": 0, "positions": list(range(c, c + len(new))),
                                  "tokens": new, "scores": [round(float(probs[i, t]), 6) for i, t in enumerate(new)],
                                  "drafted": k, "accepted": n})
            hit = next((t for t in new if t in stop), None)
            if hit is not None:
                answer += new[:new.index(hit) + 1]
                answer += [hit] * (N - len(answer))
                break
            answer += new
        res.answer = answer
        results.append(res)
    return results
