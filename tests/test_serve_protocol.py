"""`dllm serve`'s request mapping (dllm/serve/protocol.py) and CLI errors, without a running server."""
from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys

import pytest

from dllm.errors import InvalidParamsError
from dllm.sampling_params import SamplingParams
from dllm.serve.protocol import ApiError, ModelInfo, parse_chat, parse_completion
from dllm.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def info():
    from dllm.default_model import DEFAULT_MODEL

    return ModelInfo("dllm-tiny", Tokenizer.from_pretrained(DEFAULT_MODEL), 2048, SamplingParams())


def test_max_tokens_rounds_the_canvas_up_to_whole_blocks(info):
    job = parse_completion({"prompt": "hi", "max_tokens": 10, "block_length": 8}, info)
    assert (job.max_tokens, job.params.max_new_tokens, job.params.block_length) == (10, 16, 8)
    job = parse_completion({"prompt": "hi", "max_tokens": 10}, info)   # one block: no rounding
    assert (job.max_tokens, job.params.max_new_tokens) == (10, 10)
    job = parse_chat({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 12}, info)
    assert job.max_tokens == 12
    with pytest.raises(ApiError, match="disagree"):
        parse_completion({"prompt": "hi", "max_tokens": 10, "max_new_tokens": 12}, info)


def test_every_sampling_field_by_name_and_the_openai_names(info):
    body = {"prompt": "hi", "temperature": 0.7, "top_p": 0.9, "top_k": 5, "seed": 3, "stop": "x", "scheduler": "threshold",
            "threshold": 0.5, "cache": "dual", "remasking": "margin", "eot_prediction": True, "refresh_every": 2,
            "early_commit_thresholds": [1, 2, 3]}
    p = parse_completion(body, info).params
    assert (p.temperature, p.top_p, p.top_k, p.seed, p.stop, p.scheduler, p.threshold, p.cache, p.remasking,
            p.eot_prediction, p.refresh_every, p.early_commit_thresholds) == \
        (0.7, 0.9, 5, 3, ("x",), "threshold", 0.5, "dual", "margin", True, 2, (1.0, 2.0, 3.0))
    # null means "not given": the server's default stays
    defaults = dataclasses.replace(info, defaults=SamplingParams(block_length=8, max_new_tokens=32))
    p = parse_completion({"prompt": "hi", "block_length": None, "temperature": None}, defaults).params
    assert (p.block_length, p.temperature, p.max_new_tokens) == (8, 0.0, 32)


def test_constraints_under_vllm_names_and_response_format(info):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert parse_completion({"prompt": "x", "guided_regex": "[ab]+"}, info).params.regex == "[ab]+"
    assert parse_completion({"prompt": "x", "guided_json": schema}, info).params.json_schema == schema
    assert parse_completion({"prompt": "x", "guided_json": '{"type": "integer"}'}, info).params.json_schema == \
        {"type": "integer"}
    assert parse_completion({"prompt": "x", "guided_grammar": 'start: "a"'}, info).params.grammar == 'start: "a"'
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    assert parse_completion({"prompt": "x", "response_format": fmt}, info).params.json_schema == schema
    assert parse_completion({"prompt": "x", "response_format": {"type": "json_object"}}, info).params.json_schema \
        == {"type": "object"}
    assert parse_completion({"prompt": "x", "response_format": {"type": "text"}}, info).params.json_schema is None
    for body, match in [({"guided_regex": "a", "regex": "b"}, "not both"),
                        ({"response_format": fmt, "regex": "b"}, "not both"),
                        ({"response_format": {"type": "xml"}}, "response_format.type"),
                        ({"guided_json": "{not json"}, "not valid JSON")]:
        with pytest.raises(ApiError, match=match):
            parse_completion({"prompt": "x", **body}, info)


@pytest.mark.parametrize("body, match", [
    ({"threshhold": 0.5}, "unknown field 'threshhold'"),
    ({"filter_path": "/etc/passwd"}, "--filter-path"),
    ({"draft_model": "/tmp"}, "--draft-model"),
    ({"logit_bias": {"1": 5}}, "not supported"),
    ({"tools": [{"type": "function"}]}, "not supported"),
    ({"n": 65}, "n must be between"),
    ({"prompt": ["a"] * 65, "n": 4}, "at most 256 answers"),
    ({"top_k": 2.5}, "top_k must be an integer"),
    ({"stream": "yes"}, "stream must be true or false"),
    ({"stop": 5}, "stop must be a list"),
    ({"stream_options": {"include_usage": True, "x": 1}}, "stream_options"),
    ({"stream_mode": "frames"}, "stream_mode"),
    ({"prompt": []}, "prompt must be"),
    ({"prompt": [1, "a"]}, "prompt must be"),
    ({"max_tokens": 0}, "positive"),
    ({"model": "other"}, "does not exist"),
])
def test_bad_bodies_are_refused_with_one_sentence(info, body, match):
    with pytest.raises(ApiError, match=match) as e:
        parse_completion({"prompt": "x", **body}, info)
    assert e.value.status == (404 if "model" in body else 400)


