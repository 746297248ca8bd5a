"""Triton kernels against their PyTorch references, under Triton's interpreter (no GPU in CI):
awkward shapes (vocabularies that are not powers of two, tails, rows split over programs),
fp32 / fp16 / bf16 inputs, and the engine giving the same tokens with the kernels forced on.
`pytest -k kernel` selects these. On a GPU machine, DLLM_TEST_DEVICE=cuda runs the same tests
with CUDA tensors and compiled kernels (benchmarks/gpu_checks.sh)."""
import os

DEV = os.environ.get("DLLM_TEST_DEVICE", "cpu")
if DEV == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")   # before any @triton.jit runs

import pytest
import torch

pytest.importorskip("triton")

from dllm import LLM, SamplingParams  # noqa: E402
from dllm.errors import DllmError  # noqa: E402
from dllm.kernels import resolve_kernels  # noqa: E402
from dllm.kernels.attention import attention, attention_torch  # noqa: E402
from dllm.kernels.fused import rms_norm, rms_norm_torch, rope, rope_torch, silu_mul, silu_mul_torch  # noqa: E402
from dllm.kernels.vocab_reduce import vocab_reduce, vocab_reduce_torch  # noqa: E402
from tests.checkpoints import write_dream, write_llada  # noqa: E402

SHAPES = [(1, 1, 50, None), (1, 5, 1000, None), (2, 3, 4099, 3), (3, 7, 777, 2), (1, 32, 613, 3)]
CASES = [("low_confidence", 0.0), ("low_confidence", 0.7), ("margin", 0.0), ("entropy", 0.0), ("random", 1.0)]


def gen(seed):
    return torch.Generator(device=DEV).manual_seed(seed)


def slab(B, L, V, dtype, seed):
    """[B, L, V] logits as the engine sees them: a block sliced out of a longer canvas (not
    contiguous over L), with a few exact ties at the maximum."""
    g = torch.Generator().manual_seed(seed)
    full = (torch.randn(B, L + 3, V, generator=g) * 3).to(dtype).to(DEV)
    x = full[:, 2:L + 2]
    x[..., V // 3] = x.max(-1).values            # a tie with the row maximum: the first index must win
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B,L,V,splits", SHAPES)
@pytest.mark.parametrize("score,temperature", CASES)
def test_vocab_reduce_kernel_matches_reference(B, L, V, splits, dtype, score, temperature):
    x = slab(B, L, V, dtype, seed=B * 1000 + V)
    banned = V - 2
    kw = dict(score=score, banned=banned, temperature=temperature)
    tok, val = vocab_reduce(x, generator=gen(5), splits=splits, **kw)
    ref_tok, ref_val = vocab_reduce_torch(x, generator=gen(5), **kw)
    assert tok.shape == (B, L) and val.dtype == torch.float32
    assert torch.equal(tok, ref_tok)
    assert not (tok == banned).any()
    # flash-attn's rule: the kernel's error against float64 at most 2x the reference's own, plus a
    # floor of float32 rounding (the reference's error can be exactly 0 by luck; sums run in another order)
    truth = vocab_reduce_torch(x.double(), generator=gen(5), **kw)[1]
    ref_err = (ref_val.double() - truth).abs().max()
    assert (val.double() - truth).abs().max() <= 2 * ref_err + 1e-6 * (1 + truth.abs().max())


def test_vocab_reduce_kernel_split_count_does_not_change_the_result():
    x = slab(2, 4, 1501, torch.float32, seed=3)
    outs = [vocab_reduce(x, score="margin", splits=s) for s in (1, 2, 5)]
    for tok, val in outs[1:]:
        assert torch.equal(tok, outs[0][0])
        torch.testing.assert_close(val, outs[0][1], rtol=0, atol=1e-6)


def within_rule(out, ref, truth, floor=1e-6):
    """flash-attn's rule: |kernel - float64 truth| <= 2 |reference - truth| (+ float32 rounding)."""
    ref_err = (ref.double() - truth).abs().max()
    return (out.double() - truth).abs().max() <= 2 * ref_err + floor * (1 + truth.abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows,dim", [(1, 8), (7, 96), (13, 200)])
def test_rms_norm_kernel(rows, dim, dtype):
    g = torch.Generator().manual_seed(rows * dim)
    x, res = (torch.randn(2, rows, dim, generator=g) * 2).to(DEV, dtype), torch.randn(2, rows, dim, generator=g).to(DEV, dtype)
    w = (torch.rand(dim, generator=g) + 0.5).to(DEV, dtype)
    assert within_rule(rms_norm(x, w, 1e-5), rms_norm_torch(x, w, 1e-5), rms_norm_torch(x.double(), w.double(), 1e-5))
    y, h = rms_norm(x, w, 1e-5, residual=res)
    ry, rh = rms_norm_torch(x, w, 1e-5, residual=res)
    assert torch.equal(h, rh)                          # the residual sum is one rounding in both
    assert within_rule(y, ry, rms_norm_torch(rh.double(), w.double(), 1e-5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 5), (2, 7, 300), (3, 1029)])
def test_silu_mul_kernel(shape, dtype):
    g = torch.Generator().manual_seed(len(shape))
    a, b = (torch.randn(*shape, generator=g) * 3).to(DEV, dtype), torch.randn(*shape, generator=g).to(DEV, dtype)
    assert within_rule(silu_mul(a, b), silu_mul_torch(a, b), silu_mul_torch(a.double(), b.double()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 3, 10), (2, 5, 606)])
