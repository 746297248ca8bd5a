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
from dllm.engine.runner import ForwardRow
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
def counting():
    torch._dynamo.reset()                 # recordings of earlier tests' models would count against the limit
    backend = Counting()
    with torch._dynamo.config.patch(specialize_int=True):
        yield backend
    torch._dynamo.reset()


def _prompts(llm, lengths):
    return [{"prompt_token_ids": random_prompt(llm.args.vocab_size, n, n)[0].tolist()} for n in lengths]


def _compiled(path, backend):
    """An LLM whose steady steps go through torch.compile with `backend` (the runner's replayer)."""
    llm = LLM(path, graphs="compile")
    llm.engine.runners["main"].replay.backend = backend
    return llm


def _replays(monkeypatch):
    """Records every replayed step: (the windows' first columns, the number of rows)."""
    calls = []
    real = graphs.StepGraphs.__call__

    def counted(self, inp, generation):
        calls.append((tuple(inp.positions[0, [0]].tolist()), inp.ids.shape[1]))
        return real(self, inp, generation)
    monkeypatch.setattr(graphs.StepGraphs, "__call__", counted)
    return calls


@pytest.mark.parametrize("fixture", ["llada_notok_dir", "dream_dir"])
@pytest.mark.parametrize("cache,extra", [("dual", {}), ("prefix", {}), ("dual", {"refresh_window": 2}),
                                         ("dual", {"cfg_scale": 1.0})])
def test_compiled_steps_equal_eager_across_blocks(request, monkeypatch, counting, fixture, cache, extra):
    path = request.getfixturevalue(fixture)
    if extra.get("cfg_scale") and fixture == "dream_dir":
        pytest.skip("classifier-free guidance is LLaDA's")
    eager, compiled = LLM(path, graphs="none"), _compiled(path, counting)
    assert compiled.graphs == "compile"
    prompts = _prompts(eager, (3, 9))    # different lengths: keys padded with a mask
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
    """A request whose template ends early finishes after its first block and leaves the batch; the
    steps of the requests left have another signature, and the recordings must follow it."""
    eager, compiled = LLM(llada_dir, graphs="none"), _compiled(llada_dir, counting)
    prompts = [{"prompt": "Name a colour.", "template": ["Red", 1]}, "Count to three.", "Say hi."]
    params = SamplingParams(max_new_tokens=16, block_length=4, steps=8, cache="dual")
    want = eager.generate(prompts, params)
    calls = _replays(monkeypatch)
    got = compiled.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert got[0].finish_reason == "eos" and got[0].stats.nfe <= 2     # it left after its first block
    assert calls and all(n <= 2 * 4 for _, n in calls)    # the replayed steps were the two others' blocks


def test_inductor_step_matches_eager(llada_notok_dir):
    """The real backend (C++ code generation on a CPU): logits and pool writes of a replayed step."""
    torch._dynamo.reset()
    llm = LLM(llada_notok_dir, graphs="none", pack="none")   # inductor cannot lower oneDNN's packed op
    runner = llm.engine.runners["main"]
    pool = runner.pool
    args = llm.args
    L, T = 24, 4
    bases = [pool.alloc(L), pool.alloc(L + 3)]
    g = torch.Generator().manual_seed(0)
    for t in pool.k + pool.v:
        t.copy_(torch.randn(t.shape, generator=g))
    saved = [t.clone() for t in pool.k + pool.v]
    replay = graphs.StepGraphs(llm.model, "compile")
    for start in (8, 12, 20):            # three blocks through one compiled step
        ids = torch.randint(0, args.vocab_size, (2, T), generator=g)
        rows = [ForwardRow(ids=ids[i], start=start + i, keys=L + 3 * i, q=(0, T), base=bases[i], steady=True)
                for i in range(2)]
        for a, b in zip(pool.k + pool.v, saved):
            a.copy_(b)
        want = runner.model.run(*_args(runner.inputs(rows, views=True)))
        eager_pool = [t.clone() for t in pool.k + pool.v]
        for a, b in zip(pool.k + pool.v, saved):
            a.copy_(b)
        got = replay(runner.inputs(rows, views=False), pool.generation)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        for a, b in zip(eager_pool, pool.k + pool.v):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


def _args(inp):
    return inp.ids, inp.positions, inp.ctx, inp.last_rows, inp.head, inp.bound


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
    assert graphs.resolve_graphs("auto", "cpu", auto_cuda="cuda") == "none"   # auto_cuda is for CUDA devices
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
