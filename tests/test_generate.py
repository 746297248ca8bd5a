"""Generation against the published generate functions, batches, stopping and bad input."""
import pytest
import torch

from dllm import LLM, SamplingParams
from dllm.errors import DllmError, InvalidParamsError, PromptError, TokenizerError
from tests import reference
from tests.helpers import load_state as _state, random_prompt as _prompt, upto_stop


@pytest.mark.parametrize("gen,block,steps,cfg_scale", [(16, 8, 16, 0.0), (16, 4, 8, 0.0), (12, 12, 5, 0.0),
                                                       (8, 4, 8, 1.5), (12, 4, 12, 0.0)])
def test_llada_matches_published_generate(llada_notok_dir, gen, block, steps, cfg_scale):
    sd, cfg = _state(llada_notok_dir)
    llm = LLM(llada_notok_dir)
    for seed in range(3):
        prompt = _prompt(cfg["vocab_size"], 5 + seed, seed)
        ref = reference.llada_generate(lambda x: reference.llada_logits(sd, cfg, x), prompt, steps=steps,
                                       gen_length=gen, block_length=block, mask_id=cfg["mask_token_id"],
                                       cfg_scale=cfg_scale)
        out = llm.generate({"prompt_token_ids": prompt[0].tolist()},
                           SamplingParams(max_new_tokens=gen, block_length=block, steps=steps, cfg_scale=cfg_scale))[0]
        assert out.token_ids == upto_stop(ref.tolist(), llm.stop_ids)
        assert cfg["mask_token_id"] not in out.token_ids


@pytest.mark.parametrize("alg,remasking", [("maskgit_plus", "low_confidence"), ("topk_margin", "margin"),
                                           ("entropy", "entropy")])
@pytest.mark.parametrize("steps", [12, 5, 3])
def test_dream_matches_published_diffusion_generate(tmp_path_factory, alg, remasking, steps):
    from tests.checkpoints import write_dream

    path = tmp_path_factory.mktemp("dream_parity")
    write_dream(path, tokenizer=False)
    sd, cfg = _state(path)
    llm = LLM(path)
    for seed in range(2):
        prompt = _prompt(cfg["vocab_size"], 6 + seed, seed)
        ref = reference.dream_generate(lambda x: reference.dream_logits(sd, cfg, x), prompt, steps=steps,
                                       max_new_tokens=12, mask_id=cfg["mask_token_id"], alg=alg)
        params = SamplingParams(max_new_tokens=12, steps=steps, remasking=remasking)
        out = llm.generate({"prompt_token_ids": prompt[0].tolist()}, params)[0]
        assert out.token_ids == upto_stop(ref.tolist(), llm.stop_ids)


@pytest.mark.parametrize("fixture,params", [
    ("llada_notok_dir", SamplingParams(max_new_tokens=16, block_length=4, steps=8)),
    ("dream_dir", SamplingParams(max_new_tokens=12, steps=6, remasking="margin")),
])
def test_greedy_output_does_not_depend_on_the_batch(request, fixture, params):
    path = request.getfixturevalue(fixture)
    llm = LLM(path)
    V = llm.args.vocab_size
    prompts = [{"prompt_token_ids": _prompt(V, n, n)[0].tolist()} for n in (3, 11, 6)]
    batched = llm.generate(prompts, params)
    alone = [llm.generate([p], params)[0] for p in prompts]
    assert [o.token_ids for o in batched] == [o.token_ids for o in alone]
    assert [o.prompt_token_ids for o in batched] == [p["prompt_token_ids"] for p in prompts]


def test_text_prompts_and_chat_template(llada_dir):
    llm = LLM(llada_dir)
    params = SamplingParams(max_new_tokens=8, block_length=4, steps=8)
    out = llm.generate(["Hello world", "A longer prompt about Tokyo 東京"], params)
    assert len(out) == 2 and all(isinstance(o.text, str) for o in out)
    assert out[0].text == llm.tokenizer.decode(out[0].token_ids)
    chat = llm.generate("Hello world", params, apply_chat_template=True)[0]
    assert chat.prompt_token_ids == llm.tokenizer.encode_chat([{"role": "user", "content": "Hello world"}])
    assert chat.prompt_token_ids != out[0].prompt_token_ids


def test_stats_and_trace(llada_notok_dir):
    llm = LLM(llada_notok_dir)
    out = llm.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_new_tokens=8, block_length=4, steps=4,
                                                                       trace=True))[0]
    s = out.stats
    assert s.nfe == s.steps == len(s.trace) <= 4
    committed = [p for t in s.trace for p in t["positions"]]
    assert len(committed) == len(set(committed))           # every slot committed once
    assert all(len(t["positions"]) == 2 for t in s.trace)  # 4 slots / 2 steps per block
    assert s.tokens_per_forward == pytest.approx(len(out.token_ids) / s.nfe)
    assert s.elapsed_s > 0


