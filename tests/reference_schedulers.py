"""Each adaptive rule written directly from its paper / reference code, one row at a time, with
plain Python loops over an uncached full forward (`logits_fn(x) -> [1, L, V]`), so that the
engine's vectorised schedulers can be checked against them step for step.

All at temperature 0 (argmax), LLaDA-style scoring (softmax confidence of the argmax).
Returns (answer [N] long, forwards).
"""
import torch
import torch.nn.functional as F


def _counts(m, steps):
    # LLaDA get_num_transfer_tokens: m // steps each, the remainder to the earliest steps
    return [m // steps + (1 if i < m % steps else 0) for i in range(steps)]


def _argmax_conf(logits):
    x0 = logits.argmax(-1)
    p = F.softmax(logits.to(torch.float64), -1)
    return x0, p.gather(-1, x0[..., None]).squeeze(-1)


def factor_generate(logits_fn, prompt, *, gen_length, block_length, mask_id, factor=1.0):
    """Fast-dLLM factor rule: commit the largest n with c(j) >= 1 - factor/(j+1) for all 2 <= j <= n."""
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    nfe = 0
    for bs in range(P, P + gen_length, block_length):
        be = bs + block_length
        while (x[0, bs:be] == mask_id).any():
            logits = logits_fn(x)[0, bs:be]
            nfe += 1
            x0, conf = _argmax_conf(logits)
            masked = [i for i in range(block_length) if x[0, bs + i] == mask_id]
            order = sorted(masked, key=lambda i: -float(conf[i]))
            n = 1
            for j in range(2, len(order) + 1):
                if float(conf[order[j - 1]]) >= 1 - factor / (j + 1):
                    n = j
                else:
                    break
            for i in order[:n]:
                x[0, bs + i] = x0[i]
    return x[0, P:], nfe


def credit_generate(logits_fn, prompt, *, gen_length, block_length, mask_id, alpha=0.7, gamma=0.2, beta=0.8,
                    threshold=0.9):
    """CreditDecoding as dInfer's CreditThresholdParallelDecoder runs it (dense credit matrix)."""
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    nfe = 0
    for bs in range(P, P + gen_length, block_length):
        be = bs + block_length
        credit = None
        while (x[0, bs:be] == mask_id).any():
            logits = logits_fn(x)[0, bs:be].float()
            nfe += 1
            masked = x[0, bs:be] == mask_id
            if credit is None:
                credit = torch.zeros_like(logits)
            else:
                credit = credit * beta
            probs = F.softmax(logits, -1)
            for i in range(block_length):
                if masked[i]:
                    top = int(probs[i].argmax())
                    credit[i, top] += float(probs[i, top]) ** gamma
            fused = logits + alpha * torch.log(credit + 1)
            x0 = fused.argmax(-1)
            conf = F.softmax(fused, -1).gather(-1, x0[:, None]).squeeze(-1)
            eligible = masked & (x0 != mask_id)
            best = max(float(conf[i]) for i in range(block_length) if eligible[i])
            cut = min(best - 1e-5, threshold)
            for i in range(block_length):
                if eligible[i] and float(conf[i]) >= cut:
                    x[0, bs + i] = x0[i]
    return x[0, P:], nfe


def prophet_generate(logits_fn, prompt, *, steps, gen_length, block_length, mask_id, positions=None,
                     thresholds=(7.5, 5.0, 2.5)):
    """Prophet's generate_prophet over LLaDA's fixed counts; the gap is averaged over the given answer
    positions, or over every still-masked answer slot when positions is None."""
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    nb = gen_length // block_length
    spb = steps // nb
    forwards = 0
    for bs in range(P, P + gen_length, block_length):
        be = bs + block_length
        counts = _counts(int((x[0, bs:be] == mask_id).sum()), spb)
        for i in range(spb):
            logits = logits_fn(x)[0]
            forwards += 1
            cols = [P + q for q in positions] if positions is not None else \
                [c for c in range(P, P + gen_length) if x[0, c] == mask_id]
            gaps = []
            for c in cols:
                top2 = torch.topk(logits[c].float(), 2).values
                gaps.append(float(top2[0] - top2[1]))
            progress = forwards / steps
            th = thresholds[0] if progress < 0.33 else thresholds[1] if progress < 0.67 else thresholds[2]
            if gaps and sum(gaps) / len(gaps) >= th:
                x0 = logits.argmax(-1)
                for c in range(P, P + gen_length):
                    if x[0, c] == mask_id:
                        x[0, c] = x0[c]
                return x[0, P:], forwards
            x0, conf = _argmax_conf(logits[bs:be])
            masked = [j for j in range(block_length) if x[0, bs + j] == mask_id]
            for j in sorted(masked, key=lambda j: -float(conf[j]))[:counts[i]]:
                x[0, bs + j] = x0[j]
            if not (x[0, bs:be] == mask_id).any():
                break
    return x[0, P:], forwards
