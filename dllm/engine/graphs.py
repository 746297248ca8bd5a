"""The steady-state step, replayed instead of dispatched op by op.

A cached denoising step (every forward of a block after its refresh) runs the same shapes again and
again: the same rows, windows of the same lengths against the same pool columns, logits for the same
query rows. At batch 1 on a GPU, launching its ~15 kernels per layer from Python costs more than running
them (an 8B model: ~500 launches, ~8-13 ms of host time against ~5 ms of weight reads), so dllm records
the step once per shape and replays it:

  graphs="cuda"     a CUDA graph (torch.cuda.CUDAGraph) per step signature (engine/runner.py
                    StepInputs.signature: shapes and the Python ints the step reads); a replay is a copy
                    of each input tensor into the recording's buffers and one graph launch
  graphs="compile"  torch.compile (inductor) of the step: fused elementwise ops and no Python dispatch on
                    any device; dynamo's guards play the role of the signature
  graphs="none"     the eager forward (the reference the others are tested against)
  graphs="auto"     the default ($DLLM_GRAPHS): `auto_cuda` on a CUDA device, "none" elsewhere. It stays
                    "none" until tests/test_graphs.py's GPU tests and benchmarks/step.py have run on a GPU
                    (no session with one has yet)

Only steps whose every row is steady are replayed (a batch of requests in lockstep, e.g. LLM.generate's
static batch, or one request): a step that mixes a block's refresh with other rows' cached steps runs
eagerly. What makes one recording serve every block: the step reads only tensors whose contents change
(token ids, positions, the pool columns written and gathered, masks), never a block's column as a Python
int, so a replayed step cannot bake in one block's columns; tests/test_graphs.py checks that through
torch.compile with a backend that replays one trace, and on a GPU against the eager step.
"""
from __future__ import annotations

import torch

from dllm.errors import DllmError


def resolve_graphs(choice: str | None, device, auto_cuda: str = "none") -> str:
    """'auto' | 'cuda' | 'compile' | 'none' (None: $DLLM_GRAPHS, else 'auto') -> what runs on `device`;
    auto_cuda: what 'auto' means on a CUDA device."""
    from dllm.choices import resolve_choice

    name = resolve_choice("graphs", choice)
    on_gpu = torch.device(device).type == "cuda"
    if name == "auto":
        return auto_cuda if on_gpu else "none"
    if name == "cuda" and not on_gpu:
        raise DllmError("graphs='cuda' needs the model on a CUDA device; use graphs='compile' or 'none' on a CPU.")
    return name


def _run(model, inp):
    return model.run(inp.ids, inp.positions, inp.ctx, inp.last_rows, inp.head, inp.bound)


class StepGraphs:
    """Runs steady steps through recordings. backend: torch.compile's backend ("inductor"; tests give a
    backend that replays the recorded trace as is and counts recordings)."""

    def __init__(self, model, mode: str, backend="inductor"):
        assert mode in ("cuda", "compile")
        self.model, self.mode, self.backend = model, mode, backend
        self.fn = None
        self.recorded: dict = {}
        self.replays = 0

    def __call__(self, inp, generation: int):
        """inp: engine/runner.py StepInputs -> logits (a fresh tensor, not a recording's buffer);
        generation: the KV pool's, which changes when its buffers are reallocated."""
        self.replays += 1
        if self.fn is None:
            # dynamic=None: specialised to the first shapes, recompiled once with symbolic sizes when a
            # size changes (the batch when requests leave, a prefix-cache window every block)
            self.fn = torch.compile(_run, backend=self.backend) if self.mode == "compile" else _run
        if self.mode == "compile":
            return self.fn(self.model, inp)
        key = (inp.signature(), generation)
        rec = self.recorded.get(key)
        if rec is None:
            rec = self.recorded[key] = _Recording(inp)
            return rec.capture(lambda: self.fn(self.model, rec.inp))
        for dst, src in zip(rec.inp.tensors(), inp.tensors()):
            dst.copy_(src)
        rec.graph.replay()
        return rec.out.clone()


class _Recording:
    """The fixed input buffers of one step signature, its CUDA graph and output buffer."""

    def __init__(self, inp):
        self.inp = inp          # this step's own tensors become the recording's buffers
        self.graph = self.out = None

    def capture(self, run):
        """One real step on a side stream (it warms up cuBLAS and Triton, and its logits are this
        step's answer), then the same step recorded; the recording is not executed."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            logits = run()
        torch.cuda.current_stream().wait_stream(side)
        logits = logits.clone()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = run()
        return logits
