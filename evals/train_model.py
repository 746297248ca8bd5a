"""Train dllm-tiny: a small LLaDA-architecture masked-diffusion model, from scratch, on the evaluation
suite's synthetic tasks (split="train" only; evaluation draws split="eval", a disjoint seed stream),
saved in LLaDA's published layout so that `dllm.LLM(DIR)` loads it through the real loader.

    python -m dllm.evals.train_model --output models/dllm-tiny --minutes 35 --seed 0

Data: one user turn -> answer, through the chat template below, no one-shot turn. Answer region =
answer tokens + EOS x (1..16), so the model learns to fill the unused tail of the canvas with EOS.
Objective (LLaDA SFT): per sequence t ~ U(eps, 1]; each answer slot is replaced by the mask id with
probability t (the prompt never); loss = sum over masked slots of CE / t, / (answer slots in batch).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import time
from collections import Counter
from pathlib import Path

EOS, USER, ASSISTANT, MASK = "<|endoftext|>", "<|user|>", "<|assistant|>", "<|mdm_mask|>"
# <|user|>\n{content}\n<|assistant|>\n{content}<|endoftext|> ... (+ <|assistant|>\n to generate)
CHAT_TEMPLATE = ("{%- for m in messages -%}"
                 "{%- if m['role'] == 'assistant' -%}{{ '<|assistant|>\\n' + m['content'] + '<|endoftext|>' }}"
                 "{%- else -%}{{ '<|user|>\\n' + m['content'] + '\\n' }}{%- endif -%}"
                 "{%- endfor -%}"
                 "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}")
# share of the pool per task; list tasks draw n uniformly from LIST_N. copy/reverse/sort (n = 5) are
# the quality targets, sort (ranking 36 last names) the hardest, so it gets the largest share.
MIX = {"copy": 0.12, "reverse": 0.18, "sort": 0.31, "shuffle": 0.02, "insert_index": 0.02,
       "remove_index": 0.02, "replace_index": 0.02, "insert_random": 0.02, "remove_random": 0.02,
       "replace_random": 0.02, "json_fill": 0.08, "date": 0.03, "number": 0.03, "latin_square": 0.03,
       "sudoku": 0.03, "words_to_sentence": 0.05}
LIST_N, WORDS_N = range(3, 8), range(1, 9)
MAX_EXTRA_EOS, EPS = 16, 1e-3


def _chunk(job):
    """Worker: examples [lo, hi) of (task, n) in the train split, as (prompt, reference) pairs."""
    from dllm.evals.tasks import get_task
    from dllm.evals.tasks.base import example_rng
    name, n, seed, lo, hi = job
    t = get_task(name)
    n = t.default_n if n is None else n
    return [(e.prompt, e.reference) for e in (t.example(n, example_rng(name, n, seed, i, "train")) for i in range(lo, hi))]


def make_pool(size: int, seed: int, workers: int = 1, mix: dict | None = None,
              list_n=LIST_N) -> list[tuple[str, str]]:
    """(prompt, reference) pairs, deterministic in (size, seed, mix, list_n) whatever the worker count,
    shuffled. mix: task -> share (default MIX); list tasks draw n from list_n (repeats weigh more)."""
    from dllm.evals.tasks import LIST_TASKS

    jobs = []
    for task, share in (mix or MIX).items():
        ns = list_n if task in LIST_TASKS else WORDS_N if task == "words_to_sentence" else [None]
        for n, k in sorted(Counter(ns).items(), key=lambda nk: (nk[0] is None, nk[0])):
            per_n = max(1, round(size * share * k / len(ns)))
            jobs += [(task, n, seed, lo, min(per_n, lo + 20_000)) for lo in range(0, per_n, 20_000)]
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as ex:
            parts = ex.map(_chunk, jobs)
    else:
        parts = list(map(_chunk, jobs))
    pool = [pair for part in parts for pair in part]
    random.Random(seed).shuffle(pool)
    return pool


def write_tokenizer(out: Path, texts: list[str], vocab: int) -> dict:
    """Byte-level BPE (digits split one per token) + the four specials at the end of the vocab."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab - 4, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in (EOS, USER, ASSISTANT, MASK)])
    tok.save(str(out / "tokenizer.json"))
    entry = lambda s: {"content": s, "lstrip": False, "normalized": False, "rstrip": False,  # noqa: E731
                       "single_word": False, "special": True}
    ids = {s: tok.token_to_id(s) for s in (EOS, USER, ASSISTANT, MASK)}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": {str(i): entry(s) for s, i in ids.items()}, "chat_template": CHAT_TEMPLATE,
        "eos_token": EOS, "pad_token": EOS, "mask_token": MASK, "clean_up_tokenization_spaces": False,
        "model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2))
    return {"vocab_size": tok.get_vocab_size(with_added_tokens=True), "eos": ids[EOS], "mask": ids[MASK]}


