"""The `dllm` console script.

Building the parser and `--help` stay torch-free: the model code (dllm.llm) is imported only
when a command actually runs. Every DllmError ends as one line `error: <message>` on stderr
and exit status 2; answers go to stdout, progress and statistics to stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from dllm.errors import DllmError
from dllm.sampling_params import CACHES, DECLARED, REMASKING, SCHEDULES, SamplingParams
from dllm.schedulers import MODES, SCHEDULERS

MASK = "░"
_VISIBLE = str.maketrans({"\n": "↵", "\r": "␍", "\t": "→"})
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SamplingParams)}
_HELP = {
    "max_new_tokens": "answer length in tokens",
    "block_length": "semi-autoregressive block size; must divide --max-new-tokens (default: one block)",
    "steps": "denoising steps in all (default: one per answer token)",
    "temperature": "sampling temperature; 0 is greedy",
    "top_p": "nucleus sampling mass in (0, 1]",
    "top_k": "sample among the k most likely tokens",
    "seed": "random seed, for reproducible sampling",
    "scheduler": f"unmasking policy: {', '.join(sorted((*SCHEDULERS, *MODES)))}",
    "remasking": f"which score ranks masked slots: {', '.join(REMASKING)}",
    "schedule": f"tokens committed per step: {', '.join(SCHEDULES)}",
    "eps": "final timestep of the Dream schedule, in (0, 1)",
    "cfg_scale": "classifier-free guidance scale; 0 turns it off",
    "threshold": "confidence threshold of threshold-based schedulers (default 0.9; wino's tau1 0.7)",
    "cache": f"KV cache: {', '.join(CACHES)}",
    "refresh_every": "with a cache, also refresh it every N forwards of a block; 0 = only at block starts",
    "refresh_window": "with a cache, recompute N slots either side of the block on cached steps",
    "cache_prompt": "with a cache, keep the prompt's keys/values from the first forward for every block",
    "regex": "constrain the answer to this regular expression",
    "json_schema": "constrain the answer to the JSON schema in FILE",
    "grammar": "constrain the answer to the grammar in FILE",
    "grammar_mode": "cfg: check the grammar itself per commit (unbounded nesting); regex: a depth-bounded "
                     "regex of it through the DINGO program (also what autoregressive models use)",
    "stop": "cut the answer before this string (repeatable)",
    "json_schema_strict": "refuse a JSON schema with keywords decoding cannot enforce (default: decode without them "
                          "and report what the answer fails in stats.schema_violations)",
    "trace": "record what each step commits (included in --json output)",
    "draft_model": "apd scheduler: a small autoregressive model (same tokenizer) that checks the drafts",
    "apd_r": "apd scheduler: weight R of the target p_dLLM^R * p_AR^(1-R), in [0, 1]",
    "apd_window": "apd scheduler: masked slots the diffusion model sees after the committed answer",
    "apd_max_draft": "apd scheduler: most tokens drafted (and accepted) per step",
    "eot_prediction": "end-of-text prediction: once an end token is committed, the rest of the answer is end tokens",
    "denoising_steps": "block-diffusion models (SDAR, LLaDA2, Fast-dLLM v2): denoising steps per block "
                       "(default: the block length)",
}
_HELP.update({name: p.help for name, p in DECLARED.items()})   # the schedulers' own fields (their PARAMS)
_SCALARS = {"int": int, "float": float, "str": str}
_LISTS = {name: p.items for name, p in DECLARED.items() if p.items is not None}


def _number_list(kind):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(t) for t in text.replace(" ", "").split(",") if t)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    return parse


def _base_type(annotation) -> str:
    """'Optional[int]' or Optional[int] -> 'int' (the class body's annotations are strings under `from
    __future__ import annotations`; the schedulers' declared fields carry the types themselves)."""
    if not isinstance(annotation, str):
        from dllm.sampling_params import _type_of
        annotation = _type_of(annotation)[0]
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if name.startswith("Optional[") and name.endswith("]"):
        name = name[len("Optional["):-1]
    return name


def _add_sampling_flags(p: argparse.ArgumentParser):
    """One flag per SamplingParams field; default None means 'leave the field at its default'."""
    g = p.add_argument_group("sampling (SamplingParams fields)")
    for f in dataclasses.fields(SamplingParams):
        flag, helptext = "--" + f.name.replace("_", "-"), _HELP.get(f.name, f"SamplingParams.{f.name}")
        default = _DEFAULTS[f.name]
        if default is not None and default is not dataclasses.MISSING and not isinstance(default, bool):
            helptext += f" (default: {default})"
        if f.name in ("json_schema", "grammar"):
            g.add_argument(flag, metavar="FILE", help=helptext)
        elif f.name == "stop":
            g.add_argument(flag, action="append", metavar="TEXT", help=helptext)
        elif f.name in _LISTS:
            g.add_argument(flag, type=_number_list(_LISTS[f.name]), metavar="A,B,...", help=helptext)
        elif f.name == "trace" or _base_type(f.type) == "bool":
            g.add_argument(flag, action="store_const", const=True, help=helptext)
        elif _base_type(f.type) in _SCALARS:
            kind = _base_type(f.type)
            metavar = {"int": "N", "float": "X"}.get(kind, f.name.upper())
            g.add_argument(flag, type=_SCALARS[kind], metavar=metavar, help=helptext)
        # a field of another type gets no flag (tests/test_cli.py checks that every field has one)


def add_model_flags(p: argparse.ArgumentParser):
    """--model and the LLM(...) loading flags, shared by `generate` and `serve`."""
    p.add_argument("--model", metavar="DIR", help="checkpoint directory (LLaDA, Dream, SDAR, LLaDA2, Fast-dLLM v2, "
                                                  "Llama or Qwen2, Hugging Face layout), a .gguf file (Llama or "
                                                  "Qwen2 architecture), or "
                                                  "'default': the small model shipped in models/ (the default)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="weights dtype (default: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--graphs", choices=("auto", "cuda", "compile", "none"),
                   help="how cached steps run: a CUDA graph, torch.compile, or eager (default: $DLLM_GRAPHS, else auto)")
    p.add_argument("--pack", choices=("auto", "onednn", "none"),
                   help="pack the linear weights for oneDNN, the fast CPU path (default: $DLLM_PACK, else auto: "
                        "on a CPU unless --graphs compile)")


def _token_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: <what> (see dllm COMMAND --help)` on stderr, exit 2,
    instead of the usage dump (subcommand parsers are made of the same class)."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dllm", description="Inference for masked-diffusion LLMs (LLaDA, Dream).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gen = sub.add_parser("generate", help="generate answers to prompts",
                         description="Generate an answer per prompt. Answers go to stdout, progress to stderr.")
    gen.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompt text; '-' reads it from stdin")
    gen.add_argument("--prompt-ids", action="append", type=_token_ids, default=[], metavar="1,2,3",
                     help="a prompt given as token ids (repeatable)")
    add_model_flags(gen)
    gen.add_argument("--no-chat-template", action="store_true",
                     help="encode text prompts as-is instead of through the tokenizer's chat template")
    gen.add_argument("--json", action="store_true", help="print each result as one JSON line")
    gen.add_argument("--show-steps", action="store_true", help="replay the unmasking of each answer on stderr")
    _add_sampling_flags(gen)
    gen.set_defaults(func=cmd_generate)

    tf = sub.add_parser("train-filter", help="train the learned_filter scheduler's filter for a model",
                        description="Decode prompts one token per step, replay the decoding as (block confidences, "
                                    "slot already final) pairs, train the Learn2PD filter on them and save it "
                                    "(by default as MODEL/learned_filter.safetensors).")
    tf.add_argument("--model", metavar="DIR", help="checkpoint directory (default: the shipped models/dllm-tiny)")
    tf.add_argument("--prompts", metavar="FILE", required=True,
                    help="one prompt per line, or a .jsonl file of {\"prompt\": ...} / {\"prompt_token_ids\": [...]}")
    tf.add_argument("--output", metavar="FILE", help="where to save the filter (default: MODEL/learned_filter.safetensors)")
    tf.add_argument("--block-length", type=int, default=32, metavar="N", help="block length the filter is for (default: 32)")
    tf.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="answer length decoded per prompt (default: 128)")
    tf.add_argument("--batch-size", type=int, default=8, metavar="N", help="prompts decoded together (default: 8)")
    tf.add_argument("--hidden", type=int, default=128, metavar="N", help="filter hidden width (default: 128)")
    tf.add_argument("--epochs", type=int, default=200, metavar="N", help="training epochs (default: 200)")
    tf.add_argument("--lr", type=float, default=1e-3, metavar="X", help="Adam learning rate (default: 0.001)")
    tf.add_argument("--seed", type=int, default=0, metavar="N")
    tf.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    tf.add_argument("--dtype", choices=("float32", "bfloat16", "float16"))
    tf.add_argument("--no-chat-template", action="store_true", help="encode prompts as-is")
    tf.set_defaults(func=cmd_train_filter)

    from dllm.evals.cli import add_parser as add_eval
    from dllm.evals.train_model import add_parser as add_train
    from dllm.serve.cli import add_parser as add_serve
    add_eval(sub)
    add_train(sub)
    add_serve(sub)
    return parser


