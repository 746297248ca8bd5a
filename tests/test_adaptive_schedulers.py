"""Adaptive schedulers (factor, credit, early_commit, learned_filter) and end-of-text prediction:
hand-made logits with exact expected commits, parity with the rules written from the papers,
invariants under random inputs, and every scheduler x cache mode x batch."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dllm import LLM, SamplingParams
from dllm.engine.sampling import propose
from dllm.schedulers import SCHEDULERS, get_scheduler
from dllm.schedulers.base import Step
from tests import reference, reference_schedulers as ref
from tests.helpers import load_state, random_prompt, upto_stop
from tests.test_generate import ScriptedModel


def make_step(scores, masked, logits=None, forwards=1, plan=None, **kw):
    scores = torch.as_tensor(scores, dtype=torch.float32)
    masked = torch.as_tensor(masked, dtype=torch.bool)
    if logits is None:
        logits = torch.zeros(*scores.shape, 4)
    return Step(index=0, forwards=forwards, logits=logits, tokens=torch.zeros_like(masked, dtype=torch.long),
                scores=scores, masked=masked, plan=plan, **kw)


def sched(name, **kw):
    p = SamplingParams(max_new_tokens=8, scheduler=name, **kw)
    s = get_scheduler(name)(p, "llada")
    s.begin_block([8], 8)
    return s


# ---- each rule on hand-made inputs -------------------------------------------------------------
def test_factor_commits_the_longest_passing_prefix():
    # sorted: 0.99 (j=1, always), 0.8 >= 1 - 1/3, 0.7 < 1 - 1/4 -> n = 2
    s = sched("factor")
    commit = s.select(make_step([[0.7, 0.99, 0.1, 0.8, 0.6]], [[1, 1, 1, 1, 1]]))
    assert commit.tolist() == [[False, True, False, True, False]]
    # factor 2: thresholds 1/3, 1/2, 3/5, 2/3 -> 0.99, 0.8, 0.7, 0.6 pass; 0.1 fails
    commit = sched("factor", factor=2.0).select(make_step([[0.7, 0.99, 0.1, 0.8, 0.6]], [[1, 1, 1, 1, 1]]))
    assert commit.tolist() == [[True, True, False, True, True]]
    # committed slots are skipped even when confident; the top-1 always goes
    commit = s.select(make_step([[0.2, 0.99, 0.1]], [[1, 0, 1]]))
    assert commit.tolist() == [[True, False, False]]


def test_ltr_commits_the_leftmost_masked_slot():
    commit = sched("ltr").select(make_step([[0.1, 0.9, 0.99, 0.5]], [[0, 1, 1, 1]]))
    assert commit.tolist() == [[False, True, False, False]]


def test_threshold_and_credit_cut():
    scores = [[0.95, 0.5, 0.91, 0.3]]
    assert sched("threshold").select(make_step(scores, [[1, 1, 1, 1]])).tolist() == [[True, False, True, False]]
    # credit: >= min(best - 1e-5, 0.9); below the threshold only the best (and anything within 1e-5)
    low = [[0.5, 0.5 - 5e-6, 0.4, 0.49]]
    assert sched("credit").select(make_step(low, [[1, 1, 1, 1]])).tolist() == [[True, True, False, False]]


def test_credit_accumulates_by_the_formula():
    torch.manual_seed(0)
    s = sched("credit")
    p = s.params
    B, L, V = 2, 3, 5
    C = torch.zeros(B, L, V)
    masked = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    for step in range(4):
        logits = torch.randn(B, L, V) * 3
        if step:
            C = C * p.credit_beta
        probs = logits.softmax(-1)
        for b in range(B):
            for i in range(L):
                if masked[b, i]:
                    t = int(probs[b, i].argmax())
                    C[b, i, t] += float(probs[b, i, t]) ** p.credit_gamma
        fused = s.transform(logits, masked)
        torch.testing.assert_close(s.credit, C)
        torch.testing.assert_close(fused, logits + p.credit_alpha * torch.log(1 + C))
    s.begin_block([3, 3], 4)            # a new block starts from zero credit
    s.transform(torch.zeros(B, L, V), torch.zeros(B, L, dtype=torch.bool))
    assert s.credit.abs().sum() == 0


@pytest.mark.parametrize("forwards,expected", [(1, [False, True]), (5, [True, True]), (9, [True, True])])
def test_early_commit_phases(forwards, expected):
    # steps = 12: progress 1/12 (early, 7.5), 5/12 (middle, 5.0), 9/12 (late, 2.5)
    p = SamplingParams(max_new_tokens=12, steps=12, scheduler="early_commit")
    s = get_scheduler("early_commit")(p, "llada")
    logits = torch.zeros(2, 3, 6)
    logits[0, :, 0] = 6.0                 # row 0: gap 6 -> fires in the middle and late phases only
    logits[1, :, 0] = 8.0                 # row 1: gap 8 -> fires in every phase
    logits[1, 2, 0] = 0.0                 # ...but this slot (gap 0) is committed, so it is not monitored
    masked = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    fire = s.finish(make_step(torch.zeros(2, 3), masked, logits=logits, forwards=forwards))
    assert fire.tolist() == expected


def test_early_commit_watches_given_positions():
    p = SamplingParams(max_new_tokens=4, steps=4, scheduler="early_commit", early_commit_positions=(1, 2))
    s = get_scheduler("early_commit")(p, "llada")
    wide = torch.zeros(1, 4, 5)
    wide[0, 1, 3] = 8.0
    wide[0, 2, 3] = 7.5                    # mean gap 7.75 over answer slots 1 and 2
    st = make_step(torch.zeros(1, 2), [[1, 1]], forwards=1, wide=wide, wide_start=10, answer_start=10)
    assert s.finish(st).tolist() == [True]
    wide[0, 2, 3] = 6.0                    # mean 7.0 < 7.5
    assert s.finish(st).tolist() == [False]


def test_learned_filter_accepts_what_the_filter_accepts(tmp_path):
    from dllm.schedulers.learned_filter import FilterMLP, save_filter

    f = FilterMLP(block=4, hidden=8)
    with torch.no_grad():   # a filter that accepts exactly the slots whose confidence is > 0.5
        for m in f.net:
            if isinstance(m, torch.nn.Linear):
                m.weight.zero_(), m.bias.zero_()
        f.net[0].weight[:4, :4] = torch.eye(4) * 100
        f.net[0].bias[:4] = -50
        f.net[2].weight[:4, :4] = torch.eye(4)
        f.net[4].weight[:, :4] = torch.eye(4) * 10
        f.net[4].bias[:] = -1
    save_filter(f, tmp_path / "f.safetensors", {})
    s = sched("learned_filter", block_length=4, filter_path=str(tmp_path / "f.safetensors"))
    commit = s.select(make_step([[0.9, 0.2, 0.7, 0.1], [0.3, 0.2, 0.1, 0.4]], [[1, 1, 0, 1], [1, 1, 1, 1]]))
    # row 0: slot 0 accepted (slot 2 is not masked); row 1: nothing accepted -> its best slot
    assert commit.tolist() == [[True, False, False, False], [False, False, False, True]]


# ---- invariants under random inputs -----------------------------------------------------------
ADAPTIVE = ["topk", "threshold", "factor", "credit", "early_commit", "ltr"]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(ADAPTIVE), B=st.integers(1, 3), L=st.integers(1, 9), V=st.integers(2, 12),
       seed=st.integers(0, 10_000), scale=st.floats(0.1, 20))
def test_invariants_under_random_logits(name, B, L, V, seed, scale):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, V, generator=g) * scale
    masked = torch.rand(B, L, generator=g) < 0.6
    masked[0, int(torch.randint(0, L, (1,), generator=g))] = True     # at least one row has work
    mask_id = V - 1
    p = SamplingParams(max_new_tokens=L, steps=L, scheduler=name, threshold=0.9)
    s = get_scheduler(name)(p, "llada")
    s.begin_block(masked.sum(1).tolist(), L)
    plan = s.plan(0) if s.fixed else None
    fused = s.transform(logits, masked)
    tokens, scores = propose(fused, remasking="low_confidence", temperature=0.0, top_p=None, top_k=None,
                             style="llada", generator=None, banned=mask_id)
    commit = s.select(make_step(scores, masked, logits=logits, plan=plan, forwards=1)) & masked
    assert commit.shape == (B, L)
    assert not (commit & ~masked).any()                                # only masked slots of the block
    has_work = masked.any(1) & (torch.tensor(plan) > 0 if plan is not None else True)
    assert (commit.sum(1)[has_work] >= 1).all()                         # at least one per row with work
    assert not (tokens[commit] == mask_id).any()                        # never the mask id


# ---- parity with the rules written from the papers --------------------------------------------
def _logits_fn(sd, cfg):
    return lambda x: reference.llada_kv_forward(sd, cfg, x)[0]


@pytest.mark.parametrize("gen,block", [(12, 4), (16, 8), (8, 8)])
def test_factor_and_credit_match_their_references(llada_notok_dir, gen, block):
    sd, cfg = load_state(llada_notok_dir)
    llm = LLM(llada_notok_dir)
    mask_id = cfg["mask_token_id"]
    for seed in range(3):
        prompt = random_prompt(cfg["vocab_size"], 3 + seed, seed)
        ids = {"prompt_token_ids": prompt[0].tolist()}
        for name, fn, kw in [("factor", ref.factor_generate, {}), ("factor", ref.factor_generate, {"factor": 3.0}),
                             ("credit", ref.credit_generate, {})]:
            want, nfe = fn(_logits_fn(sd, cfg), prompt, gen_length=gen, block_length=block, mask_id=mask_id, **kw)
            out = llm.generate(ids, SamplingParams(max_new_tokens=gen, block_length=block, scheduler=name, **kw))[0]
            want = upto_stop(want.tolist(), llm.stop_ids)
            assert out.token_ids == want, (name, kw, seed)
            if len(want) == gen:
                assert out.stats.nfe == nfe


@pytest.mark.parametrize("positions", [None, (0, 1, 2)])
@pytest.mark.parametrize("thresholds", [(7.5, 5.0, 2.5), (3.0, 2.0, 1.0), (0.3, 0.2, 0.1)])
def test_early_commit_matches_prophet(llada_notok_dir, positions, thresholds):
    sd, cfg = load_state(llada_notok_dir)
    llm = LLM(llada_notok_dir)
    fired = 0
    for seed in range(3):
        prompt = random_prompt(cfg["vocab_size"], 4, seed)
        want, forwards = ref.prophet_generate(_logits_fn(sd, cfg), prompt, steps=16, gen_length=16, block_length=8,
                                              mask_id=cfg["mask_token_id"], positions=positions, thresholds=thresholds)
        out = llm.generate({"prompt_token_ids": prompt[0].tolist()}, SamplingParams(
            max_new_tokens=16, block_length=8, steps=16, scheduler="early_commit",
            early_commit_positions=positions, early_commit_thresholds=thresholds))[0]
        want = upto_stop(want.tolist(), llm.stop_ids)
        assert out.token_ids == want
        if len(want) == 16:
            assert out.stats.nfe == forwards
        fired += forwards < 16
    if thresholds[0] < 7:
        assert fired == 3         # these thresholds fire on this model (at 7-13 forwards for (3, 2, 1))


def test_early_commit_with_dual_cache_pays_one_counted_forward():
    from dllm.models.config import ModelArgs
    from tests.helpers import decode

    args = ModelArgs(family="llada", vocab_size=16, dim=8, n_layers=1, n_heads=1, n_kv_heads=1,
                     intermediate_size=8, norm_eps=1e-5, rope_theta=1e4, max_seq_len=64, mask_token_id=15)
    # every slot: token 5 with gap 3; fires once progress >= 0.33, i.e. at forward 4 of 12, the
    # last step of block 0: a cached step, which with the dual cache scored block 0 only
    for cache, calls in [("none", 4), ("prefix", 4), ("dual", 5)]:
        model = ScriptedModel(16, eos=7, P=3, eos_at=99)
        params = SamplingParams(max_new_tokens=12, block_length=4, steps=12, scheduler="early_commit",
                                early_commit_thresholds=(9, 2.5, 2.5), cache=cache, trace=True)
        row = decode(model, args, [[1, 2, 3]], params, {7})[0]
        assert row.answer() == [5] * 12
        assert model.calls == row.nfe == calls
        assert len(row.trace) == 4 and row.trace[-1]["positions"][-8:] == list(range(4, 12))   # the fill



# ---- end-of-text prediction -------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [("topk", {False: 8, True: 6}), ("threshold", {False: 8, True: 6}),
                                           ("factor", {False: 8, True: 6}), ("credit", {False: 2, True: 2})])
def test_end_of_text_prediction_stops_spending_forwards(name, expected):
    from dllm.models.config import ModelArgs
    from tests.helpers import decode

    args = ModelArgs(family="llada", vocab_size=16, dim=8, n_layers=1, n_heads=1, n_kv_heads=1,
                     intermediate_size=8, norm_eps=1e-5, rope_theta=1e4, max_seq_len=64, mask_token_id=15)
    nfe = {}
    for eot in (False, True):
        model = ScriptedModel(16, eos=7, P=3, eos_at=5)
        params = SamplingParams(max_new_tokens=16, block_length=8, steps=16, scheduler=name, threshold=1.0,
                                factor=0.01, eot_prediction=eot)
        row = decode(model, args, [[1, 2, 3]], params, {7})[0]
        assert row.answer()[:6] == [5, 5, 5, 5, 5, 7]
        if eot:
            assert row.answer()[6:] == [7] * 10           # the rest of the answer is the end token
        nfe[eot] = row.nfe
    # one slot per step: 8 forwards without EoTP; with it the EOS (most confident) goes first,
    # fills slots 6..15, and slots 0..4 take 5 more forwards. credit commits ties together:
    # the EOS first, then all the equally confident rest.
    assert nfe == expected


# ---- every scheduler x cache mode x batch runs ------------------------------------------------
@pytest.fixture(scope="module")
def filter_file(tmp_path_factory):
    from dllm.schedulers.learned_filter import FilterMLP, save_filter

    path = tmp_path_factory.mktemp("filter") / "f.safetensors"
    torch.manual_seed(0)
    save_filter(FilterMLP(block=4, hidden=16), path, {})
    return str(path)


@pytest.mark.parametrize("name", sorted(set(SCHEDULERS) - {"apd"}))   # apd needs a draft model: tests/test_apd.py
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("fixture", ["llada_notok_dir", "dream_dir"])
def test_every_scheduler_with_every_cache_and_a_batch(request, name, cache, fixture, filter_file):
    if name == "wino" and (cache != "none" or fixture == "dream_dir"):
        pytest.skip("wino refuses caches and Dream-style models (tests/test_seed_decoders_capabilities.py)")
    llm = LLM(request.getfixturevalue(fixture))
    V = llm.args.vocab_size
    prompts = [{"prompt_token_ids": random_prompt(V, n, n)[0].tolist()} for n in (3, 6, 4)]
    params = SamplingParams(max_new_tokens=12, block_length=4, steps=12, scheduler=name, cache=cache,
                            filter_path=filter_file, eot_prediction=True, trace=True,
                            early_commit_thresholds=(5.0, 2.0, 1.0))
    outs = llm.generate(prompts, params)
    alone = llm.generate(prompts[1], params)[0]
    assert outs[1].token_ids == alone.token_ids            # batching does not change a request
    for out in outs:
        assert 1 <= out.stats.nfe <= 12 + 1                 # a request counts its own forwards only
        assert llm.args.mask_token_id not in out.token_ids
        slots = [p for e in out.stats.trace for p in e["positions"]]
        remasked = [p for e in out.stats.trace for p in e.get("remasked", ())]   # revocable schedulers (wino)
        assert len(slots) == len(set(slots)) + len(remasked)   # every slot committed once, again once per re-mask
        assert all(0 <= p < 12 for p in slots)


def test_learned_filter_errors(llada_notok_dir, tmp_path):
    llm = LLM(llada_notok_dir)
    from dllm.errors import DllmError

    with pytest.raises(DllmError, match="train-filter"):
        llm.generate({"prompt_token_ids": [1, 2]}, SamplingParams(max_new_tokens=4, scheduler="learned_filter"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DllmError, match="cannot read"):
        llm.generate({"prompt_token_ids": [1, 2]}, SamplingParams(max_new_tokens=4, scheduler="learned_filter",
                                                                  filter_path=str(bad)))


@pytest.mark.parametrize("kw,match", [
    (dict(factor=0), "factor"), (dict(credit_beta=1.5), "credit_beta"), (dict(early_commit_base="early_commit"), "base"),
    (dict(early_commit_positions=(0, 99)), "positions"), (dict(early_commit_thresholds=(1, 2)), "three numbers"),
    (dict(filter_threshold=2), "filter_threshold")])
def test_scheduler_params_validate(kw, match):
    from dllm.errors import InvalidParamsError

    with pytest.raises(InvalidParamsError, match=match):
        SamplingParams(max_new_tokens=8, **kw)
