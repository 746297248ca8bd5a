"""GET /metrics: Prometheus text format, one registry per server (no global state)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
_TPF = (0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 32)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class Metrics:
    def __init__(self, running, waiting):
        """running, waiting: callables giving the current number of requests in each state."""
        r = self.registry = CollectorRegistry()
        Gauge("dllm_requests_running", "Requests the engine is decoding", registry=r).set_function(running)
        Gauge("dllm_requests_waiting", "Requests accepted and waiting for a slot in the engine",
              registry=r).set_function(waiting)
        self.requests = Counter("dllm_requests", "Finished answers (choices), by finish reason", ["finish_reason"],
                                registry=r)
        self.http = Counter("dllm_http_requests", "HTTP requests answered, by endpoint and status",
                            ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("dllm_prompt_tokens", "Prompt tokens of finished answers", registry=r)
        self.generation_tokens = Counter("dllm_generation_tokens", "Answer tokens sent", registry=r)
        self.forwards = Counter("dllm_forwards", "Model forward passes spent on finished answers (nfe)", registry=r)
        self.tokens_per_forward = Histogram("dllm_tokens_per_forward", "Answer tokens per forward, per answer",
                                            buckets=_TPF, registry=r)
        self.latency = Histogram("dllm_request_latency_seconds", "Arrival to last byte, per HTTP request",
                                 buckets=_LATENCY, registry=r)
        self.ttft = Histogram("dllm_time_to_first_token_seconds", "Arrival to the first answer text, per HTTP request",
                              buckets=_LATENCY, registry=r)

    def answer(self, finish_reason: str, prompt_tokens: int, tokens: int, nfe: int):
        self.requests.labels(finish_reason).inc()
        self.prompt_tokens.inc(prompt_tokens)
        self.generation_tokens.inc(tokens)
        self.forwards.inc(nfe)
        if nfe:
            self.tokens_per_forward.observe(tokens / nfe)

    def render(self) -> bytes:
        return generate_latest(self.registry)