def _sampling_params(args) -> SamplingParams:
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(SamplingParams)
          if getattr(args, f.name, None) is not None}
    from dllm.limits import read_file

    if "json_schema" in kw:
        text = read_file(kw["json_schema"], "the JSON schema")      # a regular file under the size cap
        try:
            kw["json_schema"] = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise DllmError(f"the JSON schema {args.json_schema!r} is not valid JSON: {e}") from None
        if not isinstance(kw["json_schema"], dict):
            raise DllmError(f"the JSON schema in {args.json_schema!r} is not a JSON object.")
    if "grammar" in kw:
        kw["grammar"] = read_file(kw["grammar"], "the grammar")
    if getattr(args, "show_steps", False):
        kw["trace"] = True
    return SamplingParams(**kw)


def cmd_generate(args) -> int:
    from dllm.default_model import resolve_model

    args.model = resolve_model(args.model)   # no --model, or 'default': the model shipped in models/
    stdin = _read_stdin() if "-" in args.prompts else None
    prompts = [stdin if p == "-" else p for p in args.prompts]
    prompts += [{"prompt_token_ids": ids} for ids in args.prompt_ids]
    if not prompts:
        raise DllmError("no prompt given; pass prompt text, '-' to read it from stdin, or --prompt-ids.")
    for p in prompts:   # invalid UTF-8 in argv or stdin is refused before the (slow) model load
        if isinstance(p, str) and not p.isascii():
            from dllm.tokenizer import _refuse_surrogates

            _refuse_surrogates(p)
    params = _sampling_params(args)   # validated before the (slow) model load
    tty = sys.stderr.isatty()
    # Progress is a transient status line on a terminal only; the log lines come after success,
    # so that a failure leaves exactly one `error:` line on stderr.
    status = _Status(tty)
    try:
        status.show(f"loading model {args.model}…")
        t0 = time.perf_counter()
        from dllm.llm import LLM

        llm = LLM(args.model, device=args.device, dtype=args.dtype, graphs=args.graphs, pack=args.pack)
        load_s = time.perf_counter() - t0
        status.show(f"generating {len(prompts)} answer(s)…")
        chat = not args.no_chat_template
        streaming = len(prompts) == 1 and not args.json and llm.tokenizer is not None
        if streaming:   # one answer: printed as its text becomes final
            status.clear()
            out = None
            for out in llm.stream(prompts[0], params, apply_chat_template=chat):
                print(out.delta_text, end="", flush=True)
            print(flush=True)
            outputs = [out]
        else:
            outputs = llm.generate(prompts, params, apply_chat_template=chat)
    finally:
        status.clear()
    dtype = str(llm.dtype).replace("torch.", "")
    print(f"loaded {getattr(llm.args, 'family', 'model')} from {args.model} ({llm.device}, {dtype}) "
          f"in {load_s:.1f}s", file=sys.stderr)
    for i, out in enumerate(outputs):
        if args.show_steps:
            _show_steps(llm, out, label=f"[{i + 1}] " if len(outputs) > 1 else "", color=tty)
        if args.json:
            print(json.dumps(out.to_dict(), ensure_ascii=False), flush=True)
        elif not streaming:
            if len(outputs) > 1:
                print(f"=== [{i + 1}/{len(outputs)}] ===")
            print(out.text if out.text is not None else ",".join(map(str, out.token_ids)), flush=True)
        s = out.stats
        print(f"{f'[{i + 1}] ' if len(outputs) > 1 else ''}nfe={s.nfe} steps={s.steps} "
              f"tokens/forward={s.tokens_per_forward:.2f} answer_tokens={s.answer_tokens} "
              f"finish={out.finish_reason} elapsed={s.elapsed_s:.2f}s", file=sys.stderr)
    return 0


