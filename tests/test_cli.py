"""The `dllm` console script, end to end in a subprocess, against the Python API on the same settings."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from dllm.sampling_params import SamplingParams

SMALL = ["--max-new-tokens", "8", "--block-length", "4", "--steps", "8"]
SMALL_PARAMS = dict(max_new_tokens=8, block_length=4, steps=8)
PROMPT = "Write a haiku about the sea."


def dllm(*args, stdin: str = ""):
    """Run `python -m dllm.cli ARGS`; stdout/stderr decoded as UTF-8 without newline translation."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8", NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-m", "dllm.cli", *map(str, args)], input=stdin.encode(),
                          capture_output=True, env=env, timeout=120)
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


def assert_one_line_error(rc, out, err):
    assert rc == 2, (rc, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err


@pytest.fixture(scope="module")
def api():
    """The Python API, one LLM per checkpoint directory, loaded on first use."""
    from dllm.llm import LLM

    cache = {}

    def get(path):
        if path not in cache:
            cache[path] = LLM(path, device="cpu")
        return cache[path]

    return get


# ---- no model needed --------------------------------------------------------------------------

def test_help_does_not_import_torch():
    code = ("import sys\n"
            "from dllm.cli import build_parser, main\n"
            "build_parser()\n"
            "for argv in (['--help'], ['generate', '--help']):\n"
            "    try:\n"
            "        main(argv)\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, e.code\n"
            "heavy = [m for m in ('torch', 'transformers', 'safetensors', 'tokenizers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--max-new-tokens" in proc.stdout and "--show-steps" in proc.stdout


def test_every_sampling_field_has_a_flag():
    from dllm.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["generate"]
    flags = {s for a in sub._actions for s in a.option_strings}
    for f in dataclasses.fields(SamplingParams):
        assert "--" + f.name.replace("_", "-") in flags, f.name
        assert sub.get_default(f.name) is None, f.name   # unset flag -> SamplingParams' own default


@pytest.mark.parametrize("args", [
    ["--block-length", "3", "--max-new-tokens", "8"],
    ["--scheduler", "nope"],
    ["--temperature", "-1"],
    ["--remasking", "sideways"],
    ["--json-schema", "/nonexistent/schema.json"],
], ids=["block-length", "scheduler", "temperature", "remasking", "json-schema-file"])
def test_bad_sampling_flags_are_one_line_errors(args, tmp_path):
    # refused before the model is loaded, so the model directory need not even exist
    assert_one_line_error(*dllm("generate", "--model", tmp_path, *args, "hi"))


def test_pack_that_cannot_run_is_a_one_line_error(tmp_path):
    # refused before the model is loaded too
    rc, out, err = dllm("generate", "--model", tmp_path, "--pack", "onednn", "--graphs", "compile", "hi")
    assert_one_line_error(rc, out, err)
    assert "graphs='compile'" in err


def test_missing_model_flag_uses_the_default_model():
    from dllm.default_model import DEFAULT_MODEL

    rc, out, err = dllm("generate", "--max-new-tokens", "8", "hi")
    if (DEFAULT_MODEL / "config.json").is_file():
        assert rc == 0 and "nfe=" in err
    else:   # a checkout without the shipped model: one sentence pointing at --model
        assert_one_line_error(rc, out, err)
        assert "--model" in err


def test_argparse_errors_exit_2():
    rc, _, err = dllm("generate", "--model", "x", "--steps", "many", "hi")
    assert rc == 2 and "Traceback" not in err
    rc, _, err = dllm("generate", "--model", "x", "--prompt-ids", "1,a")
    assert rc == 2 and "Traceback" not in err


def test_interrupt_and_error_exit_codes(monkeypatch, capsys):
    import dllm.cli as cli
    from dllm.errors import TokenizerError

    def interrupted(args):
        raise KeyboardInterrupt

    def failing(args):
        raise TokenizerError("a message\nover two lines")

    monkeypatch.setattr(cli, "cmd_generate", interrupted)
    assert cli.main(["generate", "hi"]) == 130
    monkeypatch.setattr(cli, "cmd_generate", failing)
    assert cli.main(["generate", "hi"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: a message over two lines"


def test_show_steps_frames_stop_at_the_end_token(capsys):
    from types import SimpleNamespace

    from dllm.cli import _show_steps
    from dllm.outputs import GenerationStats, RequestOutput

    trace = [{"step": 0, "block": 0, "positions": [1], "tokens": [9], "scores": [0.9]},      # end token at slot 1
             {"step": 1, "block": 0, "positions": [0], "tokens": [5], "scores": [0.8]},
             {"step": 2, "block": 0, "positions": [2, 3], "tokens": [9, 9], "scores": [0.7, 0.7]}]
    out = RequestOutput(text=None, token_ids=[5], prompt_token_ids=[1], stats=GenerationStats(trace=trace))
    _show_steps(SimpleNamespace(tokenizer=None, stop_ids={9}), out, label="", color=False)
    frames = capsys.readouterr().err.splitlines()
    assert frames == ["step   0 │ ░ ░", "step   1 │ ░ [9]", "step   2 │ [5] [9]"]


# ---- with a model -----------------------------------------------------------------------------
# Every run below pays for importing torch and loading a model (~4 s on CPU), so they are all
# started together, a few at a time, when the first test needs one; each test then reads its own.

@pytest.fixture(scope="module")
def cli(llada_dir, dream_dir, llada_notok_dir, tmp_path_factory):
    absent = tmp_path_factory.mktemp("cli") / "absent"
    sampled = ["--temperature", "0.7", "--top-k", "40", "--seed", "5", "--stop", "zzz"]
    runs = {
        "missing_dir": (["--model", absent, *SMALL, "hi"], ""),
        "notok_text": (["--model", llada_notok_dir, *SMALL, "hi"], ""),
        "notok_ids": (["--model", llada_notok_dir, *SMALL, "--prompt-ids", "1,2,3", "--prompt-ids", "7, 8"], ""),
        "llada_plain": (["--model", llada_dir, *SMALL, "--no-chat-template", PROMPT, "Hello"], ""),
        "llada_steps": (["--model", llada_dir, *SMALL, "--show-steps", "-"], PROMPT + "\n"),
        "dream_chat": (["--model", dream_dir, *SMALL, PROMPT], ""),
        "dream_json": (["--model", dream_dir, *SMALL, *sampled, "--no-chat-template", "--json", PROMPT], ""),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(dllm, "generate", *argv, stdin=stdin) for name, (argv, stdin) in runs.items()}
        yield lambda name: futures[name].result()


def test_missing_model_dir(cli):
    rc, out, err = cli("missing_dir")
    assert_one_line_error(rc, out, err)
    assert "absent" in err


def test_text_prompt_without_tokenizer(cli):
    rc, out, err = cli("notok_text")
    assert_one_line_error(rc, out, err)
    assert "tokenizer" in err


def test_prompt_ids_without_tokenizer_print_ids(cli, llada_notok_dir, api):
    rc, out, err = cli("notok_ids")
    assert rc == 0, err
    want = api(llada_notok_dir).generate([{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [7, 8]}],
                                         SamplingParams(**SMALL_PARAMS))
    assert want[0].text is None
    ids = [",".join(map(str, o.token_ids)) for o in want]
    assert out == f"=== [1/2] ===\n{ids[0]}\n=== [2/2] ===\n{ids[1]}\n"
    assert "nfe=" in err and "Traceback" not in err


def test_llada_no_chat_template_matches_api(cli, llada_dir, api):
    rc, out, err = cli("llada_plain")
    assert rc == 0, err
    want = api(llada_dir).generate([PROMPT, "Hello"], SamplingParams(**SMALL_PARAMS), apply_chat_template=False)
    assert out == "".join(f"=== [{i + 1}/2] ===\n{o.text}\n" for i, o in enumerate(want))
    assert "loaded llada" in err and err.count("nfe=8") == 2


def test_dream_default_chat_template_matches_api(cli, dream_dir, api):
    rc, out, err = cli("dream_chat")
    assert rc == 0, err
    llm = api(dream_dir)
    want = llm.generate(PROMPT, SamplingParams(**SMALL_PARAMS), apply_chat_template=True)[0]
    assert out == want.text + "\n"
    # the template really was applied (the two encodings differ on this tokenizer)
    plain = llm.generate(PROMPT, SamplingParams(**SMALL_PARAMS), apply_chat_template=False)[0]
    assert want.prompt_token_ids != plain.prompt_token_ids
    assert "loaded dream" in err and "steps=8" in err


def test_dream_json_sampling_matches_api(cli, dream_dir, api):
    rc, out, err = cli("dream_json")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    got = json.loads(lines[0])
    assert got["stats"]["nfe"] == 8 and got["stats"]["steps"] == 8
    params = SamplingParams(**SMALL_PARAMS, temperature=0.7, top_k=40, seed=5, stop=("zzz",))
    want = api(dream_dir).generate(PROMPT, params, apply_chat_template=False)[0]
    assert got["token_ids"] == want.token_ids
    assert got["prompt_token_ids"] == want.prompt_token_ids
    assert got["text"] == want.text and got["finish_reason"] == want.finish_reason


def test_show_steps_from_stdin(cli, llada_dir, api):
    rc, out, err = cli("llada_steps")
    assert rc == 0, err
    want = api(llada_dir).generate(PROMPT, SamplingParams(**SMALL_PARAMS), apply_chat_template=True)[0]
    assert out == want.text + "\n"   # the answer alone on stdout; the frames went to stderr
    frames = [line for line in err.splitlines() if line.startswith("step ")]
    head, canvas = frames[0].split(" │ ")
    assert head == "step   0" and canvas and set(canvas) == {"░"}   # starts from the all-mask canvas
    assert 2 <= len(frames) <= 9
    masks = [f.count("░") for f in frames]
    assert masks == sorted(masks, reverse=True) and masks[-1] == 0   # unmasks monotonically to the end
    assert "\033[" not in err   # no ANSI codes when stderr is not a terminal
