"""The seed decoders that need engine capabilities, written from their authors' code one request at
a time (as tests/reference_seed_decoders.py, whose Forwards and helpers they use). Temperature 0,
LLaDA-style models.

Sources (snapshots named in docs/specs/scheduler-pack.md):
  adablock   lgxi24/AdaBlock-dLLM llada/generate_adablock.py:39-158 (no cache), :161-238 (prefix),
             :241-313 (dual), get_transfer_index :315-361 (threshold branch)
  freedave   cychomatica/FreeDave generation/core.py:700-1104 (block_decode_with_full_attention_FreeDave,
             draft_mode "batch_expanding", LLaDA: not AR-adapted), token_transfer :189-302 (alg_temp None,
             token_per_step 1), draft verification :313-367 (the subset rule, as its reference loop)
  wino       Feng-Hong/WINO-DLLM LLaDA/decoding.py:112-198 (decoding_wino)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tests.reference import llada_kv_forward
from tests.reference_seed_decoders import _canvas


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
