"""The MoE grouped-GEMM Triton kernel (kernels/grouped_gemm.py) against its PyTorch reference
(dllm/models/moe.py grouped_gemm_torch) under Triton's interpreter: odd shapes (K, N not multiples of
the tiles, experts with 0, 1 and more rows than a tile), fp32 / fp16 / bf16, and the LLaDA2 model with
the kernel on giving the reference's logits."""
import os

DEV = os.environ.get("DLLM_TEST_DEVICE", "cpu")
if DEV == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")   # before any @triton.jit runs

import pytest
import torch

pytest.importorskip("triton")

from dllm.kernels.grouped_gemm import grouped_gemm, grouped_gemm_torch  # noqa: E402
from dllm.models import load_model  # noqa: E402
from dllm.models.masks import block_causal_mask  # noqa: E402
from tests.block_checkpoints import write_llada2  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("counts,K,N", [([3, 0, 17, 1], 37, 50), ([0, 0, 5], 64, 129), ([70, 2], 24, 16),
                                         ([1], 8, 3), ([0, 0], 16, 16)])
def test_grouped_gemm_kernel_matches_reference(counts, K, N, dtype):
    g = torch.Generator().manual_seed(sum(counts) + K + N)
    M = sum(counts)
    x = torch.randn(M, K + 5, generator=g).to(dtype)[:, 2:K + 2].to(DEV)    # strided rows, as a gather gives
    w = (torch.randn(len(counts), N, K, generator=g) / K ** 0.5).to(dtype).to(DEV)
    c = torch.tensor(counts, device=DEV)
    got, ref = grouped_gemm(x, w, c), grouped_gemm_torch(x, w, c)
    assert got.shape == (M, N) and got.dtype == dtype
    if M == 0:
        return
    truth = grouped_gemm_torch(x.double(), w.double(), c)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert (got.double() - truth).abs().max() <= 2 * (ref.double() - truth).abs().max() + tol * (1 + truth.abs().max())


def test_llada2_with_the_kernel_matches_the_torch_path(tmp_path):
    write_llada2(tmp_path, with_ids=True, n_experts=8, top_k=3)
    model, args = load_model(tmp_path, device=DEV)
    T = 9
    ids = torch.randint(0, args.vocab_size, (1, T), generator=torch.Generator().manual_seed(0)).to(DEV)
    pos, mask = torch.arange(T, device=DEV), block_causal_mask(torch.arange(T), torch.arange(T), 4).to(DEV)
    ref = model(ids, pos[None], None, None, mask)
    for m in model.modules():
        if hasattr(m, "weight_views"):
            m.triton = True
    got = model(ids, pos[None], None, None, mask)
    assert (got - ref).abs().max() < 1e-4 * (1 + ref.abs().max())


def test_block_diffusion_tokens_with_the_kernels_forced_on(tmp_path):
    """Every kernel on (RMSNorm incl. QK-norm, SiLU-mul, RoPE, attention over the cache prefix, grouped
    GEMM) gives the PyTorch path's tokens on an LLaDA2 model."""
    from dllm import LLM, SamplingParams

    write_llada2(tmp_path, with_ids=True, partial_rotary=1.0, n_layers=2)
    prompts = [{"prompt_token_ids": [5, 6, 7]}, {"prompt_token_ids": list(range(20, 26))}]
    params = SamplingParams(max_new_tokens=5, block_length=4)
    want = [o.token_ids for o in LLM(tmp_path, device=DEV, kernels="torch", pack="none").generate(prompts, params)]
    got = [o.token_ids for o in LLM(tmp_path, device=DEV, kernels="triton", pack="none").generate(prompts, params)]
    assert got == want
