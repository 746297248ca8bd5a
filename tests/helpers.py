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
