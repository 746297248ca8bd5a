"""Linear weights packed for oneDNN (dllm/models/packing.py): the CPU default of LLM."""
import pytest
import torch
import torch.nn.functional as F

from dllm import LLM, SamplingParams
from dllm.errors import DllmError
from dllm.models import load_model
from dllm.models.packing import PackedLinear, can_pack, pack_linears
from tests.ar_checkpoints import write_hf

pytestmark = pytest.mark.skipif(not can_pack("cpu", torch.float32), reason="this torch has no oneDNN packed linear")

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,out,inp", [(1, 5, 3), (7, 33, 17), (32, 130, 70), (45, 64, 96)])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_matches_f_linear(dtype, rows, out, inp, bias):
    if not can_pack("cpu", dtype):
        pytest.skip(f"no oneDNN packed linear for {dtype}")
    g = torch.Generator().manual_seed(rows * out + inp)
    w = torch.randn(out, inp, generator=g).to(dtype)
    b = torch.randn(out, generator=g).to(dtype) if bias else None
    lin = PackedLinear(w, b)
    # a [2, rows, inp] window cut out of a longer canvas: strided, as the engine passes h[:, lo:hi]
    x = torch.randn(2, rows + 5, inp, generator=g).to(dtype)[:, 3:3 + rows]
    y = lin(x)
    assert y.shape == (2, rows, out) and y.dtype == dtype
    torch.testing.assert_close(y.float(), F.linear(x.float(), w.float(), None if b is None else b.float()), **TOL[dtype])
    assert torch.equal(lin.dense(), w)          # the packed layout holds the weight exactly


def test_named_weights_of_a_packed_model_are_the_loaded_weights(llada_notok_dir):
    model, _ = load_model(llada_notok_dir)
    before = {k: v.clone() for k, v in model.named_weights().items()}
    pack_linears(model)
    assert all(isinstance(m, PackedLinear) for m in (model.layers[0].attention.wqkv, model.layers[0].feed_forward.w2,
                                                      model.output))
    after = model.named_weights()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_tied_head_gets_a_packed_copy_and_logits_agree(tmp_path):
    write_hf(tmp_path, "llama", tie=True, tokenizer=False)
    dense, args = load_model(tmp_path)
    packed, _ = load_model(tmp_path)
    pack_linears(packed)
    assert args.tie_embeddings and dense.output is None and isinstance(packed.output, PackedLinear)
    assert "output.weight" not in packed.named_weights()     # still the checkpoint's layout
    ids = torch.randint(0, args.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(11)[None].expand(2, -1)
    torch.testing.assert_close(packed(ids, pos), dense(ids, pos), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_packed_and_dense_generate_the_same(llada_notok_dir, cache):
    prompts = [{"prompt_token_ids": [5, 6, 7, 8]}, {"prompt_token_ids": [9, 10]}]
    sp = SamplingParams(max_new_tokens=16, block_length=8, scheduler="threshold", threshold=0.3, cache=cache)
    packed, dense = LLM(llada_notok_dir), LLM(llada_notok_dir, pack="none")
    assert packed.packed and not dense.packed
    assert isinstance(packed.model.layers[0].attention.wqkv, PackedLinear)
    assert isinstance(dense.model.layers[0].attention.wqkv, torch.nn.Linear)
    got = [(o.token_ids, o.stats.nfe) for o in packed.generate(prompts, sp)]
    want = [(o.token_ids, o.stats.nfe) for o in dense.generate(prompts, sp)]
    assert got == want and any(t for t, _ in got)


def test_pack_choices(llada_notok_dir, monkeypatch):
    assert not LLM(llada_notok_dir, graphs="compile").packed        # inductor cannot lower the packed op
    assert not LLM(llada_notok_dir, dtype="float16").packed         # no packed fp16 linear on most CPUs
    with pytest.raises(DllmError, match="pack must be one of"):
        LLM(llada_notok_dir, pack="mkl")
    with pytest.raises(DllmError, match="graphs='compile'"):
        LLM(llada_notok_dir, pack="onednn", graphs="compile")
    with pytest.raises(DllmError, match="float32 or bfloat16"):
        LLM(llada_notok_dir, pack="onednn", dtype="float16")
    monkeypatch.setenv("DLLM_PACK", "none")
    assert not LLM(llada_notok_dir).packed
    monkeypatch.setenv("DLLM_PACK", "yes")
    with pytest.raises(DllmError, match="DLLM_PACK must be one of"):
        LLM(llada_notok_dir)
