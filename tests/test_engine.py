"""The step machine (dllm/engine/llm_engine.py): arrivals, aborts, the KV pool, streaming, failures."""
import pytest
import torch

from dllm import LLM, LLMEngine, SamplingParams
from dllm.engine.streaming import TextStream
from dllm.errors import DllmError
from dllm.tokenizer import Tokenizer
from tests.helpers import random_prompt

MIXED = [   # (prompt length, params): schedulers, caches, lengths and a guided request in one batch
    (3, dict(max_new_tokens=12, block_length=4, steps=12, cache="dual")),
    (9, dict(max_new_tokens=16, block_length=8, scheduler="threshold", threshold=0.5, cache="prefix")),
    (5, dict(max_new_tokens=8, block_length=4, steps=8, scheduler="credit")),
    (6, dict(max_new_tokens=12, block_length=4, steps=6, cfg_scale=1.0, cache="dual", refresh_window=1)),
    (4, dict(max_new_tokens=8, block_length=8, scheduler="early_commit", early_commit_thresholds=(3, 2, 1))),
]


def _requests(V):
    return [({"prompt_token_ids": random_prompt(V, n, n)[0].tolist()}, SamplingParams(**kw)) for n, kw in MIXED]


def _drain(engine):
    outs = {}
    while engine.has_unfinished_requests():
        for o in engine.step():
            if o.finished:
                outs[o.request_id] = o
    return outs


def _alone(path, reqs):
    """Each request in an engine of its own: the answers and forward counts to compare with."""
    want = []
    for prompt, params in reqs:
        engine = LLMEngine(path)
        engine.add_request("x", prompt, params)
        o = _drain(engine)["x"]
        want.append((o.token_ids, o.stats.nfe))
    return want


@pytest.mark.parametrize("fixture", ["llada_notok_dir", "dream_dir"])
def test_staggered_arrivals_equal_each_request_alone(request, fixture):
    path = request.getfixturevalue(fixture)
    engine = LLMEngine(path)
    reqs = _requests(engine.loaded.args.vocab_size)
    if fixture == "dream_dir":
        reqs = [r for r in reqs if not r[1].cfg_scale]   # classifier-free guidance is LLaDA's
    want = _alone(path, reqs)
    outs, running_together = {}, 0
    for i, (prompt, params) in enumerate(reqs):   # one arrival every two steps, while the others decode
        engine.add_request(str(i), prompt, params)
        for _ in range(2):
            outs.update({o.request_id: o for o in engine.step() if o.finished})
            running_together = max(running_together, engine.num_running)
    outs.update(_drain(engine))
    assert running_together >= 3                  # they really shared steps
    assert [(outs[str(i)].token_ids, outs[str(i)].stats.nfe) for i in range(len(reqs))] == want


def test_abort_mid_block_frees_the_pool_and_leaves_the_others_alone(llada_notok_dir):
    engine = LLMEngine(llada_notok_dir)
    reqs = _requests(engine.loaded.args.vocab_size)[:2]
    want = _alone(llada_notok_dir, reqs)
    for i, (prompt, params) in enumerate(reqs):
        engine.add_request(str(i), prompt, params)
    engine.step(), engine.step()
    pool = engine.scheduler.pools["main"]
    held = pool.used
    engine.abort("0")
    engine.abort("no-such-request")                        # unknown ids are ignored
    first = engine.step()
    aborted = [o for o in first if o.request_id == "0"]
    assert len(aborted) == 1 and aborted[0].finished and aborted[0].finish_reason == "abort"
    assert pool.used < held                                # its columns are free at once
    rest = _drain(engine)
    assert (rest["1"].token_ids, rest["1"].stats.nfe) == want[1]
    assert pool.used == 0


def test_a_full_pool_makes_requests_wait_then_run(llada_notok_dir):
    probe = LLMEngine(llada_notok_dir)
    col = probe.scheduler.pools["main"].column_bytes
    reqs = _requests(probe.loaded.args.vocab_size)[:3]
    want = _alone(llada_notok_dir, reqs)
    widest = max(len(p["prompt_token_ids"]) + s.max_new_tokens for p, s in reqs)
    engine = LLMEngine(llada_notok_dir, kv_cache_memory=col * widest)   # room for one request at a time
    for i, (prompt, params) in enumerate(reqs):
        engine.add_request(str(i), prompt, params)
    waited = 0
    outs = {}
    while engine.has_unfinished_requests():
        outs.update({o.request_id: o for o in engine.step() if o.finished})
        assert engine.num_running <= 1
        waited += engine.num_waiting > 0
    assert waited > 0
    assert [(outs[str(i)].token_ids, outs[str(i)].stats.nfe) for i in range(3)] == want
    with pytest.raises(DllmError, match="kv_cache_memory"):
        LLMEngine(llada_notok_dir, kv_cache_memory=-5)
    engine.add_request("big", {"prompt_token_ids": [1] * (widest + 1)}, SamplingParams(max_new_tokens=4))
    big = _drain(engine)["big"]                          # can never fit: it fails alone, with a sentence
    assert big.finish_reason == "error" and "kv_cache_memory" in big.error


