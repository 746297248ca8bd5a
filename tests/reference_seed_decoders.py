"""The seed papers' decoders (issue 20) written from their authors' code, one request at a time, with
plain Python loops over slots, so that the engine's vectorised schedulers can be checked against
them token for token. Temperature 0, LLaDA-style models (tests/reference.py's llada_kv_forward).

Sources (snapshots named in docs/specs/scheduler-pack.md):
  localleap  get_transfer_index of friedrichor/LocalLeap's generate.py, as copied verbatim in three
             third-party repositories (the upstream repository could not be fetched)
  eb         NEUIR/PC-Sampler src/generate.py:338-383 (generate_with_eb_sampler)
  klass      shkim0116/KLASS src/model/llada_klass.py:42-218 (stable_confident_decode, alg "klass",
             unmask_strategy "all")
  ete        no authors' code: the rule of schedulers/ete.py, written out here as a loop
(adablock, freedave and wino: tests/reference_seed_capabilities.py)
Each returns (answer [gen_length] long, forwards).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tests.reference import llada_kv_forward


class Forwards:
    """The forwards of a block-wise decode: cache "none" runs the whole canvas every time; "dual" is
    Fast-dLLM's dual cache (a full forward at the block's first step, then the block alone against
    the cached keys/values, tests/reference.py). Returns (logits of canvas columns lo.., lo)."""

    def __init__(self, sd, cfg, cache="none"):
        self.sd, self.cfg, self.cache = sd, cfg, cache
        self.n = 0

    def __call__(self, x, bs, be, first):
        self.n += 1
        if self.cache == "none" or first:
            logits, self.past = llada_kv_forward(self.sd, self.cfg, x)
            if self.cache == "prefix":        # generate_with_prefix_cache: keep columns before the block
                self.past = [(k[:, :, :bs], v[:, :, :bs]) for k, v in self.past]
            return logits[0], 0
        return self.cached(x, bs, be)[0], bs

    def cached(self, x, bs, be):
        """A cached step's logits [B, W', V] of columns bs.. for the rows of x (x may hold several drafts)."""
        past = [(k.expand(x.shape[0], -1, -1, -1), v.expand(x.shape[0], -1, -1, -1)) for k, v in self.past]
        if self.cache == "prefix":
            return llada_kv_forward(self.sd, self.cfg, x[:, bs:], past=past)[0]
        return llada_kv_forward(self.sd, self.cfg, x[:, bs:be], past=past, replace=(bs, be))[0]


def _canvas(prompt, gen_length, mask_id):
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt.shape[1]] = prompt
    return x


def _argmax_conf(logits):
    """x0 = argmax, c = softmax(float64)[x0] (the LLaDA / Fast-dLLM confidence)."""
    x0 = logits.argmax(-1)
    return x0, F.softmax(logits.to(torch.float64), -1).gather(-1, x0[..., None]).squeeze(-1)


def _decode(fwd, prompt, gen_length, block_length, mask_id, rule):
    """The semi-autoregressive loop the engine runs for adaptive rules: while the block has a mask,
    one forward, then rule(x, logits, lo, bs, be, step) commits (writing x)."""
    x = _canvas(prompt, gen_length, mask_id)
    P = prompt.shape[1]
    for bs in range(P, P + gen_length, block_length):
        be, step = bs + block_length, 0
        while (x[0, bs:be] == mask_id).any():
            logits, lo = fwd(x, bs, be, step == 0)
            rule(x, logits, lo, bs, be, step)
            step += 1
    return x[0, P:], fwd.n


# ---- LocalLeap -------------------------------------------------------------------------------
def localleap_generate(fwd, prompt, *, gen_length, block_length, mask_id, threshold=0.9, relaxed_threshold=0.75,
                       radius=4):
    def rule(x, logits, lo, bs, be, step):
        x0, c = _argmax_conf(logits[bs - lo:be - lo])
        masked = [i for i in range(be - bs) if x[0, bs + i] == mask_id]
        conf = torch.full((be - bs,), -math.inf, dtype=torch.float64)
        conf[masked] = c[masked]
        select = torch.topk(conf, k=len(masked)).indices.tolist()         # num_transfer_tokens = #masked
        keep = set(select)
        anchors = [i for i in masked if conf[i] >= threshold]
        near = {j for a in anchors for j in range(max(0, a - radius), min(be - bs, a + radius + 1))}
        for i in select[1:]:
            cut = (relaxed_threshold if i in near else threshold) if anchors else threshold
            if conf[i] < cut:
                keep.discard(i)
        for i in keep:
            x[0, bs + i] = x0[i]
    return _decode(fwd, prompt, gen_length, block_length, mask_id, rule)


# ---- EB-Sampler ------------------------------------------------------------------------------
def eb_generate(fwd, prompt, *, gen_length, block_length, mask_id, gamma=0.01):
    def rule(x, logits, lo, bs, be, step):
        blk = logits[bs - lo:be - lo]
        x0 = blk.argmax(-1)
        masked = torch.tensor([i for i in range(be - bs) if x[0, bs + i] == mask_id])
        err = torch.distributions.Categorical(logits=blk[masked]).entropy()
        order = torch.argsort(err)
        e = err[order]
        k = int((torch.cumsum(e, 0) - torch.cummax(e, 0).values <= gamma).sum())
        k = min(max(k, 1), len(masked))
        for i in masked[order[:k]].tolist():
            x[0, bs + i] = x0[i]
    return _decode(fwd, prompt, gen_length, block_length, mask_id, rule)


# ---- KLASS -----------------------------------------------------------------------------------
def klass_generate(fwd, prompt, *, gen_length, block_length, mask_id, steps=None, conf_threshold=0.6,
                   kl_threshold=0.015, history=2, across_blocks=True):
    """llada_klass.py:42-218 at temperature 0. The reference forwards the whole canvas, so p_prev is
    every slot's distribution at the previous forward (zeros before the first, llada_klass.py:68). With
    fwd.cache == "dual" only the block is scored after the block's first forward: a slot then has a
    previous distribution only from forwards that scored it (the engine's documented behaviour), which
    this models by forgetting p_prev of slots the forward did not score. across_blocks=False forgets
    every slot's p_prev at each block start (to show that the no-cache parity depends on it)."""
    forget = fwd.cache != "none" or not across_blocks
    steps = steps or gen_length
    spb = steps // (gen_length // block_length)
    p_prev = kl_hist = known = None

    def rule(x, logits, lo, bs, be, step):
        nonlocal p_prev, kl_hist, known
        if p_prev is None:
            p_prev = torch.zeros(x.shape[1], logits.shape[-1], dtype=torch.float64)    # llada_klass.py:68
            kl_hist = torch.zeros(x.shape[1], history, dtype=torch.float64)           # llada_klass.py:67
            known = torch.zeros(x.shape[1], dtype=torch.bool)    # columns with a previous distribution
        if step == 0:                     # llada_klass.py:76: get_num_transfer_tokens over the block's masks
            m = int((x[0, bs:be] == mask_id).sum())
            rule.counts = [m // spb + (1 if i < m % spb else 0) for i in range(spb)]
        cols = slice(lo, lo + logits.shape[0])
        p_curr = F.softmax(logits.to(torch.float64), -1)                              # llada_klass.py:92
        kl = (p_curr * (torch.log(p_curr + 1e-12) - torch.log(p_prev[cols] + 1e-12))).sum(-1)   # :111-114
        if forget:                        # a slot the previous forward did not score has no history
            scored = torch.zeros_like(known)
            scored[cols] = True
            known &= scored if across_blocks or step else torch.zeros_like(known)
            kl = torch.where(known[cols], kl, math.inf)
            known |= scored
        kl_hist[cols] = torch.roll(kl_hist[cols], -1, dims=-1)                        # llada_klass.py:116-117
        kl_hist[cols, -1] = kl
        p_prev[cols] = p_curr                                                         # llada_klass.py:119
        blk = p_curr[bs - lo:be - lo]
        x0 = blk.argmax(-1)
        conf = blk.gather(-1, x0[:, None]).squeeze(-1)
        masked = [i for i in range(be - bs) if x[0, bs + i] == mask_id]
        stable = [bool((kl_hist[bs + i] < kl_threshold).all()) if step >= history - 1 else False
                  for i in range(be - bs)]                                         # llada_klass.py:123-126
        ready = [i for i in masked if stable[i] and conf[i] > conf_threshold]     # llada_klass.py:128-130
        if not ready:                     # llada_klass.py:176-182: top-k by confidence, k from the schedule
            k = max(1, rule.counts[min(step, spb - 1)])
            ranked = torch.full((be - bs,), -math.inf, dtype=torch.float64)
            ranked[masked] = conf[masked]
            ready = torch.topk(ranked, k=min(k, len(masked))).indices.tolist()
        for i in ready:
            x[0, bs + i] = x0[i]
    return _decode(fwd, prompt, gen_length, block_length, mask_id, rule)


# ---- ete (dllm's own rule; see schedulers/ete.py) --------------------------------------------
def ete_generate(fwd, prompt, *, gen_length, block_length, mask_id, budget_bits=1.0):
    P = prompt.shape[1]

    def rule(x, logits, lo, bs, be, step):
        end = min(be + block_length, P + gen_length, lo + logits.shape[0])    # the next block, where scored
        cand = []
        for c in range(bs, end):
            if x[0, c] != mask_id:
                continue
            z = logits[c - lo].float()
            t = int(z.argmax())
            s = -float(torch.log_softmax(z, -1)[t]) / math.log(2)
            cand.append((s, c, t))
        order = sorted(cand, key=lambda e: e[0])                                # stable: column order on ties
        take, total = set(), 0.0
        for s, c, t in order:
            total += s
            if total > budget_bits:
                break
            take.add((c, t))
        take.add(min((e for e in cand if e[1] < be), key=lambda e: (e[0], e[1]))[1:])   # the block's best
        for c, t in take:
            x[0, c] = t
    return _decode(fwd, prompt, gen_length, block_length, mask_id, rule)
