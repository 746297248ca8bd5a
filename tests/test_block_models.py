"""Block-diffusion families (SDAR, LLaDA2.x MoE, Fast-dLLM v2): config parsing and refusals, special ids,
the block-causal mask, and logits against the references (transformers' Qwen3 / Qwen2 classes; LLaDA2
written out from dInfer's modeling file in tests/reference_block.py), MoE routing choices included."""
import hashlib
import json
import lzma
import shutil
from pathlib import Path

import pytest
import torch

from dllm import LLM
from dllm.errors import ModelLoadError
from dllm.models import load_model
from dllm.models.block_families import FAMILY_IDS
from dllm.models.config import args_from_config
from dllm.models.masks import block_causal_mask
from dllm.models.special_ids import resolve_special_ids
from tests.block_checkpoints import write_fast_dllm, write_llada2, write_sdar
from tests.helpers import load_state
from tests.reference_block import HFBlockModel, LLaDA2Model, block_mask, llada2_route

# The published SDAR-4B-Chat tokenizer files (source, commit, license: tests/data/sdar-4b-chat/README.md);
# vocab.json and merges.txt are stored xz-compressed, with the sha256 of the published bytes.
SDAR_DATA = Path(__file__).parent / "data" / "sdar-4b-chat"
SDAR_PUBLISHED_SHA256 = {
    "vocab.json": "ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910",
    "merges.txt": "8831e4f1a044471340f7c0a83d7bd71306a5b867e95fd870f74d0c5308a904d5",
}


@pytest.fixture
def real_sdar_dir(tmp_path):
    """The published SDAR-4B-Chat tokenizer directory, rebuilt in tmp_path from tests/data."""
    for f in SDAR_DATA.iterdir():
        if f.suffix == ".xz":
            data = lzma.decompress(f.read_bytes())
            assert hashlib.sha256(data).hexdigest() == SDAR_PUBLISHED_SHA256[f.stem], f"{f} is not the published file"
            (tmp_path / f.stem).write_bytes(data)
        elif f.name != "README.md":
            shutil.copyfile(f, tmp_path / f.name)
    return tmp_path


@pytest.fixture(scope="module")
def sdar_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sdar")
    write_sdar(path, attention_bias=True)
    return path


@pytest.fixture(scope="module")
def fast_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast_dllm")
    write_fast_dllm(path)
    return path


@pytest.fixture(scope="module")
def llada2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llada2")
    write_llada2(path, with_ids=True, use_bias=True, qkv_bias=True)
    return path


def test_block_causal_mask_follows_positions_not_columns():
    # row 0 left-padded by 2: its positions start at column 2; blocks of 3 from position 0
    q = torch.tensor([[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]])
    valid = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    m = block_causal_mask(q, q, 3, valid)
    assert m.shape == (2, 6, 6)
    assert m[0, 2].tolist() == [False, False, True, True, True, False]     # position 0 sees its block 0..2
    assert m[0, 5].tolist() == [False, False, True, True, True, True]      # position 3 sees blocks 0 and 1
    assert m[1, 1].tolist() == [True, True, True, False, False, False]
    assert torch.equal(block_causal_mask(torch.arange(6), torch.arange(6), 3)[0], m[1])


def test_configs_parse_published_fields(sdar_dir, fast_dir, llada2_dir):
    a = args_from_config(json.loads((sdar_dir / "config.json").read_text()))
    assert (a.family, a.head_dim, a.block_size, a.qk_norm, a.block_causal, a.scheduler) == \
        ("sdar", 24, 4, True, True, "sdar")
    assert a.head_dim * a.n_heads != a.dim and a.o_bias and a.qkv_bias
    f = args_from_config(json.loads((fast_dir / "config.json").read_text()))
    assert (f.family, f.block_size, f.token_shift, f.qkv_bias, f.scheduler) == ("fast_dllm", 8, True, True, "fast_dllm_v2")
    cfg = json.loads((llada2_dir / "config.json").read_text())
    m = args_from_config(cfg)
    assert (m.family, m.rope_dim, m.head_dim, m.fused_qkv, m.block_size, m.scheduler) == ("llada2", 8, 16, True, 32, "dinfer")
    assert (m.moe.n_experts, m.moe.top_k, m.moe.first_dense, m.moe.n_shared) == (8, 2, 1, 1)
    del cfg["mask_token_id"], cfg["eos_token_id"]
    assert args_from_config(cfg).mask_token_id == -1   # resolved later (special_ids.py)
    del cfg["n_group"], cfg["topk_group"]              # dInfer's config class defaults: 8 groups, 4 kept
    cfg.update(num_experts=32, num_experts_per_tok=4)
    assert (args_from_config(cfg).moe.n_group, args_from_config(cfg).moe.topk_group) == (8, 4)


