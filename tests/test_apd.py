"""APD (scheduler="apd"): a tiny LLaDA drafts, a tiny Llama with the SAME tokenizer checks."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from dllm import LLM, SamplingParams
from dllm.engine.apd import accept
from dllm.errors import DllmError, InvalidParamsError, UnsupportedError
from tests.ar_checkpoints import write_hf
from tests.checkpoints import write_llada

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_llama_like(path, src, info, **kw):
    """A Llama-shaped HF checkpoint whose vocabulary is the LLaDA tiny tokenizer's (files copied from src)."""
    write_hf(path, "llama", tokenizer=False, vocab_size=info["vocab_size"], **kw)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(bos_token_id=info["bos"], eos_token_id=info["eos"])
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in TOKENIZER_FILES:
        shutil.copy(src / f, path / f)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("apd")
    _, _, info = write_llada(root / "llada")
    write_llama_like(root / "llama", root / "llada", info, seed=3)
    return root / "llada", root / "llama", info


@pytest.fixture(scope="module")
def llm(pair):
    return LLM(pair[0])


PROMPTS = [{"prompt_token_ids": [5, 9, 11]}, {"prompt_token_ids": [40, 41, 42, 43, 44, 45]}, "Hello world"]


def apd(draft, **kw):
    return SamplingParams(scheduler="apd", draft_model=str(draft), **{"max_new_tokens": 24, **kw})


def reference_pure_diffusion(llm, prompt, N, window, max_draft):
    """R = 1 at T = 0: q = p_dLLM, so every greedy draft is accepted - each step commits the argmax of
    all k = min(max_draft, window, left) first masked slots of one forward over
    [prompt | committed | min(window, left) masks]; a stop token ends the answer."""
    mask = llm.args.mask_token_id
    answer, forwards = [], 0
    while len(answer) < N:
        W = min(window, N - len(answer))
        k = min(max_draft, W)
        x = torch.tensor([prompt + answer + [mask] * W])
        logits = llm.model(x, torch.arange(x.shape[1])[None])[0, len(prompt) + len(answer):][:k].float()
        forwards += 1
        logits[:, mask] = float("-inf")
        new = logits.argmax(-1).tolist()
        stops = [i for i, t in enumerate(new) if t in llm.stop_ids]
        answer += new[:stops[0] + 1] if stops else new
        if stops:
            break
    cut = next((i for i, t in enumerate(answer) if t in llm.stop_ids), len(answer))
    return answer[:cut], forwards


@pytest.mark.parametrize("window,max_draft", [(16, 16), (8, 4), (5, 5)])
def test_r1_is_pure_diffusion_every_draft_accepted(llm, pair, window, max_draft):
    params = apd(pair[1], apd_r=1.0, apd_window=window, apd_max_draft=max_draft)
    for prompt, out in zip(PROMPTS, llm.generate(PROMPTS, params)):
        ids = out.prompt_token_ids
        want, forwards = reference_pure_diffusion(llm, ids, 24, window, max_draft)
        assert out.token_ids == want
        assert out.stats.nfe == forwards


def test_r1_whole_answer_window_equals_one_step_diffusion(llm, pair):
    """Independent of the APD loop: one window over the whole answer = the diffusion engine with one step."""
    for prompt in PROMPTS:
        a = llm.generate(prompt, apd(pair[1], max_new_tokens=16, apd_r=1.0, apd_window=16, apd_max_draft=16))[0]
        b = llm.generate(prompt, SamplingParams(max_new_tokens=16, steps=1))[0]
        assert a.token_ids == b.token_ids and a.stats.nfe == 1


def test_r0_is_the_draft_models_greedy_answer(llm, pair):
    ar = LLM(pair[1])
    for prompt in PROMPTS:
        ids = llm.generate(prompt, SamplingParams(max_new_tokens=1))[0].prompt_token_ids
        want = ar.generate({"prompt_token_ids": ids}, SamplingParams(max_new_tokens=24))[0]
        assert llm.args.mask_token_id not in want.token_ids   # APD never commits the mask id
        got = llm.generate({"prompt_token_ids": ids}, apd(pair[1], apd_r=0.0))[0]
        assert got.token_ids == want.token_ids
        assert got.finish_reason == want.finish_reason
        assert 1 <= got.stats.nfe <= max(len(got.token_ids), 1) + 1


