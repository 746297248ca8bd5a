"""The seed decoders that need engine capabilities: adablock (variable blocks), freedave (draft
rounds), wino (a shadow block and revocable slots). Parity with the authors' algorithms
(tests/reference_seed_capabilities.py) at batch 1 and 3 through LLM.generate, and each method's
special cases: FreeDave equals one-token-per-step greedy decoding with fewer forwards, WINO
re-masks and re-decodes and terminates under adversarial logits, AdaBlock ends blocks at
delimiters (a block of one slot included)."""
import pytest
import torch

from dllm import LLM, SamplingParams
from dllm.errors import InvalidParamsError, UnsupportedError
from dllm.models.config import ModelArgs
from tests import reference_seed_capabilities as ref
from tests.reference_seed_decoders import Forwards
from tests.helpers import decode, load_state, random_prompt, upto_stop


def _prompts(V, lengths=(4, 6, 3), seed0=0):
    return [random_prompt(V, n, seed0 + i) for i, n in enumerate(lengths)]


def _check(llm, prompts, params, reference, gen, nfe_of=lambda r: r[1]):
    """Batch of all prompts and the first alone, against reference(prompt) -> (answer, forwards, ...)."""
    outs = llm.generate([{"prompt_token_ids": p[0].tolist()} for p in prompts], params)
    refs = [reference(p) for p in prompts]
    for i, r in enumerate(refs):
        assert outs[i].token_ids == upto_stop(r[0].tolist(), llm.stop_ids), i
    alone = llm.generate({"prompt_token_ids": prompts[0][0].tolist()}, params)[0]
    assert alone.token_ids == outs[0].token_ids
    if len(alone.token_ids) == gen:            # no EOS: every block ran, as in the reference
        assert alone.stats.nfe == nfe_of(refs[0])
    return refs, outs, alone


# ---- AdaBlock ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_adablock_matches_the_authors_code(llada_newline_dir, cache):
    sd, cfg = load_state(llada_newline_dir)
    llm = LLM(llada_newline_dir, pack="none")
    delims = llm.engine.loaded.newline_ids()
    assert delims
    gen, early = 16, 0
    for fallback, tau_d in [(8, 0.3), (4, 0.3), (8, 0.9)]:
        params = SamplingParams(max_new_tokens=gen, block_length=fallback, scheduler="adablock", cache=cache,
                                adablock_delimiter_threshold=tau_d)
        refs, _, _ = _check(llm, _prompts(cfg["vocab_size"]), params, lambda p: ref.adablock_generate(
            Forwards(sd, cfg, cache), p, gen_length=gen, block_length=fallback, mask_id=cfg["mask_token_id"],
            delimiter_ids=delims, delimiter_threshold=tau_d), gen)
        early += sum(any(n != min(fallback, gen - sum(r[2][:i])) for i, n in enumerate(r[2])) for r in refs)
    assert early > 0        # some blocks did end at a delimiter


class ScriptedModel(torch.nn.Module):
    """Logits by canvas column: answer slot j predicts script[j] = (token, logit) against 0 elsewhere."""

    def __init__(self, V, P, script, default=(5, 3.0)):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.V, self.P, self.script, self.default = V, P, script, default
        self.calls = 0

    def forward(self, ids, pos, cache, q, valid):
        self.calls += 1
        cols = torch.arange(q.start, q.stop) + (cache.start if cache is not None else 0)
        logits = torch.zeros(ids.shape[0], len(cols), self.V)
        for i, c in enumerate(cols.tolist()):
            tok, val = self.script.get(c - self.P, self.default)
            logits[:, i, tok] = val
        return logits


ARGS = ModelArgs(family="llada", vocab_size=16, dim=8, n_layers=1, n_heads=1, n_kv_heads=1, intermediate_size=8,
                 norm_eps=1e-5, rope_theta=1e4, max_seq_len=64, mask_token_id=15)