@pytest.mark.parametrize("change,match", [
    ({"model_type": "sdar_moe"}, "MoE variant"),
    ({"n_group": 3}, "groups"),
    ({"num_experts_per_tok": 9}, "more than those groups hold"),
    ({"score_function": "softmax"}, "sigmoid"),
    ({"partial_rotary_factor": 0.1875}, "partial_rotary_factor"), ({"partial_rotary_factor": 1.5}, "partial_rotary_factor"),
    ({"use_qk_norm": False}, "QK-norm"),
    ({"num_experts": 0}, "num_experts=0; it must be an integer in"),
])
def test_llada2_config_refusals(llada2_dir, change, match):
    cfg = {**json.loads((llada2_dir / "config.json").read_text()), **change}
    with pytest.raises(ModelLoadError, match=match):
        args_from_config(cfg)


def test_refused_variant_never_reaches_the_transformers_fallback(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sdar_moe", "architectures": ["SDARMoeForCausalLM"]}))
    with pytest.raises(ModelLoadError, match="MoE variant"):
        load_model(tmp_path)


def test_sdar_needs_its_block_size(sdar_dir):
    cfg = json.loads((sdar_dir / "config.json").read_text())
    del cfg["block_size"]
    with pytest.raises(ModelLoadError, match="block_size"):
        args_from_config(cfg)


def test_special_ids_config_then_generation_config_then_tokenizer_then_constants(tmp_path, sdar_dir):
    d = tmp_path / "sdar"
    shutil.copytree(sdar_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    tok_mask = cfg["mask_token_id"]
    for k in ("mask_token_id", "eos_token_id"):
        del cfg[k]
    (d / "config.json").write_text(json.dumps(cfg))
    llm = LLM(d)
    assert llm.args.mask_token_id == tok_mask                          # tokenizer_config mask_token <|MASK|>
    gen = json.loads((d / "generation_config.json").read_text())
    assert llm.args.eos_token_ids == tuple(gen["eos_token_id"])        # generation_config before the tokenizer
    gen["mask_token_id"] = 3
    (d / "generation_config.json").write_text(json.dumps(gen))
    assert LLM(d).args.mask_token_id == 3
    args = args_from_config({**cfg, "vocab_size": 160000})             # no config, no files: the constants
    assert resolve_special_ids(args, tmp_path / "nothing", None).mask_token_id == FAMILY_IDS["sdar"][0]
    with pytest.raises(ModelLoadError, match="outside its vocabulary"):
        resolve_special_ids(args_from_config(cfg), tmp_path / "nothing", None)


def _positions(T):
    return torch.arange(T)[None]


@pytest.mark.parametrize("T,B", [(11, 4), (16, 8), (5, 2)])
def test_sdar_and_fast_dllm_logits_match_transformers(sdar_dir, fast_dir, T, B):
    for path in (sdar_dir, fast_dir):
        model, args = load_model(path)
        ref = HFBlockModel(path, B)
        ids = torch.randint(0, args.vocab_size, (T,), generator=torch.Generator().manual_seed(T))
        want = ref.prefill(ids.tolist())                               # block-causal over the whole sequence
        got = model(ids[None], _positions(T), None, None, block_causal_mask(torch.arange(T), torch.arange(T), B))[0]
        assert (want - got).abs().max() < 2e-4 * (1 + want.abs().max())


def test_llada2_logits_and_routing_match_reference(llada2_dir):
    model, args = load_model(llada2_dir)
    ref = LLaDA2Model(llada2_dir, 4)
    T = 13
    ids = torch.randint(0, args.vocab_size, (T,), generator=torch.Generator().manual_seed(1))
    want = ref.prefill(ids.tolist())
    got = model(ids[None], _positions(T), None, None, block_causal_mask(torch.arange(T), torch.arange(T), 4))[0]
    assert (want - got).abs().max() < 2e-4 * (1 + want.abs().max())
    moe = model.layers[1].feed_forward
    h = torch.randn(200, args.dim, generator=torch.Generator().manual_seed(2))
    idx, w = moe.route(h)
    ridx, rw = llada2_route(h, ref.sd["model.layers.1.mlp.gate.weight"], ref.sd["model.layers.1.mlp.gate.expert_bias"],
                            ref.cfg)
    assert torch.equal(idx, ridx) and torch.allclose(w, rw)
    assert w.dtype == torch.float32 and moe.expert_bias.dtype == torch.float32
    # the bias moves choices: without it the same hidden states route elsewhere for some token
    assert not torch.equal(idx, llada2_route(h, ref.sd["model.layers.1.mlp.gate.weight"], torch.zeros(8), ref.cfg)[0])


def test_llada2_bfloat16_keeps_the_expert_bias_in_float32(llada2_dir):
    model, _ = load_model(llada2_dir, dtype=torch.bfloat16)
    moe = model.layers[2].feed_forward
    assert moe.expert_bias.dtype == torch.float32 and moe.w13.dtype == torch.bfloat16
    # the loaded value is the checkpoint's float32 one, not rounded through bfloat16
    assert torch.equal(moe.expert_bias, load_state(llada2_dir)[0]["model.layers.2.mlp.gate.expert_bias"])


def test_cached_block_steps_equal_the_full_block_causal_forward(sdar_dir, llada2_dir):
    """Prefill two blocks, then the third block against the cache (the denoising step's forward), as the
    engine runs them (engine/runner.py rows over the KV pool): equal to one block-causal forward."""
    from dllm.engine.kv_pool import KVPool
    from dllm.engine.runner import ForwardRow, ModelRunner

    for path in (sdar_dir, llada2_dir):
        model, args = load_model(path)
        B, T = 4, 12
        ids = torch.randint(0, args.vocab_size, (1, T), generator=torch.Generator().manual_seed(3))
        full = model(ids, _positions(T), None, None, block_causal_mask(torch.arange(T), torch.arange(T), B))
        runner = ModelRunner(model, KVPool(args, torch.float32, "cpu", capacity=2 * T))
        other = runner.pool.alloc(T)      # a second request's columns first: the rows must not read them
        base = runner.pool.alloc(T)
        prefill = runner.run([ForwardRow(ids=ids[0, :8], start=0, keys=8, q=(0, 8), base=base, attn=("block", B))])[0]
        assert (prefill - full[0, :8]).abs().max() < 2e-4 * (1 + full.abs().max())
        for _ in range(2):   # a step writes the block's own columns; running it again changes nothing
            step = runner.run([ForwardRow(ids=ids[0, 8:], start=8, keys=12, q=(0, 4), base=base),
                               ForwardRow(ids=ids[0, :5], start=0, keys=5, q=(0, 5), base=other, attn=("block", B))])[0]
            assert (step - full[0, 8:]).abs().max() < 2e-4 * (1 + full.abs().max())


def test_loader_refuses_a_dense_name_on_a_moe_layer(tmp_path):
    from safetensors.torch import save_file
    write_llada2(tmp_path, with_ids=True, shards=1)
    f = next(tmp_path.glob("*.safetensors"))
    t = load_state(tmp_path)[0]
    t["model.layers.2.mlp.gate_proj.weight"] = torch.zeros(96, 64)
    save_file(t, str(f))
    with pytest.raises(ModelLoadError, match="not a weight"):
        load_model(tmp_path)


def test_real_sdar_tokenizer_and_chat_template_match_transformers(real_sdar_dir):
    from transformers import AutoTokenizer

    from dllm.tokenizer import Tokenizer
    assert not (real_sdar_dir / "tokenizer.json").exists()   # both sides build BPE from vocab.json + merges.txt
    ours = Tokenizer.from_pretrained(real_sdar_dir)
    theirs = AutoTokenizer.from_pretrained(str(real_sdar_dir), trust_remote_code=False)   # built-in Qwen2Tokenizer
    texts = ["Hello world! 东京 12345 déjà vu\n\tdef f(x): return x**2", "<|im_start|>user\nhi<|im_end|>",
             "<|MASK|><|MASK|> mask <think>",
             "IT'S DON'T we'll\r\n\r\n   caf\u0065\u0301 x  \t y   "]    # contractions, NFC, CRLF, space runs
    for t in texts:
        assert ours.encode(t) == theirs(t, add_special_tokens=False)["input_ids"]
        ids = ours.encode(t)
        assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids, skip_special_tokens=False)
    assert ours.token_to_id("<|MASK|>") == 151669 == theirs.mask_token_id
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    want = theirs.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert ours.encode_chat(msgs) == theirs(want, add_special_tokens=False)["input_ids"]
    args = args_from_config(json.loads((real_sdar_dir / "config.json").read_text()))
    assert (args.head_dim, args.block_size, args.mask_token_id, args.n_kv_heads) == (128, 4, 151669, 8)


def test_real_llada2_tokenizer_is_not_available():
    pytest.skip("no stored snapshot holds the published LLaDA2.0-mini tokenizer or chat template "
                "(docs/specs/block-diffusion.md); its special ids are checked through the family constants")


def test_reference_block_mask_offsets():
    m = block_mask(3, 4, offset=6)            # queries at positions 6..8, keys 0..8, blocks of 4
    assert m.tolist()[0] == [True] * 8 + [False]
    assert m.tolist()[2] == [True] * 9
