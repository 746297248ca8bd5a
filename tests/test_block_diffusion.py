"""Block-diffusion decoding through LLM(...).generate, token for token against the reference loops of
tests/reference_block.py (SDAR generate.py, dInfer's LLaDA2 loop, Fast-dLLM v2 generate): greedy,
seeded sampling where the RNG use matches (SDAR, batch 1), batch 1 and a batch of 3 mixed prompt
lengths, several block sizes and step counts. These tests are the contract of the interim loop
(dllm/engine/block_diffusion.py) that the step-machine port must keep."""
import pytest
import torch

from dllm import LLM, SamplingParams
from dllm.errors import InvalidParamsError, UnsupportedError
from tests.block_checkpoints import write_fast_dllm, write_llada2, write_sdar
from tests.helpers import upto_stop
from tests.reference_block import HFBlockModel, LLaDA2Model, dinfer_generate, fast_dllm_generate, sdar_generate

PROMPTS = [[5, 6, 7], list(range(20, 31)), list(range(40, 54))]     # 3, 11, 14 tokens: tails in odd places


@pytest.fixture(scope="module")
def sdar(tmp_path_factory):
    path = tmp_path_factory.mktemp("sdar_dec")
    write_sdar(path, tokenizer=False, vocab_size=300, n_layers=2)
    return path, LLM(path, pack="none")


@pytest.fixture(scope="module")
def llada2(tmp_path_factory):
    path = tmp_path_factory.mktemp("llada2_dec")
    write_llada2(path, with_ids=True, vocab_size=300)
    return path, LLM(path, pack="none")


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast_dec")
    write_fast_dllm(path, vocab_size=300, bd_size=8)
    return path, LLM(path, pack="none")


def _ids(prompts):
    return [{"prompt_token_ids": p} for p in prompts]


def _check(outs, refs, prompts, N, stop_ids):
    for out, ref, p in zip(outs, refs, prompts):
        want = upto_stop(ref[len(p):len(p) + N], stop_ids)
        assert out.token_ids == want, (p, out.token_ids, want)


@pytest.mark.parametrize("B,S,rule", [(4, 4, "low_confidence_dynamic"), (4, 2, "low_confidence_static"),
                                      (8, 8, "low_confidence_static"), (2, 2, "sequential"),
                                      (8, 4, "low_confidence_dynamic"), (4, 4, "entropy_bounded")])
def test_sdar_greedy_matches_reference(sdar, B, S, rule):
    path, llm = sdar
    N = 13
    kw = dict(threshold=0.5, eb_threshold=1.5)
    params = SamplingParams(max_new_tokens=N, block_length=B, denoising_steps=S, sdar_remasking=rule,
                            sdar_threshold=kw["threshold"], eb_threshold=kw["eb_threshold"])
    ref = HFBlockModel(path, B)
    refs = [sdar_generate(ref, p, llm.args.mask_token_id, N, B, S, remasking=rule, stop_ids=llm.stop_ids, **kw)
            for p in PROMPTS]
    _check(llm.generate(_ids(PROMPTS[:1]), params), refs[:1], PROMPTS[:1], N, llm.stop_ids)   # batch 1
    outs = llm.generate(_ids(PROMPTS), params)                                                  # batch 3
    _check(outs, refs, PROMPTS, N, llm.stop_ids)
    if rule != "entropy_bounded":
        # the reference runs prefill + steps + one store per block; dllm runs the prefill and each store as
        # rows of the next step's forward (engine/block_diffusion.py), so its nfe is the reference's steps
        for p in PROMPTS:
            solo = llm.generate(_ids([p]), params)[0]
            ref.reset()
            sdar_generate(ref, p, llm.args.mask_token_id, N, B, S, remasking=rule, stop_ids=llm.stop_ids, **kw)
            assert ref.stores >= 2 and solo.stats.nfe == ref.forwards - ref.stores


def test_sdar_seeded_sampling_matches_reference(sdar):
    path, llm = sdar
    N, B = 12, 4
    ref = HFBlockModel(path, B)
    for temperature, top_k, top_p in ((1.0, None, 1.0), (0.7, 20, 0.9)):
        params = SamplingParams(max_new_tokens=N, block_length=B, temperature=temperature, top_k=top_k,
                                top_p=top_p, seed=11, sdar_remasking="low_confidence_static")
        got = llm.generate(_ids(PROMPTS[1:2]), params)[0].token_ids
        torch.manual_seed(11)
        want = sdar_generate(ref, PROMPTS[1], llm.args.mask_token_id, N, B, B, temperature=temperature,
                             top_k=top_k or 0, top_p=top_p, remasking="low_confidence_static", stop_ids=llm.stop_ids)
        assert got == upto_stop(want[11:11 + N], llm.stop_ids)
        assert got != llm.generate(_ids(PROMPTS[1:2]), SamplingParams(**{**params.to_dict(), "seed": 12}))[0].token_ids


