"""What generate() returns: one RequestOutput per prompt, in order."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GenerationStats:
    nfe: int = 0                 # model forward passes spent on this request
    steps: int = 0               # denoising steps taken (a step may span several forwards)
    tokens_per_forward: float = 0.0  # answer tokens decoded (up to EOS) per forward
    elapsed_s: float = 0.0       # wall time of the generate() call that served the request
    prompt_tokens: int = 0
    answer_tokens: int = 0
    cache_bytes: int = 0         # KV cache allocated for the batch that served the request
    draft_rows: int = 0          # freedave: draft canvases its forwards ran (K per verifying forward)
    trace: list = field(default_factory=list)  # per step, when SamplingParams(trace=True)


@dataclass
class RequestOutput:
    text: str | None             # None when the model has no tokenizer
    token_ids: list              # the answer, up to and excluding EOS
    prompt_token_ids: list
    stats: GenerationStats
    finish_reason: str = "length"  # "eos" | "stop" | "length"

    def to_dict(self) -> dict:
        return asdict(self)
