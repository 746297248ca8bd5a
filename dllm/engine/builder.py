"""A request from a prompt and SamplingParams: encoded, checked against the context, its constraint
compiled and bound, and its decoder chosen by the model (diffusion, autoregressive) and the params
(APD when draft_model is given). Everything that can be refused is refused here, before the request
waits, so add_request raises at once."""
from __future__ import annotations

from dllm.engine.prompts import encode, template
from dllm.engine.request import Request
from dllm.engine.streaming import TextStream
from dllm.errors import InvalidParamsError, PromptError, UnsupportedError


def build_request(engine, request_id: str, prompt, params, apply_chat_template: bool, stream: bool, on_step,
                  row: int) -> Request:
    from dllm.constraints.base import compile_constraint
    from dllm.engine.llm_engine import DecodeEnv

    m = engine.loaded
    name = str(m.path)
    ids = encode(prompt, m.tokenizer, m.args.vocab_size, apply_chat_template, name)
    n = params.max_new_tokens
    if len(ids) + n > m.args.max_seq_len:
        raise PromptError(f"prompt ({len(ids)} tokens) + answer ({n}) exceeds the model's context "
                          f"of {m.args.max_seq_len} tokens.")
    end = _end_token(m)
    answer = template(prompt, n, m.tokenizer, m.args.mask_token_id, end, name)
    if answer is not None and not m.stop_ids:
        raise PromptError("a template needs an end-of-sequence token after its last part, and this model has none.")
    check_memory(m, len(ids) + n, params)
    apd = params.scheduler == "apd"
    if m.args.causal:
        if answer is not None:
            raise UnsupportedError("templates (infilling) need a diffusion model; this model is autoregressive.")
        if apd:
            raise UnsupportedError("scheduler 'apd' decodes a diffusion model with an autoregressive draft "
                                   "checker; this model is itself autoregressive.")
    if apd and (answer is not None or params.regex is not None or params.json_schema is not None or params.grammar):
        raise UnsupportedError("constraints and templates are not supported with scheduler 'apd'.")
    if m.args.block_causal:
        from dllm.engine.block_diffusion import check_supported
        check_supported(params, m.args)
        if answer is not None:
            raise UnsupportedError("templates (infilling) are not supported for block-diffusion models.")
    constraint = compile_constraint(params, m.tokenizer, m.args.vocab_size, m.stop_ids, causal=m.args.causal,
                                    templated=answer is not None, name=name)
    env = DecodeEnv(m.device, m.kernels, name if not name.startswith("<") else None, m.classic, on_step,
                    m.newline_ids, spans=m.graphs == "none")
    if m.args.causal:
        from dllm.engine.autoregressive import ARDecoder
        dec = ARDecoder(ids, params, m.args, m.stop_ids, env, constraint)
    elif apd:
        from dllm.engine.apd import APDDecoder
        key, draft = engine.draft(params.draft_model)
        d_vocab = draft.args.vocab_size
        if any(i >= d_vocab for i in ids):
            raise PromptError(f"a prompt token id is outside the draft model's vocabulary (0..{d_vocab - 1}).")
        if len(ids) + n > draft.args.max_seq_len:
            raise PromptError(f"prompt ({len(ids)} tokens) + answer ({n}) exceeds the draft model's context "
                              f"of {draft.args.max_seq_len} tokens.")
        dec = APDDecoder(ids, params, m.args, draft.args, key, m.stop_ids, env)
    elif m.args.block_causal:   # SDAR, LLaDA2.x, Fast-dLLM v2: an exact block KV cache
        from dllm.engine.block_diffusion import BlockDecoder
        dec = BlockDecoder(ids, params, m.args, m.stop_ids, env, constraint, end)
    else:
        from dllm.engine.diffusion import DiffusionDecoder
        dec = DiffusionDecoder(ids, answer, params, m.args, m.stop_ids, env, constraint)
    dec.row = row
    req = Request(request_id, ids, params, dec, TextStream(m.tokenizer, params.stop))
    req.stream_deltas = stream
    return req


def check_memory(m, length: int, params) -> None:
    """What one forward of the request needs besides the weights and its KV-pool columns (the pool has
    its own budget): a full forward's activations of one layer and the logits of the rows the head reads,
    estimated before anything is allocated (dllm/limits.py)."""
    import torch

    from dllm.limits import require_memory

    a, elem = m.args, torch.empty((), dtype=m.dtype).element_size()
    rows = 2 if params.cfg_scale > 0 else 1
    query = 1 if a.causal else length if params.scheduler == "early_commit" else min(params.block, length)
    logits = rows * query * a.vocab_size * 4 * 3                       # float32 logits and their copies
    acts = rows * length * (4 * a.dim + 3 * a.intermediate_size) * elem   # one layer of a full forward
    require_memory(logits + acts, m.device, f"decoding a request of {length} tokens ({params.cache} cache)",
                   error=InvalidParamsError)


def _end_token(m) -> int:
    """The token that pads a template's answer after its last part."""
    tok = m.tokenizer
    if tok is not None and tok.eos_token_id in m.stop_ids:
        return tok.eos_token_id
    return min(m.stop_ids) if m.stop_ids else m.pad_id


def load_draft(engine, path: str, key: str):
    """APD's checker: an autoregressive model with this model's tokenizer, its own runner and pool."""
    from dllm.engine.kv_pool import KVPool, default_capacity
    from dllm.engine.loading import load
    from dllm.engine.runner import ModelRunner

    m = engine.loaded
    draft = load(path, device=m.device, dtype=m.dtype)
    if not draft.args.causal:
        raise InvalidParamsError(f"draft_model {path!r} is a diffusion model; APD needs an autoregressive one.")
    if not same_vocab(m.tokenizer, draft.tokenizer):
        raise InvalidParamsError(f"draft_model {path!r} does not use this model's tokenizer; APD needs both "
                                 "models to share one vocabulary.")
    pool = None
    if not draft.classic:
        pool = KVPool(draft.args, draft.dtype, draft.device,
                      default_capacity(draft.args, draft.dtype, draft.device, engine.kv_cache_memory))
    engine.runners[key] = ModelRunner(draft.model, pool)
    from dllm.engine.llm_engine import _NoPool
    engine.scheduler.pools[key] = pool or _NoPool()
    return draft


def same_vocab(a, b) -> bool:
    """Both tokenizers present, the same regular (non-added) vocabulary, and every added token
    that both define at the same id (e.g. Dream adds its mask token to Qwen2's vocabulary)."""
    if a is None or b is None:
        return False
    if a._tok.get_vocab(with_added_tokens=False) != b._tok.get_vocab(with_added_tokens=False):
        return False
    va, vb = a._tok.get_vocab(with_added_tokens=True), b._tok.get_vocab(with_added_tokens=True)
    ta, tb = {i: t for t, i in va.items()}, {i: t for t, i in vb.items()}
    return all(va[t] == vb[t] for t in va.keys() & vb.keys()) and all(ta[i] == tb[i] for i in ta.keys() & tb.keys())
