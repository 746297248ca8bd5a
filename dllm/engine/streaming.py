"""Streaming for diffusion: which text of a request is final, and what became final since the last output.

A diffusion model fills slots in any order, so text is final only as a prefix: the longest run of answer
slots from the start with no mask left (and, for schedulers that may revoke a commit, with no slot that
may still change), cut at the first end token. Of its decoded text, two tails are held back:
  - incomplete UTF-8: a byte-level token sequence may end inside a character (decoded as U+FFFD);
  - the longest suffix that could be the start of a stop string (the next tokens may complete it);
  - trailing whitespace (a decoder that cleans up spaces before punctuation may still drop it).
A stop string found in the final text ends the text just before it. The token deltas follow the text:
only tokens whose text has been sent are sent, so both the text deltas and the token deltas of a
request concatenate exactly to its final `text` and `token_ids` (`final()` computes those the same way).
"""
from __future__ import annotations


def stop_cut(text: str, stops) -> int:
    """Index of the first stop string in text, or -1."""
    return min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)


def held_back(text: str, stops) -> int:
    """Length of the tail of `text` that could still become the start of a stop string."""
    n = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), n, -1):
            if text.endswith(s[:k]):
                n = k
                break
    return n


class TextStream:
    """Per request: the text and tokens sent so far, and the deltas of each new final prefix."""

    def __init__(self, tokenizer, stops=()):
        self.tok, self.stops = tokenizer, tuple(stops)
        self.text = ""            # text sent
        self.n_tokens = 0         # tokens sent
        self.stopped = False      # a stop string was found: nothing more is sent

    def update(self, final_ids: list[int]) -> tuple[str, list[int]]:
        """final_ids: the answer's final prefix (no end token) -> (delta_text, delta_token_ids)."""
        if self.stopped or len(final_ids) <= self.n_tokens:
            return "", []
        if self.tok is None:
            new = final_ids[self.n_tokens:]
            self.n_tokens = len(final_ids)
            return "", new
        text = self.tok.decode(final_ids)
        cut = stop_cut(text, self.stops)
        if cut >= 0:
            visible, self.stopped = text[:cut], True
        else:
            visible = text.rstrip("\ufffd")
            visible = visible[:len(visible) - held_back(visible, self.stops)].rstrip()
        n = len(final_ids)
        if visible != text:   # tokens follow the text: the longest prefix whose text has been shown
            while n > self.n_tokens and not visible.startswith(self.tok.decode(final_ids[:n])):
                n -= 1
            visible = self.tok.decode(final_ids[:n]) if n > self.n_tokens else self.text
        if not visible.startswith(self.text) or n <= self.n_tokens:
            return "", []
        delta, ids = visible[len(self.text):], final_ids[self.n_tokens:n]
        self.text, self.n_tokens = visible, n
        return delta, ids

    def final(self, answer_ids: list[int]) -> tuple[str | None, list[int], bool]:
        """The finished answer (up to its end token) -> (text, token_ids, cut at a stop string)."""
        if self.tok is None:
            return None, answer_ids, False
        text = self.tok.decode(answer_ids)
        cut = stop_cut(text, self.stops)
        if cut < 0:
            return text, answer_ids, False
        text = text[:cut]
        # keep the shortest token prefix whose text covers the kept text (and the tokens already sent)
        n = next((n for n in range(self.n_tokens, len(answer_ids) + 1)
                  if len(self.tok.decode(answer_ids[:n])) >= cut), len(answer_ids))
        return text, answer_ids[:n], True

    def rest(self, text, token_ids) -> tuple[str, list[int]]:
        """The last delta: what the finished answer adds to what was sent."""
        if text is None:
            return "", token_ids[self.n_tokens:]
        # the held-back tails keep what was sent a prefix of the final text for every decoder we know;
        # a decoder that rewrote sent text would leave the deltas short of it, never wrong in order
        return (text[len(self.text):] if text.startswith(self.text) else ""), token_ids[self.n_tokens:]