def test_sdar_stops_after_the_block_holding_a_stop_token(sdar):
    path, llm = sdar
    N, B = 16, 4
    params = SamplingParams(max_new_tokens=N, block_length=B)
    free = llm.generate(_ids(PROMPTS), params)
    stop = free[1].token_ids[6]                       # a token the second answer produces in its 2nd/3rd block
    saved = llm.stop_ids
    try:
        llm.stop_ids = {stop}
        outs = llm.generate(_ids(PROMPTS), params)
        ref = HFBlockModel(path, B)
        refs = [sdar_generate(ref, p, llm.args.mask_token_id, N, B, B, stop_ids={stop}) for p in PROMPTS]
        _check(outs, refs, PROMPTS, N, {stop})
        assert outs[1].finish_reason == "eos" and len(outs[1].token_ids) <= 6
        assert outs[1].stats.nfe < free[1].stats.nfe       # the later blocks were never decoded
    finally:
        llm.stop_ids = saved


@pytest.mark.parametrize("B,threshold", [(4, 0.9), (8, 0.5), (32, 0.9)])
def test_llada2_dinfer_greedy_matches_reference(llada2, B, threshold):
    path, llm = llada2
    N = 14
    ref = LLaDA2Model(path, B)
    refs = [dinfer_generate(ref, p, llm.args.mask_token_id, llm.args.eos_token_ids[0], N, B, threshold)
            for p in PROMPTS]
    params = SamplingParams(max_new_tokens=N, block_length=B, threshold=threshold)   # scheduler auto = dinfer
    _check(llm.generate(_ids(PROMPTS[2:]), params), refs[2:], PROMPTS[2:], N, llm.stop_ids)
    outs = llm.generate(_ids(PROMPTS), params)
    _check(outs, refs, PROMPTS, N, llm.stop_ids)
    for p, out in zip(PROMPTS, outs):   # the prefill and the stores ride with steps: nfe = the reference's steps
        ref.reset()
        dinfer_generate(ref, p, llm.args.mask_token_id, llm.args.eos_token_ids[0], N, B, threshold)
        assert ref.stores >= 1 and out.stats.nfe == ref.forwards - ref.stores


def test_llada2_sampling_tells_dinfer_which_draws_were_the_mask_token(llada2, monkeypatch):
    """dInfer samples x0 = Gumbel-max over the whole vocabulary and skips slots where it is the mask token
    (parallel_strategy.py:263-279); the step hands the scheduler that fact for the step's own draw."""
    from dllm.schedulers.dinfer import DInfer

    path, llm = llada2
    seen, select = [], DInfer.select

    def spy(self, st):
        seen.append(None if st.banned_hit is None else (st.banned_hit.dtype, st.banned_hit.shape == st.masked.shape))
        return select(self, st)

    monkeypatch.setattr(DInfer, "select", spy)
    sampled = SamplingParams(max_new_tokens=10, block_length=4, temperature=1.0, seed=5)
    out = llm.generate(_ids(PROMPTS), sampled)
    assert seen and all(s == (torch.bool, True) for s in seen) and all(len(o.token_ids) > 0 for o in out)
    assert out[0].token_ids == llm.generate(_ids(PROMPTS), sampled)[0].token_ids      # seeded: reproducible
    seen.clear()
    llm.generate(_ids(PROMPTS[:1]), SamplingParams(max_new_tokens=10, block_length=4))
    assert seen and all(s is None for s in seen)        # greedy: the scheduler reads the logits' argmax