def llada_config(a, tok: dict) -> dict:
    """config.json with LLaDA's (OLMo) field names; the flags are the ones dllm's llada_args reads."""
    return {"architectures": ["LLaDAModelLM"], "model_type": "llada", "block_type": "llama",
            "activation_type": "silu", "layer_norm_type": "rms", "rms_norm_eps": 1e-5, "alibi": False,
            "rope": True, "rope_theta": 10000.0, "rope_full_precision": True, "include_bias": False,
            "include_qkv_bias": False, "weight_tying": False, "scale_logits": False, "input_emb_norm": False,
            "d_model": a.dim, "n_layers": a.layers, "n_heads": a.heads, "n_kv_heads": a.heads,
            "mlp_hidden_size": a.mlp, "mlp_ratio": a.mlp / a.dim, "vocab_size": tok["vocab_size"],
            "embedding_size": tok["vocab_size"], "max_sequence_length": 2048, "mask_token_id": tok["mask"],
            "eos_token_id": tok["eos"], "pad_token_id": tok["eos"], "torch_dtype": "float16", "use_cache": False}


def hidden(model, ids, valid):
    """Transformer.forward up to the final norm, with gradients (forward itself is no_grad).
    ids, valid [B, T] -> h [B, T, dim]; padding keys (valid False) are never attended."""
    import torch

    from dllm.models.context import DenseContext
    T = ids.shape[1]
    pos = torch.arange(T, device=ids.device).expand_as(ids)   # right padding: positions are 0..T-1
    cos, sin = model.rotary(pos, T)                            # [B, T, 1, head_dim]
    h = model.tok_embeddings(ids)
    ctx = DenseContext(None, valid[:, None, None, :], causal=False)
    for layer in model.layers:
        h = layer(h, cos, sin, ctx)
    return h


def encode_pool(pool, tok, eos: int, device):
    """Tokenize every pair once: ids [N, L] (prompt | answer | EOS padding), plen, alen [N] (alen
    counts one EOS). Prompts go through the chat template exactly as inference renders them; the
    first pairs are checked against Tokenizer.encode_chat."""
    import torch
    prompts = ["<|user|>\n" + p + "\n<|assistant|>\n" for p, _ in pool]
    for (p, _), text in zip(pool[:32], prompts):
        if tok.encode_chat([{"role": "user", "content": p}]) != tok.encode(text, add_special_tokens=False):
            raise RuntimeError("the chat template and the training prompt format disagree")
    P = [e.ids for e in tok._tok.encode_batch(prompts, add_special_tokens=False)]
    A = [e.ids + [eos] for e in tok._tok.encode_batch([r for _, r in pool], add_special_tokens=False)]
    plen, alen = torch.tensor([len(x) for x in P]), torch.tensor([len(x) for x in A])
    lens = plen + alen                                                                  # [N]
    flat = torch.tensor([t for p, a in zip(P, A) for t in p + a], dtype=torch.int32)    # [sum(lens)]
    rows = torch.repeat_interleave(torch.arange(len(pool)), lens)
    cols = torch.arange(len(flat)) - torch.repeat_interleave(lens.cumsum(0) - lens, lens)
    ids = torch.full((len(pool), int(lens.max()) + MAX_EXTRA_EOS), eos, dtype=torch.int32)
    ids[rows, cols] = flat
    return ids.to(device), plen, alen


def batches(lengths, B: int, rng: random.Random):
    """Endless index batches: shuffle, sort chunks of 64 batches by length (little padding),
    shuffle the batches."""
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        for c in range(0, len(order), 64 * B):
            chunk = sorted(order[c:c + 64 * B], key=lengths.__getitem__)
            group = [chunk[j:j + B] for j in range(0, len(chunk), B)]
            rng.shuffle(group)
            yield from group