@pytest.mark.parametrize("cache", ["none", "dual"])
@pytest.mark.parametrize("at,first_block", [(2, [0, 1, 2]), (0, [0])])
def test_adablock_delimiter_ends_the_block(cache, at, first_block):
    # slot `at` predicts the delimiter (token 9) at ~0.99; the rest token 5 at ~0.57 (one per step)
    model = ScriptedModel(16, P=3, script={at: (9, 12.0)})
    params = SamplingParams(max_new_tokens=16, block_length=8, scheduler="adablock", cache=cache, trace=True)
    row = decode(model, ARGS, [[1, 2, 3]], params, {7}, delimiters=(9,))[0]
    assert row.answer()[at] == 9 and row.answer().count(5) == 15
    rounds = {}
    for e in row.trace:
        rounds.setdefault(e["block"], []).extend(e["positions"])
    assert sorted(rounds[0]) == first_block                    # the first block ends at the delimiter
    # later blocks fall back to block_length (8), clipped to the answer
    n = len(first_block)
    assert sorted(rounds[1]) == list(range(n, n + 8)) and sorted(rounds[2]) == list(range(n + 8, 16))
    without = decode(ScriptedModel(16, P=3, script={at: (9, 12.0)}), ARGS, [[1, 2, 3]], params, {7}, delimiters=())[0]
    assert sorted(p for e in without.trace if e["block"] == 0 for p in e["positions"]) == list(range(8))


def test_adablock_rows_with_different_blocks_batch_like_alone():
    # row 0's delimiter is at slot 1, row 1 has none: one window, per-row blocks, the same answers
    script = {1: (9, 12.0)}
    params = SamplingParams(max_new_tokens=12, block_length=4, scheduler="adablock", cache="dual", trace=True)
    rows = decode(ScriptedModel(16, P=3, script=script), ARGS, [[1, 2, 3], [4, 5, 6]], params, {7}, delimiters=(9,))
    alone = decode(ScriptedModel(16, P=3, script=script), ARGS, [[1, 2, 3]], params, {7},
                               delimiters=(9,))[0]
    assert rows[0].answer() == alone.answer()


# ---- FreeDave ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cache", ["none", "dual"])
def test_freedave_equals_one_token_per_step_greedy(llada_notok_dir, tmp_path_factory, cache):
    from tests.checkpoints import write_llada

    sharp = tmp_path_factory.mktemp("sharp")
    write_llada(sharp, tokenizer=False, n_kv_heads=2, head_scale=2.5)   # confident runs
    for path, need_fewer in [(llada_notok_dir, False), (sharp, True)]:
        llm = LLM(path, pack="none")
        V = llm.args.vocab_size
        prompts = [{"prompt_token_ids": random_prompt(V, 3 + s % 5, 100 + s)[0].tolist()} for s in range(8)]
        # the baseline scores whole blocks, as FreeDave's steps do (an observer turns off masked-span scoring,
        # engine/diffusion.py): fewer last-layer rows round differently, and near-ties of this random model flip
        greedy = llm.generate(prompts, SamplingParams(max_new_tokens=16, block_length=8, steps=16, cache=cache),
                              on_step=lambda st: None)
        for K in (2, 4, 8):
            fd = llm.generate(prompts, SamplingParams(max_new_tokens=16, block_length=8, scheduler="freedave",
                                                      freedave_drafts=K, cache=cache))
            for g, f in zip(greedy, fd):
                assert f.token_ids == g.token_ids
            if need_fewer:
                alone = [llm.generate(p, SamplingParams(max_new_tokens=16, block_length=8, scheduler="freedave",
                                                        freedave_drafts=K, cache=cache))[0] for p in prompts[:2]]
                full = [a for a in alone if len(a.token_ids) == 16]
                assert full and all(a.stats.nfe < 16 for a in full)
                assert all(a.stats.draft_rows > 0 for a in full)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_freedave_matches_the_authors_code(llada_notok_dir, cache):
    sd, cfg = load_state(llada_notok_dir)
    llm = LLM(llada_notok_dir, pack="none")
    for kw in [dict(freedave_drafts=4), dict(freedave_drafts=3, freedave_threshold=0.5)]:
        params = SamplingParams(max_new_tokens=16, block_length=8, scheduler="freedave", cache=cache, **kw)
        refs, outs, alone = _check(llm, _prompts(cfg["vocab_size"]), params, lambda p: ref.freedave_generate(
            Forwards(sd, cfg, cache), p, gen_length=16, block_length=8, mask_id=cfg["mask_token_id"],
            drafts=kw["freedave_drafts"], threshold=kw.get("freedave_threshold")), 16)
        if len(alone.token_ids) == 16:
            assert alone.stats.draft_rows == refs[0][2]


