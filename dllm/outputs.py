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
    trace: list = field(default_factory=list)  # per step, when SamplingParams(trace=True)


@dataclass
class RequestOutput:
    text: str | None             # None when the model has no tokenizer
    token_ids: list              # the answer, up to and excluding EOS
    prompt_token_ids: list
    stats: GenerationStats
    # "eos" | "stop" | "length"; through LLMEngine also "abort" | "error", and None while running
    finish_reason: str | None = "length"
    # LLMEngine (request-level) fields: what became final since the request's previous output
    # (the deltas of one request concatenate exactly to its final .text / .token_ids)
    request_id: str = ""
    finished: bool = True
    delta_text: str = ""
    delta_token_ids: list = field(default_factory=list)
    error: str | None = None     # the one-sentence reason when finish_reason == "error"
    # the answer slots after this step, a token id or None where still masked; filled only when asked
    # for (params.trace), e.g. for `dllm serve`'s "stream_mode": "canvas"
    canvas: list | None = None

    def to_dict(self) -> dict:
        return asdict(self)
