"""Reference forwards and decoding loops of the block-diffusion families, written in the test suite
from the authors' code (file:line per docs/specs/block-diffusion.md; snapshots named there).

Models (one interface: prefill(ids) writes the cache; step(ids, store) forwards a block at the
positions after the cache, attending to the cache and to itself, and stores it or not):
  HFBlockModel   transformers' Qwen3ForCausalLM (SDAR: modeling_sdar.py is Qwen3 plus a caller-supplied
                 mask and store_kv, :534-555) or Qwen2ForCausalLM (Fast-dLLM v2), DynamicCache; a
                 non-storing step appends then crops (SDAR's store_kv=False concatenates without storing)
  LLaDA2Model    LLaDA2-MoE written out from dInfer modeling_llada2_moe.py (no CPU class exists; vLLM's
                 FusedMoE is replaced by its definition, a per-expert loop)
Loops (batch 1, as the references are):
  sdar_generate       SDAR generate.py:57-202 block_diffusion_generate
  dinfer_generate     dInfer generate_uniform.py:929-966 + parallel_strategy.py:263-312 (T = 0)
  fast_dllm_generate  Fast-dLLM v2 modeling.py generate + sample_with_top_p
Deviations, each the documented dllm behaviour (docs/specs/block-diffusion.md section 5): SDAR's
quota is clamped to the masks left, T = 0 is the greedy limit, entropy_bounded is the EB-sampler;
dInfer's no-op unrolled forwards are skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from tests.helpers import load_state
from tests.reference import _rms
from tests.reference import _rot as _rotate_half


def block_mask(T: int, B: int, offset: int = 0):
    """[T, offset + T] bool: query offset + i sees key j iff j // B <= (offset + i) // B."""
    q = torch.arange(offset, offset + T)
    k = torch.arange(offset + T)
    return k[None, :] // B <= q[:, None] // B


class HFBlockModel:
    """SDAR (Qwen3 class) or Fast-dLLM v2 (Qwen2 class) with a DynamicCache, positions = cache length."""

    def __init__(self, path, block: int):
        from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

        cfg = json.loads((Path(path) / "config.json").read_text())
        keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "rms_norm_eps", "rope_theta", "max_position_embeddings", "tie_word_embeddings")
        kw = {k: cfg[k] for k in keys}
        if cfg["model_type"] == "sdar":
            hf_cfg, cls = Qwen3Config(head_dim=cfg["head_dim"], attention_bias=cfg["attention_bias"], **kw), Qwen3ForCausalLM
        else:
            hf_cfg, cls = Qwen2Config(**kw), Qwen2ForCausalLM
        hf_cfg._attn_implementation = "sdpa"
        self.model = cls(hf_cfg).eval()
        self.model.load_state_dict(load_state(Path(path))[0], strict=False)
        self.cfg, self.block, self._cache_cls = hf_cfg, block, DynamicCache
        self.reset()

    def reset(self):
        self.cache = self._cache_cls(config=self.cfg)
        self.forwards = self.stores = 0    # forwards, and those that only write the cache (prefill, store)

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def _run(self, ids, mask):
        n = self.length
        pos = torch.arange(n, n + len(ids))[None]
        self.forwards += 1
        with torch.no_grad():
            return self.model(torch.tensor([ids]), attention_mask=mask[None, None], position_ids=pos,
                              past_key_values=self.cache, use_cache=True).logits[0]

    def prefill(self, ids):
        """Block-causal forward of whole prompt blocks, stored (SDAR generate.py:95-106)."""
        self.stores += 1
        return self._run(ids, block_mask(len(ids), self.block, self.length))

    def step(self, ids, store: bool):
        """The active block against the cache, bidirectional inside (SDAR generate.py:123-137)."""
        self.stores += store
        logits = self._run(ids, torch.ones(len(ids), self.length + len(ids), dtype=torch.bool))
        if not store:
            self.cache.crop(-len(ids))
        return logits

    def truncate(self, n: int):
        if self.length > n:
            self.cache.crop(n - self.length)


# ---- LLaDA2-MoE (dInfer modeling_llada2_moe.py) ------------------------------------------------------

