"""`dllm serve` end to end: the real server as a subprocess on 127.0.0.1, talked to with the official
`openai` client and with httpx (raw SSE), its answers checked against LLM.generate on the same model
(dllm-tiny, the shipped default). The tests do not depend on how many steps or chunks the engine
takes: streamed deltas must join to the whole answer, and a stream has at least one text chunk.
"""
from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from dllm.sampling_params import SamplingParams  # noqa: E402
from tests.serve_process import ServerProcess, waiting_line  # noqa: E402

KEY = "sk-test-key"
MODEL = "dllm-tiny"
SMALL = dict(max_tokens=16, block_length=8, steps=8)
PERSON = "Ana Silva is 34 years old, lives in Lima and works as a pilot.\nFill this JSON schema with these facts " \
         "and output only the JSON:\n"


@pytest.fixture(scope="module")
def server():
    with ServerProcess("--model", "default", "--api-key", KEY) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def llm():
    from dllm.default_model import resolve_model
    from dllm.llm import LLM

    return LLM(resolve_model(None), device="cpu")


def params(max_tokens=16, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_tokens, **kw)


def chat(client, prompt, stream=False, **body):
    body = {**SMALL, **body}
    std = {k: body.pop(k) for k in ("max_tokens", "temperature", "top_p", "seed", "stop", "n", "response_format",
                                    "stream_options") if k in body}
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                          stream=stream, extra_body=body, **std)


def joined(stream) -> tuple[str, list, list]:
    """Content deltas joined, the finish reasons seen, and every chunk."""
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return text, reasons, chunks


# ---- answers equal LLM.generate's ---------------------------------------------------------------

def test_chat_answer_equals_generate(client, llm):
    want = llm.generate(waiting_line(0), params(block_length=8, steps=8), apply_chat_template=True)[0]
    got = chat(client, waiting_line(0))
    assert want.text and got.choices[0].message.content == want.text
    assert got.choices[0].finish_reason == {"eos": "stop", "stop": "stop", "length": "length"}[want.finish_reason]
    assert got.usage.completion_tokens == len(want.token_ids)
    assert got.usage.prompt_tokens == len(want.prompt_token_ids)
    assert got.usage.model_extra["nfe"] == want.stats.nfe
    assert got.model == MODEL and got.id.startswith("chatcmpl-")


def test_completion_answers_equal_generate(client, llm):
    p = params(block_length=8, steps=8)
    text_prompt = llm.tokenizer.apply_chat_template([{"role": "user", "content": waiting_line(1)}])
    ids = llm.tokenizer.encode_chat([{"role": "user", "content": waiting_line(2)}])
    want = llm.generate([text_prompt, {"prompt_token_ids": ids}], p)
    got = client.completions.create(model=MODEL, prompt=text_prompt, max_tokens=16,
                                    extra_body={"block_length": 8, "steps": 8})
    assert got.choices[0].text == want[0].text and want[0].text
    got = client.completions.create(model=MODEL, prompt=ids, max_tokens=16, extra_body={"block_length": 8, "steps": 8})
    assert got.choices[0].text == want[1].text and got.usage.prompt_tokens == len(ids)


def test_streamed_deltas_join_to_the_answer(client):
    whole = chat(client, waiting_line(3), max_tokens=24).choices[0].message.content
    text, reasons, chunks = joined(chat(client, waiting_line(3), stream=True, max_tokens=24,
                                        stream_options={"include_usage": True}))
    assert text == whole and whole
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 1
    assert reasons == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1

    prompt = waiting_line(4)
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16).choices[0].text
    parts = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=16, stream=True))
    assert "".join(c.choices[0].text for c in parts if c.choices) == whole