def make_batch(ids, plen, alen, rows, rng: random.Random):
    """Rows of the encoded pool -> x, valid, answer [B, T] on ids' device: chat prompt | answer |
    EOS x (1..16) | pad. The extra EOS teach the model to fill the unused tail of the canvas with EOS.
    Lengths are host tensors, so building a batch never waits for the device."""
    import torch
    extra = torch.tensor([rng.randint(0, MAX_EXTRA_EOS - 1) for _ in rows])   # + the EOS in alen
    p, end = plen[rows], plen[rows] + alen[rows] + extra                       # [B]
    T = int(end.max())
    dev = ids.device
    x = ids[torch.tensor(rows, device=dev), :T].long()
    pos = torch.arange(T, device=dev)[None]
    valid = pos < end.to(dev)[:, None]
    answer = valid & (pos >= p.to(dev)[:, None])
    return x, valid, answer


def diffusion_loss(model, x, valid, answer, mask_id: int, power: float = 1.0):
    """LLaDA SFT loss: E_{t ~ U(eps, 1]} [sum over masked answer slots of CE / t] / (answer slots).
    u is stratified over the batch ((r + rand) / B); t = eps + (1 - eps) u^power. power 1 is LLaDA's
    uniform t; power > 1 draws more low-mask-ratio batches and the importance weight
    power * u^(power - 1) keeps the expected loss unchanged."""
    import torch
    import torch.nn.functional as F
    B, T = x.shape
    u = (torch.arange(B, device=x.device) + torch.rand(B, device=x.device)) / B                # [B]
    t = EPS + (1 - EPS) * u ** power                                                            # [B]
    w = power * u ** (power - 1) / t                          # 1/t times the importance weight   [B]
    masked = answer & (torch.rand(B, T, device=x.device) < t[:, None])                          # [B, T]
    h = hidden(model, torch.where(masked, mask_id, x), valid)
    logits = model.output(model.norm(h[masked])).float()    # LM head only on the M masked slots: [M, V]
    ce = F.cross_entropy(logits, x[masked], reduction="none")                                   # [M]
    loss = (ce * w[:, None].expand(B, T)[masked]).sum() / answer.sum()
    return loss, ce.detach().sum(), masked.sum()   # (objective, summed masked-slot CE, masked count)


def save_weights(model, path: Path):
    """dllm parameter names -> LLaDA's published names (the loader's map, inverted), stored as float16."""
    import torch
    from safetensors.torch import save_file
    from dllm.models.loader import WEIGHT_MAPS

    inverse = {dst: src for src, dst in WEIGHT_MAPS["llada"].items()}
    out = {}
    for name, p in model.named_weights().items():
        m = re.match(r"layers\.(\d+)\.", name)
        key = inverse[name.replace(m.group(0), "layers.{i}.")].replace("{i}", m.group(1)) if m else inverse[name]
        out[key] = p.detach().to(torch.float16).contiguous()
    save_file(out, str(path), metadata={"format": "pt"})


def evaluate(path, tasks=("copy", "reverse", "sort"), n=5, samples=30, seed=0, split="eval", device="cpu") -> dict:
    """Exact-answer accuracy (held out: split="eval"), greedy, one token per forward, zero shots."""
    from dllm import LLM, SamplingParams
    from dllm.evals.tasks import get_task, make_examples

    llm, acc = LLM(path, device=device, dtype="float32"), {}
    for name in tasks:
        exs = make_examples(name, n, samples, seed, split=split)
        slots = max(len(llm.tokenizer.encode(e.reference, add_special_tokens=False)) for e in exs) + 8
        outs = llm.generate([e.prompt for e in exs], SamplingParams(max_new_tokens=slots, steps=slots),
                            apply_chat_template=True)
        acc[name] = sum(get_task(name).score(e, o.text).correct for e, o in zip(exs, outs)) / samples
    return acc


