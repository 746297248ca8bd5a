"""Block-wise KV caching: Fast-dLLM parity, refresh policies, batches, memory."""
import pytest

from dllm import LLM, SamplingParams
from tests import reference
from tests.helpers import load_state as _state, random_prompt as _prompt, upto_stop


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("gen,block,steps", [(16, 4, 8), (16, 8, 16), (12, 4, 12), (12, 12, 6)])
def test_tokens_and_forwards_equal_fast_dllm(llada_notok_dir, cache, gen, block, steps):
    sd, cfg = _state(llada_notok_dir)
    llm = LLM(llada_notok_dir)
    for seed in range(3):
        prompt = _prompt(cfg["vocab_size"], 4 + 2 * seed, seed)
        ref, ref_nfe, noop = reference.fast_dllm_generate(sd, cfg, prompt, steps=steps, gen_length=gen,
                                                          block_length=block, mask_id=cfg["mask_token_id"], cache=cache)
        out = llm.generate({"prompt_token_ids": prompt[0].tolist()},
                           SamplingParams(max_new_tokens=gen, block_length=block, steps=steps, cache=cache))[0]
        want = upto_stop(ref.tolist(), llm.stop_ids)
        assert out.token_ids == want
        if len(want) == gen:        # no EOS: dllm ran every block, as the reference does
            assert out.stats.nfe == ref_nfe - noop


def test_cache_changes_results_only_as_an_approximation(llada_notok_dir):
    # the cached runs are not secretly full forwards: some setting must differ from cache="none"
    llm = LLM(llada_notok_dir)
    diffs = 0
    for seed in range(4):
        p = {"prompt_token_ids": _prompt(llm.args.vocab_size, 5, seed)[0].tolist()}
        base = llm.generate(p, SamplingParams(max_new_tokens=16, block_length=8, steps=16))[0].token_ids
        for cache in ("prefix", "dual"):
            diffs += llm.generate(p, SamplingParams(max_new_tokens=16, block_length=8, steps=16, cache=cache))[0].token_ids != base
    assert diffs > 0


@pytest.mark.parametrize("fixture", ["llada_notok_dir", "dream_dir"])
@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("policy", [dict(refresh_every=1), dict(refresh_window=64)])
def test_full_refresh_equals_no_cache(request, fixture, cache, policy):
    """Refreshing on every step (or recomputing a window covering the canvas) is exact."""
    llm = LLM(request.getfixturevalue(fixture))
    V = llm.args.vocab_size
    prompts = [{"prompt_token_ids": _prompt(V, n, n)[0].tolist()} for n in (3, 9)]
    base = SamplingParams(max_new_tokens=16, block_length=4, steps=8)
    want = llm.generate(prompts, base)
    got = llm.generate(prompts, SamplingParams(**{**base.to_dict(), "cache": cache, **policy}))
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert [o.stats.nfe for o in got] == [o.stats.nfe for o in want]


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("fixture", ["llada_notok_dir", "dream_dir"])
def test_cached_output_does_not_depend_on_the_batch(request, fixture, cache):
    llm = LLM(request.getfixturevalue(fixture))
    V = llm.args.vocab_size
    prompts = [{"prompt_token_ids": _prompt(V, n, n)[0].tolist()} for n in (2, 10, 5)]
    params = SamplingParams(max_new_tokens=12, block_length=4, steps=6, cache=cache, refresh_window=1)
    batched = llm.generate(prompts, params)
    alone = [llm.generate([p], params)[0] for p in prompts]
    assert [o.token_ids for o in batched] == [o.token_ids for o in alone]


@pytest.mark.parametrize("cache,cache_prompt,every,window", [
    ("prefix", False, 0, 0), ("dual", False, 0, 0), ("dual", True, 0, 0), ("dual", False, 2, 0), ("dual", False, 0, 2),
    ("prefix", True, 0, 1)])