def test_silu_mul_kernel_reads_the_halves_of_one_gemm(shape, dtype):
    # the model's gate|up projection is one GEMM: g and u are its two halves, rows 2M apart
    gu = (torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3).to(DEV, dtype)
    a, b = gu.chunk(2, dim=-1)
    y = silu_mul(a, b)
    assert y.is_contiguous() and y.shape == a.shape
    assert within_rule(y, silu_mul_torch(a, b), silu_mul_torch(a.double(), b.double()))


@pytest.mark.parametrize("fp32", [True, False], ids=["llada-fp32", "dream-rounded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B,T,H,hd", [(1, 1, 1, 8), (2, 5, 3, 16), (1, 9, 2, 24)])
def test_rope_kernel(B, T, H, hd, dtype, fp32):
    g = torch.Generator().manual_seed(T * hd)
    q = torch.randn(B, T, H, hd, generator=g).to(DEV, dtype).transpose(1, 2)   # the engine's [B, H, T, hd] view
    ang = torch.rand(B, 1, T, hd // 2, generator=g).to(DEV) * 50
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    out, ref = rope(q, cos, sin, fp32), rope_torch(q, cos, sin, fp32)
    assert out.shape == ref.shape
    if dtype == torch.float32 or fp32:                # the same roundings in the same order: exact
        assert torch.equal(out, ref)
    else:
        assert within_rule(out, ref, rope_torch(q.double(), cos.double(), sin.double(), True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B,H,Hkv,Tq,S,hd,splits", [
    (1, 4, 2, 5, 37, 16, None),      # GQA, odd key count
    (2, 4, 4, 32, 100, 32, 3),       # a 32-slot block over a cache, split in 3
    (2, 6, 2, 17, 70, 64, 2),        # a query tile tail
    (1, 2, 1, 1, 9, 16, 1),          # one query, fewer keys than a tile
])
@pytest.mark.parametrize("padded", [False, True])
def test_attention_kernel(B, H, Hkv, Tq, S, hd, splits, dtype, padded):
    g = torch.Generator().manual_seed(S * hd)
    q = torch.randn(B, Tq, H, hd, generator=g).to(DEV, dtype).transpose(1, 2)      # the engine's strided view
    k = torch.randn(B, Hkv, S + 5, hd, generator=g).to(DEV, dtype)[:, :, 2:S + 2]     # a window of a cache buffer
    v = torch.randn(B, Hkv, S + 5, hd, generator=g).to(DEV, dtype)[:, :, 2:S + 2]
    km = None
    if padded:
        km = torch.ones(B, S, dtype=torch.bool, device=DEV)
        km[0, :3] = False                                                              # left padding
        km[-1, S - min(7, S - 1):] = False                                             # right padding
    out, ref = attention(q, k, v, km, splits), attention_torch(q, k, v, km)
    assert out.shape == ref.shape and out.dtype == dtype
    truth = attention_torch(q.double(), k.double(), v.double(), km)
    assert within_rule(out, ref, truth, floor=1e-6 if dtype == torch.float32 else 1e-3)


def test_rope_kernel_writes_into_a_cache_window():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2, 5, 3, 16, generator=g).to(DEV).transpose(1, 2)  # [B, H, T, hd]
    ang = torch.rand(2, 1, 5, 8, generator=g).to(DEV) * 9
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    buf = torch.zeros(2, 3, 12, 16, device=DEV)                                   # [B, Hkv, L, hd], window at 4..9
    rope(k, cos, sin, True, out=buf[:, :, 4:9])
    assert torch.equal(buf[:, :, 4:9], rope_torch(k, cos, sin, True))
    assert not buf[:, :, :4].any() and not buf[:, :, 9:].any()


@pytest.fixture(scope="module")
def tiny_dream(tmp_path_factory):
    d = tmp_path_factory.mktemp("dream-kernels")
    write_dream(d, tokenizer=False)
    return d


def test_dream_gives_the_same_tokens_with_kernels_forced(tiny_dream):
    # float32: in bf16 the attention kernel rounds differently from torch's CPU SDPA (each op within
    # the tolerance above), and a random tiny model's near-tied logits then pick other tokens
    prompts = [{"prompt_token_ids": [5, 6, 7, 8]}, {"prompt_token_ids": [9, 10]}]
    sp = SamplingParams(max_new_tokens=16, block_length=8, scheduler="threshold", threshold=0.3, cache="prefix")
    ref = LLM(tiny_dream, kernels="torch", device=DEV).generate(prompts, sp)
    fused = LLM(tiny_dream, kernels="triton", device=DEV).generate(prompts, sp)
    assert [o.token_ids for o in ref] == [o.token_ids for o in fused]


@pytest.fixture(scope="module")
def tiny_llada(tmp_path_factory):
    d = tmp_path_factory.mktemp("llada-kernels")
    write_llada(d, tokenizer=False, vocab_size=517, head_scale=0.5)
    return d


@pytest.mark.parametrize("params", [
    dict(scheduler="topk"),
    dict(scheduler="threshold", threshold=0.5, remasking="low_confidence"),
    dict(scheduler="topk", remasking="margin", temperature=0.8, seed=3),
    dict(scheduler="topk", remasking="entropy", cache="dual"),
    dict(scheduler="factor", temperature=1.0, seed=1),
], ids=["topk", "threshold", "margin-sampled", "entropy-dual", "factor-sampled"])
def test_engine_gives_the_same_tokens_with_kernels_forced(tiny_llada, params):
    prompts = [{"prompt_token_ids": [5, 6, 7, 8]}, {"prompt_token_ids": [9, 10]}]
    sp = SamplingParams(max_new_tokens=8, block_length=4, **params)
    ref = LLM(tiny_llada, kernels="torch", device=DEV).generate(prompts, sp)
    fused_llm = LLM(tiny_llada, kernels="triton", device=DEV)
    assert fused_llm.kernels == "triton"
    fused = fused_llm.generate(prompts, sp)
    for a, b in zip(ref, fused):
        assert a.token_ids == b.token_ids and a.stats.nfe == b.stats.nfe


def test_kernel_selection(monkeypatch):
    assert resolve_kernels("auto", "cpu") == "torch"         # auto: Triton only on CUDA tensors
    assert resolve_kernels("torch", "cpu") == "torch"
    assert resolve_kernels("triton", "cpu") == "triton"      # runs under the interpreter
    monkeypatch.setenv("DLLM_KERNELS", "torch")
    assert resolve_kernels(None, "cpu") == "torch"
    monkeypatch.setenv("DLLM_KERNELS", "fast")
    with pytest.raises(DllmError, match="DLLM_KERNELS must be one of auto, triton, torch"):
        resolve_kernels(None, "cpu")
    with pytest.raises(DllmError, match="kernels must be one of"):
        resolve_kernels("cuda", "cpu")