def _read_stdin() -> str:
    """The prompt given as '-': stdin, at most limits.TEXT_BYTES, UTF-8 (surrogates refused later)."""
    from dllm.limits import TEXT_BYTES, human

    data = sys.stdin.buffer.read(TEXT_BYTES + 1)
    if len(data) > TEXT_BYTES:
        raise DllmError(f"the prompt on stdin is larger than {human(TEXT_BYTES)}, the most dllm reads.")
    return data.decode("utf-8", errors="surrogateescape").rstrip("\n")


def cmd_train_filter(args) -> int:
    from dllm.schedulers.learned_filter import META

    bounds = {**META, "max_new_tokens": (1, 1 << 20), "batch_size": (1, 1 << 16), "epochs": (1, 1 << 20)}
    for name, (lo, hi) in bounds.items():
        if not lo <= getattr(args, name) <= hi:
            raise DllmError(f"--{name.replace('_', '-')} must be an integer in [{lo}, {hi}].")
    if not 0 < args.lr < float("inf"):
        raise DllmError("--lr must be a finite number > 0.")
    from dllm.llm import LLM
    from dllm.train_filter import read_prompts, train_filter

    from dllm.default_model import resolve_model

    prompts = read_prompts(args.prompts)
    llm = LLM(resolve_model(args.model), device=args.device, dtype=args.dtype)
    t0 = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    info = train_filter(llm, prompts, output=args.output, block_length=args.block_length,
                        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, hidden=args.hidden,
                        epochs=args.epochs, lr=args.lr, seed=args.seed,
                        apply_chat_template=not args.no_chat_template, log=log)
    log(f"{'held-out steps':<16} {'accepted/step':>13} {'correct/step':>12} {'wrong/step':>10} {'precision':>9}")
    for name, m in info["held_out"].items():
        log(f"{name:<16} {m['accepted_per_step']:>13.3f} {m['correct_per_step']:>12.3f} "
            f"{m['wrong_per_step']:>10.3f} {m['precision']:>9.3f}")
    log(f"trained in {time.perf_counter() - t0:.1f}s")
    print(info["output"])
    return 0


