"""The Learn2PD filter: trains on synthetic traces and beats the confidence threshold there;
`dllm train-filter` end to end on a tiny checkpoint; the saved file drives learned_filter."""
import subprocess
import sys

import torch

from dllm import LLM, SamplingParams
from dllm.train_filter import Traces, evaluate, filter_accepts, threshold_accepts, train
from tests.checkpoints import write_llada


def synthetic(n, block, seed):
    """Confidence is calibrated differently by slot parity: even slots are already final from
    confidence 0.5, odd slots only from 0.97. A single threshold (0.9) both misses final even
    slots and accepts wrong odd ones; the filter can learn the per-slot cut."""
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, block, generator=g)
    masked = torch.rand(n, block, generator=g) < 0.7
    cut = torch.where(torch.arange(block) % 2 == 0, 0.5, 0.97)
    return Traces(conf, masked, conf > cut)


def test_filter_beats_threshold_on_synthetic_traces():
    fit, held = synthetic(4000, 8, 0), synthetic(1000, 8, 1)
    model = train(fit, hidden=32, epochs=60, lr=3e-3, seed=0)
    f = evaluate(filter_accepts(model, held, 0.96), held)
    t = evaluate(threshold_accepts(held, 0.9), held)
    assert f["correct_per_step"] > t["correct_per_step"] * 1.5     # accepts many more final slots...
    assert f["wrong_per_step"] < t["wrong_per_step"]              # ...and fewer wrong ones
    assert f["precision"] > 0.97


def test_train_filter_cli_end_to_end(tmp_path):
    model = tmp_path / "m"
    write_llada(model, tokenizer=False, n_kv_heads=2, shards=1)
    (model / "model.safetensors.index.json").unlink()   # one unindexed weight file, like models/dllm-tiny
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join('{"prompt_token_ids": [%d, %d, %d]}' % (i, i + 1, i + 2) for i in range(1, 7)))
    out = model / "learned_filter.safetensors"     # the default: beside the weights
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "train-filter", "--model", str(model), "--prompts",
                        str(prompts), "--block-length", "4", "--max-new-tokens", "8", "--epochs", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and out.is_file()
    assert "threshold_0.9" in r.stderr and "filter" in r.stderr
    llm = LLM(model)                               # the loader skips the filter file; the scheduler finds it
    res = llm.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(
        max_new_tokens=8, block_length=4, scheduler="learned_filter", filter_threshold=0.0))[0]
    assert res.stats.nfe == 2          # threshold 0: the filter accepts every slot, one forward per block


def test_train_filter_errors(tmp_path):
    model = tmp_path / "m"
    write_llada(model, tokenizer=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    for extra, msg in [(["--prompts", str(empty)], "no prompts"), (["--prompts", str(tmp_path / "nope")], "cannot read"),
                       (["--prompts", str(empty), "--epochs", "0"], "--epochs")]:
        r = subprocess.run([sys.executable, "-m", "dllm.cli", "train-filter", "--model", str(model), *extra],
                           capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1, r.stderr
