"""Independent references written in the test suite from the published descriptions of
LLaDA (ML-GSAI/LLaDA: modeling_llada.py, generate.py) and Dream (DreamLM/Dream:
modeling_dream.py, generation_utils.py). They work directly on the Hugging Face tensor names
and follow the published code paths step by step (full-canvas forwards, float64 Gumbel,
torch.topk over the whole row), so that dllm's own implementation is checked against them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rms(x, w, eps):
    dt = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dt)


def _rot(x):
    B, H, T, D = x.shape
    a, b = x.view(B, H, T, 2, D // 2).unbind(-2)
    return torch.cat((-b, a), dim=-1)


def llada_logits(sd, cfg, ids):
    """LLaDA forward over the whole sequence, positions 0..T-1, bidirectional, no padding."""
    return llada_kv_forward(sd, cfg, ids)[0]


def dream_logits(sd, cfg, ids, position_ids=None, key_mask=None):
    """Dream forward (Qwen2 layout, bidirectional) with its logit shift: row i <- hidden i-1."""
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    Hkv = cfg["num_key_value_heads"]
    hd = d // H
    B, T = ids.shape
    pos = torch.arange(T)[None].expand(B, T) if position_ids is None else position_ids
    x = F.embedding(ids, sd["model.embed_tokens.weight"])
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    fr = (inv[None, :, None].expand(B, -1, 1) @ pos[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((fr, fr), -1)
    cos, sin = emb.cos().to(x.dtype)[:, None], emb.sin().to(x.dtype)[:, None]
    bias = None
    if key_mask is not None:
        bias = torch.zeros(B, 1, 1, T).masked_fill(~key_mask[:, None, None, :], float("-inf"))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w = lambda n: sd[p + n]
        h = _rms(x, w("input_layernorm.weight"), cfg["rms_norm_eps"])
        q = F.linear(h, w("self_attn.q_proj.weight"), w("self_attn.q_proj.bias")).view(B, T, H, hd).transpose(1, 2)
        k = F.linear(h, w("self_attn.k_proj.weight"), w("self_attn.k_proj.bias")).view(B, T, Hkv, hd).transpose(1, 2)
        v = F.linear(h, w("self_attn.v_proj.weight"), w("self_attn.v_proj.bias")).view(B, T, Hkv, hd).transpose(1, 2)
        q = q * cos + _rot(q) * sin
        k = k * cos + _rot(k) * sin
        k = k[:, :, None].expand(B, Hkv, H // Hkv, T, hd).reshape(B, H, T, hd)
        v = v[:, :, None].expand(B, Hkv, H // Hkv, T, hd).reshape(B, H, T, hd)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        if bias is not None:
            s = s + bias
        att = torch.softmax(s, dim=-1) @ v
        x = x + F.linear(att.transpose(1, 2).reshape(B, T, d), w("self_attn.o_proj.weight"))
        h = _rms(x, w("post_attention_layernorm.weight"), cfg["rms_norm_eps"])
        x = x + F.linear(F.silu(F.linear(h, w("mlp.gate_proj.weight"))) * F.linear(h, w("mlp.up_proj.weight")),
                         w("mlp.down_proj.weight"))
    x = _rms(x, sd["model.norm.weight"], cfg["rms_norm_eps"])
    logits = F.linear(x, sd["lm_head.weight"])
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def llada_generate(logits_fn, prompt, *, steps, gen_length, block_length, mask_id, cfg_scale=0.0):
    """LLaDA's generate() at temperature 0 with low_confidence remasking, batch of one."""
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt
    prompt_index = x != mask_id
    nb = gen_length // block_length
    spb = steps // nb
    for blk in range(nb):
        lo = prompt.shape[1] + blk * block_length
        hi = lo + block_length
        m = (x[:, lo:hi] == mask_id).sum(1, keepdim=True)
        counts = torch.zeros(1, spb, dtype=torch.long) + m // spb
        counts[0, : int(m % spb)] += 1
        for i in range(spb):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un = x.clone()
                un[prompt_index] = mask_id
                lg = logits_fn(torch.cat([x, un]))
                c, u = lg.chunk(2)
                logits = u + (cfg_scale + 1) * (c - u)
            else:
                logits = logits_fn(x)
            x0 = logits.argmax(-1)
            p = F.softmax(logits, dim=-1)
            x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1)
            x0_p[:, hi:] = -float("inf")
            x0 = torch.where(mask_index, x0, x)
            conf = torch.where(mask_index, x0_p, torch.tensor(-float("inf")))
            sel = torch.zeros_like(x0, dtype=torch.bool)
            k = int(counts[0, i])
            if k:
                sel[0, torch.topk(conf[0], k=k).indices] = True
            x[sel] = x0[sel]
    return x[0, prompt.shape[1]:]