def save(model, out: Path, cfg: dict, tok_info: dict):
    save_weights(model, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": tok_info["eos"], "pad_token_id": tok_info["eos"], "mask_token_id": tok_info["mask"]}))


def main(args) -> int:
    import torch  # imported here, not at the top: building the CLI parser stays torch-free
    from dllm.errors import DllmError
    from dllm.models.config import llada_args
    from dllm.models.loader import load_model
    from dllm.models.transformer import Transformer
    from dllm.tokenizer import Tokenizer

    _check_args(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if any(p.name not in ("model.safetensors", "learned_filter.safetensors") for p in out.glob("*.safetensors*")):
        raise DllmError(f"{out} holds other safetensors files; give an empty or fresh --output directory.")
    t0 = time.time()
    mix = dict(MIX)
    for item in filter(None, (args.mix or "").split(",")):
        task, _, share = item.partition("=")
        mix[task] = float(share)
    list_n = [int(n) for n in args.list_n.split(",")] if args.list_n else LIST_N
    pool = make_pool(args.pool, args.seed, args.workers, {k: v for k, v in mix.items() if v > 0}, list_n)
    t_pool = time.time() - t0
    if args.init:       # continue from a checkpoint: its tokenizer and shape, fresh optimizer
        init = Path(args.init)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            if init.resolve() != out.resolve():
                (out / f).write_bytes((init / f).read_bytes())
        cfg = json.loads((init / "config.json").read_text())
        tok_info = {"vocab_size": cfg["vocab_size"], "eos": cfg["eos_token_id"], "mask": cfg["mask_token_id"]}
        model = load_model(init, device=device, dtype=torch.float32)[0]
        for a, key in (("dim", "d_model"), ("layers", "n_layers"), ("heads", "n_heads"), ("mlp", "mlp_hidden_size")):
            setattr(args, a, cfg[key])
    else:
        tok_info = write_tokenizer(out, [p + "\n" + r for p, r in pool[:20000]], args.vocab)
        cfg = llada_config(args, tok_info)
        model = Transformer(llada_args(cfg))
        for name, p in model.named_parameters():     # GPT-2 init; residual outputs scaled by 1/sqrt(2 layers)
            if p.dim() == 1:
                torch.nn.init.ones_(p)
            else:
                resid = name.endswith(("attention.wo.weight", "feed_forward.w2.weight"))
                torch.nn.init.normal_(p, std=0.02 / math.sqrt(2 * args.layers) if resid else 0.02)
        model = model.to(device)
    model.train()
    tok = Tokenizer.from_pretrained(out)
    ids, plen, alen = encode_pool(pool, tok, tok_info["eos"], device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"pool {len(pool)} examples ({t_pool:.0f}s), vocab {tok_info['vocab_size']}, {n_params / 1e6:.2f}M "
          f"parameters, {device}, setup {time.time() - t0:.0f}s", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    stream = batches((plen + alen).tolist(), args.batch_size, rng)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    budget, steps = args.minutes * 60, args.steps
    warmup = args.warmup if steps is None else max(1, min(args.warmup, steps // 10))
    curve, evals, window = [], [], []   # curve: [step, mean loss, mean masked-slot CE] per log interval
    tokens = answer_tokens = step = 0
    t_train, t_eval = time.time(), 0.0
    while steps is None or step < steps:
        if step == warmup // 2:
            t_half = time.time()
        if steps is None and step == warmup:     # fix the step count from the speed of steps warmup/2..warmup
            per_step = (time.time() - t_half) / (warmup - warmup // 2)
            steps = max(warmup + 100, int((budget - (time.time() - t_train - t_eval)) / per_step) + warmup)
            print(f"{per_step * 1e3:.1f} ms/step -> {steps} steps for {args.minutes} min", flush=True)
        # linear warmup, then cosine from lr down to lr/10 at the last step
        frac = min(1.0, max(0.0, (step - warmup) / max(1, (steps or 10 ** 9) - warmup)))
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr
        x, valid, answer = make_batch(ids, plen, alen, next(stream), rng)
        with autocast:
            loss, ce_sum, n_masked = diffusion_loss(model, x, valid, answer, tok_info["mask"], args.t_power)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        window.append(torch.stack([loss.detach(), ce_sum, n_masked.float(), valid.sum(), answer.sum()]))
        if step % args.log_every == 0 or step == steps:   # the only host syncs of the loop
            w = torch.stack(window).sum(0).tolist()
            window = []
            tokens, answer_tokens = tokens + int(w[3]), answer_tokens + int(w[4])
            dt = time.time() - t_train - t_eval
            curve.append([step, round(w[0] / args.log_every, 4), round(w[1] / max(w[2], 1), 4)])
            print(f"step {step}/{steps} loss {curve[-1][1]:.4f} masked CE {curve[-1][2]:.4f} lr {lr:.2e} "
                  f"{tokens / dt:.0f} tok/s {dt / 60:.1f} min", flush=True)
        if args.eval_every and step % args.eval_every == 0 and step != steps:
            te = time.time()
            save(model, out, cfg, tok_info)
            evals.append([step, evaluate(out, samples=args.eval_samples, device=device)])
            model.train()
            t_eval += time.time() - te
            print(f"step {step} eval (n=5, held out) {evals[-1][1]}", flush=True)
        if args.steps is None and steps is not None and time.time() - t_train - t_eval > 1.2 * budget:
            print(f"stopping early at step {step}: 20% over the time budget (the machine got slower)", flush=True)
            break
    wall = time.time() - t_train - t_eval

    model.eval()
    save(model, out, cfg, tok_info)
    acc = evaluate(out, samples=args.eval_samples, device=device) if args.eval_samples else {}
    props = torch.cuda.get_device_properties(0) if device.startswith("cuda") else None
    record = {"args": {k: v for k, v in vars(args).items() if k != "func"}, "config": cfg, "parameters": n_params,
              "steps": step, "tokens_seen": tokens, "answer_tokens_seen": answer_tokens, "wall_s": round(wall, 1),
              "tokens_per_s": round(tokens / wall, 1), "final_loss": curve[-1][1], "final_masked_ce": curve[-1][2],
              "loss_curve": curve, "evals_during_training": evals, "pool": len(pool), "mix": mix, "list_n": list(list_n),
              "eval_n5_one_token_per_forward": acc,
              "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                          "threads": args.threads, "torch": torch.__version__, "device": device,
                          "gpu": props.name if props else None}}
    if args.init:
        record["init"] = str(args.init)
    (out / "training.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"saved {out}: {step} steps, final loss {curve[-1][1]:.4f}, eval {acc}", flush=True)
    return 0


def _check_args(args) -> None:
    """Numbers in range and the --mix / --list-n lists well formed, before anything is built (one
    sentence each, as every dllm command)."""
    import math

    from dllm.errors import DllmError

    positive = ("dim", "layers", "heads", "mlp", "vocab", "batch_size", "pool", "workers", "threads", "log_every")
    for name in positive + ("eval_samples", "eval_every", "warmup", "steps"):
        v = getattr(args, name)
        if v is not None and (v < (1 if name in positive else 0) or v > 1 << 40):
            raise DllmError(f"--{name.replace('_', '-')} must be an integer {'>= 1' if name in positive else '>= 0'}.")
    for name in ("minutes", "lr", "t_power"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            raise DllmError(f"--{name.replace('_', '-')} must be a finite number > 0.")
    for item in filter(None, (args.mix or "").split(",")):
        task, eq, share = item.partition("=")
        try:
            ok = bool(eq) and math.isfinite(float(share)) and float(share) >= 0
        except ValueError:
            ok = False
        if not ok or task not in MIX:
            raise DllmError(f"--mix takes TASK=SHARE items (tasks: {', '.join(MIX)}) with a share >= 0, got {item!r}.")
    if args.list_n and not all(t.strip().isdigit() and 0 < int(t) <= 64 for t in args.list_n.split(",")):
        raise DllmError(f"--list-n takes list lengths in [1, 64] separated by commas, got {args.list_n!r}.")


def _add_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--output", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--minutes", type=float, default=20.0, help="training wall budget, evaluations excluded (default: 20)")
    p.add_argument("--steps", type=int, help="fixed number of steps (default: as many as --minutes allows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--mlp", type=int, default=768, help="SiLU-gated MLP hidden size")
    p.add_argument("--vocab", type=int, default=2048, help="tokenizer vocabulary incl. 4 special tokens")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--t-power", type=float, default=1.0, help="mask ratio t = u^P (1: LLaDA's uniform t)")
    p.add_argument("--pool", type=int, default=1_000_000, help="training examples generated up front")
    p.add_argument("--workers", type=int, default=1, help="processes generating the pool (same pool for any count)")
    p.add_argument("--mix", metavar="TASK=SHARE,...", help="override shares of the task mix (0 drops a task)")
    p.add_argument("--list-n", metavar="N,N,...", help="list lengths for list tasks, repeats weigh more (default 3..7)")
    p.add_argument("--warmup", type=int, default=200, help="linear warmup steps")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available); bf16 autocast on cuda")
    p.add_argument("--init", metavar="DIR", help="continue training the checkpoint in DIR (its tokenizer and shape)")
    # 1 thread by default: with a second busy process on a 2-core machine, 2 OpenMP threads were
    # measured 5-8x slower per step (threads wait at every barrier for a descheduled sibling)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-samples", type=int, default=30, help="held-out examples per task at the end (0: skip)")
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps (0: at the end only)")
    p.add_argument("--log-every", type=int, default=50)
    p.set_defaults(func=main)
    return p


def add_parser(sub) -> None:
    """`dllm train ...`: register this command on the CLI's subparsers."""
    _add_args(sub.add_parser("train", help="train a small masked-diffusion model from scratch on the eval tasks"))


if __name__ == "__main__":
    raise SystemExit(main(_add_args(argparse.ArgumentParser(prog="python -m dllm.evals.train_model")).parse_args()))