def test_windows_follow_the_policy(llada_notok_dir, cache, cache_prompt, every, window, monkeypatch):
    from dllm.engine.runner import ModelRunner

    windows = []
    real = ModelRunner.run

    def spy(self, rows):   # every row the runner is asked for: (window start, stop, query start, stop, masked cols)
        windows.extend((r.start, r.start + r.T, r.start + r.q[0], r.start + r.q[1],
                        (r.ids == llm.args.mask_token_id).nonzero().flatten().add(r.start).tolist()) for r in rows)
        return real(self, rows)
    monkeypatch.setattr(ModelRunner, "run", spy)
    llm = LLM(llada_notok_dir)
    P, N, bl = 5, 12, 4
    params = SamplingParams(max_new_tokens=N, block_length=bl, steps=12, cache=cache, cache_prompt=cache_prompt,
                            refresh_every=every, refresh_window=window)
    llm.generate({"prompt_token_ids": [1, 2, 3, 4, 5]}, params)
    L = P + N
    per_block = [windows[i:i + 4] for i in range(0, len(windows), 4)]
    assert len(per_block) == 3
    for b, ws in enumerate(per_block):
        bs, be = P + b * bl, P + (b + 1) * bl
        for f, (s, e, qs, qe, masked) in enumerate(ws):
            masked = [c for c in masked if bs <= c < be]
            assert (qs, qe) == (masked[0], masked[-1] + 1)   # logits only for the block's masked span
            refresh = f == 0 or (every and f % every == 0)
            if refresh:
                assert (s, e) == ((P if cache_prompt and b > 0 else 0), L)
            else:
                assert s == bs - window
                assert e == (L if cache == "prefix" else min(be + window, L))


def test_cache_memory_is_reported_and_preallocated(llada_notok_dir):
    llm = LLM(llada_notok_dir)
    a = llm.args
    out = llm.generate([{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4, 5]}],
                       SamplingParams(max_new_tokens=8, block_length=4, steps=4, cache="dual"))
    # each request holds its own canvas' columns of the pool: keys and values, every layer, float32
    for o, P in zip(out, (3, 2)):
        assert o.stats.cache_bytes == a.n_layers * 2 * a.n_kv_heads * (P + 8) * a.head_dim * 4
    pool = llm.engine.scheduler.pools["main"]
    assert pool.used == 0 and pool.size >= 3 + 8 + 2 + 8      # both were held at once, and both returned


def test_cache_with_guidance_and_sampling_runs(llada_notok_dir):
    llm = LLM(llada_notok_dir)
    p = {"prompt_token_ids": [1, 2, 3, 4]}
    base = SamplingParams(max_new_tokens=8, block_length=4, steps=8, cfg_scale=1.0)
    exact = llm.generate(p, SamplingParams(**{**base.to_dict(), "cache": "dual", "refresh_every": 1}))[0]
    assert exact.token_ids == llm.generate(p, base)[0].token_ids
    s = llm.generate(p, SamplingParams(**{**base.to_dict(), "cache": "prefix", "temperature": 0.8, "seed": 1}))[0]
    assert s.stats.nfe == 2 * s.stats.steps


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("threshold", [0.9, 0.5, 0.2])
def test_threshold_scheduler_equals_fast_dllm(llada_notok_dir, cache, threshold):
    sd, cfg = _state(llada_notok_dir)
    llm = LLM(llada_notok_dir)
    for seed in range(2):
        prompt = _prompt(cfg["vocab_size"], 5 + seed, seed)
        ref, ref_nfe, noop = reference.fast_dllm_generate(sd, cfg, prompt, steps=16, gen_length=16, block_length=8,
                                                          mask_id=cfg["mask_token_id"], cache=cache,
                                                          threshold=threshold)
        out = llm.generate({"prompt_token_ids": prompt[0].tolist()},
                           SamplingParams(max_new_tokens=16, block_length=8, scheduler="threshold",
                                          threshold=threshold, cache=cache))[0]
        want = upto_stop(ref.tolist(), llm.stop_ids)
        assert out.token_ids == want
        if len(want) == 16:        # the reference's no-op forwards (a block filled by its refresh) are skipped
            assert out.stats.nfe == ref_nfe - noop
