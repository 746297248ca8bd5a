"""The answers of one HTTP request (its choices) and their OpenAI response bodies and stream chunks.

A Choice folds the engine's outputs for one engine request into the answer sent so far. max_tokens is
applied here: the engine decodes a canvas rounded up to whole blocks, and the answer is cut at
max_tokens tokens (the text re-decoded from the kept tokens), so a client never gets more. The same
folding serves streamed and whole answers, so the streamed deltas join to the whole answer's text.
"""
from __future__ import annotations

import time
import uuid

from dllm.cli import MASK

# dllm's finish reasons -> OpenAI's ("stop" covers both an end token and a stop string)
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "abort": "abort", "error": "error"}


class Choice:
    def __init__(self, index: int, request_id: str, max_tokens: int, prompt_tokens: int, tokenizer):
        self.index, self.request_id, self.max_tokens = index, request_id, max_tokens
        self.prompt_tokens, self.tokenizer = prompt_tokens, tokenizer
        self.text, self.token_ids = "", []
        self.finish_reason: str | None = None   # OpenAI's: stop | length | abort | error
        self.error: str | None = None
        self.nfe = 0
        self.canvas = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def update(self, out) -> tuple[str, list]:
        """Folds in the engine's next RequestOutput; returns the (text, token ids) to send now."""
        if self.finished:
            return "", []
        ids, text = list(out.delta_token_ids), out.delta_text or ""
        room = self.max_tokens - len(self.token_ids)
        cut = len(ids) > room
        if cut:   # past max_tokens: keep `room` tokens, and the text they decode to
            ids = ids[:room]
            full = self.tokenizer.decode(self.token_ids + ids) if self.tokenizer is not None else ""
            text = full[len(self.text):] if full.startswith(self.text) else ""
        self.text += text
        self.token_ids += ids
        self.nfe = max(self.nfe, out.stats.nfe)
        self.canvas = out.canvas if out.canvas is not None else self.canvas
        if cut:
            self.finish_reason = "length"
        elif out.finished:
            self.finish_reason = FINISH.get(out.finish_reason, out.finish_reason or "stop")
            self.error = out.error
        return text, ids


class Reply:
    """One HTTP request's choices, in OpenAI's choice order (prompt-major, then the n samples)."""

    def __init__(self, chat: bool, model: str, job, tokenizer):
        self.chat, self.model, self.tokenizer = chat, model, tokenizer
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.object = "chat.completion" if chat else "text_completion"
        self.created = int(time.time())
        self.t0, self.first_token_s = time.perf_counter(), None
        self.include_usage, self.canvas_mode = job.include_usage, job.canvas
        self.with_ids = job.return_token_ids or tokenizer is None
        self.choices = [Choice(i * job.n + j, f"{self.id}-{i * job.n + j}", job.max_tokens, len(p), tokenizer)
                        for i, p in enumerate(job.prompts) for j in range(job.n)]
        self.by_id = {c.request_id: c for c in self.choices}
        self.prompt_tokens = sum(len(p) for p in job.prompts)

    @property
    def done(self) -> bool:
        return all(c.finished for c in self.choices)

    def take(self, out) -> tuple[Choice, str, list]:
        choice = self.by_id[out.request_id]
        text, ids = choice.update(out)
        if (text or ids) and self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.t0
        return choice, text, ids

    # ---- bodies ---------------------------------------------------------------------------------
    def usage(self) -> dict:
        """Prompt tokens once per prompt (not per sample), as OpenAI counts them; nfe: forwards spent."""
        answer = sum(len(c.token_ids) for c in self.choices)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": answer,
                "total_tokens": self.prompt_tokens + answer, "nfe": sum(c.nfe for c in self.choices)}

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _choice(self, c: Choice, text: str, ids: list, finish, delta: bool) -> dict:
        if self.chat and delta:
            body = {"index": c.index, "delta": {"content": text} if text else {}}
        elif self.chat:
            body = {"index": c.index, "message": {"role": "assistant", "content": text}}
        else:
            body = {"index": c.index, "text": text, "logprobs": None}
        body["finish_reason"] = finish
        if self.with_ids:
            body["token_ids"] = list(ids)
        if delta and self.canvas_mode and c.canvas is not None:
            body["canvas"] = self.render_canvas(c.canvas)
        return body

    def body(self) -> dict:
        """The whole (non-streamed) answer."""
        return {**self._head(self.object), "choices": [self._choice(c, c.text, c.token_ids, c.finish_reason, False)
                                                       for c in self.choices], "usage": self.usage()}

    def chunk(self, c: Choice, text: str, ids: list) -> dict | None:
        """The stream chunk for what one output changed, or None when it changed nothing to send."""
        if not (text or ids or c.finished or (self.canvas_mode and c.canvas is not None)):
            return None
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [self._choice(c, text, ids, c.finish_reason, True)]}

    def role_chunks(self) -> list[dict]:
        """Chat streams open with each choice's role, as OpenAI's do."""
        if not self.chat:
            return []
        return [{**self._head("chat.completion.chunk"), "choices": [
            {"index": c.index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
            for c in self.choices]

    def usage_chunk(self) -> dict:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": self.usage()}

    def render_canvas(self, canvas: list) -> dict:
        """{"token_ids": [id or null per answer slot], "text": the slots' pieces, MASK where masked}."""
        tok = self.tokenizer
        text = None if tok is None else "".join(
            MASK if t is None else tok.decode([t], skip_special_tokens=False) for t in canvas)
        return {"token_ids": list(canvas), "text": text}