def _mlp(x, sd, p):    # LLaDA2MoeMLP, :483-484
    return F.linear(F.silu(F.linear(x, sd[p + "gate_proj.weight"])) * F.linear(x, sd[p + "up_proj.weight"]),
                    sd[p + "down_proj.weight"])


# LLaDA2MoeRMSNorm (:381-386) is tests/reference.py's _rms; rotate_half (:427-431) its _rot


def llada2_route(h, gate_w, bias, cfg):
    """LLaDA2MoeGate.forward (:533-548) with group_limited_topk (:510-531) -> (idx [N, k], weight [N, k])."""
    logits = F.linear(h.float(), gate_w.float())
    scores = torch.sigmoid(logits.float())
    routing = scores + bias
    N, G = routing.shape[0], cfg["n_group"]
    group_scores = routing.view(N, G, -1).topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=cfg["topk_group"], dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(N, G, cfg["num_experts"] // G).reshape(N, -1)
    _, idx = torch.topk(routing.masked_fill(~score_mask.bool(), float("-inf")), k=cfg["num_experts_per_tok"], dim=-1)
    w = torch.gather(scores, 1, idx)
    if cfg["num_experts_per_tok"] > 1:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    return idx, w * cfg["routed_scaling_factor"]


class LLaDA2Model:
    """LLaDA2MoeModelLM's forward (:1425-1642, :1848-1921) over explicit per-layer (k, v) caches."""

    def __init__(self, path, block: int):
        self.cfg = json.loads((Path(path) / "config.json").read_text())
        self.sd, self.block = load_state(Path(path))[0], block
        self.reset()

    def reset(self):
        self.kv = [None] * self.cfg["num_hidden_layers"]
        self.forwards = self.stores = 0    # forwards, and those that only write the cache (prefill, store)

    @property
    def length(self) -> int:
        return 0 if self.kv[0] is None else self.kv[0][0].shape[2]

    def truncate(self, n: int):
        self.kv = [None if kv is None or n == 0 else (kv[0][:, :, :n], kv[1][:, :, :n]) for kv in self.kv]

    def forward(self, ids, mask, store: bool):
        self.stores += store
        cfg, sd = self.cfg, self.sd
        eps, H, Hkv, hd = cfg["rms_norm_eps"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        rot = int(hd * cfg["partial_rotary_factor"])
        T, n = len(ids), self.length
        x = F.embedding(torch.tensor([ids]), sd["model.word_embeddings.weight"])
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, rot, 2, dtype=torch.int64).float() / rot))
        fr = torch.arange(n, n + T).float()[:, None] * inv[None]
        emb = torch.cat((fr, fr), -1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)          # :413-423
        new_kv = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = _rms(x, sd[p + "input_layernorm.weight"], eps)
            qkv = F.linear(h, sd[p + "attention.query_key_value.weight"], sd.get(p + "attention.query_key_value.bias"))
            q, k, v = qkv.view(1, T, H + 2 * Hkv, hd).split([H, Hkv, Hkv], dim=-2)   # :704-709
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            q = _rms(q, sd[p + "attention.query_layernorm.weight"], eps)              # :714-716
            k = _rms(k, sd[p + "attention.key_layernorm.weight"], eps)
            q = torch.cat((q[..., :rot] * cos + _rotate_half(q[..., :rot]) * sin, q[..., rot:]), -1)   # :456-467
            k = torch.cat((k[..., :rot] * cos + _rotate_half(k[..., :rot]) * sin, k[..., rot:]), -1)
            if self.kv[i] is not None:
                k, v = torch.cat((self.kv[i][0], k), 2), torch.cat((self.kv[i][1], v), 2)
            new_kv.append((k, v))
            kk = k[:, :, None].expand(1, Hkv, H // Hkv, n + T, hd).reshape(1, H, n + T, hd)
            vv = v[:, :, None].expand(1, Hkv, H // Hkv, n + T, hd).reshape(1, H, n + T, hd)
            o = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)           # :1077-1085
            o = F.linear(o.transpose(1, 2).reshape(1, T, H * hd), sd[p + "attention.dense.weight"],
                         sd.get(p + "attention.dense.bias"))
            x = x + o
            h = _rms(x, sd[p + "post_attention_layernorm.weight"], eps)
            if p + "mlp.gate.weight" not in sd:
                x = x + _mlp(h, sd, p + "mlp.")
                continue
            flat = h.view(T, -1)
            idx, w = llada2_route(flat, sd[p + "mlp.gate.weight"], sd[p + "mlp.gate.expert_bias"], cfg)
            y = torch.zeros(T, flat.shape[1])
            for e in idx.unique().tolist():      # FusedMoE's definition: sum_k w_k expert_{idx_k}(h)
                tok, slot = (idx == e).nonzero(as_tuple=True)
                y.index_add_(0, tok, w[tok, slot, None] * _mlp(flat[tok], sd, p + f"mlp.experts.{e}."))
            y = y.to(h.dtype).view(1, T, -1)
            if cfg.get("num_shared_experts"):
                y = y + _mlp(h, sd, p + "mlp.shared_experts.")
            x = x + y
        if store:
            self.kv = new_kv
        self.forwards += 1
        return F.linear(_rms(x, sd["model.norm.weight"], eps), sd["lm_head.weight"]).float()[0]

    def prefill(self, ids):
        return self.forward(ids, block_mask(len(ids), self.block, self.length), True)

    def step(self, ids, store: bool):
        return self.forward(ids, None, store)


# ---- decoding loops --------------------------------------------------------------------------------

def _sdar_sample(logits, temperature, top_k, top_p):
    """sample_with_temperature_topk_topp (generate.py:29-46); T = 0: argmax with softmax confidence."""
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, top_k).values[..., -1, None]
        logits = torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)
    if top_p < 1.0:
        srt, order = torch.sort(logits, descending=True)
        drop = torch.cumsum(F.softmax(srt, -1), -1) > top_p
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    probs = F.softmax(logits, -1)
    tok = probs.argmax(-1) if temperature == 0 else torch.multinomial(probs, 1)[:, 0]
    return tok, probs.gather(-1, tok[:, None])[:, 0], probs