def dream_generate(logits_fn, input_ids, *, steps, max_new_tokens, mask_id, eps=1e-3, alg="maskgit_plus"):
    """Dream's diffusion_generate at temperature 0 (alg maskgit_plus | topk_margin | entropy)."""
    x = F.pad(input_ids, (0, max_new_tokens), value=mask_id)
    ts = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        mask_index = x == mask_id
        logits = logits_fn(x)
        ml = logits[mask_index]
        probs = torch.softmax(ml, dim=-1)
        conf, x0 = probs.max(-1)
        if alg == "topk_margin":
            sp = torch.sort(probs, dim=-1, descending=True).values
            conf = sp[:, 0] - sp[:, 1]
        elif alg == "entropy":
            conf = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
        t, s = ts[i], ts[i + 1]
        n_mask = mask_index.sum() / mask_index.shape[0]
        n = int(n_mask * (1 - s / t)) if i < steps - 1 else int(n_mask)
        full = torch.full_like(x, -torch.inf, dtype=logits.dtype)
        full[mask_index] = conf
        if n > 0:
            idx = torch.topk(full, n).indices
            cand = torch.zeros_like(x) + mask_id
            cand[mask_index] = x0
            rows = torch.arange(x.size(0))[:, None].expand_as(idx)
            x[rows, idx] = cand[rows, idx]
    return x[0, input_ids.shape[1]:]


# ---- Fast-dLLM's block-wise caches (NVlabs/Fast-dLLM llada/generate.py), batch of one ---------------
# Its LLaDA attention keeps keys/values *before* RoPE, [B, Hkv, S, hd]. With a prefix cache it
# concatenates the new window's keys after the cached ones (queries at positions S..S+T-1);
# with a dual cache it overwrites the block's columns in the full-length cache in place
# (queries at the block's positions). RoPE is applied to the whole key sequence each call.

