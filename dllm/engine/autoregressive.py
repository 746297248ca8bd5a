"""One request decoded by a causal model (Llama, Qwen2, GGUF): a block of one slot over the same core.

The canvas is [prompt | N answer slots]. The first forward prefills the prompt (causal, keys/values
into the request's pool columns) and scores answer slot 0 from the last prompt row; every later forward
runs the one token just chosen against the cached prefix and scores the next slot. So nfe = answer
tokens up to and including the first stop token. Sampling is `sampling.choose` (Hugging Face's warper
order); a constraint masks each step's logits with the tokens that keep the answer completable
(constraints/dingo.py TokenMask). A stop token ends the request; the rest of the answer is that token.
"""
from __future__ import annotations

import torch

from dllm.engine.request import Decoder
from dllm.engine.runner import ForwardRow
from dllm.engine.sampling import choose, generator
from dllm.engine.windows import _Handle
from dllm.errors import NumericError


class ARDecoder(Decoder):
    def __init__(self, prompt, params, args, stop_ids, env, constraint=None):
        super().__init__(prompt, None, params.max_new_tokens, 0, stop_ids, env.device)
        self.p = params
        self.gen = generator(params.seed, env.device)
        self.i = 0                            # answer tokens chosen so far
        self.handle = _Handle() if env.classic else None
        self.mask = None if constraint is None else constraint.token_mask(self.N, env.device)

    def needs(self):
        return [("main", self.L)]

    def final_len(self) -> int:
        return self.N if self.done else self.i

    def plan(self):
        if self.done:
            return []
        base = self.bases[0] if self.bases else None
        if self.i == 0:   # prefill: the prompt, causal; the last row scores answer slot 0
            return [ForwardRow(ids=self.x[:self.P], start=0, keys=self.P, q=(self.P - 1, self.P), base=base,
                               attn="causal", handle=self.handle)]
        c = self.P + self.i - 1               # the column of the token just chosen
        return [ForwardRow(ids=self.x[c:c + 1], start=c, keys=c + 1, q=(0, 1), base=base, attn="causal",
                           handle=self.handle)]

    def advance(self, outs):
        logits = outs[0]                                                      # [1, V]
        if not bool(torch.isfinite(logits.amax())):
            raise NumericError(f"the model's logits hold NaN or infinity (token {self.i + 1}); its weights are "
                               "broken or overflow in this dtype (try dtype float32 or bfloat16).")
        allowed = None if self.mask is None else self.mask.allowed(self.x[self.P:self.P + self.i], self.i)
        tok, scores = choose(logits, self.p.temperature, self.p.top_k, self.p.top_p, self.gen,
                             None if allowed is None else allowed[None])
        t = int(tok[0])
        self.x[self.P + self.i] = t
        self.nfe += 1
        self.steps += 1
        if self.p.trace:
            p = (scores[0, t] - scores[0].logsumexp(-1)).exp()
            self.trace.append({"step": self.i, "block": self.i, "positions": [self.i], "tokens": [t],
                               "scores": [round(float(p), 6)]})
        self.i += 1
        if t in self.stop:
            self.x[self.P + self.i:] = t
            self.done = True
        elif self.i == self.N:
            self.done = True
