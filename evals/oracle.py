"""Exact-marginal oracle models: the data distribution of a task, exposed as logits.

For a task whose valid answers can be enumerated, the data distribution given a prompt is
uniform over its K valid answers c_1..c_K (token sequences of the answer's N slots). Given the
slots revealed so far (R: slot -> token), the exact conditional marginal of a masked slot i is

    p(x_i = v | R) = #{k : c_k agrees with R, c_k[i] = v} / #{k : c_k agrees with R}

and the oracle returns log p as logits (zero-probability tokens at -1e4), plus N(0, noise^2)
logit noise so that exact ties (shuffle, replace-at-random) are broken at random; without it
greedy decoding always takes the lowest id and the closed forms do not hold. If the revealed
slots agree with no valid answer (the decoder already failed), the unconditional marginals are
returned. The engine, its schedulers and its forward counts run unchanged: the oracle is a
module with the model forward's signature, wrapped in an LLM by `oracle_llm`.
"""
from __future__ import annotations

import torch
from torch import nn

from dllm.errors import UnsupportedError

NEG = -1e4   # logit of an impossible token: softmax gives exactly 0 in float32


class OracleModel(nn.Module):
    def __init__(self, vocab_size: int, mask_id: int, noise: float = 1e-3, seed: int = 0):
        super().__init__()
        self.vocab_size, self.mask_id, self.noise = vocab_size, mask_id, noise
        self._anchor = nn.Parameter(torch.zeros(1), requires_grad=False)   # the engine reads device/dtype here
        self.answers: dict[tuple, torch.Tensor] = {}                       # prompt ids -> [K, N] valid answers
        self.gen = torch.Generator().manual_seed(seed)

    def register(self, prompt_ids, answers: torch.Tensor):
        """answers [K, N]: the valid answers (with multiplicity) of the prompt `prompt_ids`."""
        assert answers.dim() == 2 and answers.shape[0] > 0
        self.answers[tuple(prompt_ids)] = answers.long()

    def marginals(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """x [B, L] canvas -> p [B, N, V] exact conditional marginals of the last N columns."""
        rows = []
        for r in range(x.shape[0]):   # one dict lookup per row: the oracle is a test instrument
            for n in {a.shape[1] for a in self.answers.values()}:
                ids = x[r, :-n] if valid is None else x[r, :-n][valid[r, :-n]]
                found = self.answers.get(tuple(ids.tolist()))
                if found is not None and found.shape[1] == n:
                    rows.append(found)
                    break
            else:
                raise UnsupportedError("the oracle got a prompt it has no answers for; register the task's "
                                       "examples (dllm.evals.oracle_llm) before generating.")
        N = rows[0].shape[1]
        if any(a.shape[1] != N for a in rows):
            raise UnsupportedError("one oracle batch mixes answer lengths; run one task length at a time.")
        K = max(a.shape[0] for a in rows)
        cand = torch.full((len(rows), K, N), -1, dtype=torch.long)
        for r, a in enumerate(rows):
            cand[r, :a.shape[0]] = a
        cand = cand.to(x.device)
        live = cand[:, :, 0] >= 0                                                    # [B, K]
        ans = x[:, -N:]
        agree = ((cand == ans[:, None]) | (ans == self.mask_id)[:, None]).all(-1) & live
        w = torch.where(agree.any(1, keepdim=True), agree, live).double()            # [B, K]
        p = torch.zeros(len(rows), N, self.vocab_size, dtype=torch.float64, device=x.device)
        p.scatter_add_(2, cand.clamp(min=0).transpose(1, 2), w[:, None, :].expand(-1, N, -1))
        return p / w.sum(1)[:, None, None]

    def leave_one_out(self, x, valid, blk: slice) -> torch.Tensor:
        """WINO's shadow forward (engine/windows.py shadow_row), exactly: logits [B, 2W, V], rows 0..W-1
        the block's marginals, row W + i the marginal of block slot i with that slot masked."""
        rows = [self.forward(x, None, None, blk, valid)]
        for c in range(blk.start, blk.stop):
            hidden = x.clone()
            hidden[:, c] = self.mask_id
            rows.append(self.forward(hidden, None, None, slice(c, c + 1), valid))
        return torch.cat(rows, 1)

    def forward(self, x, positions, cache, query: slice, valid=None):
        if cache is not None:
            raise UnsupportedError("the oracle computes exact marginals from the whole canvas; run it with cache='none'.")
        p = self.marginals(x, valid)                                                  # [B, N, V]
        B, L = x.shape
        N = p.shape[1]
        cols = range(L)[query]                                                        # canvas columns asked for
        logits = torch.full((B, len(cols), self.vocab_size), NEG, dtype=torch.float32)
        lo = max(cols.start, L - N)                                                   # answer columns among them
        if lo < cols.stop:
            ans = p[:, lo - (L - N):cols.stop - (L - N)]
            out = torch.where(ans > 0, ans.log(), torch.full_like(ans, NEG)).float()
            if self.noise:
                out += self.noise * torch.randn(out.shape, generator=self.gen)
            logits[:, lo - cols.start:] = out
        return logits.to(x.device)


# ---- the oracle as an LLM: a word-level tokenizer over the run's texts ---------------------------
# Pieces: a name from the waiting-line list (added tokens, so "Ada Lee" is one slot), else a run of
# letters, one digit, one whitespace character or one other character; decoding concatenates (Fuse).
PIECES = r"[A-Za-z]+|[0-9]|\s|[^\sA-Za-z0-9]"
MASK, EOS, UNK = "<|mask|>", "<|eos|>", "<|unk|>"


def oracle_tokenizer(texts):
    """A dllm Tokenizer whose vocabulary covers every piece of `texts` (so no prompt is ambiguous)."""
    import re

    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    from dllm.evals.tasks.waiting_line import NAMES
    from dllm.tokenizer import Tokenizer

    pieces = sorted({p for t in texts for p in re.findall(PIECES, t)})
    vocab = {t: i for i, t in enumerate([MASK, EOS, UNK] + pieces)}
    tok = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PIECES), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (MASK, EOS, UNK)])
    tok.add_tokens([AddedToken(n, normalized=False) for n in NAMES])
    return Tokenizer(tok, {"eos_token": EOS}, None)