def llada_kv_forward(sd, cfg, ids, past=None, replace=None, positions=None, attn_mask=None):
    """-> (logits [B, T, V], [(k, v) per layer] pre-RoPE over all key columns). Without a cache,
    positions [T] (default 0..T-1) and a [T, T] bool attn_mask (True = may attend) can be given, as
    modeling_llada.py takes position_ids and attention_mask (WINO's shadow block)."""
    d, H = cfg["d_model"], cfg["n_heads"]
    Hkv = cfg.get("n_kv_heads") or H
    hd = d // H
    B, T = ids.shape
    x = F.embedding(ids, sd["model.transformer.wte.weight"])
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
    present = []
    for i in range(cfg["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        w = lambda n: sd[p + n]
        b = lambda n: sd.get(p + n)   # q/k/v biases when include_qkv_bias
        h = _rms(x, w("attn_norm.weight"), cfg["rms_norm_eps"])
        q = F.linear(h, w("q_proj.weight"), b("q_proj.bias")).view(B, T, H, hd).transpose(1, 2)
        k = F.linear(h, w("k_proj.weight"), b("k_proj.bias")).view(B, T, Hkv, hd).transpose(1, 2)
        v = F.linear(h, w("v_proj.weight"), b("v_proj.bias")).view(B, T, Hkv, hd).transpose(1, 2)
        if past is not None and replace is None:
            k, v = torch.cat([past[i][0], k], 2), torch.cat([past[i][1], v], 2)
            q_end = k.shape[2]
        elif past is not None:
            pk, pv = past[i][0].clone(), past[i][1].clone()
            pk[:, :, replace[0]:replace[1]], pv[:, :, replace[0]:replace[1]] = k, v
            k, v, q_end = pk, pv, replace[1]
        else:
            q_end = T
        present.append((k, v))
        S = k.shape[2]
        at = torch.arange(S, dtype=torch.float) if positions is None else positions.float()
        ang = torch.einsum("i,j->ij", at, inv)
        ang = torch.cat((ang, ang), -1)
        sin, cos = ang.sin()[None, None], ang.cos()[None, None]
        qs, qc = sin[:, :, q_end - T:q_end], cos[:, :, q_end - T:q_end]
        q = (q.float() * qc + _rot(q.float()) * qs).to(q.dtype)
        kr = (k.float() * cos + _rot(k.float()) * sin).to(k.dtype)
        kr = kr.repeat_interleave(H // Hkv, dim=1)
        vr = v.repeat_interleave(H // Hkv, dim=1)
        s = (q @ kr.transpose(-1, -2)) / math.sqrt(hd)
        if attn_mask is not None:
            s = s.masked_fill(~attn_mask, float("-inf"))
        att = torch.softmax(s, dim=-1) @ vr
        x = x + F.linear(att.transpose(1, 2).reshape(B, T, d), w("attn_out.weight"))
        h = _rms(x, w("ff_norm.weight"), cfg["rms_norm_eps"])
        x = x + F.linear(F.silu(F.linear(h, w("ff_proj.weight"))) * F.linear(h, w("up_proj.weight")), w("ff_out.weight"))
    x = _rms(x, sd["model.transformer.ln_f.weight"], cfg["rms_norm_eps"])
    return F.linear(x, sd["model.transformer.ff_out.weight"]), present


def _fast_dllm_pick(logits, mask_index, x, k, threshold=None):
    """get_transfer_index at temperature 0, low_confidence (float64 softmax): the k most
    confident masked slots, or with a threshold the top-1 plus every slot >= threshold."""
    x0 = logits.argmax(-1)
    p = F.softmax(logits.to(torch.float64), dim=-1)
    x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1)
    x0 = torch.where(mask_index, x0, x)
    conf = torch.where(mask_index, x0_p, torch.tensor(-float("inf"), dtype=torch.float64))
    sel = torch.zeros_like(x0, dtype=torch.bool)
    if threshold is not None:
        k = int(mask_index.sum())
    if k:
        idx = torch.topk(conf[0], k=k).indices
        sel[0, idx] = True
        if threshold is not None:
            for j in range(1, k):
                if conf[0, idx[j]] < threshold:
                    sel[0, idx[j]] = False
    return x0, sel


def fast_dllm_generate(sd, cfg, prompt, *, steps, gen_length, block_length, mask_id, cache, threshold=None):
    """generate (cache "none") / generate_with_prefix_cache / generate_with_dual_cache
    -> (answer, nfe, noop forwards among them)."""
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt
    nb = gen_length // block_length
    spb = steps // nb
    nfe = noop = 0
    for blk in range(nb):
        bs = prompt.shape[1] + blk * block_length
        be = bs + block_length
        m = (x[:, bs:be] == mask_id).sum(1, keepdim=True)
        counts = torch.zeros(1, spb, dtype=torch.long) + m // spb
        counts[0, : int(m % spb)] += 1
        logits, past = llada_kv_forward(sd, cfg, x)
        mask_index = x == mask_id
        mask_index[:, be:] = False
        x0, sel = _fast_dllm_pick(logits, mask_index, x, int(counts[0, 0]), threshold)
        x[sel] = x0[sel]
        nfe += 1
        if cache == "prefix":
            past = [(k[:, :, :bs], v[:, :, :bs]) for k, v in past]
        i = 1
        # the cached functions loop "forward, commit, stop if the block is full": when the
        # refresh step already filled the block they still spend one forward that commits
        # nothing (counted in noop; dllm skips it). The plain generate checks after its forward.
        while cache != "none" or (x[:, bs:be] == mask_id).any():
            nfe += 1
            if not (x[:, bs:be] == mask_id).any():
                noop += 1
            if cache == "none":
                window = x[:, bs:be]
                logits = llada_kv_forward(sd, cfg, x)[0][:, bs:be]
                mask_index = window == mask_id
            elif cache == "prefix":
                window = x[:, bs:]
                logits, _ = llada_kv_forward(sd, cfg, window, past=past)
                mask_index = window == mask_id
                mask_index[:, block_length:] = False
            else:
                window = x[:, bs:be]
                logits, _ = llada_kv_forward(sd, cfg, window, past=past, replace=(bs, be))
                mask_index = window == mask_id
            k = int(counts[0, i]) if threshold is None and i < spb else 0
            x0, sel = _fast_dllm_pick(logits, mask_index, window, k, threshold)
            window = window.clone()
            window[sel] = x0[sel]
            x[:, bs:bs + window.shape[1]] = window
            i += 1
            if not (x[:, bs:be] == mask_id).any():
                break
    return x[0, prompt.shape[1]:], nfe, noop
