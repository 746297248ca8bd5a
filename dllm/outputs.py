"""What generate() returns: one RequestOutput per prompt, in order."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GenerationStats:
    nfe: int = 0                 # model forward passes spent on this request
    steps: int = 0               # denoising steps taken (a step may span several forwards)
    tokens_per_forward: float = 0.0  # answer tokens decoded (up to EOS) per forward
    elapsed_s: float = 0.0       # seconds from the request's arrival until it finished
    prompt_tokens: int = 0
    answer_tokens: int = 0
    cache_bytes: int = 0         # KV pool bytes the request held (its canvas' keys/values, per layer)
    first_token_s: float = 0.0   # seconds from arrival until its first text became final
    draft_rows: int = 0          # freedave: draft canvases its forwards ran (K per verifying forward)
    trace: list = field(default_factory=list)  # per step, when SamplingParams(trace=True)
    # json_schema requests: what the finished answer fails under the full schema (jsonschema), one
    # sentence each; [] when valid (constraints/json_schema/validate.py)
    schema_violations: list = field(default_factory=list)


@dataclass
class RequestOutput:
    text: str | None             # None when the model has no tokenizer; while running: the final text so far
    token_ids: list              # the answer, up to and excluding EOS (while running: the final tokens so far)
    prompt_token_ids: list
    stats: GenerationStats
    finish_reason: str | None = "length"  # "eos" | "stop" | "length" | "abort" | "error"; None while running
    request_id: str = ""
    finished: bool = True
    delta_text: str = ""         # text that became final since the request's previous output
    delta_token_ids: list = field(default_factory=list)   # tokens that became final since then
    error: str | None = None     # the one-sentence reason when finish_reason == "error"
    # the answer slots after this step, a token id or None where still masked: reported for traced requests
    # (SamplingParams(trace=True)) whenever a slot changed, e.g. for `dllm serve`'s "stream_mode": "canvas"
    canvas: list | None = None

    def to_dict(self) -> dict:
        return asdict(self)