def test_max_tokens_is_never_exceeded(client, llm):
    # block_length 8 does not divide 10: the canvas is 16 slots and the answer is cut at 10 tokens
    full = llm.generate(waiting_line(5), params(16, block_length=8), apply_chat_template=True)[0]
    assert len(full.token_ids) > 10, "the test needs an answer longer than max_tokens"
    got = chat(client, waiting_line(5), max_tokens=10, block_length=8, steps=None)
    assert got.usage.completion_tokens == 10 and got.choices[0].finish_reason == "length"
    assert got.choices[0].message.content == llm.tokenizer.decode(full.token_ids[:10])
    text, reasons, _ = joined(chat(client, waiting_line(5), stream=True, max_tokens=10, block_length=8, steps=None))
    assert text == got.choices[0].message.content and reasons == ["length"]


def test_stop_strings_and_seeded_samples(client, llm):
    want = llm.generate(waiting_line(0), params(block_length=8, steps=8, stop=["Diaz"]), apply_chat_template=True)[0]
    got = chat(client, waiting_line(0), stop="Diaz")
    assert got.choices[0].message.content == want.text and want.finish_reason == "stop"
    assert got.choices[0].finish_reason == "stop"
    # n samples at temperature 1: sample j draws with seed + j, so seeded requests reproduce
    a = chat(client, waiting_line(1), n=3, temperature=1.0, seed=7)
    b = chat(client, waiting_line(1), n=3, temperature=1.0, seed=7)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    one = llm.generate(waiting_line(1), params(block_length=8, steps=8, temperature=1.0, seed=8),
                       apply_chat_template=True)[0]
    assert a.choices[1].message.content == one.text


# ---- structured output ----------------------------------------------------------------------------

def test_response_format_json_schema_validates_at_temperature_1(client):
    jsonschema = pytest.importorskip("jsonschema")
    from dllm.default_model import DEFAULT_MODEL

    schema = json.loads((DEFAULT_MODEL / "person.schema.json").read_text())
    prompt = PERSON + json.dumps(schema)
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    got = chat(client, prompt, max_tokens=48, steps=12, block_length=None, temperature=1.0, seed=3, n=4,
               response_format=fmt)
    for c in got.choices:
        jsonschema.validate(json.loads(c.message.content), schema)
    text, _, _ = joined(chat(client, prompt, stream=True, max_tokens=48, steps=12, block_length=None,
                             temperature=1.0, seed=5, response_format=fmt))
    jsonschema.validate(json.loads(text), schema)
    # vLLM's name for the same constraint, and json_object (any JSON object)
    got = chat(client, prompt, max_tokens=48, steps=12, block_length=None, temperature=1.0, seed=9,
               guided_json=json.dumps(schema))
    jsonschema.validate(json.loads(got.choices[0].message.content), schema)
    got = chat(client, prompt, max_tokens=48, steps=12, block_length=None, temperature=1.0, seed=9,
               response_format={"type": "json_object"})
    assert isinstance(json.loads(got.choices[0].message.content), dict)


# ---- concurrency, errors, disconnects ------------------------------------------------------------

def test_16_concurrent_requests_all_correct(client, llm):
    prompts = [waiting_line(i) for i in range(16)]
    want = [llm.generate(p, params(block_length=8, steps=8), apply_chat_template=True)[0].text for p in prompts]

    def ask(i):
        if i % 2:
            return joined(chat(client, prompts[i], stream=True))[0]
        return chat(client, prompts[i]).choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, range(16)))
    assert got == want


