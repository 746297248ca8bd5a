"""The autoregressive loop: causal models (Llama, Qwen2, GGUF) through the same API as diffusion.

One left-padded prefill forward over the prompts, then one forward per new token, with keys
and values in one preallocated buffer per layer ([B, Hkv, P + N, hd], written by index; nothing
is concatenated per step). Row r is [pad ... pad | prompt_r | answer]: pads are never attended
and RoPE positions skip them, so a row's greedy answer does not depend on its batch.

Column c of the buffer holds the token at canvas column c; the forward that feeds column c
(c >= P: the answer token c - P) yields the logits of column c + 1. A row that has emitted a
stop token keeps running (its later tokens are replaced by that stop token and never read)
until every row has stopped or N tokens are out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm.engine.diffusion import RowResult
from dllm.engine.kv_cache import KVCache
from dllm.engine.scoring import top_k_filter, top_p_filter
from dllm.models.config import ModelArgs


@dataclass
class ARRows:
    """What `token_mask_fn(step, rows)` sees before the token of answer position `step` is chosen.

    prompts: the prompt token ids per row; generated: [B, step] the tokens chosen so far (a view:
    read, do not keep or write); done: [B] bool, rows that already emitted a stop token (what the
    mask says for them is ignored).
    """
    prompts: list
    generated: torch.Tensor
    done: torch.Tensor


class _PrefixCache(KVCache):
    """KVCache whose update returns only the columns written so far, [0, start + T).

    Causal attention never reads a later column, so attending over the written prefix is the
    same computation as attending over all L columns with those masked, without the work and
    without reading the unwritten (uninitialised) columns at all.
    """

    def update(self, layer: int, k, v, k_writer=None):
        end = self.start + v.shape[2]
        k_all, v_all = super().update(layer, k, v, k_writer)
        return k_all[:, :, :end], v_all[:, :, :end]


def _choose(logits, params, generator, allowed):
    """logits [B, V] (model dtype) -> (tokens [B] long, float32 scores [B, V] the token was drawn from).

    allowed [B, V] bool or None: disallowed tokens get -inf first (rows with nothing allowed are
    left unconstrained rather than turned into NaN). Greedy = argmax; sampling = softmax of
    top_p(top_k(logits / T)) drawn with `generator` (the order of Hugging Face's warpers).
    """
    scores = logits.float()
    if allowed is not None:
        keep = allowed | ~allowed.any(-1, keepdim=True)
        scores = scores.masked_fill(~keep, float("-inf"))
    if params.temperature == 0:
        return scores.argmax(-1), scores
    scores = scores / params.temperature
    if params.top_k is not None:
        scores = top_k_filter(scores, params.top_k)
    if params.top_p is not None and params.top_p < 1:
        scores = top_p_filter(scores, params.top_p)
    probs = scores.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1), scores


@torch.no_grad()
def ar_generate(model, args: ModelArgs, prompts: list[list[int]], params, stop_ids, pad_id: int,
                token_mask_fn=None, on_token=None) -> list[RowResult]:
    """Greedy or sampled decoding of a causal model, one token per forward after one prefill.

    prompts: token ids per row; params: SamplingParams (max_new_tokens, temperature, top_p, top_k,
    seed, trace are read; the diffusion fields do not apply); stop_ids: a row stops after emitting
    one of these; pad_id: the id written in the left padding (never attended).
    token_mask_fn(step, ARRows) -> bool [B, V] (True = allowed) or None, called before every token:
    the hook constraints use. on_token(step, tokens [B] long, done [B] bool): called after every
    token (streaming).
    Returns one RowResult per row: answer = the N tokens (after a row's first stop token, that
    token repeated), nfe = steps = tokens up to and including the first stop token (the prefill
    counts one forward and yields the first token).
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    B, N = len(prompts), params.max_new_tokens
    P = max(len(p) for p in prompts)
    L = P + N
    x = torch.full((B, P), pad_id, dtype=torch.long)
    valid = torch.ones((B, L), dtype=torch.bool)
    for r, p in enumerate(prompts):
        x[r, P - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[r, :P - len(p)] = False
    x, valid = x.to(device), valid.to(device)
    padded = any(len(p) < P for p in prompts)
    positions = (valid.long().cumsum(-1) - 1).clamp_(min=0)          # [B, L]: RoPE positions skip the pads
    cache = _PrefixCache(args, B, L, dtype, device)
    gen = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    stop = torch.tensor(sorted(stop_ids) or [-1], device=device)
    out = torch.empty((B, N), dtype=torch.long, device=device)       # the answer tokens
    done = torch.zeros(B, dtype=torch.bool, device=device)
    last = torch.zeros(B, dtype=torch.long, device=device)          # a stopped row's stop token
    trace = [[] for _ in range(B)] if params.trace else None

    # prefill: [B, P, P] mask = causal & key not padding, plus the diagonal so that a padding query
    # (whose keys are all padding) attends to itself instead of producing NaN; real queries always
    # see themselves, so the diagonal changes nothing for them.
    mask = None
    if padded:
        cols = torch.arange(P, device=device)
        mask = (valid[:, None, :P] & (cols[None, :, None] >= cols[None, None, :])) | torch.eye(
            P, dtype=torch.bool, device=device)
    cache.start = 0
    logits = model(x, positions[:, :P], cache, slice(P - 1, P), mask)[:, -1]     # [B, V]
    bad = torch.zeros(B, dtype=torch.bool, device=device)   # rows whose logits held NaN/inf (issue 19)
    for i in range(N):
        bad |= ~torch.isfinite(logits.amax(-1)) & ~done
        allowed = None
        if token_mask_fn is not None:
            allowed = token_mask_fn(i, ARRows(prompts, out[:, :i], done))
        tok, scores = _choose(logits, params, gen, allowed)
        tok = torch.where(done, last, tok)
        out[:, i] = tok
        if trace is not None:
            _record(trace, i, tok, scores, done)
        hit = torch.isin(tok, stop) & ~done
        last = torch.where(hit, tok, last)
        done |= hit
        if on_token is not None:
            on_token(i, tok, done)
        # stopping early needs the host to read `done`: every step on CPU (free), every 8th on
        # CUDA (a sync per token would stall the launch queue; at most 7 extra masked-out forwards)
        if i == N - 1 or ((device.type != "cuda" or i % 8 == 7) and bool((done | bad).all())):
            if i < N - 1:
                out[:, i + 1:] = last[:, None]
            break
        c = P + i                      # the column this token occupies; its forward scores column c + 1
        cache.start = c
        logits = model(tok[:, None], positions[:, c:c + 1], cache, None,
                       valid[:, :c + 1] if padded else None)[:, -1]

    if bool(bad.any()):
        from dllm.errors import NumericError

        raise NumericError(f"the model's logits hold NaN or infinity (request {int(bad.int().argmax())}); its "
                           "weights are broken or overflow in this dtype (try dtype float32 or bfloat16).")
    answers = out.tolist()
    stop_set = set(stop.tolist())
    results = []
    for r, ans in enumerate(answers):
        n = next((j + 1 for j, t in enumerate(ans) if t in stop_set), N)
        results.append(RowResult(answer=ans, nfe=n, steps=n, trace=trace[r] if trace else [],
                                 cache_bytes=cache.nbytes))
    return results


def _record(trace, step, tok, scores, done):
    """One trace entry per row still running: the token chosen for answer position `step` and its
    probability under the distribution it was drawn from."""
    p = (scores.gather(-1, tok[:, None]) - torch.logsumexp(scores, -1, keepdim=True)).exp().squeeze(-1)
    for r, (t, s, d) in enumerate(zip(tok.tolist(), p.tolist(), done.tolist())):
        if not d:
            trace[r].append({"step": step, "block": step, "positions": [step], "tokens": [t],
                             "scores": [round(s, 6)]})