@pytest.mark.parametrize("cache,window", [("dual", lambda P, L: 8 + 2), ("prefix", lambda P, L: L - P),
                                          ("none", lambda P, L: L)])
def test_freedave_drafts_hold_only_the_columns_their_window_writes(llada_notok_dir, cache, window):
    # with a cache a draft writes only a cached step's window (its other keys are the request's cached
    # columns), so its scratch range is that window's width, not the canvas's: the answers stay the
    # authors' (test above) and a request holds L + K * window columns
    from dllm import LLMEngine

    engine = LLMEngine(llada_notok_dir, pack="none")
    V, K, P, N = engine.loaded.args.vocab_size, 4, 5, 32
    params = SamplingParams(max_new_tokens=N, block_length=8, scheduler="freedave", freedave_drafts=K,
                            cache=cache, refresh_window=1 if cache == "dual" else 0)
    engine.add_request("a", {"prompt_token_ids": random_prompt(V, P, 7)[0].tolist()}, params)
    engine.step()
    L = P + N
    assert engine.scheduler.pools["main"].used == L + K * window(P, L)
    while engine.has_unfinished_requests():
        engine.step()
    assert engine.scheduler.pools["main"].used == 0


def test_freedave_refusals():
    with pytest.raises(InvalidParamsError, match="refresh_every"):
        SamplingParams(scheduler="freedave", cache="dual", refresh_every=2)
    with pytest.raises(InvalidParamsError, match="classifier-free"):
        SamplingParams(scheduler="freedave", cfg_scale=1.0)


# ---- WINO --------------------------------------------------------------------------------------
def test_wino_matches_the_authors_code(llada_notok_dir):
    sd, cfg = load_state(llada_notok_dir)
    llm = LLM(llada_notok_dir, pack="none")
    remasks = 0
    for kw in [dict(), dict(threshold=0.5, wino_remask_threshold=0.95), dict(threshold=0.3)]:
        for gen, block in [(16, 8), (12, 12)]:
            params = SamplingParams(max_new_tokens=gen, block_length=block, scheduler="wino", **kw)
            refs, _, _ = _check(llm, _prompts(cfg["vocab_size"]), params, lambda p: ref.wino_generate(
                sd, cfg, p, gen_length=gen, block_length=block, mask_id=cfg["mask_token_id"],
                threshold=params.threshold, threshold_back=params.wino_remask_threshold), gen)
            remasks += sum(r[2] for r in refs)
    assert remasks > 0          # the parity covers steps that re-mask


class ShadowScript(torch.nn.Module):
    """A model for WINO's forward (query rows q: the W block rows, then the W shadow rows that follow the
    block, engine/windows.py shadow_row): at call t, the block's real rows predict real[t][j] = (token,
    logit) and shadow row j gives its current token back[t][j] (a logit; 0 = uniform)."""

    def __init__(self, V, real, back, default=(4, 0.0)):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.V, self.real, self.back, self.default = V, real, back, default
        self.calls = 0

    def forward(self, ids, pos, cache, q, valid):
        t = min(self.calls, len(self.real) - 1)
        self.calls += 1
        W = (q.stop - q.start) // 2
        logits = torch.zeros(ids.shape[0], 2 * W, self.V)
        for j in range(W):
            tok, val = self.real[t].get(j, self.default)
            logits[:, j, tok] = val
            cur = ids[:, q.start + j]                                       # the slot's current token
            logits[torch.arange(ids.shape[0]), W + j, cur] = self.back[t].get(j, 9.0)
        return logits


