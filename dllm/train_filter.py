"""Training the Learn2PD filter (`dllm train-filter`), arXiv 2509.25188.

1. Decode each prompt one token per step (topk, steps = answer length): the slowest, most
   careful decoding gives the reference answer.
2. Replay that decoding: at every step the block's confidence vector and masked flags are
   one sample; a slot's label is 1 when its current argmax already equals the token it
   finally got.
3. Train FilterMLP with binary cross-entropy over the masked slots; save it as safetensors
   next to the model (or where --output says), for scheduler="learned_filter".
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dllm.errors import DllmError
from dllm.sampling_params import SamplingParams
from dllm.schedulers.learned_filter import FILTER_FILE, FilterMLP, save_filter


@dataclass
class Traces:
    conf: torch.Tensor      # [N, block] float32 confidence of each slot's current argmax
    masked: torch.Tensor    # [N, block] bool, slot still masked at that step
    label: torch.Tensor     # [N, block] bool, current argmax == final token

    def __len__(self):
        return self.conf.shape[0]

    def split(self, frac: float, seed: int):
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        n = max(1, int(len(self) * frac)) if len(self) > 1 else 0
        pick = lambda idx: Traces(self.conf[idx], self.masked[idx], self.label[idx])
        return pick(order[n:]), pick(order[:n])


def read_prompts(path) -> list:
    """One prompt per line; a .jsonl file holds {"prompt": ...} or {"prompt_token_ids": [...]} objects."""
    from dllm.limits import read_file

    lines = [ln for ln in read_file(path, "the prompts file").splitlines() if ln.strip()]
    if not lines:
        raise DllmError(f"the prompts file {str(path)!r} has no prompts.")
    if str(path).endswith(".jsonl"):
        try:
            items = [json.loads(ln) for ln in lines]
        except (json.JSONDecodeError, RecursionError) as e:
            raise DllmError(f"{str(path)!r} is not valid JSON Lines: {e}") from None
        if not all(isinstance(i, dict) for i in items):
            raise DllmError(f"every line of {str(path)!r} must be a JSON object such as {{\"prompt\": ...}}.")
        return items
    return lines


def collect(llm, prompts, *, block_length: int, max_new_tokens: int, batch_size: int = 8,
            apply_chat_template: bool = True) -> Traces:
    """Decode one token per step and record (confidences, masked, label) per step and request."""
    params = SamplingParams(max_new_tokens=max_new_tokens, block_length=block_length, steps=max_new_tokens)
    conf, masked, tokens, where = [], [], [], []
    final: dict[tuple, torch.Tensor] = {}
    for c in range(0, len(prompts), batch_size):
        def on_step(st, base=c):
            b = (st.block_start - st.answer_start) // block_length
            rows = [base + r for r in st.rows]
            conf.append(st.scores.float().cpu()), masked.append(st.masked.cpu()), tokens.append(st.tokens.cpu())
            where.append([(r, b) for r in rows])
            for i, key in enumerate(where[-1]):   # each slot's final token is the one it was committed with
                blk = final.setdefault(key, torch.full((block_length,), -1))
                sel = st.commit[i].cpu()
                blk[sel] = st.tokens[i].cpu()[sel]
        llm.generate(prompts[c:c + batch_size], params, apply_chat_template=apply_chat_template, on_step=on_step)
    labels = [torch.stack([tok[i] == final[key] for i, key in enumerate(keys)]) for tok, keys in zip(tokens, where)]
    return Traces(torch.cat(conf), torch.cat(masked), torch.cat(labels))


def train(traces: Traces, *, hidden: int = 128, epochs: int = 200, lr: float = 1e-3, batch: int = 256,
          seed: int = 0, log=None) -> FilterMLP:
    """BCE over the masked slots of every sample; full-batch-sized minibatches, Adam."""
    torch.manual_seed(seed)
    block = traces.conf.shape[1]
    model = FilterMLP(block, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    w = traces.masked.float()
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(traces), generator=g)
        total = 0.0
        for s in range(0, len(traces), batch):
            idx = order[s:s + batch]
            logits = model(traces.conf[idx], traces.masked[idx])
            loss = F.binary_cross_entropy_with_logits(logits, traces.label[idx].float(), weight=w[idx], reduction="sum")
            loss = loss / w[idx].sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if log is not None and (epoch + 1) % max(1, epochs // 5) == 0:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / len(traces):.4f}")
    return model.eval()


@torch.no_grad()
def evaluate(accept: torch.Tensor, traces: Traces) -> dict:
    """accept [N, block] bool over masked slots -> accepted / correct / wrong per sample."""
    acc = accept & traces.masked
    right = (acc & traces.label).sum().item()
    wrong = (acc & ~traces.label).sum().item()
    n = max(len(traces), 1)
    return {"accepted_per_step": (right + wrong) / n, "correct_per_step": right / n, "wrong_per_step": wrong / n,
            "precision": right / max(right + wrong, 1)}


def filter_accepts(model: FilterMLP, traces: Traces, threshold: float) -> torch.Tensor:
    with torch.no_grad():
        return torch.sigmoid(model(traces.conf, traces.masked)) >= threshold


def threshold_accepts(traces: Traces, threshold: float) -> torch.Tensor:
    return traces.conf >= threshold


def train_filter(llm, prompts, *, output=None, block_length=32, max_new_tokens=128, batch_size=8, hidden=128,
                 epochs=200, lr=1e-3, seed=0, filter_threshold=0.96, apply_chat_template=True, log=print) -> dict:
    """The whole `dllm train-filter` command: collect, train, compare on held-out steps, save."""
    if max_new_tokens % block_length:
        raise DllmError(f"block_length {block_length} does not divide max_new_tokens {max_new_tokens}.")
    traces = collect(llm, prompts, block_length=block_length, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, apply_chat_template=apply_chat_template)
    fit, held = traces.split(0.1, seed)
    log(f"{len(traces)} decoding steps from {len(prompts)} prompts ({len(fit)} to train, {len(held)} held out)")
    model = train(fit, hidden=hidden, epochs=epochs, lr=lr, seed=seed, log=log)
    report = {"filter": evaluate(filter_accepts(model, held, filter_threshold), held),
              "threshold_0.9": evaluate(threshold_accepts(held, 0.9), held)}
    output = Path(output) if output else Path(llm.path) / FILTER_FILE
    meta = {"model": str(llm.path), "max_new_tokens": max_new_tokens, "prompts": len(prompts), "samples": len(traces),
            "epochs": epochs, "held_out": report}
    try:
        save_filter(model, output, meta)
    except OSError as e:
        raise DllmError(f"cannot write the filter to {str(output)!r}: {e}") from None
    return {"output": str(output), **meta}