def test_intermediate_r_fewer_forwards_than_tokens_and_cached_draft(llm, pair):
    params = apd(pair[1], max_new_tokens=32, apd_r=0.7, trace=True)
    outs = llm.generate(PROMPTS, params)
    assert len(llm.engine._drafts) == 1          # the draft model is loaded once per LLM
    total_tokens = total_nfe = 0
    for out in outs:
        assert llm.args.mask_token_id not in out.token_ids
        steps = out.stats.trace
        assert len(steps) == out.stats.nfe == out.stats.steps
        assert all(1 <= len(s["tokens"]) <= s["drafted"] and s["accepted"] <= s["drafted"] for s in steps)
        slots = [p for s in steps for p in s["positions"]]
        assert slots == list(range(len(slots)))    # left to right, every slot once
        total_tokens += len(slots)
        total_nfe += out.stats.nfe
    assert total_nfe < total_tokens
    llm.generate(PROMPTS[0], params)
    assert len(llm.engine._drafts) == 1


def test_sampling_is_reproducible_with_a_seed(llm, pair):
    params = apd(pair[1], apd_r=0.5, temperature=1.0, top_k=50, seed=7)
    a = [o.token_ids for o in llm.generate(PROMPTS, params)]
    b = [o.token_ids for o in llm.generate(PROMPTS, params)]
    assert a == b
    for o in llm.generate(PROMPTS, params):
        assert llm.args.mask_token_id not in o.token_ids


def test_speculative_acceptance_yields_the_target_distribution():
    """The first committed token (accepted draft or resampled correction) is distributed as q."""
    p = torch.tensor([[0.5, 0.3, 0.1, 0.1]]).log()
    q = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).log()
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    n = 4000
    for _ in range(n):
        t = torch.multinomial(p.exp(), 1, generator=g).squeeze(-1)
        k, fix = accept(p, q, t, 1.0, g)
        counts[int(t) if k == 1 else fix] += 1
    assert torch.allclose(counts / n, q.exp()[0], atol=0.03)
    # temperature 0: accept the drafts that equal argmax q, correct at the first that does not
    qq = torch.tensor([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]).log()
    assert accept(qq, qq, torch.tensor([1, 2, 0]), 0.0) == (3, None)
    assert accept(qq, qq, torch.tensor([1, 1, 0]), 0.0) == (1, 2)
    assert accept(qq, qq, torch.tensor([0, 2, 0]), 0.0) == (0, 1)


def test_errors(llm, pair, tmp_path):
    with pytest.raises(InvalidParamsError, match="draft_model"):
        SamplingParams(scheduler="apd")
    for kw in (dict(apd_r=1.5), dict(apd_r=-0.1), dict(apd_window=0), dict(apd_max_draft=2.5)):
        with pytest.raises(InvalidParamsError, match="apd_"):
            apd(pair[1], **kw)
    other = tmp_path / "other_tok"
    write_hf(other, "llama")                          # its own tokenizer
    with pytest.raises(InvalidParamsError, match="tokenizer"):
        llm.generate(PROMPTS[0], apd(other))
    with pytest.raises(InvalidParamsError, match="autoregressive"):
        llm.generate(PROMPTS[0], apd(pair[0]))         # a diffusion draft
    with pytest.raises(UnsupportedError, match="autoregressive"):
        LLM(pair[1]).generate(PROMPTS[0], apd(pair[1]))
    with pytest.raises(UnsupportedError, match="constraints"):
        llm.generate(PROMPTS[0], apd(pair[1], regex="[a-z]+"))
    with pytest.raises(UnsupportedError, match="templates"):
        llm.generate({"prompt": "Hi", "template": ["a", 3]}, apd(pair[1], max_new_tokens=8))
    with pytest.raises(InvalidParamsError, match="draft_model"):   # APD is chosen by its checker
        SamplingParams(scheduler="apd")


def test_a_committed_stop_token_ends_the_answer(llm, pair):
    """A stop token inside an accepted draft ends the request there; the rest of the answer is that token."""
    from tests.helpers import decode

    params = apd(pair[1], apd_r=1.0, apd_window=8, apd_max_draft=8)
    ids = [5, 9, 11]
    full = decode(llm.model, llm.args, [ids], params, set(), llm.tokenizer)[0]
    assert len(full.answer()) == 24 and full.nfe == 3
    stop = full.answer()[10]
    first = full.answer().index(stop)
    row = decode(llm.model, llm.args, [ids], params, {stop}, llm.tokenizer)[0]
    assert row.answer() == full.answer()[:first + 1] + [stop] * (23 - first)
    assert row.nfe == first // 8 + 1