class ScriptedModel(torch.nn.Module):
    """Logits that make answer slot `eos_at` (canvas column P + eos_at) predict EOS, others token 5."""

    def __init__(self, V, eos, P, eos_at):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.V, self.eos, self.P, self.eos_at = V, eos, P, eos_at
        self.calls = 0

    def forward(self, ids, pos, cache, q, valid):
        self.calls += 1
        B = ids.shape[0]
        cols = torch.arange(q.start, q.stop)
        logits = torch.zeros(B, len(cols), self.V)
        logits[..., 5] = 3.0
        logits[:, cols == self.P + self.eos_at, self.eos] = 9.0
        return logits


def test_each_request_stops_at_its_own_eos():
    from dllm.models.config import ModelArgs
    from tests.helpers import decode

    args = ModelArgs(family="llada", vocab_size=16, dim=8, n_layers=1, n_heads=1, n_kv_heads=1,
                     intermediate_size=8, norm_eps=1e-5, rope_theta=1e4, max_seq_len=64, mask_token_id=15)
    model = ScriptedModel(16, eos=7, P=3, eos_at=5)
    params = SamplingParams(max_new_tokens=16, block_length=4, steps=16)
    rows = decode(model, args, [[1, 2, 3]], params, {7})
    # EOS lands in block 1 (slots 4..7); blocks 2 and 3 are never decoded
    assert rows[0].nfe == 8 and model.calls == 8
    assert rows[0].answer()[:6] == [5, 5, 5, 5, 5, 7]


def test_errors_are_clear(llada_notok_dir):
    llm = LLM(llada_notok_dir)
    with pytest.raises(TokenizerError, match="no tokenizer"):
        llm.generate("hello", SamplingParams(max_new_tokens=4))
    with pytest.raises(PromptError, match="outside the model's vocabulary"):
        llm.generate({"prompt_token_ids": [1, 10**6]}, SamplingParams(max_new_tokens=4))
    with pytest.raises(PromptError, match="empty"):
        llm.generate([], SamplingParams(max_new_tokens=4))
    with pytest.raises(PromptError, match="empty"):
        llm.generate({"prompt_token_ids": []}, SamplingParams(max_new_tokens=4))
    with pytest.raises(PromptError, match="context"):
        llm.generate({"prompt_token_ids": [1] * 4000}, SamplingParams(max_new_tokens=128))
    with pytest.raises(TokenizerError, match="constraints"):
        llm.generate({"prompt_token_ids": [1]}, SamplingParams(max_new_tokens=4, regex="[a-z]+"))
    with pytest.raises(TokenizerError, match="constraints"):
        llm.generate({"prompt_token_ids": [1]}, SamplingParams(max_new_tokens=4, grammar='start: "a"'))


@pytest.mark.parametrize("kw,match", [
    (dict(block_length=0), "positive"),
    (dict(max_new_tokens=8, block_length=2, steps=3), "smaller than the number of blocks"),
    (dict(temperature=-1), "temperature"),
    (dict(scheduler="nope"), "unknown scheduler"),
    (dict(remasking="nope"), "unknown remasking"),
    (dict(cache="nope"), "unknown cache"),
    (dict(top_p=0), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"),
])
def test_sampling_params_validate_on_construction(kw, match):
    with pytest.raises(InvalidParamsError, match=match):
        SamplingParams(**kw)


def test_block_length_must_divide_the_answer_of_llada_and_dream(llada_notok_dir):
    # checked by the diffusion loop, not SamplingParams: block-diffusion models take any block length
    with pytest.raises(InvalidParamsError, match="does not divide"):
        LLM(llada_notok_dir).generate({"prompt_token_ids": [1, 2]}, SamplingParams(block_length=3, max_new_tokens=8))


def test_sampling_is_seeded(dream_dir, llada_notok_dir):
    for path, extra in ((dream_dir, dict(top_p=0.9, top_k=50)), (llada_notok_dir, dict(block_length=4))):
        llm = LLM(path)
        p = SamplingParams(max_new_tokens=8, steps=8, temperature=1.0, seed=3, **extra)
        a = llm.generate({"prompt_token_ids": [4, 5, 6]}, p)[0].token_ids
        b = llm.generate({"prompt_token_ids": [4, 5, 6]}, p)[0].token_ids
        c = llm.generate({"prompt_token_ids": [4, 5, 6]}, SamplingParams(**{**p.to_dict(), "seed": 4}))[0].token_ids
        assert a == b and a != c


def test_bfloat16_generation_runs(llada_notok_dir):
    llm = LLM(llada_notok_dir, dtype="bfloat16")
    out = llm.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_new_tokens=8, block_length=4, steps=4))[0]
    assert out.stats.nfe >= 2 and llm.args.mask_token_id not in out.token_ids
