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
(constraints and templates are refused). APD is an engine mode chosen by `draft_model`: each request is
its own APDDecoder, so APD requests batch with each other and with other requests; a step is two engine
steps (the diffusion row, then the checker's row, which depends on the drafts). Neither model keeps a
KV cache (each step is a full forward of both). Stats: nfe = steps = diffusion forwards; the
autoregressive model runs one forward per step as well (none when apd_r = 1, where it has no say),
so its forwards equal `steps` and are not counted separately.
"""
from __future__ import annotations

import torch

from dllm.engine.request import Decoder
from dllm.engine.runner import ForwardRow
from dllm.engine.sampling import filtered, generator
from dllm.errors import NumericError


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


class APDDecoder(Decoder):
    """args: the diffusion model's; draft_args: the checker's (its runner is keyed by draft_key)."""

    def __init__(self, prompt, params, args, draft_args, draft_key: str, stop_ids, env):
        super().__init__(prompt, None, params.max_new_tokens, args.mask_token_id, stop_ids, env.device)
        self.p, self.mask_id, self.key = params, args.mask_token_id, draft_key
        self.d_vocab = draft_args.vocab_size
        self.gen = generator(params.seed, env.device)
        self.c = 0                       # answer tokens committed
        self.phase = "draft"             # "draft": the diffusion row is next; "check": the checker's row

    def needs(self):
        return [("main", self.L)] + ([(self.key, self.L)] if self.p.apd_r < 1 else [])

    def final_len(self) -> int:
        return self.N if self.done else self.c

    def plan(self):
        if self.done:
            return []
        P, c = self.P, self.c
        if self.phase == "draft":   # [prompt | committed | W masks]: the canvas is cut after the lookahead
            W = min(self.p.apd_window, self.N - c)
            self.k = min(self.p.apd_max_draft, W)
            return [ForwardRow(ids=self.x[:P + c + W], start=0, keys=P + c + W, q=(P + c, P + c + self.k),
                               base=self.bases[0])]
        seq = self.x[:P + c + self.k].clone()          # [prompt | committed | drafted], teacher forcing
        seq[P + c:] = self.drafted.clamp(max=self.d_vocab - 1)
        return [ForwardRow(ids=seq, start=0, keys=seq.shape[0], q=(P + c - 1, P + c + self.k - 1),
                           base=self.bases[1], attn="causal", runner=self.key)]

    def advance(self, outs):
        if self.phase == "draft":
            self._draft(outs[0].float())
        else:
            self._check(outs[0].float())

    def _draft(self, d_logits):
        """The diffusion model's marginals -> k drafted tokens (then the checker, or accept at R = 1)."""
        if not bool(torch.isfinite(d_logits.amax(-1)).all()):
            raise NumericError("the diffusion model's logits hold NaN or infinity; its weights are broken or "
                               "overflow in this dtype (try dtype float32 or bfloat16).")
        self.nfe += 1
        self.steps += 1
        T = float(self.p.temperature)
        if 0 <= self.mask_id < d_logits.shape[-1]:
            d_logits[:, self.mask_id] = float("-inf")
        if T > 0:
            self.log_d = torch.log_softmax(filtered(d_logits / T, self.p.top_k, self.p.top_p), -1)
            self.drafted = torch.multinomial(self.log_d.exp(), 1, generator=self.gen).squeeze(-1)
        else:
            self.log_d = torch.log_softmax(d_logits, -1)
            self.drafted = self.log_d.argmax(-1)
        self.d_logits = d_logits
        if self.p.apd_r < 1:
            self.phase = "check"
        else:
            self._commit(d_logits)     # q = p_D: the checker has no say

    def _check(self, a):
        if not bool(torch.isfinite(a.amax(-1)).all()):
            raise NumericError("the draft model's logits hold NaN or infinity; its weights are broken or "
                               "overflow in this dtype (try dtype float32 or bfloat16).")
        V = self.d_logits.shape[-1]
        ar = torch.full((a.shape[0], V), float("-inf"), device=a.device)
        ar[:, :min(V, a.shape[-1])] = a[:, :V]
        if 0 <= self.mask_id < V:
            ar[:, self.mask_id] = float("-inf")
        self.phase = "draft"
        self._commit(ar)

    def _commit(self, ar_logits):
        T = float(self.p.temperature)
        log_q = mixture(self.d_logits, ar_logits, float(self.p.apd_r), T)
        if T > 0:
            log_q = torch.log_softmax(filtered(log_q, self.p.top_k, self.p.top_p), -1)
        n, fix = accept(self.log_d, log_q, self.drafted, T, self.gen)
        new = self.drafted[:n].tolist() + ([fix] if fix is not None else [])
        if self.p.trace:
            probs = log_q.exp()
            self.trace.append({"step": self.steps - 1, "block": 0, "positions": list(range(self.c, self.c + len(new))),
                               "tokens": new, "scores": [round(float(probs[i, t]), 6) for i, t in enumerate(new)],
                               "drafted": self.k, "accepted": n})
        hit = next((i for i, t in enumerate(new) if t in self.stop), None)
        if hit is not None:
            new = new[:hit + 1]
        start = self.P + self.c
        self.x[start:start + len(new)] = torch.tensor(new, device=self.x.device)
        self.c += len(new)
        if hit is not None:
            self.x[start + len(new):] = new[-1]
            self.done = True
        elif self.c >= self.N:
            self.done = True
