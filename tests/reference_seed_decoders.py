"""The seed papers' decoders (issue 20) written from their authors' code, one request at a time, with
plain Python loops over slots, so that the engine's vectorised schedulers can be checked against
them token for token. Temperature 0, LLaDA-style models (tests/reference.py's llada_kv_forward).

Sources (snapshots named in ../shared/specs/scheduler-pack.md):
  localleap  get_transfer_index of friedrichor/LocalLeap's generate.py, as copied verbatim in three
             third-party repositories (the upstream repository could not be fetched)
  eb         NEUIR/PC-Sampler src/generate.py:338-383 (generate_with_eb_sampler)
  klass      shkim0116/KLASS src/model/llada_klass.py:42-218 (stable_confident_decode, alg "klass",
             unmask_strategy "all")
  ete        no authors' code: the rule of schedulers/ete.py, written out here as a loop
  adablock   lgxi24/AdaBlock-dLLM llada/generate_adablock.py:39-158 (no cache), :161-238 (prefix),
             :241-313 (dual), get_transfer_index :315-361 (threshold branch)
  freedave   cychomatica/FreeDave generation/core.py:700-1104 (block_decode_with_full_attention_FreeDave,
             draft_mode "batch_expanding", LLaDA: not AR-adapted), token_transfer :189-302 (alg_temp None,
             token_per_step 1), draft verification :313-367 (the subset rule, as its reference loop)
  wino       Feng-Hong/WINO-DLLM LLaDA/decoding.py:112-198 (decoding_wino)
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
    V = None
    p_prev = kl_hist = None
    known = set()                         # canvas columns with a previous distribution

    def rule(x, logits, lo, bs, be, step):
        nonlocal p_prev, kl_hist, V
        if p_prev is None:
            V = logits.shape[-1]
            p_prev = torch.zeros(x.shape[1], V, dtype=torch.float64)               # llada_klass.py:68
            kl_hist = torch.zeros(x.shape[1], history, dtype=torch.float64)       # llada_klass.py:67
        if step == 0:                     # llada_klass.py:76: get_num_transfer_tokens over the block's masks
            m = int((x[0, bs:be] == mask_id).sum())
            rule.counts = [m // spb + (1 if i < m % spb else 0) for i in range(spb)]
        cols = range(lo, lo + logits.shape[0])
        p_curr = F.softmax(logits.to(torch.float64), -1)                          # llada_klass.py:92
        if forget:
            known.intersection_update(cols if across_blocks else (cols if step else ()))
        for j, c in enumerate(cols):
            kl = float((p_curr[j] * (torch.log(p_curr[j] + 1e-12) - torch.log(p_prev[c] + 1e-12))).sum())
            if forget and c not in known:
                kl = math.inf
            kl_hist[c] = torch.roll(kl_hist[c], -1)                               # llada_klass.py:116-117
            kl_hist[c, -1] = kl
            p_prev[c] = p_curr[j]
            known.add(c)
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


# ---- AdaBlock --------------------------------------------------------------------------------
def _block_length(logits, pred, bs, gen_length, generated, default, delimiter_ids, delimiter_threshold):
    """compute_block_length (generate_adablock.py:39-88), batch of one; logits, pred over the canvas."""
    remaining = gen_length - generated
    window = min(int(0.25 * gen_length), remaining)
    tokens = pred[bs:bs + window]
    hit = torch.zeros_like(tokens, dtype=torch.bool)
    for t in delimiter_ids:
        hit |= tokens == t
    if not hit.any():
        return min(default, remaining)
    pos = bs + torch.nonzero(hit).squeeze(-1)
    conf = torch.exp(logits[pos, pred[pos]] - torch.logsumexp(logits[pos, :], dim=-1))
    best_conf, best = torch.max(conf, dim=0)
    if best_conf.item() >= delimiter_threshold:
        return int(pos[best]) - bs + 1
    return min(default, remaining)


def _threshold_transfer(logits, pred, mask_index, threshold):
    """get_transfer_index, threshold branch (generate_adablock.py:315-361), one row."""
    p = F.softmax(logits.to(torch.float64), dim=-1)
    conf = torch.gather(p, -1, pred[:, None]).squeeze(-1)
    conf = torch.where(mask_index, conf, torch.tensor(torch.finfo(conf.dtype).min, dtype=conf.dtype))
    transfer = mask_index & (conf >= threshold)
    transfer[int(torch.argmax(conf))] = True
    return transfer & mask_index


def adablock_generate(fwd, prompt, *, gen_length, block_length, mask_id, threshold=0.9, delimiter_ids=(198,),
                      delimiter_threshold=0.3):
    """generate_adablock{,_prefix_cache,_dual_cache} at temperature 0; block_length = init_block_length.
    Returns (answer, forwards, the block lengths)."""
    x = _canvas(prompt, gen_length, mask_id)
    P, generated, blocks = prompt.shape[1], 0, []
    while generated < gen_length:
        bs = P + generated
        logits, _ = fwd(x, bs, bs, True)                               # the full canvas: a refresh
        pred = logits.argmax(-1)
        n = _block_length(logits, pred, bs, gen_length, generated, block_length, delimiter_ids, delimiter_threshold)
        blocks.append(n)
        be = bs + n
        generated += n
        mask_index = x[0] == mask_id
        mask_index[be:] = False
        t = _threshold_transfer(logits, pred, mask_index, threshold)
        x[0, t] = pred[t]
        while (x[0, bs:be] == mask_id).any():
            logits, lo = fwd(x, bs, be, False)
            pred = logits.argmax(-1)
            window = x[0, lo:lo + logits.shape[0]]
            mask_index = window == mask_id
            mask_index[be - lo:] = False
            t = _threshold_transfer(logits, pred, mask_index, threshold)
            window[t] = pred[t]
    return x[0, P:], fwd.n, blocks


# ---- FreeDave --------------------------------------------------------------------------------
def _predict(logits, mask_index):
    """get_mask_token_prediction_and_confidence at temperature 0 (sample_tokens: argmax, softmax in the
    logits' dtype); -inf off the masked slots."""
    p = torch.softmax(logits, -1)
    conf, x0 = p.max(-1)
    return x0, torch.where(mask_index, conf, torch.tensor(-math.inf, dtype=conf.dtype))


def _transfer(x, x0, conf, mask_id, draft_steps, threshold):
    """token_transfer for one row (alg_temp None, token_per_step 1) -> [draft_steps, W] drafts."""
    mask_index = x == mask_id
    conf = conf.masked_fill(~mask_index, -math.inf)
    if threshold is not None:
        d = x.clone()
        high = conf >= threshold
        idx = high.nonzero().flatten() if high.any() else torch.topk(conf, min(1, int(mask_index.sum()))).indices
        d[idx] = x0[idx]
        if draft_steps is None or draft_steps == 1:
            return d[None]
        return torch.cat([d[None], _transfer(d, x0, conf, mask_id, draft_steps - 1, None)])
    steps = draft_steps or 1
    out = x[None].repeat(steps, 1)
    for k in range(steps):
        idx = torch.topk(conf, min(k + 1, int(mask_index.sum()))).indices
        out[k, idx] = x0[idx]
    return out


def _verify(drafts, targets, mask_id):
    """The subset rule, as the reference loop: from 0, the largest j > best with drafts[j] agreeing
    with targets[best] on drafts[j]'s non-masked slots, until a fixed point."""
    best = 0
    while True:
        nxt = best
        for j in range(drafts.shape[0] - 1, best, -1):
            if bool(((drafts[j] == targets[best]) | (drafts[j] == mask_id)).all()):
                nxt = j
                break
        if nxt == best:
            return best
        best = nxt


def freedave_generate(fwd, prompt, *, gen_length, block_length, mask_id, drafts=4, threshold=None):
    """Returns (answer, forwards, draft rows)."""
    x = _canvas(prompt, gen_length, mask_id)
    P, rows = prompt.shape[1], 0
    for bs in range(P, P + gen_length, block_length):
        be = bs + block_length
        logits, lo = fwd(x, bs, be, True)                               # the cache-update forward
        win = x[0, bs:be].clone()
        x0, conf = _predict(logits[bs - lo:be - lo], win == mask_id)
        while True:
            m = int((win == mask_id).sum())
            k = min(drafts, m)
            D = _transfer(win, x0, conf, mask_id, k, threshold)
            if m <= 1:
                win = D[0]
                break
            canv = x.repeat(k, 1)
            canv[:, bs:be] = D
            fwd.n += 1
            rows += k
            if fwd.cache == "none":
                dl = llada_kv_forward(fwd.sd, fwd.cfg, canv)[0][:, bs:be]
            else:
                dl = fwd.cached(canv, bs, be)[:, :be - bs]
            preds = [_predict(dl[j], D[j] == mask_id) for j in range(k)]
            T = torch.stack([_transfer(D[j], preds[j][0], preds[j][1], mask_id, None, threshold)[0] for j in range(k)])
            best = _verify(D, T, mask_id)
            win = D[best]
            x0, conf = preds[best]
            if not (win == mask_id).any():
                break
        x[0, bs:be] = win
    return x[0, P:], fwd.n, rows


# ---- WINO ------------------------------------------------------------------------------------
def wino_generate(sd, cfg, prompt, *, gen_length, block_length, mask_id, threshold=0.7, threshold_back=0.9,
                  max_steps=10_000):
    """decoding_wino (decoding.py:112-198) at temperature 0. Returns (answer, forwards, re-masks)."""
    P, B = prompt.shape[1], block_length
    x_block = torch.full((1, P + gen_length + B), mask_id, dtype=torch.long)
    x_block[:, :P] = prompt
    n, remasks = 0, 0
    for nb in range(gen_length // B):
        lo, hi = P + nb * B, P + (nb + 1) * B
        mask_index = x_block == mask_id
        mask_index[:, hi:] = False
        unmask = torch.zeros_like(mask_index)
        unmask[:, -B:] = ~mask_index[:, lo:hi]
        pos = torch.cat([torch.arange(P + gen_length), torch.arange(lo, hi)])
        att = torch.ones(x_block.shape[1], x_block.shape[1], dtype=torch.bool)
        att[:, -B:] = False
        att[-B:, -B:] = True
        att[-B:, lo:hi] = ~torch.eye(B, dtype=torch.bool)
        last_accept = 30
        while mask_index.any():
            assert n < max_steps, "WINO did not terminate"
            max_accept = min(max(int(mask_index.sum() * 0.7), 5), 20)
            logits = llada_kv_forward(sd, cfg, x_block, positions=pos, attn_mask=att)[0]
            n += 1
            x0 = logits.argmax(-1)
            shift = torch.zeros_like(unmask)
            shift[:, lo:hi] = unmask[:, -B:]
            x0[unmask] = x_block[shift]
            p = F.softmax(logits.to(torch.float64), dim=-1)
            x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1)
            x0 = torch.where(mask_index, x0, x_block)
            confidence = torch.where(mask_index, x0_p, -math.inf)
            confidence_back = torch.where(unmask, x0_p, math.inf)
            transfer = confidence > threshold
            if transfer.sum() > max_accept:
                _, idx = torch.topk(confidence, k=max_accept, largest=True)
                transfer = torch.zeros_like(confidence, dtype=torch.bool)
                transfer.view(-1)[idx] = True
            elif not transfer.any():
                transfer.view(-1)[torch.argmax(confidence)] = True
            x_block[transfer] = x0[transfer]
            num_accept = int(transfer.sum())
            if num_accept > 1:
                remask = confidence_back < threshold_back
                if remask.sum() >= last_accept:
                    flat = torch.zeros(confidence_back.numel(), dtype=torch.bool)
                    _, idx = torch.topk(confidence_back.view(-1), k=last_accept - 1, largest=False)
                    flat[idx] = True
                    remask = flat.view(confidence_back.shape)
            else:
                remask = torch.zeros_like(transfer)
            shift = torch.zeros_like(remask)
            shift[:, lo:hi] = remask[:, -B:]
            x_block[shift] = mask_id
            remasks += int(shift.sum())
            mask_index[transfer] = False
            mask_index[shift] = True
            tshift = torch.zeros_like(transfer)
            tshift[:, -B:] = transfer[:, lo:hi]
            unmask[tshift] = True
            unmask[remask] = False
            last_accept = num_accept
    return x_block[0, P:P + gen_length], n, remasks
