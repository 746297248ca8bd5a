"""The request-level engine API that `dllm serve` is built on (dllm.LLMEngine: add_request, step,
abort), checked through its public contract only, so that it holds for any engine behind it: a
request's deltas join to LLM.generate's answer, aborts and per-request failures end one request.
"""
from __future__ import annotations

import pytest

from dllm import LLMEngine, SamplingParams
from dllm.errors import ConstraintError, DllmError, PromptError
from tests.serve_process import waiting_line

P = SamplingParams(max_new_tokens=16, block_length=8, steps=8)


@pytest.fixture(scope="module")
def llm():
    from dllm.default_model import resolve_model
    from dllm.llm import LLM

    return LLM(resolve_model(None), device="cpu")


@pytest.fixture(scope="module")
def engine(llm):
    return LLMEngine.from_llm(llm)


def run(engine) -> dict:
    """Steps until idle; per request: (joined delta text, joined delta ids, its last output)."""
    got: dict = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            text, ids, _ = got.get(out.request_id, ("", [], None))
            assert _ is None or not _.finished, "an output after the request finished"
            got[out.request_id] = (text + out.delta_text, ids + list(out.delta_token_ids), out)
    return got


def test_deltas_join_to_generate_and_abort_ends_one_request(llm, engine):
    want = llm.generate([waiting_line(i) for i in range(3)], P, apply_chat_template=True)
    for i in range(3):
        engine.add_request(f"r{i}", waiting_line(i), P, apply_chat_template=True)
    engine.add_request("gone", waiting_line(3), P, apply_chat_template=True)
    engine.abort("gone")
    engine.abort("never-added")   # unknown ids: no-op
    got = run(engine)
    for i, w in enumerate(want):
        text, ids, last = got[f"r{i}"]
        assert last.finished and text == w.text == last.text and ids == w.token_ids == last.token_ids
        assert last.finish_reason == w.finish_reason and last.stats.nfe == w.stats.nfe
    assert got["gone"][2].finished and got["gone"][2].finish_reason == "abort"
    assert engine.num_running == 0 and engine.num_waiting == 0


def test_add_request_validates_at_once(engine):
    with pytest.raises(PromptError, match="exceeds the model's context"):
        engine.add_request("long", {"prompt_token_ids": [5] * engine.max_seq_len}, P)
    with pytest.raises(PromptError, match="outside the model's vocabulary"):
        engine.add_request("bad", {"prompt_token_ids": [10 ** 6]}, P)
    engine.add_request("dup", waiting_line(0), P)
    with pytest.raises(DllmError, match="already"):
        engine.add_request("dup", waiting_line(1), P)
    engine.abort("dup")
    run(engine)


def test_a_failing_request_fails_alone(llm, engine):
    want = llm.generate(waiting_line(4), P, apply_chat_template=True)[0]
    engine.add_request("ok", waiting_line(4), P, apply_chat_template=True)
    impossible = SamplingParams(max_new_tokens=8, block_length=8, steps=8, regex="a{20}")   # needs 20 tokens
    try:
        engine.add_request("impossible", waiting_line(5), impossible, apply_chat_template=True)
        added = True
    except ConstraintError:   # an engine may see it at once; then the request never starts
        added = False
    got = run(engine)
    assert got["ok"][0] == want.text and got["ok"][2].finish_reason == want.finish_reason
    if added:
        last = got["impossible"][2]
        assert last.finish_reason == "error" and "satisfies the constraint" in last.error