class NaNForSome(torch.nn.Module):
    """A scripted model: logits of token 5 everywhere, NaN for prompts that start with token 1."""

    def __init__(self, V):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.V = V

    def forward(self, ids, pos, cache, q, valid):
        logits = torch.zeros(ids.shape[0], q.stop - q.start, self.V)
        logits[..., 5] = 3.0
        if int(ids[0, 0]) == 1 and int(pos[0, 0]) == 0:
            logits[:] = float("nan")
        return logits


def test_a_failing_request_fails_alone():
    from dllm.models.config import ModelArgs

    args = ModelArgs(family="llada", vocab_size=16, dim=8, n_layers=1, n_heads=1, n_kv_heads=1,
                     intermediate_size=8, norm_eps=1e-5, rope_theta=1e4, max_seq_len=64, mask_token_id=15,
                     eos_token_ids=(7,))
    engine = LLMEngine.from_model(NaNForSome(16), args, None)
    params = SamplingParams(max_new_tokens=8, block_length=4, steps=8)
    engine.add_request("bad", {"prompt_token_ids": [1, 2, 3]}, params)
    engine.add_request("good", {"prompt_token_ids": [2, 2, 3]}, params)
    outs = _drain(engine)
    assert outs["bad"].finish_reason == "error" and "NaN" in outs["bad"].error
    assert outs["good"].finish_reason == "length" and outs["good"].token_ids == [5] * 8
    llm = LLM.from_model(NaNForSome(16), args, None)
    with pytest.raises(DllmError, match="NaN"):           # LLM.generate raises the request's error
        llm.generate([{"prompt_token_ids": [2, 3]}, {"prompt_token_ids": [1, 3]}], params)


def test_duplicate_ids_and_bad_params_are_refused_at_once(llada_notok_dir):
    engine = LLMEngine(llada_notok_dir)
    engine.add_request("a", {"prompt_token_ids": [1, 2]}, SamplingParams(max_new_tokens=4))
    with pytest.raises(DllmError, match="already running"):
        engine.add_request("a", {"prompt_token_ids": [1, 2]}, SamplingParams(max_new_tokens=4))
    with pytest.raises(DllmError, match="SamplingParams"):
        engine.add_request("b", {"prompt_token_ids": [1, 2]}, {"max_new_tokens": 4})
    assert engine.num_waiting == 1


# ---- streaming ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dream_tok(tmp_path_factory):
    from tests.tokenizer_files import write_dream_tokenizer

    d = tmp_path_factory.mktemp("dream_tok")
    write_dream_tokenizer(d)
    return Tokenizer.from_pretrained(d)


def _feed(stream, ids):
    """Every final prefix in turn -> the deltas."""
    return [stream.update(ids[:n]) for n in range(1, len(ids) + 1)]


def test_incomplete_utf8_is_held_back(dream_tok):
    text = "猫 is 東京 猫."      # 猫 is not in the tokenizer's training text: three byte tokens
    ids = dream_tok.encode(text, add_special_tokens=False)
    pieces = [dream_tok.decode(ids[:n]) for n in range(1, len(ids) + 1)]
    assert any(p.endswith("\ufffd") for p in pieces)        # the tokens really split a character
    s = TextStream(dream_tok)
    deltas = _feed(s, ids)
    assert not any("\ufffd" in d for d, _ in deltas)
    final, tok_ids, _ = s.final(ids)
    rest = s.rest(final, tok_ids)
    assert "".join(d for d, _ in deltas) + rest[0] == final == text
    assert sum((i for _, i in deltas), []) + rest[1] == ids


@pytest.mark.parametrize("stop", ["is 東", "京.", "zzz"])
def test_stop_strings_are_held_back_and_cut(dream_tok, stop):
    text = "東京 is 東京."
    ids = dream_tok.encode(text, add_special_tokens=False)
    s = TextStream(dream_tok, (stop,))
    deltas = _feed(s, ids)
    final, tok_ids, cut = s.final(ids)
    rest = s.rest(final, tok_ids)
    assert "".join(d for d, _ in deltas) + rest[0] == final == text.split(stop)[0]
    assert cut == (stop in text)
    assert sum((i for _, i in deltas), []) + rest[1] == tok_ids   # nothing past the stop string was ever sent


