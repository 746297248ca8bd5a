"""SamplingParams: one frozen dataclass, validated on construction (no torch import here)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from dllm.errors import InvalidParamsError

REMASKING = ("low_confidence", "random", "margin", "entropy")
SCHEDULES = ("auto", "llada", "dream")
CACHES = ("none", "prefix", "dual")


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded.

    The answer has `max_new_tokens` slots, decoded in blocks of `block_length` (None: one
    block) with `steps` forwards in all (None: one per slot). `block_length` must divide
    `max_new_tokens` (refused otherwise, as LLaDA does); steps are spread evenly over the
    blocks, the remainder going to the earliest blocks.
    """

    max_new_tokens: int = 128
    block_length: Optional[int] = None
    steps: Optional[int] = None
    temperature: float = 0.0
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    seed: Optional[int] = None
    scheduler: str = "topk"
    # topk: which score ranks the masked slots (LLaDA low_confidence/random, Dream
    # maskgit_plus = low_confidence, topk_margin = margin, entropy = entropy).
    remasking: str = "low_confidence"
    # topk: "llada" = fixed counts per block, "dream" = Dream's linspace(1, eps) timesteps;
    # "auto" = dream for Dream checkpoints decoded in one block, llada otherwise.
    schedule: str = "auto"
    eps: float = 1e-3
    cfg_scale: float = 0.0
    # confidence threshold of threshold, credit, localleap, adablock (0.9) and wino's tau1 (0.7);
    # None = that scheduler's paper default (resolved on construction, so the field is always a number)
    threshold: Optional[float] = None
    # factor (Fast-dLLM): commit the top n with c(j) >= 1 - factor / (j + 1) for all j <= n
    factor: float = 1.0
    # credit (CreditDecoding, as dInfer runs it): fused = logits + alpha * log(1 + C), with
    # C <- beta * C + p(top1)^gamma at each masked slot's top-1 token
    credit_alpha: float = 0.7
    credit_gamma: float = 0.2
    credit_beta: float = 0.8
    # early_commit (Prophet): on top of `early_commit_base`, fill every masked slot with its
    # argmax once the mean top-1 - top-2 logit gap over the monitored slots (answer positions,
    # default: the masked slots this forward scored) reaches the phase's threshold
    # (progress < 0.33, < 0.67, else)
    early_commit_base: str = "topk"
    early_commit_positions: Optional[tuple] = None
    early_commit_thresholds: tuple = (7.5, 5.0, 2.5)
    # learned_filter (Learn2PD): the MLP file written by `dllm train-filter` (default: the
    # model directory's learned_filter.safetensors) and its acceptance probability
    filter_path: Optional[str] = None
    filter_threshold: float = 0.96
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
    grammar: Optional[str] = None
    # "cfg": the grammar itself, checked per commit (unbounded nesting; constraints/cfg.py);
    # "regex": a depth-bounded regex of it through the DINGO program (constraints/grammar.py)
    grammar_mode: str = "cfg"
    stop: tuple = field(default_factory=tuple)
    trace: bool = False
    # ---- issue 20: the seed papers' parallel decoders (fields and checks kept in this block) ----
    # localleap (arXiv 2510.07081): slots within `localleap_radius` of an anchor (confidence >=
    # threshold) commit at the relaxed threshold
    localleap_relaxed_threshold: float = 0.75
    localleap_radius: int = 4
    # eb (EB-Sampler, arXiv 2505.24857): commit the lowest-entropy slots while the entropy of all
    # but the last stays <= eb_gamma
    eb_gamma: float = 0.01
    # freedave (arXiv 2510.00294): drafts verified per forward (None: 4 for LLaDA, 8 for Dream);
    # freedave_threshold turns on FreeDave++ (threshold drafts; not lossless)
    freedave_drafts: Optional[int] = None
    freedave_threshold: Optional[float] = None
    # klass (arXiv 2511.05664): commit slots with confidence > klass_conf_threshold whose KL to the
    # previous step stayed < klass_kl_threshold for klass_history steps
    klass_conf_threshold: float = 0.6
    klass_kl_threshold: float = 0.015
    klass_history: int = 2
    # wino (arXiv 2507.18578): decoded slots whose leave-one-out confidence is < wino_remask_threshold
    # go back to mask (tau2; tau1 is `threshold`)
    wino_remask_threshold: float = 0.9
    # adablock (arXiv 2509.26432): a block ends at the most confident predicted delimiter when its
    # confidence is >= this (None: 0.3 for LLaDA, 0.5 for Dream); block_length is the fallback
    adablock_delimiter_threshold: Optional[float] = None
    # ete (after Explore-Then-Exploit, arXiv 2511.21103): bits of surprisal committed per forward
    ete_budget_bits: float = 1.0
    # ---- end of issue 20's block ----

    def __post_init__(self):
        def bad(msg):
            raise InvalidParamsError(msg)

        if self.threshold is None:   # issue 20: the method's default (wino's tau1 is 0.7, everything else 0.9)
            object.__setattr__(self, "threshold", 0.7 if self.scheduler == "wino" else 0.9)

        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif self.stop is None:
            object.__setattr__(self, "stop", ())
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if not _is_int(self.max_new_tokens) or self.max_new_tokens <= 0:
            bad(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}.")
        block = self.block_length if self.block_length is not None else self.max_new_tokens
        if not _is_int(block) or block <= 0:
            bad(f"block_length must be a positive integer, got {self.block_length!r}.")
        if self.max_new_tokens % block:
            bad(f"block_length {block} does not divide max_new_tokens {self.max_new_tokens}; "
                "choose a block length that divides the answer length.")
        if self.steps is not None:
            if not _is_int(self.steps) or self.steps <= 0:
                bad(f"steps must be a positive integer, got {self.steps!r}.")
            if self.steps < self.max_new_tokens // block:
                bad(f"steps ({self.steps}) is smaller than the number of blocks "
                    f"({self.max_new_tokens // block}); every block needs at least one step.")
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            bad(f"temperature must be a number >= 0, got {self.temperature!r}.")
        if self.top_p is not None and not (0 < self.top_p <= 1):
            bad(f"top_p must be in (0, 1], got {self.top_p!r}.")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            bad(f"top_k must be a positive integer, got {self.top_k!r}.")
        if self.seed is not None and not _is_int(self.seed):
            bad(f"seed must be an integer, got {self.seed!r}.")
        from dllm.schedulers import SCHEDULERS  # torch-free name registry

        if self.scheduler not in SCHEDULERS:
            bad(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(sorted(SCHEDULERS))}.")
        if self.remasking not in REMASKING:
            bad(f"unknown remasking {self.remasking!r}; choose one of {', '.join(REMASKING)}.")
        if self.schedule not in SCHEDULES:
            bad(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        if not (0 < self.eps < 1):
            bad(f"eps must be in (0, 1), got {self.eps!r}.")
        if self.cfg_scale < 0:
            bad(f"cfg_scale must be >= 0, got {self.cfg_scale!r}.")
        if not (0 <= self.threshold <= 1):
            bad(f"threshold must be in [0, 1], got {self.threshold!r}.")
        if not isinstance(self.factor, (int, float)) or self.factor <= 0:
            bad(f"factor must be a number > 0, got {self.factor!r}.")
        for name in ("credit_alpha", "credit_gamma"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                bad(f"{name} must be a number >= 0, got {v!r}.")
        if not isinstance(self.credit_beta, (int, float)) or not 0 <= self.credit_beta <= 1:
            bad(f"credit_beta must be in [0, 1], got {self.credit_beta!r}.")
        if self.early_commit_base not in SCHEDULERS or self.early_commit_base in ("early_commit", "apd"):
            bad(f"early_commit_base must be another scheduler ({', '.join(sorted(set(SCHEDULERS) - {'early_commit', 'apd'}))}), "
                f"got {self.early_commit_base!r}.")
        if self.early_commit_positions is not None:
            pos = self.early_commit_positions
            pos = (pos,) if _is_int(pos) else tuple(pos) if isinstance(pos, (list, tuple)) else None
            if not pos or not all(_is_int(i) and 0 <= i < self.max_new_tokens for i in pos):
                bad(f"early_commit_positions must be answer positions in [0, {self.max_new_tokens}), "
                    f"got {self.early_commit_positions!r}.")
            object.__setattr__(self, "early_commit_positions", pos)
        th = self.early_commit_thresholds
        if not isinstance(th, (list, tuple)) or len(th) != 3 or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and t >= 0 for t in th):
            bad(f"early_commit_thresholds must be three numbers >= 0 (early, middle, late), got {th!r}.")
        object.__setattr__(self, "early_commit_thresholds", tuple(float(t) for t in th))
        if self.filter_path is not None and not isinstance(self.filter_path, str):
            object.__setattr__(self, "filter_path", str(self.filter_path))
        if not isinstance(self.filter_threshold, (int, float)) or not 0 <= self.filter_threshold <= 1:
            bad(f"filter_threshold must be in [0, 1], got {self.filter_threshold!r}.")
        if self.draft_model is not None and not isinstance(self.draft_model, str):
            object.__setattr__(self, "draft_model", str(self.draft_model))
        if self.scheduler == "apd" and not self.draft_model:
            bad("scheduler 'apd' needs draft_model, the path of a small autoregressive model with the same tokenizer.")
        if not isinstance(self.apd_r, (int, float)) or isinstance(self.apd_r, bool) or not 0 <= self.apd_r <= 1:
            bad(f"apd_r must be in [0, 1], got {self.apd_r!r}.")
        for name in ("apd_window", "apd_max_draft"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                bad(f"{name} must be a positive integer, got {v!r}.")
        if self.cache not in CACHES:
            bad(f"unknown cache {self.cache!r}; choose one of {', '.join(CACHES)}.")
        for name in ("refresh_every", "refresh_window"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                bad(f"{name} must be an integer >= 0, got {v!r}.")
        if self.grammar_mode not in ("cfg", "regex"):
            bad(f"grammar_mode must be 'cfg' or 'regex', got {self.grammar_mode!r}.")
        if self.regex is not None and self.json_schema is not None:
            bad("give either regex or json_schema, not both.")
        if self.regex is not None:
            if not isinstance(self.regex, str):
                bad(f"regex must be a string, got {type(self.regex).__name__}.")
            from dllm.constraints.regex import check_regex

            check_regex(self.regex)
        if self.json_schema is not None:
            if not isinstance(self.json_schema, dict):
                bad(f"json_schema must be a dict (a JSON Schema object), got {type(self.json_schema).__name__}.")
            from dllm.constraints.json_schema import schema_to_regex

            schema_to_regex(self.json_schema)   # raises ConstraintError for what it cannot express
        if self.grammar is not None:
            if not isinstance(self.grammar, str):
                bad(f"grammar must be Lark grammar text, got {type(self.grammar).__name__}.")
            if self.regex is not None or self.json_schema is not None:
                bad("give one of regex, json_schema and grammar, not several.")
            if self.grammar_mode == "cfg":
                from dllm.constraints.cfg import compile_grammar

                compile_grammar(self.grammar)    # raises ConstraintError for a grammar that does not compile
            else:
                from dllm.constraints.grammar import grammar_to_regex

                grammar_to_regex(self.grammar)
        if not all(isinstance(s, str) and s for s in self.stop):
            bad("stop must be a list of non-empty strings.")
        self._check_seed_decoders(bad)

    def _check_seed_decoders(self, bad):
        """issue 20's fields (localleap, eb, freedave, klass, wino, adablock, ete)."""
        def unit(name, lo_open=False, optional=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            if not _is_num(v) or not (0 < v <= 1 if lo_open else 0 <= v <= 1):
                bad(f"{name} must be a number in {'(0, 1]' if lo_open else '[0, 1]'}, got {v!r}.")

        def positive_int(name, optional=False):
            v = getattr(self, name)
            if not (optional and v is None) and (not _is_int(v) or v < 1):
                bad(f"{name} must be a positive integer, got {v!r}.")

        unit("localleap_relaxed_threshold")
        if not _is_int(self.localleap_radius) or self.localleap_radius < 0:
            bad(f"localleap_radius must be an integer >= 0, got {self.localleap_radius!r}.")
        if not _is_num(self.eb_gamma) or self.eb_gamma < 0:
            bad(f"eb_gamma must be a number >= 0, got {self.eb_gamma!r}.")
        positive_int("freedave_drafts", optional=True)
        unit("freedave_threshold", optional=True)
        unit("klass_conf_threshold")
        if not _is_num(self.klass_kl_threshold) or self.klass_kl_threshold < 0:
            bad(f"klass_kl_threshold must be a number >= 0, got {self.klass_kl_threshold!r}.")
        positive_int("klass_history")
        unit("wino_remask_threshold")
        unit("adablock_delimiter_threshold", optional=True)
        if not _is_num(self.ete_budget_bits) or self.ete_budget_bits < 0:
            bad(f"ete_budget_bits must be a number >= 0, got {self.ete_budget_bits!r}.")
        if self.scheduler == "wino" and self.cache != "none":
            bad("scheduler 'wino' re-predicts the block against the whole canvas at every step, so it needs "
                f"cache='none', got cache={self.cache!r}.")
        if self.scheduler in ("wino", "freedave") and self.cfg_scale:
            bad(f"scheduler {self.scheduler!r} does not support classifier-free guidance; set cfg_scale to 0.")
        if self.scheduler == "freedave" and self.refresh_every:
            bad("scheduler 'freedave' refreshes the cache only at block starts (its drafts share that cache); "
                "set refresh_every to 0.")

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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v   # not NaN