@pytest.mark.parametrize("body", [{"guided_grammar": '%import .secret (SECRET)\nstart: SECRET\n'},
                                  {"grammar": '%import\t.x.Y\nstart: Y\n'},
                                  {"grammar": '%import secret.S\nstart: S\n'}])
def test_grammars_never_import_files(info, body, tmp_path, monkeypatch):
    from dllm.errors import ConstraintError

    monkeypatch.chdir(tmp_path)   # lark would read these from the working directory
    (tmp_path / "secret.lark").write_text('SECRET: "s"\nS: "s"\n')
    (tmp_path / "x.lark").write_text('Y: "y"\n')
    with pytest.raises(ConstraintError, match="may %import only lark's bundled grammars"):
        parse_completion({"prompt": "x", **body}, info)


def test_sampling_params_keeps_its_own_sentence(info):
    with pytest.raises(InvalidParamsError, match="unknown scheduler 'nope'"):
        parse_completion({"prompt": "x", "scheduler": "nope"}, info)


def test_neutral_openai_fields_are_accepted(info):
    body = {"prompt": "x", "presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": None, "echo": False,
            "user": "u1", "best_of": 1, "logit_bias": {}}
    assert parse_completion(body, info).max_tokens == 128
    chat = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "a"}]}],
            "tools": [], "tool_choice": "none", "store": False, "parallel_tool_calls": False}
    job = parse_chat(chat, info)
    assert job.prompts == [info.tokenizer.encode_chat([{"role": "system", "content": "s"}, {"role": "user", "content": "a"}])]


def test_chat_needs_text_messages_and_a_template(info):
    for messages, match in [([], "non-empty list"), ([{"content": "x"}], "string 'role'"),
                            ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "only text"),
                            ([{"role": "user", "content": 5}], "must be a string")]:
        with pytest.raises(ApiError, match=match):
            parse_chat({"messages": messages}, info)
    bare = dataclasses.replace(info, tokenizer=None)
    with pytest.raises(ApiError, match="no chat template"):
        parse_chat({"messages": [{"role": "user", "content": "x"}]}, bare)
    with pytest.raises(ApiError, match="no tokenizer"):
        parse_completion({"prompt": "x"}, bare)
    assert parse_completion({"prompt": [[1, 2], [3]]}, bare).prompts == [[1, 2], [3]]


def test_context_length_is_checked_on_the_canvas(info):
    small = dataclasses.replace(info, max_seq_len=20)
    with pytest.raises(ApiError, match="exceeds the model's context of 20 tokens") as e:
        parse_completion({"prompt": [1] * 10, "max_tokens": 9, "block_length": 8}, small)   # canvas 16
    assert e.value.code == "context_length_exceeded"
    assert parse_completion({"prompt": [1] * 10, "max_tokens": 10}, small).params.max_new_tokens == 10


def _serve(*args):
    proc = subprocess.run([sys.executable, "-m", "dllm.cli", "serve", *args], capture_output=True, text=True,
                          timeout=120)
    return proc.returncode, proc.stderr


def test_serve_cli_errors_before_loading_the_model():
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        rc, err = _serve("--port", str(busy.getsockname()[1]))
    assert rc == 2 and err.startswith("error: cannot listen on 127.0.0.1:") and "Traceback" not in err
    rc, err = _serve("--scheduler", "nope")
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: unknown scheduler 'nope'; choose")


def test_serve_help_is_light_and_has_every_sampling_flag():
    code = ("import sys\nfrom dllm.cli import main\n"
            "try:\n    main(['serve', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = [m for m in ('torch', 'fastapi', 'uvicorn', 'starlette') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for f in dataclasses.fields(SamplingParams):
        assert "--" + f.name.replace("_", "-") in proc.stdout, f.name
    for flag in ("--host", "--port", "--api-key", "--max-num-seqs", "--served-model-name", "--kv-cache-memory",
                 "--device", "--dtype", "--max-waiting", "--grace-period"):
        assert flag in proc.stdout, flag
