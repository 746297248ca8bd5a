"""Replayed steady-state steps (dllm/engine/graphs.py): torch.compile on any device, CUDA graphs on a GPU.

What can go wrong with a recorded step is that it bakes in something of the step it was
recorded on (the block's cache columns, the batch, the window). torch.compile records a trace
and replays it for every later call whose guards pass, as a CUDA graph replays its capture.
With Python ints specialised (a CUDA graph cannot take a varying int either: only tensor
contents change between replays), the same generations through a counting backend (the trace
run as recorded, no code generation) must give the eager tokens while recording once per
window shape: a step that read the block's start column as an int would record once per block.
"""
import pytest
import torch

import dllm.engine.graphs as graphs
from dllm import LLM, SamplingParams
from dllm.engine.kv_cache import KVCache
from dllm.errors import DllmError
from tests.helpers import random_prompt


class Counting:
    """A torch.compile backend that runs the recorded FX graph as is and counts recordings."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture
def counting(monkeypatch):
    torch._dynamo.reset()                 # recordings of earlier tests' models would count against the limit
    backend = Counting()
    monkeypatch.setattr(graphs, "COMPILE_BACKEND", backend)
    with torch._dynamo.config.patch(specialize_int=True):
        yield backend
    torch._dynamo.reset()


def _prompts(llm, lengths):
    return [{"prompt_token_ids": random_prompt(llm.args.vocab_size, n, n)[0].tolist()} for n in lengths]


def _replays(monkeypatch):
    """Counts calls of StepGraphs (each one a replayed step) over every runner a generate builds."""
    calls = []
    real = graphs.StepGraphs.__call__

    def counted(self, *a, **kw):
        calls.append((a[2], a[0].shape[0]))   # the window's start column, the batch
        return real(self, *a, **kw)
    monkeypatch.setattr(graphs.StepGraphs, "__call__", counted)
    return calls


@pytest.mark.parametrize("fixture", ["llada_notok_dir", "dream_dir"])
@pytest.mark.parametrize("cache,extra", [("dual", {}), ("prefix", {}), ("dual", {"refresh_window": 2}),
                                         ("dual", {"cfg_scale": 1.0})])
def test_compiled_steps_equal_eager_across_blocks(request, monkeypatch, counting, fixture, cache, extra):
    path = request.getfixturevalue(fixture)
    if extra.get("cfg_scale") and fixture == "dream_dir":
        pytest.skip("classifier-free guidance is LLaDA's")
    eager, compiled = LLM(path, graphs="none"), LLM(path, graphs="compile")
    assert compiled.graphs == "compile"
    prompts = _prompts(eager, (3, 9))    # different lengths: a padded batch with a key mask
    params = SamplingParams(max_new_tokens=24, block_length=4, steps=12, cache=cache, **extra)
    want = eager.generate(prompts, params)
    calls = _replays(monkeypatch)
    got = compiled.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert [o.stats.nfe for o in got] == [o.stats.nfe for o in want]
    assert len({c for c, _ in calls}) >= 5   # replayed steps of at least five of the six blocks
    # recordings per window shape, never one per block: the first shape; one with symbolic sizes
    # when the window changes (prefix windows shrink every block, a window clipped at the canvas'
    # end); the last prefix window, which is the block itself (a slice of all rows)
    assert 1 <= counting.graphs <= 3, counting.graphs
    n = counting.graphs
    again = compiled.generate(prompts, params)   # a new request reuses the recordings
    assert [o.token_ids for o in again] == [o.token_ids for o in want]
    assert counting.graphs == n


def test_finished_rows_leaving_the_batch(monkeypatch, counting, llada_dir):
    """A row whose template ends early finishes after its first block and leaves the batch; the
    cache is reallocated for the rows left and the recordings must follow it."""
    eager, compiled = LLM(llada_dir, graphs="none"), LLM(llada_dir, graphs="compile")
    prompts = [{"prompt": "Name a colour.", "template": ["Red", 1]}, "Count to three.", "Say hi."]
    params = SamplingParams(max_new_tokens=16, block_length=4, steps=8, cache="dual")
    want = eager.generate(prompts, params)
    calls = _replays(monkeypatch)
    got = compiled.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    batches = [b for _, b in calls]
    assert batches[0] == 3 and batches[-1] < 3     # the batch shrank between blocks


def test_inductor_step_matches_eager(llada_notok_dir):
    """The real backend (C++ code generation on a CPU): logits and cache writes of a replayed step."""
    torch._dynamo.reset()
    llm = LLM(llada_notok_dir, graphs="none", pack="none")   # inductor cannot lower oneDNN's packed op
    model, args = llm.model, llm.args
    B, L, T = 2, 24, 4
    cache = KVCache(args, B, L, torch.float32, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    for t in cache.k + cache.v:
        t.copy_(torch.randn(t.shape, generator=g))
    ref = KVCache(args, B, L, torch.float32, torch.device("cpu"))
    replay = graphs.StepGraphs(model, cache, "compile")
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[0, :3] = False
    for start in (8, 12, 20):            # three blocks through one compiled step
        for a, b in zip(ref.k + ref.v, cache.k + cache.v):
            a.copy_(b)
        ids = torch.randint(0, args.vocab_size, (B, T), generator=g)
        pos = torch.arange(start, start + T).expand(B, -1)
        ref.start = start
        want = model(ids, pos, ref, slice(0, T), valid)
        got = replay(ids, pos, start, slice(0, T), valid)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        for a, b in zip(ref.k + ref.v, cache.k + cache.v):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("cache", ["dual", "prefix"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_graph_steps_equal_eager(llada_notok_dir, monkeypatch, cache, dtype):
    eager = LLM(llada_notok_dir, device="cuda", dtype=dtype, graphs="none")
    captured = LLM(llada_notok_dir, device="cuda", dtype=dtype, graphs="cuda")
    prompts = _prompts(eager, (3, 9, 6))
    params = SamplingParams(max_new_tokens=24, block_length=4, steps=12, cache=cache)
    want = eager.generate(prompts, params)
    calls = _replays(monkeypatch)
    got = captured.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert len({c for c, _ in calls}) >= 3


def test_resolve_graphs(monkeypatch):
    monkeypatch.delenv("DLLM_GRAPHS", raising=False)
    assert graphs.resolve_graphs(None, "cpu") == "none"
    assert graphs.resolve_graphs("compile", "cpu") == "compile"
    monkeypatch.setenv("DLLM_GRAPHS", "compile")
    assert graphs.resolve_graphs(None, "cpu") == "compile"
    monkeypatch.setenv("DLLM_GRAPHS", "fast")
    with pytest.raises(DllmError, match="DLLM_GRAPHS must be one of auto, cuda, compile, none"):
        graphs.resolve_graphs(None, "cpu")
    with pytest.raises(DllmError, match="graphs='cuda' needs the model on a CUDA device"):
        graphs.resolve_graphs("cuda", "cpu")


def test_llm_rejects_an_unknown_graphs_mode(llada_notok_dir):
    with pytest.raises(DllmError, match="graphs must be one of"):
        LLM(llada_notok_dir, graphs="always")


def test_compile_refuses_the_triton_interpreter(llada_notok_dir, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")   # as kernels='triton' would set it, undone afterwards
    with pytest.raises(DllmError, match="cannot trace Triton's CPU interpreter"):
        LLM(llada_notok_dir, kernels="triton", graphs="compile")