@pytest.mark.parametrize("body, match", [
    ({"temperature": "hot"}, "temperature must be a number"),
    ({"threshhold": 0.5}, "unknown field 'threshhold'"),
    ({"scheduler": "nope"}, "unknown scheduler 'nope'"),
    ({"top_p": 1.5}, "top_p must be in"),
    ({"regex": "a(b"}, "regex"),
    ({"draft_model": "/etc"}, "--draft-model"),
    ({"presence_penalty": 0.5}, "not supported"),
    ({"n": 0}, "n must be between"),
    ({"max_tokens": 4000, "steps": None}, "exceeds the model's context"),
    ({"scheduler": "a" * 100_000}, "unknown scheduler 'aaaa"),   # the value is quoted, not all of it
])
def test_bad_fields_get_400_and_the_server_keeps_serving(client, server, body, match):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, waiting_line(0), **body)
    assert e.value.status_code == 400 and re.search(re.escape(match), e.value.body["message"])
    assert len(e.value.body["message"]) <= 1000
    assert max(map(len, server.log().splitlines())) < 2000   # nor is the access log's line
    assert e.value.body["type"] == "invalid_request_error"
    if "max_tokens" in body:
        assert e.value.body["code"] == "context_length_exceeded"
    assert chat(client, waiting_line(0)).choices[0].message.content


def test_auth_unknown_model_body_limits(server, client):
    r = httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=4)
    assert e.value.body["code"] == "model_not_found"
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(server.url + "/v1/completions", content=b"x" * (9 << 20), headers=auth)
    assert r.status_code == 413 and "error" in r.json()
    r = httpx.post(server.url + "/v1/completions", content=b"[" * 100000, headers=auth)   # deep nesting
    assert r.status_code == 400 and r.json()["error"]["message"] == "the request body is not valid JSON."
    r = httpx.get(server.url + "/v2/nothing")
    assert r.status_code == 404 and "error" in r.json()
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_a_dropped_stream_does_not_disturb_others(server, client, llm):
    def aborted() -> float:
        text = httpx.get(server.url + "/metrics").text
        m = re.search(r'^dllm_requests_total\{finish_reason="abort"\} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    before = aborted()
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": waiting_line(6)}], "stream": True,
            "max_tokens": 64, "steps": 64}
    with httpx.Client(timeout=60) as h:
        with h.stream("POST", server.url + "/v1/chat/completions", json=body, headers=auth) as r:
            assert r.status_code == 200
            next(r.iter_lines())   # the role chunk: the request is in the engine; now drop the connection
    # a whole (non-streamed) answer whose client gives up waiting
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.url + "/v1/completions", headers=auth, timeout=0.5,
                   json={"model": MODEL, "prompt": waiting_line(6), "max_tokens": 64, "steps": 64})
    want = llm.generate(waiting_line(7), params(block_length=8, steps=8), apply_chat_template=True)[0].text
    assert chat(client, waiting_line(7)).choices[0].message.content == want
    deadline = time.monotonic() + 60
    while aborted() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert aborted() == before + 2
    assert re.search(r"chatcmpl-\S+ /v1/chat/completions 499 ", server.log())
    assert re.search(r"cmpl-\S+ /v1/completions 499 ", server.log())


def test_a_client_gone_while_sending_its_body_is_a_499_not_a_traceback(server, client):
    """Headers promising a body, part of it, then the connection closed: the server logs a 499 line, not
    an 'Exception in ASGI application' traceback, and keeps serving."""
    start = len(server.log())
    url = httpx.URL(server.url)
    with socket.create_connection((url.host, url.port)) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"prompt\": ")
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while " 499 " not in server.log()[start:] and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log()[start:]
    assert "/v1/completions 499" in log and "Traceback" not in log
    assert chat(client, waiting_line(0)).choices[0].message.content


def test_raw_sse_framing(server):
    body = {"model": MODEL, "prompt": waiting_line(8), "max_tokens": 16, "stream": True,
            "stream_options": {"include_usage": True}, "return_token_ids": True}
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=auth, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode("utf-8")
    assert raw.endswith("data: [DONE]\n\n")
    events = raw.split("\n\n")[:-1]   # every event is one `data:` line followed by a blank line
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"} and len({c["id"] for c in chunks}) == 1
    text_chunks = [c for c in chunks if c["choices"]]
    assert text_chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    ids = [t for c in text_chunks for t in c["choices"][0]["token_ids"]]
    assert chunks[-1]["usage"]["completion_tokens"] == len(ids) and chunks[-1]["choices"] == []