def test_wino_remasks_and_redecodes_a_token():
    V = 16
    real = [{0: (5, 9.0), 1: (5, 9.0)},                    # call 1: slots 0, 1 at ~0.99
            {2: (6, 9.0), 3: (6, 9.0)},                    # call 2: slots 2, 3; the shadow doubts slot 0
            {0: (7, 9.0)}]                                 # call 3: slot 0 re-decoded as 7
    back = [{}, {0: -9.0}, {}]
    model = ShadowScript(V, real, back)
    params = SamplingParams(max_new_tokens=4, scheduler="wino", trace=True)
    row = decode(model, ARGS, [[1, 2, 3]], params, {14})[0]
    assert row.answer() == [7, 5, 6, 6]
    assert [e["remasked"] for e in row.trace] == [[], [0], []]
    assert [sorted(e["positions"]) for e in row.trace] == [[0, 1], [2, 3], [0]]
    assert row.nfe == 3


def test_wino_terminates_under_adversarial_logits():
    # every masked slot is confident and every shadow rejects its token: net progress can go to zero
    V, W = 16, 32
    real = [{j: (5, 9.0) for j in range(W)}]
    back = [{j: -9.0 for j in range(W)}]
    model = ShadowScript(V, real, back)
    params = SamplingParams(max_new_tokens=W, scheduler="wino", trace=True)
    row = decode(model, ARGS, [[1, 2, 3]], params, {14})[0]
    assert row.answer() == [5] * W
    assert sum(len(e["remasked"]) for e in row.trace) > 0
    assert row.nfe < 200


def test_wino_refusals(dream_dir):
    with pytest.raises(InvalidParamsError, match="cache='none'"):
        SamplingParams(scheduler="wino", cache="dual")
    with pytest.raises(UnsupportedError, match="logit shift"):
        LLM(dream_dir).generate({"prompt_token_ids": [1, 2]}, SamplingParams(max_new_tokens=4, scheduler="wino"))


def test_oracle_leave_one_out_is_the_marginal_with_the_slot_masked():
    from dllm.evals.oracle import OracleModel

    m = OracleModel(vocab_size=6, mask_id=5, noise=0.0)
    m.register([1, 2], torch.tensor([[3, 4, 3], [3, 3, 4], [4, 3, 3]]))
    x = torch.tensor([[1, 2, 3, 5, 3]])                     # answer: 3, mask, 3
    out = m.leave_one_out(x, None, slice(2, 5))
    p = out.softmax(-1)
    # slot 0 (column 2) with itself hidden: answers agreeing with (?, mask, 3) -> [3,4,3], [4,3,3]: 1/2 each
    assert torch.allclose(p[0, 3, 3], torch.tensor(0.5)) and torch.allclose(p[0, 3, 4], torch.tensor(0.5))
    # the block rows are the plain marginals: slot 1 given (3, ?, 3) -> only [3, 4, 3]
    assert torch.allclose(p[0, 1, 4], torch.tensor(1.0))


def test_show_steps_replays_a_remask(capsys):
    from types import SimpleNamespace

    from dllm.cli import _show_steps
    from dllm.outputs import GenerationStats, RequestOutput

    trace = [{"step": 0, "block": 0, "positions": [0, 1], "tokens": [5, 5], "scores": [0.9, 0.9], "remasked": []},
             {"step": 1, "block": 0, "positions": [], "tokens": [], "scores": [], "remasked": [0]},
             {"step": 2, "block": 0, "positions": [0], "tokens": [7], "scores": [0.9], "remasked": []}]
    out = RequestOutput(text=None, token_ids=[7, 5], prompt_token_ids=[1], stats=GenerationStats(trace=trace))
    _show_steps(SimpleNamespace(tokenizer=None, stop_ids={9}), out, label="", color=False)
    frames = capsys.readouterr().err.splitlines()
    assert frames == ["step   0 │ ░ ░", "step   1 │ [5] [5]", "step   2 │ ░ [5]", "step   3 │ [7] [5]"]


