"""SamplingParams: one frozen dataclass, validated on construction (no torch import here)."""
from __future__ import annotations

import math
import numbers
import os
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from dllm.errors import InvalidParamsError

REMASKING = ("low_confidence", "random", "margin", "entropy")
SCHEDULES = ("auto", "llada", "dream")
CACHES = ("none", "prefix", "dual")


class SamplingParams:
    """How one request is decoded.

    The answer has `max_new_tokens` slots, decoded in blocks of `block_length` (None: one
    block) with `steps` forwards in all (None: one per slot). For LLaDA and Dream `block_length`
    must divide `max_new_tokens` (refused when decoding starts, as LLaDA does); steps are spread
    evenly over the blocks, the remainder going to the earliest blocks. Block-diffusion models
    align blocks to position 0 and take any block length.

    The fields below are the ones every request has; each scheduler file adds its own (their
    PARAMS, schedulers/*.py: factor, credit_*, early_commit_*, filter_*, sdar_*, ...), appended
    below the class body, all in one flat constructor.
    """

    max_new_tokens: int = 128
    block_length: Optional[int] = None
    steps: Optional[int] = None
    temperature: float = 0.0
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    seed: Optional[int] = None
    # "auto": the model family's own strategy (topk for LLaDA/Dream; sdar, dinfer, fast_dllm_v2 for the
    # block-diffusion families SDAR, LLaDA2.x, Fast-dLLM v2)
    scheduler: str = "auto"
    # topk: which score ranks the masked slots (LLaDA low_confidence/random, Dream
    # maskgit_plus = low_confidence, topk_margin = margin, entropy = entropy).
    remasking: str = "low_confidence"
    # topk: "llada" = fixed counts per block, "dream" = Dream's linspace(1, eps) timesteps;
    # "auto" = dream for Dream checkpoints decoded in one block, llada otherwise.
    schedule: str = "auto"
    eps: float = 1e-3
    cfg_scale: float = 0.0
    # confidence threshold of threshold, credit, localleap, adablock; None = the scheduler's paper default
    # (its module's THRESHOLD, 0.9 unless declared: wino's tau1 is 0.7), resolved on construction
    threshold: Optional[float] = None
    # apd (adaptive parallel decoding, arXiv 2506.00413; the loop is dllm/engine/apd.py): a small
    # autoregressive `draft_model` (same tokenizer) checks the diffusion model's drafts; the target
    # is q ∝ p_dLLM^apd_r · p_AR^(1 - apd_r); the diffusion forward sees `apd_window` masked slots
    # after the committed answer and drafts up to `apd_max_draft` of them per step
    draft_model: Optional[str] = None
    apd_r: float = 0.7
    apd_window: int = 16
    apd_max_draft: int = 16
    # end-of-text prediction: once a stop token is committed, every later answer slot is EOS
    eot_prediction: bool = False
    # KV cache (Fast-dLLM): "prefix" | "dual" reuse keys/values within a block; refreshed by a
    # full forward at each block start, and also every `refresh_every` forwards (0: never);
    # `refresh_window` columns either side of the block are recomputed on cached steps;
    # `cache_prompt` keeps the prompt's keys/values from the first forward for every block.
    cache: str = "none"
    refresh_every: int = 0
    refresh_window: int = 0
    cache_prompt: bool = False
    regex: Optional[str] = None
    json_schema: Optional[dict] = None
    # False: keywords no grammar expresses (uniqueItems, overlapping oneOf, not of a pattern, ...) are
    # left out during decoding and the answer is checked afterwards (RequestOutput.stats.schema_violations);
    # True: such a schema is refused (constraints/json_schema, issue 25)
    json_schema_strict: bool = False
    grammar: Optional[str] = None
    # "cfg": the grammar itself, checked per commit (unbounded nesting; constraints/cfg.py);
    # "regex": a depth-bounded regex of it through the DINGO program (constraints/grammar.py)
    grammar_mode: str = "cfg"
    stop: tuple = field(default_factory=tuple)
    trace: bool = False
    # ---- block-diffusion families (SDAR, LLaDA2.x, Fast-dLLM v2): blocks are aligned to position 0,
    # block_length defaults to the model's block size, and `steps` is replaced by denoising_steps ----
    # denoising steps per block (SDAR's denoising_steps; None: the block length)
    denoising_steps: Optional[int] = None

    def __post_init__(self):
        def bad(msg):
            raise InvalidParamsError(msg)

        _check_types(self)      # every field: its annotated type, finite floats (generic, below)
        if self.threshold is None:
            from dllm.schedulers import default_threshold  # torch-free
            object.__setattr__(self, "threshold", default_threshold(self.scheduler))
        _check_ranges(self)     # numeric fields: the intervals of _RANGES
        # block_length need not divide max_new_tokens here: LLaDA/Dream decoding refuses it
        # (engine/diffusion.py), block-diffusion families align blocks to position 0 and take any length
        blocks = -(-self.max_new_tokens // self.block)
        if self.steps is not None and self.steps < blocks:
            bad(f"steps ({self.steps}) is smaller than the number of blocks ({blocks}); every block needs at "
                "least one step.")
        from dllm.schedulers import AUTO, MODES, SCHEDULERS  # torch-free name registry

        if self.scheduler not in SCHEDULERS and self.scheduler not in MODES and self.scheduler != AUTO:
            bad(f"unknown scheduler {self.scheduler!r}; choose {AUTO} or one of "
                f"{', '.join(sorted((*SCHEDULERS, *MODES)))}.")
        if self.remasking not in REMASKING:
            bad(f"unknown remasking {self.remasking!r}; choose one of {', '.join(REMASKING)}.")
        if self.schedule not in SCHEDULES:
            bad(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        _check_declared(self)   # the schedulers' own fields: choices, tuple items, relations (their PARAMS)
        if self.scheduler == "apd" and not self.draft_model:
            bad("scheduler 'apd' needs draft_model, the path of a small autoregressive model with the same tokenizer.")
        if self.draft_model and self.scheduler != "apd":
            bad(f"draft_model selects APD decoding (scheduler 'apd'), not scheduler {self.scheduler!r}.")
        if self.cache not in CACHES:
            bad(f"unknown cache {self.cache!r}; choose one of {', '.join(CACHES)}.")
        if self.grammar_mode not in ("cfg", "regex"):
            bad(f"grammar_mode must be 'cfg' or 'regex', got {self.grammar_mode!r}.")
        if sum(x is not None for x in (self.regex, self.json_schema, self.grammar)) > 1:
            bad("give one of regex, json_schema and grammar, not several.")
        if not all(s for s in self.stop):
            bad("stop must be a list of non-empty strings.")
        if self.regex is not None:
            from dllm.constraints.regex import check_regex

            check_regex(self.regex)
        if self.json_schema is not None:
            from dllm.constraints.json_schema import plan_schema

            # compiles the schema's grammar once (cached): ConstraintError for what it cannot express
            plan_schema(self.json_schema, strict=self.json_schema_strict)
        if self.grammar is not None:
            if self.grammar_mode == "cfg":
                from dllm.constraints.cfg import compile_grammar

                compile_grammar(self.grammar)    # raises ConstraintError for a grammar that does not compile
            else:
                from dllm.constraints.grammar import grammar_to_regex

                grammar_to_regex(self.grammar)

    @property
    def num_blocks(self) -> int:
        return self.max_new_tokens // self.block

    @property
    def block(self) -> int:
        return self.block_length if self.block_length is not None else self.max_new_tokens

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else self.max_new_tokens

    def to_dict(self) -> dict:
        return asdict(self)


def _declared_params() -> dict:
    from dllm.schedulers import declared_params
    return declared_params()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ---- validation as data ---------------------------------------------------------------------------

# The interval each numeric field must lie in ("[a, b]", "(a, b)", half-open; inf = unbounded).
# Types come from the field annotations (_check_types); a new numeric field adds one line here.
_RANGES = {
    "max_new_tokens": "[1, inf)", "block_length": "[1, inf)", "steps": "[1, 1048576]",
    "temperature": "[0, inf)", "top_p": "(0, 1]", "top_k": "[1, inf)",
    "eps": "(0, 1)", "cfg_scale": "[0, inf)", "threshold": "[0, 1]",
    "apd_r": "[0, 1]", "apd_window": "[1, 4096]", "apd_max_draft": "[1, 4096]",
    "refresh_every": "[0, inf)", "refresh_window": "[0, inf)",
    "denoising_steps": "[1, 1048576]",
}
_WANT = {"stop": "a string or a list of strings", "early_commit_positions": "an answer position or a list of them"}
_PATH_FIELDS = ("filter_path", "draft_model")    # str fields that also take a pathlib.Path


# ---- the schedulers' declared fields (schedulers/*.py PARAMS), appended to the class ---------------
def _declare(cls):
    """cls with the fields the scheduler files declare added (after its own), then made a frozen
    dataclass; their ranges join _RANGES."""
    for name, param in DECLARED.items():
        cls.__annotations__[name] = param.type
        default = param.default
        setattr(cls, name, field(default_factory=lambda d=default: d) if isinstance(default, (list, dict)) else default)
        if param.range is not None:
            _RANGES[name] = param.range
    return dataclass(frozen=True)(cls)


def _check_declared(p) -> None:
    """Each declared field's choices, tuple items (numbers, finite) and relation to the other fields."""
    for name, param in DECLARED.items():
        v = getattr(p, name)
        if v is not None and param.choices is not None and v not in param.choices:
            raise InvalidParamsError(f"unknown {name} {v!r}; choose one of {', '.join(param.choices)}.")
        if v is not None and param.items is not None:
            kinds = (int,) if param.items is int else (int, float)
            if not all(isinstance(e, kinds) and not isinstance(e, bool) and math.isfinite(e) for e in v):
                raise InvalidParamsError(f"{name} must hold {'integers' if param.items is int else 'numbers'}, "
                                         f"got {_short(v)}.")
            object.__setattr__(p, name, tuple(param.items(e) for e in v))
        # relations run on None too (a scheduler's refusals may hang on a field left at its None default)
        msg = param.check(getattr(p, name), p) if param.check is not None else None
        if msg:
            raise InvalidParamsError(msg)


_SEED_MOD = 2 ** 64                               # any integer seed, reduced to torch's range


def _type_of(hint):
    """Optional[X] -> (X, True); X -> (X, False)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return args[0], True
    return hint, False


def _check_types(p) -> None:
    """Every field of p against its annotation, normalised in place (check_fields)."""
    for name, v in check_fields({f.name: getattr(p, f.name) for f in fields(p)}).items():
        object.__setattr__(p, name, v)


def check_fields(values: dict) -> dict:
    """Field values checked against their annotations: int (not bool), float (finite; ints accepted),
    bool, str, tuple (a list is accepted), dict; Optional[...] also takes None. Returns them
    normalised: numbers to int/float, lists to tuples, `stop` from one string, paths to str, `seed`
    mod 2**64. Tools that take field values as text (dllm eval --sweep) check them here early."""
    hints, out = _hints(), {}
    for name, v in values.items():
        if name not in hints:
            raise InvalidParamsError(f"{name!r} is not a SamplingParams field.")
        kind, optional = _type_of(hints[name])
        if name == "stop" and (v is None or isinstance(v, str)):
            v = () if v is None else (v,)
        elif name == "early_commit_positions" and isinstance(v, numbers.Integral) and not isinstance(v, bool):
            v = (int(v),)
        elif name in _PATH_FIELDS and isinstance(v, os.PathLike):
            v = os.fspath(v)
        if v is None and optional:
            out[name] = v
            continue
        if kind is int and isinstance(v, numbers.Integral) and not isinstance(v, bool):
            v = int(v)
        elif kind is float and isinstance(v, numbers.Real) and not isinstance(v, bool):
            v = float(v)
            if not math.isfinite(v):
                raise InvalidParamsError(f"{name} must be a finite number, got {v!r}.")
        elif kind in (tuple, list) and isinstance(v, (list, tuple)):
            v = kind(v)
        elif not isinstance(kind, type) or kind not in (int, float, bool, str, dict, tuple, list):
            pass                   # another annotation (Literal, a class): the field's own check decides
        elif not (kind in (bool, str, dict) and isinstance(v, kind)):
            want = _WANT.get(name) or {int: "an integer", float: "a number", bool: "True or False", str: "a string",
                                       tuple: "a list", list: "a list", dict: "a dict"}[kind]
            raise InvalidParamsError(f"{name} must be {want}{' or None' if optional else ''}, "
                                     f"got {type(v).__name__} {_short(v)}.")
        if name == "stop" and not all(isinstance(s, str) for s in v):
            raise InvalidParamsError("stop must be a string or a list of non-empty strings.")
        if name == "seed":
            v %= _SEED_MOD
        out[name] = v
    return out


def _check_ranges(p) -> None:
    for name, spec in _RANGES.items():
        v = getattr(p, name)
        if v is None:
            continue
        lo, hi = (float(x) for x in spec[1:-1].split(","))
        ok = (lo <= v if spec[0] == "[" else lo < v) and (v <= hi if spec[-1] == "]" else v < hi)
        if not ok:
            if spec.startswith("[1, ") and _is_int(v) and v < 1:
                want = "a positive integer"
            elif spec.endswith("inf)"):
                want = f"a number {'>=' if spec[0] == '[' else '>'} {lo:g}" if not _is_int(v) \
                    else f"an integer >= {lo:g}"
            else:
                want = f"in {spec}"
            raise InvalidParamsError(f"{name} must be {want}, got {v!r}.")


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


_HINTS: dict = {}


def _hints() -> dict:
    """The resolved field annotations (computed once)."""
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(SamplingParams))
    return _HINTS


DECLARED = _declared_params()            # {name: dllm.params.Param} of the scheduler files
SamplingParams = _declare(SamplingParams)
