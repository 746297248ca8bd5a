"""Small helpers shared by the generation tests."""
import json

import torch
from safetensors.torch import load_file


def load_state(path):
    """(Hugging Face state dict, config.json) of a checkpoint directory."""
    sd = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return sd, json.loads((path / "config.json").read_text())


def random_prompt(V, n, seed):
    return torch.randint(0, V - 8, (1, n), generator=torch.Generator().manual_seed(seed))


def upto_stop(ids, stops):
    """The answer as dllm returns it: the tokens before the first stop token."""
    out = []
    for t in ids:
        if t in stops:
            break
        out.append(t)
    return out


def decode(model, args, prompts, params, stop_ids, tokenizer=None, delimiters=None):
    """Run token-id prompts through the engine (LLMEngine.from_model) around any model object -> each
    request's decoder after it finished: .answer() (all N answer slots, past the end token too), .nfe,
    .steps, .trace. For tests that script a model's logits. delimiters: the line-end token ids adablock reads
    (the tokenizer's newlines by default)."""
    from dllm.engine.llm_engine import LLMEngine

    engine = LLMEngine.from_model(model, args, tokenizer)
    engine.loaded.stop_ids = set(stop_ids)
    if delimiters is not None:
        engine.loaded.newlines = tuple(delimiters)
    decoders = []
    for i, p in enumerate(prompts):
        engine.add_request(str(i), {"prompt_token_ids": list(p)}, params, stream=False)
        decoders.append(engine.requests[str(i)].decoder)
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finish_reason == "error":
                raise out.exception
    return decoders