@pytest.mark.parametrize("sub", [4, 8, 2])
def test_fast_dllm_v2_greedy_matches_reference(fast, sub):
    path, llm = fast
    B, N = 8, 13
    prompts = PROMPTS + [list(range(60, 76))]          # 16 tokens: P % B == 0 takes the prefill's AR token
    ref = HFBlockModel(path, B)
    stop = llm.args.eos_token_ids[0]
    params = SamplingParams(max_new_tokens=N, sub_block_length=sub, threshold=0.6)
    outs = llm.generate(_ids(prompts), params)
    for out, p in zip(outs, prompts):
        blocks = -(-(len(p) + N) // B) - len(p) // B      # the blocks dllm decodes, from the prompt's tail on
        want = fast_dllm_generate(ref, p, llm.args.mask_token_id, stop, blocks * B, B, sub, 0.6)
        assert out.token_ids == upto_stop(want[len(p):len(p) + N], {stop})
    solo = llm.generate(_ids(prompts[3:]), params)[0]
    assert solo.token_ids == outs[3].token_ids


def test_existing_schedulers_decode_within_a_block(sdar, llada2):
    for _, llm in (sdar, llada2):
        for name in ("topk", "threshold", "factor", "credit", "ltr", "sdar", "dinfer", "fast_dllm_v2"):
            outs = llm.generate(_ids(PROMPTS), SamplingParams(max_new_tokens=9, block_length=4, scheduler=name))
            for o in outs:
                assert len(o.token_ids) == 9 and llm.args.mask_token_id not in o.token_ids, name
                assert o.stats.nfe >= 3 and o.stats.steps >= 3
        ltr = llm.generate(_ids(PROMPTS[:1]), SamplingParams(max_new_tokens=8, block_length=4, scheduler="ltr"))[0]
        assert ltr.stats.steps == 12 - 3                  # one slot per step over the whole blocks: positions 3..11


def test_whole_blocks_are_decoded_but_max_new_tokens_returned(sdar):
    path, llm = sdar
    out = llm.generate(_ids([PROMPTS[1]]), SamplingParams(max_new_tokens=5, block_length=4))[0]
    assert len(out.token_ids) == 5                      # positions 11..15: blocks 2 and 3 decoded
    ref = sdar_generate(HFBlockModel(path, 4), PROMPTS[1], llm.args.mask_token_id, 5, 4, 4, stop_ids=llm.stop_ids)
    assert len(ref) == 16 and out.token_ids == upto_stop(ref[11:16], llm.stop_ids)


def test_block_diffusion_refusals(sdar):
    _, llm = sdar
    for kw, match in ((dict(steps=8), "denoising_steps"), (dict(cache="dual"), "cache"),
                      (dict(scheduler="early_commit"), "early_commit")):
        with pytest.raises(UnsupportedError, match=match):
            llm.generate(_ids(PROMPTS[:1]), SamplingParams(max_new_tokens=8, **kw))
    with pytest.raises(InvalidParamsError, match="sdar_remasking"):
        SamplingParams(sdar_remasking="nope")
    with pytest.raises(InvalidParamsError, match="denoising_steps"):
        SamplingParams(denoising_steps=0)


@pytest.fixture(scope="module")
def sdar_tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("sdar_tok")
    write_sdar(path, n_layers=2)
    return LLM(path, pack="none")


def test_constraints_streaming_and_arrivals_on_a_block_model(sdar_tok):
    """The step machine's features on a block-causal family: a regex and a JSON Schema enforced over the
    active block given the committed prefix (the canvas past max_new_tokens holds end tokens, outside the
    answer), streamed deltas that join to the answer, and requests arriving while others decode."""
    import json
    import re

    import jsonschema

    from dllm import LLMEngine

    llm = sdar_tok
    pattern = r"[a-z]{2,5}( [a-z]{2,5}){0,2}"
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["n"]}
    for temperature in (0.0, 1.0):
        out = llm.generate("Hello", SamplingParams(max_new_tokens=14, block_length=4, regex=pattern,
                                                   temperature=temperature, seed=3))[0]
        assert re.fullmatch(pattern, out.text), out.text
        out = llm.generate("Hello", SamplingParams(max_new_tokens=13, block_length=4, json_schema=schema,
                                                   temperature=temperature, seed=3))[0]
        jsonschema.validate(json.loads(out.text), schema)
    params = SamplingParams(max_new_tokens=12, block_length=4)
    whole = llm.generate("The quick brown fox", params)[0]
    outs = list(llm.stream("The quick brown fox", params))
    assert "".join(o.delta_text for o in outs) == outs[-1].text == whole.text
    engine = LLMEngine.from_llm(llm)
    prompts = ["The quick brown fox", "Hello world", "A diffusion language model"]
    alone = [llm.generate(p, params)[0] for p in prompts]
    got = {}
    for i, p in enumerate(prompts):          # one arrival per step while the others decode
        engine.add_request(str(i), p, params)
        got.update({o.request_id: o for o in engine.step() if o.finished})
    while engine.has_unfinished_requests():
        got.update({o.request_id: o for o in engine.step() if o.finished})
    assert [(got[str(i)].token_ids, got[str(i)].stats.nfe) for i in range(3)] == \
        [(a.token_ids, a.stats.nfe) for a in alone]
    with pytest.raises(UnsupportedError, match="templates"):
        llm.generate({"prompt": "Hi", "template": ["a", 2]}, params)
