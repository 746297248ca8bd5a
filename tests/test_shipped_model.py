"""models/dllm-tiny, the masked-diffusion model shipped in the repository, through the real loader,
engine and schedulers on held-out examples (split="eval": seeds the training never drew).

The thresholds sit well under the model card's measured accuracies (200 samples each) so that the
test checks the model and the engine still work together, not the last point of accuracy."""
import json
import subprocess
import sys

import pytest

from dllm import LLM, SamplingParams
from dllm.default_model import DEFAULT_MODEL
from dllm.evals.tasks import get_task, make_examples
from dllm.evals.tasks.text import SCHEMA

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(), reason="models/dllm-tiny not shipped")


@pytest.fixture(scope="module")
def llm():
    return LLM(str(DEFAULT_MODEL), device="cpu", dtype="float32")


def solve(llm, task, n, count, seed=7, **params):
    exs = make_examples(task, n, count, seed, split="eval")
    outs = llm.generate([e.prompt for e in exs], SamplingParams(**{"max_new_tokens": 32, **params}),
                        apply_chat_template=True)
    scores = [get_task(task).score(e, o.text) for e, o in zip(exs, outs)]
    return sum(s.correct for s in scores), outs


def test_model_card_files():
    names = {p.name for p in DEFAULT_MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "learned_filter.safetensors"} <= names
    assert sum(p.stat().st_size for p in DEFAULT_MODEL.rglob("*") if p.is_file()) < 60 * 2 ** 20
    assert (DEFAULT_MODEL / "model.safetensors").stat().st_size < 16 * 2 ** 20
    assert json.loads((DEFAULT_MODEL / "config.json").read_text())["model_type"] == "llada"
    # the README's JSON example reads this file into the prompt: it must be the schema the model saw
    assert (DEFAULT_MODEL / "person.schema.json").read_text() == json.dumps(SCHEMA)


def test_one_token_per_forward_copies_reverses_and_sorts(llm):
    for task, need in (("copy", 6), ("reverse", 6), ("sort", 5)):
        correct, outs = solve(llm, task, 5, 6, steps=32)      # topk, one slot per forward
        assert correct >= need, (task, [o.text for o in outs])
        assert all(o.stats.nfe == 32 for o in outs)


def test_confidence_threshold_decodes_a_copy_in_few_forwards(llm):
    correct, outs = solve(llm, "copy", 5, 8, scheduler="threshold", threshold=0.9)
    assert correct == 8
    assert max(o.stats.nfe for o in outs) <= 4                # 20 answer tokens + EOS tail in <= 4 forwards


def test_shipped_learned_filter_is_found_and_used(llm):
    correct, outs = solve(llm, "reverse", 5, 6, scheduler="learned_filter", block_length=32)
    assert correct == 6 and max(o.stats.nfe for o in outs) < 32


def test_json_schema_constraint_keeps_parallel_decoding_valid(llm):
    task = get_task("json_fill")
    exs = make_examples("json_fill", None, 4, 3, split="eval")
    outs = llm.generate([e.prompt for e in exs], SamplingParams(max_new_tokens=40, steps=5,
                        **task.constraint(exs[0])), apply_chat_template=True)
    assert all(task.score(e, o.text).valid for e, o in zip(exs, outs)), [o.text for o in outs]


def test_cli_generate_without_model_flag_sorts_a_list():
    ex = make_examples("sort", 4, 1, 11, split="eval")[0]
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "generate", "--max-new-tokens", "32", ex.prompt],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert get_task("sort").score(ex, r.stdout).correct, (ex.reference, r.stdout)
