"""Causal architectures dllm does not implement itself (here GPT-2) load through transformers,
offline, and run through dllm's autoregressive loop: greedy answers equal transformers' generate."""
import json

import pytest
import torch

from dllm import LLM, SamplingParams
from dllm.errors import ModelLoadError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=128, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=95, eos_token_id=96)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():      # a peakier head than the init, so greedy answers vary by prompt
        model.lm_head.weight.mul_(40)
    model.save_pretrained(path, safe_serialization=True)
    return path


def test_gpt2_greedy_equals_transformers_alone_and_batched(gpt2_dir):
    llm = LLM(gpt2_dir)
    assert llm.args.causal and llm.args.family == "hf-gpt2"
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    prompts = [[5, 6, 7], [10, 11, 12, 13, 14, 15], [40]]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], SamplingParams(max_new_tokens=10))
    for p, out in zip(prompts, outs):
        want = hf.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False, eos_token_id=96,
                           pad_token_id=96)[0, len(p):].tolist()
        want = want[:want.index(96)] if 96 in want else want
        assert out.token_ids == want
        assert out.token_ids == llm.generate({"prompt_token_ids": p}, SamplingParams(max_new_tokens=10))[0].token_ids


def test_pickle_only_and_non_causal_configs_are_refused(gpt2_dir, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((gpt2_dir / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelLoadError, match="pickle"):
        LLM(pickled)
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((gpt2_dir / "config.json").read_text())
    cfg.update(model_type="bert", architectures=["BertModel"])
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unknown model_type 'bert'"):
        LLM(other)


def test_an_integer_weight_is_refused_but_an_integer_buffer_loads(gpt2_dir, tmp_path):
    # transformers would cast a quantised int8 weight to float and run it; a boolean mask buffer (as
    # GPT-J stores its causal mask) is the architecture's own and must not be refused
    import shutil

    from safetensors.torch import load_file, save_file

    def variant(name, change):
        path = tmp_path / name
        shutil.copytree(gpt2_dir, path)
        sd = load_file(path / "model.safetensors")
        change(sd)
        save_file(sd, path / "model.safetensors", metadata={"format": "pt"})
        return path

    def quantise(sd):
        key = next(k for k in sd if k.endswith("h.0.mlp.c_fc.weight"))
        sd[key] = (sd[key] * 100).to(torch.int8)

    with pytest.raises(ModelLoadError, match=r"c_fc\.weight' in model\.safetensors is stored as I8"):
        LLM(variant("int8", quantise))
    mask = variant("mask", lambda sd: sd.__setitem__("h.0.attn.bias", torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()))
    prompt = {"prompt_token_ids": [5, 6, 7]}
    params = SamplingParams(max_new_tokens=6)
    assert LLM(mask).generate(prompt, params)[0].token_ids == LLM(gpt2_dir).generate(prompt, params)[0].token_ids
