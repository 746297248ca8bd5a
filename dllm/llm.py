"""LLM: load a checkpoint once, generate many times (the public API)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from dllm.errors import DllmError, PromptError, TokenizerError
from dllm.outputs import GenerationStats, RequestOutput
from dllm.sampling_params import SamplingParams

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype, device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise DllmError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16.")
    return _DTYPES[dtype]


def resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DllmError(f"unknown device {device!r}.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DllmError("device 'cuda' was asked for, but no CUDA GPU is available.")
    return dev


class LLM:
    """A masked-diffusion language model loaded from a local directory.

    LLM("path/to/LLaDA-8B-Instruct", device="cuda", dtype="bfloat16").generate(prompts, params)
    kernels: "auto" | "triton" | "torch" (default: $DLLM_KERNELS, else "auto"), see dllm/kernels.
    graphs: "auto" | "cuda" | "compile" | "none" (default: $DLLM_GRAPHS, else "auto"): how the cached
    steps of a block are replayed, see dllm/engine/graphs.py.
    pack: "auto" | "onednn" | "none" (default: $DLLM_PACK, else "auto"): whether the linear weights
    are packed for oneDNN, the fast CPU path (auto: on a CPU, unless graphs="compile"), see
    dllm/models/packing.py.
    """

    def __init__(self, model, device=None, dtype=None, kernels: str | None = None, graphs: str | None = None,
                 pack: str | None = None):
        from dllm.engine.graphs import resolve_graphs
        from dllm.kernels import resolve_kernels
        from dllm.models import load_model
        from dllm.models.packing import pack_linears, resolve_pack
        from dllm.tokenizer import Tokenizer

        self.path = Path(model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.kernels = resolve_kernels(kernels, self.device)
        self.graphs = resolve_graphs(graphs, self.device)
        if self.graphs == "compile" and self.kernels == "triton" and self.device.type != "cuda":
            raise DllmError("graphs='compile' cannot trace Triton's CPU interpreter; use kernels='torch' on a CPU.")
        packed = resolve_pack(pack, self.device, self.dtype, self.graphs)
        self.model, self.args = load_model(self.path, self.device, self.dtype)
        ours = hasattr(self.model, "set_kernels")   # our Transformer, not a transformers fallback model
        if ours:
            self.model.set_kernels(self.kernels)
        self.packed = packed and ours
        if self.packed:
            pack_linears(self.model)
        self.tokenizer = Tokenizer.from_gguf(self.path) if self.path.suffix == ".gguf" and self.path.is_file() \
            else Tokenizer.from_pretrained(self.path)
        self._set_stop_ids()

    @classmethod
    def from_model(cls, model, args, tokenizer, name: str = "<in-memory>") -> "LLM":
        """An LLM around a model object that has the engine's forward signature (e.g. the evaluation
        suite's exact-marginal oracles), its ModelArgs and Tokenizer (or None)."""
        self = cls.__new__(cls)
        p = next(model.parameters())
        self.path, self.device, self.dtype = Path(name), p.device, p.dtype
        from dllm.kernels import resolve_kernels
        self.kernels = resolve_kernels(None, self.device)
        self.graphs = "none"   # any model object: its forward need not be capturable
        self.packed = False    # nor its weights ours to repack
        self.model, self.args, self.tokenizer = model, args, tokenizer
        self._set_stop_ids()
        return self

    def _set_stop_ids(self):
        self.stop_ids = set(self.args.eos_token_ids) | self._generation_config_eos()
        if self.tokenizer is not None:
            self.stop_ids |= self.tokenizer.stop_token_ids()
        self.stop_ids.discard(self.args.mask_token_id)
        pad = self.args.pad_token_id
        self.pad_id = int(pad) if pad is not None else (min(self.stop_ids) if self.stop_ids else 0)

    def _generation_config_eos(self) -> set[int]:
        f = self.path / "generation_config.json"
        try:
            eos = json.loads(f.read_text()).get("eos_token_id") if f.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return set()
        if eos is None:
            return set()
        return {int(e) for e in (eos if isinstance(eos, list) else [eos])}

    # ---- prompts -> token ids ---------------------------------------------------------------
    def _encode(self, prompt, apply_chat_template: bool) -> list[int]:
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                ids = prompt["prompt_token_ids"]
                if not isinstance(ids, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                    raise PromptError("prompt_token_ids must be a list of integers.")
                ids = list(ids)
            elif "prompt" in prompt:
                return self._encode(prompt["prompt"], apply_chat_template)
            else:
                raise PromptError("a dict prompt needs a 'prompt' or 'prompt_token_ids' key.")
        elif isinstance(prompt, str):
            if self.tokenizer is None:
                raise TokenizerError(
                    f"{str(self.path)!r} has no tokenizer files, so text prompts cannot be encoded; pass "
                    "{'prompt_token_ids': [...]} instead.")
            if apply_chat_template and self.tokenizer.chat_template:
                ids = self.tokenizer.encode_chat([{"role": "user", "content": prompt}])
            else:
                ids = self.tokenizer.encode(prompt)
        else:
            raise PromptError(f"a prompt must be a string or a dict, got {type(prompt).__name__}.")
        if not ids:
            raise PromptError("a prompt is empty; give at least one token.")
        bad = [i for i in ids if not 0 <= i < self.args.vocab_size]
        if bad:
            raise PromptError(f"token id {bad[0]} is outside the model's vocabulary (0..{self.args.vocab_size - 1}).")
        return ids

    def _template(self, prompt, n: int):
        """{"template": [fixed text | gap length, ...]} -> the n initial answer slots (mask id in the
        gaps, end tokens after the template), or None without a template."""
        tpl = prompt.get("template") if isinstance(prompt, dict) else None
        if tpl is None:
            return None
        if not isinstance(tpl, (list, tuple)) or not tpl or not all(
                isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool) and p > 0) for p in tpl):
            raise PromptError("a template is a non-empty list of fixed strings and positive gap lengths.")
        if self.tokenizer is None:
            raise TokenizerError(f"{str(self.path)!r} has no tokenizer files, so a template's text cannot be encoded.")
        slots = []
        for part in tpl:
            slots += self.tokenizer.encode(part, add_special_tokens=False) if isinstance(part, str) \
                else [self.args.mask_token_id] * part
        if len(slots) > n:
            raise PromptError(f"the template needs {len(slots)} answer tokens but max_new_tokens is {n}.")
        end = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id in self.stop_ids else min(self.stop_ids)
        return slots + [end] * (n - len(slots))

    def _compile(self, params, templated: bool):
        """The constraint's token DFA, or None. Templates without a pattern get the any-text language,
        so that an end token can only close the last gap."""
        pattern = params.regex
        if params.json_schema is not None:
            from dllm.constraints.json_schema import schema_to_regex

            pattern = schema_to_regex(params.json_schema)
        cfg = params.grammar is not None and params.grammar_mode == "cfg" and not self.args.causal \
            and params.scheduler != "apd"
        if params.grammar is not None and not cfg:   # autoregressive models take the regex form
            from dllm.constraints.grammar import grammar_to_regex

            pattern = grammar_to_regex(params.grammar)
        if pattern is None and not templated and not cfg:
            return None
        if self.tokenizer is None:
            raise TokenizerError(f"{str(self.path)!r} has no tokenizer files; constraints and templates need them.")
        from dllm.constraints.regex import _vocab, compile_regex

        if cfg:
            from dllm.constraints.cfg import compile_grammar
            from dllm.constraints.cfg_rows import GrammarConstraint

            return GrammarConstraint(compile_grammar(params.grammar), _vocab(self.tokenizer, self.args.vocab_size).tb)

        return compile_regex(pattern if pattern is not None else r"[\s\S]*", self.tokenizer, self.args.vocab_size)

    # ---- generation --------------------------------------------------------------------------
    def generate(self, prompts, params: SamplingParams | None = None, *, apply_chat_template: bool = False,
                 on_step=None):
        """prompts: a string, a dict, or a list of them -> one RequestOutput per prompt, in order.

        on_step: for tools (e.g. train-filter), called with every engine step (schedulers.base.Step);
        for autoregressive models on_step(i, tokens [B], done [B]) after every token (streaming).
        """
        from dllm.engine.diffusion import diffusion_generate

        params = params or SamplingParams()
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise PromptError("the prompt list is empty; give at least one prompt.")
        if isinstance(params, (list, tuple)):   # one SamplingParams per prompt: equal ones run as one batch
            if len(params) != len(prompts) or not all(isinstance(p, SamplingParams) for p in params):
                raise DllmError("params must be a SamplingParams or a list of them, one per prompt.")
            groups: dict = {}
            for i, p in enumerate(params):
                groups.setdefault(_key(p), []).append(i)
            outs = [None] * len(prompts)
            for idx in groups.values():
                for i, o in zip(idx, self.generate([prompts[i] for i in idx], params[idx[0]],
                                                   apply_chat_template=apply_chat_template, on_step=on_step)):
                    outs[i] = o
            return outs
        if not isinstance(params, SamplingParams):
            raise DllmError("params must be a SamplingParams.")
        ids = [self._encode(p, apply_chat_template) for p in prompts]
        answers = [self._template(p, params.max_new_tokens) for p in prompts]
        templated = any(a is not None for a in answers)
        draft = self._apd_draft(params, templated) if params.scheduler == "apd" else None
        dfa = self._compile(params, templated)
        longest = max(len(i) for i in ids)
        if longest + params.max_new_tokens > self.args.max_seq_len:
            raise PromptError(
                f"prompt ({longest} tokens) + answer ({params.max_new_tokens}) exceeds the model's context "
                f"of {self.args.max_seq_len} tokens.")
        t0 = time.perf_counter()
        if self.args.causal:   # autoregressive models: one token per forward (engine/autoregressive.py)
            from dllm.engine.autoregressive import ar_generate
            from dllm.errors import UnsupportedError

            if templated:
                raise UnsupportedError("templates (infilling) need a diffusion model; this model is autoregressive.")
            mask_fn = None
            if dfa is not None:   # the same compiled DFA, as a token mask per step
                from dllm.constraints.runtime import ARMask

                mask_fn = ARMask(dfa, self.stop_ids, params.max_new_tokens, len(ids), self.device)
                if int(dfa.dist[dfa.start]) > params.max_new_tokens:
                    from dllm.errors import ConstraintError

                    raise ConstraintError(f"no answer of at most {params.max_new_tokens} tokens satisfies the "
                                          "constraint; allow more tokens or relax the constraint.")
            rows = ar_generate(self.model, self.args, ids, params, self.stop_ids, self.pad_id, token_mask_fn=mask_fn,
                               on_token=on_step)
        elif draft is not None:   # APD: a second, autoregressive model checks the drafts (engine/apd.py)
            from dllm.engine.apd import apd_generate

            rows = apd_generate(self.model, self.args, draft, ids, params, self.stop_ids, self.pad_id)
        else:
            rows = diffusion_generate(self.model, self.args, ids, params, self.stop_ids, self.pad_id,
                                      model_path=str(self.path), on_step=on_step, dfa=dfa,
                                      answers=answers if templated else None, kernels=self.kernels,
                                      graphs=self.graphs,
                                      delimiters=self._newline_ids() if params.scheduler == "adablock" else ())
        elapsed = time.perf_counter() - t0
        return [self._output(p, r, params, elapsed) for p, r in zip(ids, rows)]

    def _newline_ids(self) -> tuple:
        """Token ids whose text is whitespace holding a newline (adablock's delimiters), once per LLM."""
        if "_newlines" not in self.__dict__:
            ids = ()
            if self.tokenizer is not None:
                from dllm.constraints.token_bytes import token_bytes

                tb = token_bytes(self.tokenizer, self.args.vocab_size)
                ids = tuple(t for t, b in enumerate(tb) if b and b"\n" in b and not b.strip()
                            and t not in self.stop_ids and t != self.args.mask_token_id)
            self._newlines = ids
        return self._newlines

    def _apd_draft(self, params, templated: bool) -> "LLM":
        """APD's autoregressive checker for params.draft_model: loaded once per path, kept on this LLM."""
        from dllm.errors import InvalidParamsError, UnsupportedError

        if self.args.causal:
            raise UnsupportedError("scheduler 'apd' decodes a diffusion model with an autoregressive draft "
                                   "checker; this model is itself autoregressive.")
        if templated or params.regex is not None or params.json_schema is not None or params.grammar:
            raise UnsupportedError("constraints and templates are not supported with scheduler 'apd'.")
        drafts = self.__dict__.setdefault("_apd_drafts", {})
        key = str(Path(params.draft_model).resolve())
        if key not in drafts:
            draft = LLM(params.draft_model, device=self.device, dtype=self.dtype)
            if not draft.args.causal:
                raise InvalidParamsError(f"draft_model {params.draft_model!r} is a diffusion model; "
                                         "APD needs an autoregressive one.")
            if not _same_vocab(self.tokenizer, draft.tokenizer):
                raise InvalidParamsError(f"draft_model {params.draft_model!r} does not use this model's "
                                         "tokenizer; APD needs both models to share one vocabulary.")
            drafts[key] = draft
        return drafts[key]

    def _output(self, prompt_ids, row, params, elapsed) -> RequestOutput:
        answer, reason = row.answer, "length"
        for i, t in enumerate(answer):
            if t in self.stop_ids:
                answer, reason = answer[:i], "eos"
                break
        text = None
        if self.tokenizer is not None:
            text = self.tokenizer.decode(answer)
            if params.stop:
                cut = min((text.find(s) for s in params.stop if s in text), default=-1)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
                    # keep the shortest token prefix whose text covers the kept text
                    n = next(n for n in range(len(answer) + 1) if len(self.tokenizer.decode(answer[:n])) >= cut)
                    answer = answer[:n]
        stats = GenerationStats(
            nfe=row.nfe, steps=row.steps, elapsed_s=elapsed, prompt_tokens=len(prompt_ids),
            answer_tokens=len(answer), tokens_per_forward=len(answer) / row.nfe if row.nfe else 0.0,
            trace=row.trace, cache_bytes=row.cache_bytes, draft_rows=getattr(row, "draft_rows", 0))
        return RequestOutput(text=text, token_ids=answer, prompt_token_ids=list(prompt_ids), stats=stats,
                             finish_reason=reason)


def _same_vocab(a, b) -> bool:
    """Both tokenizers present, the same regular (non-added) vocabulary, and every added token
    that both define at the same id (e.g. Dream adds its mask token to Qwen2's vocabulary)."""
    if a is None or b is None:
        return False
    if a._tok.get_vocab(with_added_tokens=False) != b._tok.get_vocab(with_added_tokens=False):
        return False
    va, vb = a._tok.get_vocab(with_added_tokens=True), b._tok.get_vocab(with_added_tokens=True)
    ta, tb = {i: t for t, i in va.items()}, {i: t for t, i in vb.items()}
    return all(va[t] == vb[t] for t in va.keys() & vb.keys()) and all(ta[i] == tb[i] for i in ta.keys() & tb.keys())


def _key(params: SamplingParams) -> str:
    return json.dumps(params.to_dict(), sort_keys=True, default=str)