def test_canvas_stream_mode(server, client):
    text, _, chunks = joined(chat(client, waiting_line(9), stream=True, stream_mode="canvas"))
    canvases = [c.choices[0].model_extra["canvas"] for c in chunks if c.choices and "canvas" in c.choices[0].model_extra]
    assert canvases and text
    last = canvases[-1]
    assert last["text"].startswith(text)
    answer_ids = chat(client, waiting_line(9), return_token_ids=True).choices[0].model_extra["token_ids"]
    assert last["token_ids"][:len(answer_ids)] == answer_ids


def test_health_models_and_metrics(server, client):
    from prometheus_client.parser import text_string_to_metric_families

    chat(client, waiting_line(0))
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)}
    for name in ("dllm_requests_running", "dllm_requests_waiting", "dllm_prompt_tokens", "dllm_generation_tokens",
                 "dllm_forwards", "dllm_tokens_per_forward", "dllm_request_latency_seconds",
                 "dllm_time_to_first_token_seconds"):
        assert name in families, name
    value = lambda n: next(s.value for s in families[n].samples if s.name == n + "_total")   # noqa: E731
    assert value("dllm_generation_tokens") > 0 and value("dllm_forwards") > 0
    # one access-log line per request: id, path, status, prompt/answer tokens, forwards, tokens/s, finish
    assert re.search(r"chatcmpl-\w+ /v1/chat/completions 200 prompt=\d+ answer=\d+ nfe=\d+ tok/s=[\d.]+ "
                     r"finish=stop ", server.log())


# ---- admission (429) and SIGTERM, on a server of one slot -----------------------------------------

def test_queue_full_429_then_sigterm_drains(llm):
    with ServerProcess("--model", "default", "--max-num-seqs", "1", "--max-waiting", "1",
                       "--grace-period", "4") as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=300)

        def metric(name):
            m = re.search(rf"^{name} (\S+)$", httpx.get(s.url + "/metrics").text, re.M)
            return float(m.group(1))

        def until(cond, what):
            deadline = time.monotonic() + 60
            while not cond():
                assert time.monotonic() < deadline, what
                time.sleep(0.05)

        with ThreadPoolExecutor(2) as pool:
            long = pool.submit(chat, c, waiting_line(0), max_tokens=128, steps=128, block_length=None)
            until(lambda: metric("dllm_requests_running") == 1, "the first request never ran")
            short = pool.submit(chat, c, waiting_line(1))
            until(lambda: metric("dllm_requests_waiting") == 1, "the second request never waited")
            with pytest.raises(openai.RateLimitError) as e:
                chat(c, waiting_line(2))
            assert e.value.status_code == 429
            assert long.result().choices[0].message.content
            want = llm.generate(waiting_line(1), params(block_length=8, steps=8), apply_chat_template=True)[0].text
            assert short.result().choices[0].message.content == want

        # SIGTERM: the short request in flight finishes; one still running after the grace period is
        # aborted (its stream ends with finish_reason "abort"); new connections are refused; exit 0
        results = {}

        def stream(name, first: threading.Event, **body):
            it = chat(c, waiting_line(3), stream=True, **body)
            chunks = [next(it)]
            first.set()
            results[name] = joined(iter(chunks + list(it)))

        started = [threading.Event(), threading.Event()]
        threads = [threading.Thread(target=stream, args=("short", started[0])),
                   threading.Thread(target=stream, args=("long", started[1]),
                                    kwargs=dict(max_tokens=1024, steps=1024, block_length=None))]
        threads[0].start()
        started[0].wait(60)
        threads[1].start()
        started[1].wait(60)
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        want = llm.generate(waiting_line(3), params(block_length=8, steps=8), apply_chat_template=True)[0].text
        assert results["short"][0] == want and results["short"][1] == ["stop"]
        assert results["long"][1] == ["abort"]
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
            httpx.get(s.url + "/health", timeout=5)
        assert s.proc.wait(60) == 0