@pytest.mark.parametrize("fixture,cache", [("llada_dir", "none"), ("llada_dir", "dual"), ("dream_dir", "prefix")])
def test_streamed_deltas_join_to_the_answer(request, fixture, cache):
    llm = LLM(request.getfixturevalue(fixture))
    base = SamplingParams(max_new_tokens=16, block_length=4, steps=16, cache=cache)
    whole = llm.generate("Hello world", base)[0]
    # a stop string that ends the answer inside a later block
    stop = whole.text[len(whole.text) // 2:][:2] if len(whole.text) > 4 else "zz"
    for params in (base, SamplingParams(**{**base.to_dict(), "stop": (stop,)})):
        want = llm.generate("Hello world", params)[0]
        outs = list(llm.stream("Hello world", params))
        assert outs[-1].finished and outs[-1].text == want.text and outs[-1].token_ids == want.token_ids
        assert "".join(o.delta_text for o in outs) == want.text
        assert sum((o.delta_token_ids for o in outs), []) == want.token_ids
        assert any(o.delta_text for o in outs) == bool(want.text)


def test_chat_applies_the_template(llada_dir):
    llm = LLM(llada_dir)
    params = SamplingParams(max_new_tokens=8, block_length=4, steps=8)
    got = llm.chat([{"role": "user", "content": "Hello world"}], params)
    want = llm.generate("Hello world", params, apply_chat_template=True)[0]
    assert got.prompt_token_ids == want.prompt_token_ids and got.token_ids == want.token_ids
    with pytest.raises(DllmError, match="messages"):
        llm.chat("Hello", params)


def test_a_stop_string_ends_the_request_as_soon_as_its_text_is_final(llada_dir):
    llm = LLM(llada_dir)
    base = SamplingParams(max_new_tokens=16, block_length=4, steps=16)
    whole = llm.generate("Hello world", base)[0]
    assert len(whole.token_ids) > 8 and whole.stats.nfe == 16       # no end token: every block decoded
    stop = llm.tokenizer.decode(whole.token_ids[:3]).strip()[-2:]   # text of the first block
    cut = whole.text.find(stop)
    assert stop and 0 <= cut
    params = SamplingParams(**{**base.to_dict(), "stop": (stop,)})
    got = llm.generate("Hello world", params)[0]
    streamed = list(llm.stream("Hello world", params))
    for out in (got, streamed[-1]):
        assert out.finish_reason == "stop" and out.text == whole.text[:cut]
        assert out.token_ids == whole.token_ids[:len(out.token_ids)]
        assert out.stats.nfe < whole.stats.nfe                       # the later blocks were never decoded
    assert "".join(o.delta_text for o in streamed) == got.text


@pytest.mark.parametrize("fixture,kw", [
    ("llada_dir", dict(scheduler="threshold", threshold=0.3, block_length=8)),
    ("llada_dir", dict(scheduler="topk", steps=16, block_length=8, cache="dual")),
    ("dream_dir", dict(scheduler="topk", steps=16, block_length=8)),
])
def test_masked_span_scoring_equals_whole_block_scoring(request, fixture, kw, monkeypatch):
    """masked_only schedulers at T = 0 score only the block's masked span; an on_step observer (which reads
    whole blocks) turns that off: the answers and forward counts must agree, and the spans must have
    been narrower than the block at some step."""
    from dllm.engine.runner import ModelRunner

    llm = LLM(request.getfixturevalue(fixture))
    widths = []
    real = ModelRunner.run

    def spy(self, rows):
        widths.extend(r.q[1] - r.q[0] for r in rows)
        return real(self, rows)
    monkeypatch.setattr(ModelRunner, "run", spy)
    V = llm.args.vocab_size
    prompts = [{"prompt_token_ids": [(7 * i + j) % (V - 8) for j in range(n)]} for i, n in enumerate((3, 9, 5))]
    params = SamplingParams(max_new_tokens=16, **kw)
    span = llm.generate(prompts, params)
    assert any(w < 8 for w in widths)
    widths.clear()
    whole = llm.generate(prompts, params, on_step=lambda st: None)
    assert all(w >= 8 for w in widths)
    assert [(o.token_ids, o.stats.nfe) for o in span] == [(o.token_ids, o.stats.nfe) for o in whole]
