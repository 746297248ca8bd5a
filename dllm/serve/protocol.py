"""OpenAI request bodies -> what the engine runs (no FastAPI here: plain dicts in, a Job out).

Field mapping, for /v1/completions and /v1/chat/completions:
  max_tokens (chat also max_completion_tokens; dllm's max_new_tokens is the same) -> the answer is cut
      there; the canvas (SamplingParams.max_new_tokens) is max_tokens rounded up to whole blocks
  temperature, top_p, top_k, seed, stop -> the SamplingParams fields of those names
  n -> n engine requests per prompt (choice i samples with seed + i when a seed is given)
  response_format {"type": "json_schema", "json_schema": {"schema": S}} -> json_schema S;
      {"type": "json_object"} -> json_schema {"type": "object"} (an object of JSON values)
  guided_regex / guided_json / guided_grammar (vLLM's names) -> regex / json_schema / grammar
  every other SamplingParams field by its own name (scheduler, threshold, block_length, steps, cache, ...),
      except the server-side paths draft_model and filter_path, which only the server's flags set
  stream, stream_options.include_usage, "stream_mode": "text" | "canvas", return_token_ids (vLLM's name)
Fields of the OpenAI API that dllm does not implement are accepted only at their neutral value; any
other unknown field is refused, so that a misspelt knob is an error instead of silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from dllm.cli import _base_type   # 'Optional[int]' -> 'int' (torch-free)
from dllm.errors import DllmError
from dllm.sampling_params import SamplingParams

_FIELDS = {f.name: f.type for f in dataclasses.fields(SamplingParams)}
_SERVER_ONLY = ("draft_model", "filter_path")   # paths on the server's disk: never from a request
_GUIDED = {"guided_regex": "regex", "guided_json": "json_schema", "guided_grammar": "grammar"}
_COMMON = {"model", "max_tokens", "n", "stream", "stream_options", "stream_mode", "response_format",
           "return_token_ids", *_GUIDED}
# accepted and ignored, whatever their value
_IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls"}
# OpenAI fields dllm does not implement: accepted at these (neutral) values only
_NEUTRAL = {"presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ({},), "logprobs": (False, 0),
            "top_logprobs": (0,), "echo": (False,), "suffix": ("",), "best_of": (1,), "tools": ([],),
            "tool_choice": ("none", "auto"), "modalities": (["text"],)}
MAX_N = 64                   # samples per prompt
MAX_ANSWERS = 256            # prompts x n per HTTP request


class ApiError(DllmError):
    """An error with the HTTP status and OpenAI error code it is answered with."""

    def __init__(self, message: str, status: int = 400, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


@dataclass
class ModelInfo:
    """What the request mapping needs to know about the served model."""
    name: str
    tokenizer: object            # dllm.tokenizer.Tokenizer or None
    max_seq_len: int
    defaults: SamplingParams     # the server's defaults (its sampling flags), overridden per request


@dataclass
class Job:
    prompts: list                # per prompt: its token ids
    params: SamplingParams       # with the canvas rounded up to whole blocks
    max_tokens: int              # the answer is cut here
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    canvas: bool = False         # "stream_mode": "canvas"
    return_token_ids: bool = False


def parse_completion(body, info: ModelInfo) -> Job:
    _check_body(body, info, {"prompt"})
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt)):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt or not all(
            isinstance(p, str) or (isinstance(p, list) and all(_is_int(t) for t in p)) for p in prompt):
        raise ApiError("prompt must be a string, a list of strings, a list of token ids or a list of such lists.",
                       param="prompt")
    ids = [_encode(p, info) if isinstance(p, str) else list(p) for p in prompt]
    return _job(body, info, ids, chat=False)


def parse_chat(body, info: ModelInfo) -> Job:
    _check_body(body, info, {"messages", "max_completion_tokens"})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages must be a non-empty list of {role, content} objects.", param="messages")
    tok = info.tokenizer
    if tok is None or not tok.chat_template:
        raise ApiError(f"model {info.name!r} has no chat template; use /v1/completions.", param="messages")
    ids = tok.encode_chat([_message(m, i) for i, m in enumerate(messages)])
    return _job(body, info, [ids], chat=True)


def _check_body(body, info: ModelInfo, own: set):
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object.")
    for key, value in body.items():
        if key in _NEUTRAL and value is not None and value not in _NEUTRAL[key]:
            raise ApiError(f"{key}={json.dumps(value)} is not supported by dllm.", param=key)
        if key in _SERVER_ONLY:
            raise ApiError(f"{key} is a path on the server; set it with the server's --{key.replace('_', '-')} flag.",
                           param=key)
        if key not in _FIELDS and key not in _COMMON and key not in own and key not in _IGNORED \
                and key not in _NEUTRAL:
            raise ApiError(f"unknown field {key!r}.", param=key)
    model = body.get("model")
    if model is not None and model != info.name:
        raise ApiError(f"the model {model!r} does not exist; this server serves {info.name!r}.", status=404,
                       code="model_not_found", param="model")


def _message(m, i: int) -> dict:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise ApiError(f"messages[{i}] must be an object with a string 'role'.", param="messages")
    content = m.get("content")
    if isinstance(content, list):   # content parts: only text ones
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise ApiError(f"messages[{i}].content: only text parts are supported.", param="messages")
        content = "\n".join(p["text"] for p in content)
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise ApiError(f"messages[{i}].content must be a string or a list of text parts.", param="messages")
    return {"role": m["role"], "content": content}


def _encode(text: str, info: ModelInfo) -> list[int]:
    if info.tokenizer is None:
        raise ApiError(f"model {info.name!r} has no tokenizer; give the prompt as token ids.", param="prompt")
    return info.tokenizer.encode(text)   # as LLM.generate encodes a text prompt (no chat template)


def _job(body: dict, info: ModelInfo, prompts: list, chat: bool) -> Job:
    n = _get(body, "n", "int", 1)
    if not 1 <= n <= MAX_N:
        raise ApiError(f"n must be between 1 and {MAX_N}, got {n}.", param="n")
    if len(prompts) * n > MAX_ANSWERS:
        raise ApiError(f"a request may ask for at most {MAX_ANSWERS} answers (prompts x n), got {len(prompts) * n}.",
                       param="n" if n > 1 else "prompt")
    params, max_tokens = sampling_params(body, info.defaults, chat)
    longest = max(len(p) for p in prompts)
    if longest + params.max_new_tokens > info.max_seq_len:
        raise ApiError(f"prompt ({longest} tokens) + answer ({params.max_new_tokens}) exceeds the model's context "
                       f"of {info.max_seq_len} tokens.", code="context_length_exceeded", param="messages"
                       if chat else "prompt")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise ApiError("stream_options must be an object with the one field include_usage.", param="stream_options")
    mode = body.get("stream_mode", "text")
    if mode not in ("text", "canvas"):
        raise ApiError(f"stream_mode must be 'text' or 'canvas', got {mode!r}.", param="stream_mode")
    if mode == "canvas" and not params.trace:   # the engine fills RequestOutput.canvas when tracing
        params = dataclasses.replace(params, trace=True)
    return Job(prompts=prompts, params=params, max_tokens=max_tokens, n=n, stream=_get(body, "stream", "bool", False),
               include_usage=bool(_get(options or {}, "include_usage", "bool", False)), canvas=mode == "canvas",
               return_token_ids=_get(body, "return_token_ids", "bool", False))


def sampling_params(body: dict, defaults: SamplingParams, chat: bool = False) -> tuple[SamplingParams, int]:
    """The request's SamplingParams (defaults overridden by its fields) and its max_tokens."""
    kw = defaults.to_dict()
    for name, annotation in _FIELDS.items():
        if body.get(name) is not None and name not in _SERVER_ONLY:
            kw[name] = _get(body, name, annotation)
    for alias, name in _GUIDED.items():
        if body.get(alias) is not None:
            if body.get(name) is not None:
                raise ApiError(f"give {alias} or {name}, not both.", param=alias)
            value = body[alias]
            if name == "json_schema" and isinstance(value, str):   # vLLM also takes the schema as JSON text
                value = _json_text(value, alias)
            kw[name] = _get({name: value}, name, _FIELDS[name])
    schema = _response_format(body.get("response_format"))
    if schema is not None:
        if kw.get("json_schema") is not None or kw.get("regex") is not None or kw.get("grammar") is not None:
            raise ApiError("give response_format or a regex / JSON schema / grammar constraint, not both.",
                           param="response_format")
        kw["json_schema"] = schema
    max_tokens = _max_tokens(body, defaults, chat)
    block = kw.get("block_length")
    kw["max_new_tokens"] = -(-max_tokens // block) * block if block else max_tokens   # whole blocks
    try:
        return SamplingParams(**kw), max_tokens
    except (TypeError, ValueError) as e:   # InvalidParamsError is a ValueError: keep its sentence
        raise e if isinstance(e, DllmError) else ApiError(f"invalid sampling parameters: {e}.") from None


def _max_tokens(body: dict, defaults: SamplingParams, chat: bool) -> int:
    names = ["max_tokens", "max_new_tokens"] + (["max_completion_tokens"] if chat else [])
    given = {n: _get(body, n, "int") for n in names if body.get(n) is not None}
    if len(set(given.values())) > 1:
        raise ApiError(f"{' and '.join(given)} disagree; give one of them.", param=next(iter(given)))
    value = next(iter(given.values()), defaults.max_new_tokens)
    if value < 1:
        raise ApiError(f"max_tokens must be a positive integer, got {value}.", param="max_tokens")
    return value


def _response_format(fmt):
    """response_format -> a JSON schema (dict) or None (plain text)."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, str):
            schema = _json_text(schema, "response_format")
        if not isinstance(schema, dict):
            raise ApiError("response_format.json_schema.schema must be a JSON Schema object.", param="response_format")
        return schema
    raise ApiError("response_format.type must be 'text', 'json_object' or 'json_schema'.", param="response_format")


def _json_text(text: str, param: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(f"{param} is not valid JSON ({e.msg} at character {e.pos}).", param=param) from None


_KINDS = {"int": ("an integer", lambda v: _is_int(v)),
          "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
          "str": ("a string", lambda v: isinstance(v, str)),
          "bool": ("true or false", lambda v: isinstance(v, bool)),
          "dict": ("an object", lambda v: isinstance(v, dict)),
          "tuple": ("a list", lambda v: isinstance(v, list))}


def _get(body: dict, name: str, annotation: str, default=None):
    """body[name] checked against a SamplingParams-style annotation ('Optional[int]', 'float', ...);
    absent or null -> default (null means "not given", as OpenAI's clients send it)."""
    value = body.get(name)
    if value is None:
        return default
    if name == "stop" and isinstance(value, str):
        return (value,)
    what, ok = _KINDS[_base_type(annotation)]
    if not ok(value):
        raise ApiError(f"{name} must be {what}, got {json.dumps(value)[:40]}.", param=name)
    return tuple(value) if _base_type(annotation) == "tuple" else value


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