# ---- the capabilities on the step machine: arrivals, streaming, block-diffusion refusals ----------------
SEED_MIXED = [   # (prompt length, params): every capability at once, with caches where the method takes them
    (3, dict(max_new_tokens=16, block_length=8, scheduler="freedave", cache="dual")),
    (7, dict(max_new_tokens=16, block_length=4, scheduler="adablock", cache="prefix")),
    (5, dict(max_new_tokens=12, block_length=4, scheduler="wino", eot_prediction=True)),
    (4, dict(max_new_tokens=12, block_length=4, scheduler="ete", ete_budget_bits=2.0)),
    (6, dict(max_new_tokens=12, block_length=4, scheduler="klass")),
    (2, dict(max_new_tokens=8, scheduler="freedave", freedave_drafts=3)),
]


def test_capabilities_under_staggered_arrivals_equal_each_request_alone(llada_newline_dir):
    from dllm import LLMEngine

    def drain(engine, outs):
        while engine.has_unfinished_requests():
            outs.update({o.request_id: o for o in engine.step() if o.finished})
        return outs

    V = LLMEngine(llada_newline_dir).loaded.args.vocab_size
    reqs = [({"prompt_token_ids": random_prompt(V, n, 10 + n)[0].tolist()}, SamplingParams(**kw)) for n, kw in SEED_MIXED]
    want = []
    for prompt, params in reqs:
        alone = LLMEngine(llada_newline_dir)
        alone.add_request("x", prompt, params)
        o = drain(alone, {})["x"]
        want.append((o.token_ids, o.stats.nfe, o.stats.draft_rows))
    engine, outs, together = LLMEngine(llada_newline_dir), {}, 0
    for i, (prompt, params) in enumerate(reqs):    # one arrival per step, while the others decode
        engine.add_request(str(i), prompt, params)
        outs.update({o.request_id: o for o in engine.step() if o.finished})
        together = max(together, engine.num_running)
    drain(engine, outs)
    assert together >= 3
    got = [(outs[str(i)].token_ids, outs[str(i)].stats.nfe, outs[str(i)].stats.draft_rows) for i in range(len(reqs))]
    assert got == want
    assert want[0][2] > 0 and want[5][2] > 0          # freedave ran draft rows, counted apart from nfe
    assert engine.scheduler.pools["main"].used == 0   # draft and shadow ranges went back to the pool


def test_wino_streams_only_text_that_can_no_longer_change(llada_newline_dir):
    llm = LLM(llada_newline_dir, pack="none")
    params = SamplingParams(max_new_tokens=24, block_length=8, scheduler="wino", threshold=0.3,
                            wino_remask_threshold=0.95, trace=True)
    prompt = {"prompt_token_ids": random_prompt(llm.args.vocab_size, 5, 3)[0].tolist()}
    final = llm.generate(prompt, params)[0]
    assert any(e["remasked"] for e in final.stats.trace)        # this request does re-mask
    outs = list(llm.stream(prompt, params))
    assert "".join(o.delta_text for o in outs) == outs[-1].text == final.text
    assert outs[-1].token_ids == final.token_ids
    for o in outs:   # every prefix streamed is a prefix of the answer: nothing final was taken back
        assert final.token_ids[:len(o.token_ids)] == o.token_ids


@pytest.mark.parametrize("name", ["adablock", "freedave", "wino"])
def test_block_diffusion_models_refuse_capability_decoders(tmp_path_factory, name):
    from tests.block_checkpoints import write_sdar

    path = tmp_path_factory.mktemp("sdar_seed")
    write_sdar(path, tokenizer=False, vocab_size=300, n_layers=1)
    llm = LLM(path, pack="none")
    with pytest.raises(UnsupportedError, match=f"scheduler '{name}' is not supported for block-diffusion models"):
        llm.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_new_tokens=8, scheduler=name))