def sdar_generate(model, prompt, mask_id, gen_length, block_length, denoising_steps, temperature=0.0, top_k=0,
                  top_p=1.0, remasking="low_confidence_dynamic", threshold=0.85, eb_threshold=0.35, stop_ids=()):
    """generate.py:57-202 for one prompt -> the whole canvas as a list (prompt + every decoded block)."""
    B, P = block_length, len(prompt)
    num_blocks = (P + gen_length + B - 1) // B
    x = torch.full((num_blocks * B,), mask_id)
    x[:P] = torch.tensor(prompt)
    model.reset()
    if P // B:
        model.prefill(x[:P // B * B].tolist())
    quota = [B // denoising_steps + (1 if s < B % denoising_steps else 0) for s in range(denoising_steps)]
    for nb in range(P // B, num_blocks):
        cur = x[nb * B:(nb + 1) * B].clone()
        for step in range(denoising_steps + B + 1):   # generate.py:119 (+B: entropy_bounded may need more)
            masked = cur == mask_id
            if not masked.any():
                model.step(cur.tolist(), store=True)
                break
            logits = model.step(cur.tolist(), store=False)
            x0, p0, probs = _sdar_sample(logits, temperature, top_k, top_p)
            conf = torch.where(masked, p0, torch.tensor(float("-inf")))
            q = min(quota[min(step, denoising_steps - 1)], int(masked.sum())) or 1   # clamped (spec section 2)
            if remasking == "sequential":
                first = int(masked.nonzero()[0])
                take = torch.zeros_like(masked)
                take[first:first + q] = True
            elif remasking == "low_confidence_static":
                take = torch.zeros_like(masked)
                take[torch.topk(conf, q).indices] = True
            elif remasking == "low_confidence_dynamic":
                high = conf > threshold
                take = high.clone()
                if int(high.sum()) < q:
                    take = torch.zeros_like(masked)
                    take[torch.topk(conf, q).indices] = True
            else:   # entropy_bounded as the EB-sampler (the reference's branch is broken: spec section 2)
                pc = probs.clamp_min(1e-12)
                ent = torch.where(masked, -(pc * pc.log()).sum(-1), torch.tensor(float("inf")))
                srt, order = torch.sort(ent)
                k = int(torch.searchsorted(torch.cumsum(srt, 0), torch.tensor(eb_threshold), right=False))
                take = torch.zeros_like(masked)
                take[order[:max(1, min(k, int(masked.sum())))]] = True
            cur[take] = x0[take]
        x[nb * B:(nb + 1) * B] = cur
        if any(s in x[P:].tolist() for s in stop_ids):   # generate.py:199-200
            return x[:(nb + 1) * B].tolist()
    return x.tolist()


def dinfer_generate(model, prompt, mask_id, eos_id, gen_length, block_length, threshold=0.9):
    """BlockDiffusionLLM.generate (generate_uniform.py:929-966) with ThresholdParallelDecoder at T = 0."""
    B, P = block_length, len(prompt)
    num_blocks = (P + gen_length + B - 1) // B
    x = torch.full((num_blocks * B,), mask_id)
    x[:P] = torch.tensor(prompt)
    model.reset()
    model.prefill(x[:max(P // B * B, B)].tolist())          # :953-956, at least one block (masks included)
    for nb in range(P // B, num_blocks):
        s, e = nb * B, (nb + 1) * B
        model.truncate(s)        # the vllm backend replaces the block's columns at every step (utils.py:363-365)
        while (x[s:e] == mask_id).any():
            logits = model.step(x[s:e].tolist(), store=False).float()
            x0 = logits.argmax(-1)
            p = F.softmax(logits, -1).gather(-1, x0[:, None])[:, 0]
            cand = (x[s:e] == mask_id) & (x0 != mask_id)                 # parallel_strategy.py:278-279
            assert cand.any(), "dInfer would never finish this block (every argmax is the mask token)"
            conf = torch.where(cand, p, torch.tensor(float("-inf")))
            cut = (conf.max() - 1e-5).clamp(-1000, threshold)            # :283-284
            x[s:e] = torch.where(conf >= cut, x0, x[s:e])
        model.step(x[s:e].tolist(), store=True)                         # :214-227
        if (x[s:e] == eos_id).any():                                     # :231-233, 963-964
            x[e:] = eos_id
            break
    return x.tolist()


def fast_dllm_generate(model, prompt, mask_id, stop_token, max_new_tokens, block_size, small_block_size=8,
                       threshold=0.9):
    """Fast_dLLM_QwenForCausalLM.generate (modeling.py) at T = 0 -> prompt + generated tokens."""
    B = block_size
    ids = list(prompt)
    model.reset()
    if len(ids) > B:
        logits = model.prefill(ids[:len(ids) // B * B])
        if len(ids) % B == 0:
            ids.append(int(logits[-1].argmax()))
    P0 = len(prompt)
    for _ in range(max_new_tokens // B):
        if stop_token in ids[P0:]:
            break
        plen = len(ids)
        x = torch.tensor(ids + [mask_id] * (B - plen % B))

        def stopped():   # the stop token committed with no mask before it
            tail = x[plen:].tolist()
            return stop_token in tail and mask_id not in tail[:tail.index(stop_token)]
        while True:
            if stopped():
                break
            if not (x[-B:] == mask_id).any():
                logits = model.step(x[-B:].tolist(), store=True)
                x = torch.cat((x, logits[-1].argmax()[None]))
                break
            for sb in range(B // small_block_size):
                lo, hi = len(x) - B + sb * small_block_size, len(x) - B + (sb + 1) * small_block_size
                while (x[lo:hi] == mask_id).any() and not stopped():
                    logits = model.step(x[-B:].tolist(), store=False)
                    logits = torch.cat((logits[:1], logits[:-1]))[lo - (len(x) - B):hi - (len(x) - B)]
                    p = F.softmax(logits, -1)                            # sample_with_top_p at T = 0
                    x1 = p.argmax(-1)
                    conf = torch.where(x[lo:hi] == mask_id, p.gather(-1, x1[:, None])[:, 0], torch.tensor(float("-inf")))
                    take = conf > threshold
                    take[conf.argmax()] = True
                    take &= x[lo:hi] == mask_id
                    x[lo:hi] = torch.where(take, x1, x[lo:hi])
        ids = x.tolist()
    return ids
