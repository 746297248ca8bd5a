"""The loader and the transformer against independent references on the same weights."""
import json

import pytest
import torch
from safetensors.torch import save_file

from dllm.errors import DllmError, ModelLoadError
from dllm.models import load_model
from tests import reference
from tests.checkpoints import write_dream, write_llada


@pytest.fixture(params=[False, True, "onednn"], ids=["gemm-per-block", "one-gemm", "onednn"])
def load(request, monkeypatch):
    """load_model for each way of running the projections (transformer.split_linear): one GEMM
    per fused matrix (the GPU path), one per checkpoint matrix (the dense CPU path), and weights
    packed for oneDNN (models/packing.py, the CPU default of LLM)."""
    from dllm.models.packing import can_pack, pack_linears

    packed = request.param == "onednn"
    if packed and not can_pack("cpu", torch.float32):
        pytest.skip("this torch has no oneDNN packed linear")

    def load_(path):
        model, args = load_model(path)
        if packed:
            pack_linears(model)
        else:
            model.set_one_gemm(request.param)
        return model, args
    return load_


def _ids(V, T, seed=0, B=2):
    return torch.randint(0, V - 8, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", [dict(), dict(n_kv_heads=2), dict(n_kv_heads=1, qkv_bias=True), dict(dim=48, n_heads=3, hidden=70)])
def test_llada_logits_match_reference(tmp_path, kw, load):
    cfg, sd, _ = write_llada(tmp_path, tokenizer=False, **kw)
    model, args = load(tmp_path)
    ids = _ids(cfg["vocab_size"], 23)
    pos = torch.arange(23)[None].expand(2, 23)
    ours = model(ids, pos)
    ref = reference.llada_logits(sd, cfg, ids)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    # only the queried rows: same values, LM head on fewer rows
    torch.testing.assert_close(model(ids, pos, None, slice(5, 12)), ref[:, 5:12], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [dict(), dict(n_kv_heads=4), dict(n_kv_heads=1)])
def test_dream_logits_match_reference_with_shift(tmp_path, kw, load):
    cfg, sd, _ = write_dream(tmp_path, tokenizer=False, **kw)
    model, args = load(tmp_path)
    assert args.family == "dream" and args.shift_logits
    ids = _ids(cfg["vocab_size"], 19)
    pos = torch.arange(19)[None].expand(2, 19)
    ref = reference.dream_logits(sd, cfg, ids)
    torch.testing.assert_close(model(ids, pos), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model(ids, pos, None, slice(7, 19)), ref[:, 7:19], atol=1e-4, rtol=1e-4)


def test_dream_left_padding_matches_reference_mask(tmp_path):
    cfg, sd, _ = write_dream(tmp_path, tokenizer=False)
    model, _ = load_model(tmp_path)
    ids = _ids(cfg["vocab_size"], 12)
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[1, :4] = False
    pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
    ref = reference.dream_logits(sd, cfg, ids, position_ids=pos, key_mask=valid)
    ours = model(ids, pos, None, slice(5, 12), valid)
    torch.testing.assert_close(ours, ref[:, 5:12], atol=1e-4, rtol=1e-4)
    # the padded row equals the same tokens run alone without padding
    alone = model(ids[1:, 4:], torch.arange(8)[None], None, slice(1, 8))
    torch.testing.assert_close(ours[1:], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_load_is_close_to_fp32(tmp_path, dtype):
    cfg, sd, _ = write_llada(tmp_path, tokenizer=False)
    model, _ = load_model(tmp_path, dtype=dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    ids = _ids(cfg["vocab_size"], 10)
    pos = torch.arange(10)[None].expand(2, 10)
    ref = reference.llada_logits(sd, cfg, ids)
    out = model(ids, pos).float()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())


def test_loader_errors(tmp_path, llada_notok_dir):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(empty)
    pickle_only = tmp_path / "pickle"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text((llada_notok_dir / "config.json").read_text())
    (pickle_only / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(pickle_only)

    unknown = tmp_path / "unknown"
    _copy(llada_notok_dir, unknown)
    cfg = json.loads((unknown / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (unknown / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unknown model_type 'gpt2'"):
        load_model(unknown)

    bad_json = tmp_path / "badjson"
    _copy(llada_notok_dir, bad_json)
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(bad_json)

    corrupt = tmp_path / "corrupt"
    _copy(llada_notok_dir, corrupt)
    shard = sorted(corrupt.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(corrupt)

    missing_shard = tmp_path / "missing"
    _copy(llada_notok_dir, missing_shard)
    sorted(missing_shard.glob("*.safetensors"))[-1].unlink()
    with pytest.raises(ModelLoadError, match="names shard"):
        load_model(missing_shard)

    wrong_shape = tmp_path / "shape"
    _copy(llada_notok_dir, wrong_shape)
    cfg = json.loads((wrong_shape / "config.json").read_text())
    cfg["d_model"] = 32
    (wrong_shape / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="shape"):
        load_model(wrong_shape)


def test_missing_and_unexpected_tensors(tmp_path):
    cfg, sd, _ = write_llada(tmp_path / "a", tokenizer=False, shards=1)
    d = tmp_path / "a"
    for f in d.glob("*.safetensors"):
        f.unlink()
    (d / "model.safetensors.index.json").unlink()
    partial = {k: v for k, v in sd.items() if "ln_f" not in k}
    save_file(partial, str(d / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="lacks 1 weight"):
        load_model(d)
    save_file({**sd, "model.transformer.blocks.9.q_proj.weight": torch.zeros(1)}, str(d / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="blocks.9"):
        load_model(d)


def test_gguf_and_file_paths_are_refused_clearly(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF")
    with pytest.raises(DllmError, match="GGUF"):
        load_model(f)
    g = tmp_path / "weights.safetensors"
    g.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(g)


def test_one_gemm_and_split_gemms_generate_the_same(llada_notok_dir):
    from dllm import LLM, SamplingParams

    prompts = [{"prompt_token_ids": [5, 6, 7, 8]}, {"prompt_token_ids": [9, 10]}]
    sp = SamplingParams(max_new_tokens=16, block_length=8, scheduler="threshold", threshold=0.3, cache="dual")
    outs = []
    for one in (False, True):
        llm = LLM(llada_notok_dir, pack="none")
        llm.model.set_one_gemm(one)
        outs.append([(o.token_ids, o.stats.nfe) for o in llm.generate(prompts, sp)])
    assert outs[0] == outs[1] and any(t for t, _ in outs[0])


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_last_layer_runs_only_the_queried_rows_but_caches_every_row(tmp_path, family, load):
    """The head reads rows q: the last layer projects out and runs the MLP on those rows only, yet
    every row's keys/values (last layer included) reach the cache, as a forward over all rows writes them."""
    from dllm.engine.kv_cache import KVCache

    cfg, _, _ = (write_llada if family == "llada" else write_dream)(tmp_path, tokenizer=False)
    model, args = load(tmp_path)
    ids = _ids(cfg["vocab_size"], 13)
    pos = torch.arange(13)[None].expand(2, 13)
    caches = [KVCache(args, 2, 13, torch.float32, torch.device("cpu")) for _ in range(2)]
    full = model(ids, pos, caches[0])
    part = model(ids, pos, caches[1], slice(4, 9))
    torch.testing.assert_close(part, full[:, 4:9], atol=1e-5, rtol=1e-5)
    for a, b in zip(caches[0].k + caches[0].v, caches[1].k + caches[1].v):
        assert torch.equal(a, b)