def oracle_llm(task, examples, *, noise: float = 1e-3, seed: int = 0, plain_shuffle: bool = False):
    """An LLM whose model is the exact-marginal oracle of `task` on `examples`, and the answer
    length N (every example's answers padded with EOS to the longest)."""
    from dllm.errors import DllmError
    from dllm.llm import LLM
    from dllm.models.config import ModelArgs

    if not task.oracle:
        raise DllmError(f"task {task.name!r} has no enumerable answers, so it has no oracle; use a model.")
    per_example = [_answers(task, ex, plain_shuffle) for ex in examples]
    tok = oracle_tokenizer([ex.prompt for ex in examples] + [a for answers in per_example for a in answers])
    mask, eos = tok.token_to_id(MASK), tok.token_to_id(EOS)
    args = ModelArgs(family="llada", vocab_size=tok.vocab_size, dim=1, n_layers=0, n_heads=1, n_kv_heads=1,
                     intermediate_size=1, norm_eps=1e-5, rope_theta=1e4, max_seq_len=1 << 20,
                     mask_token_id=mask, eos_token_ids=(eos,), pad_token_id=eos)
    model = OracleModel(tok.vocab_size, mask, noise=noise, seed=seed)
    encoded = [[tok.encode(a, add_special_tokens=False) for a in answers] for answers in per_example]
    N = max(len(e) for answers in encoded for e in answers)
    for ex, answers in zip(examples, encoded):
        model.register(tok.encode(ex.prompt, add_special_tokens=False),
                       torch.tensor([e + [eos] * (N - len(e)) for e in answers]))
    return LLM.from_model(model, args, tok, name=f"oracle:{task.name}"), N


def _answers(task, ex, plain_shuffle):
    if plain_shuffle and task.name == "shuffle":
        import itertools

        from dllm.evals.tasks.waiting_line import list_str
        return [list_str(p) for p in itertools.permutations(ex.data["input"])]
    return task.answers(ex)