class _Status:
    """One overwritable progress line on stderr, shown only when stderr is a terminal."""

    def __init__(self, enabled: bool):
        self.enabled, self.shown = enabled, False

    def show(self, msg: str):
        if self.enabled:
            print(f"\r\033[K{msg}", end="", file=sys.stderr, flush=True)
            self.shown = True

    def clear(self):
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self.shown = False


def _show_steps(llm, out, label: str, color: bool):
    """Replay stats.trace: one frame per step that changes the answer up to its first end token."""
    trace = out.stats.trace
    n = 1 + max((p for e in trace for p in e["positions"]), default=-1)
    final = [None] * n
    for e in trace:
        for p, t in zip(e["positions"], e["tokens"]):
            final[p] = t
    stop = getattr(llm, "stop_ids", set())
    width = next((i + 1 for i, t in enumerate(final) if t in stop), n)
    color = color and not os.environ.get("NO_COLOR")
    dim, new, reset = ("\033[2m", "\033[1;32m", "\033[0m") if color else ("", "", "")
    tok = llm.tokenizer

    def piece(t):
        if tok is None:
            return f"[{t}]"
        text = tok.decode([t], skip_special_tokens=False).translate(_VISIBLE)
        return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)   # no raw control codes

    sep = "" if tok is not None else " "   # token texts carry their own spaces; ids do not
    canvas = [None] * width
    print(f"{label}step   0 │ {sep.join(f'{dim}{MASK}{reset}' for _ in canvas)}", file=sys.stderr)
    revocable = any("remasked" in e for e in trace)   # wino: slots can go back to mask
    for e in trace:
        fresh = {p for p in e["positions"] if p < width}
        gone = [p for p in e.get("remasked", ()) if p < width]
        if not fresh and not gone:
            continue
        for p in gone:
            canvas[p] = None
        for p, t in zip(e["positions"], e["tokens"]):
            if p < width:
                canvas[p] = t
        cells = [f"{dim}{MASK}{reset}" if t is None else f"{new}{piece(t)}{reset}" if p in fresh else piece(t)
                 for p, t in enumerate(canvas)]
        print(f"{label}step {e['step'] + 1:3d} │ {sep.join(cells)}", file=sys.stderr)
        if None not in canvas and not revocable:
            break


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DllmError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except MemoryError:   # an allocation the limits did not foresee: one line, not a traceback
        print("error: out of memory; use a smaller model, batch or max_new_tokens (or set DLLM_MAX_MEMORY).",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # e.g. `dllm generate ... | head -1`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
