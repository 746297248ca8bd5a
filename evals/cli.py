"""`dllm eval`: run tasks x schedulers x settings on a model, the oracle or the default model;
write one JSON row per point, print a table and summaries, optionally plot."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from dllm.errors import DllmError

MAX_SAMPLES = 1_000_000       # examples per point (and batch size): more is a typo, not an evaluation


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="parallel-decoding evaluation: accuracy vs tokens per forward",
                        description="Run evaluation tasks (ParallelBench-style) under one or more schedulers and "
                                    "settings; write one JSON row per (model, task, scheduler, settings).")
    ev.add_argument("--model", action="append", metavar="DIR|oracle|default",
                    help="checkpoint directory, 'oracle' (the task's exact-marginal oracle) or 'default' (the "
                         "shipped model); repeat to compare models side by side (default: default)")
    ev.add_argument("--task", required=True, metavar="T[,T...]", help="task name(s): " + _task_names())
    ev.add_argument("--n", type=int, metavar="N", help="items per example (default: the task's)")
    ev.add_argument("--scheduler", default="topk", metavar="S[,S...]", help="scheduler(s) (default: topk)")
    ev.add_argument("--tokens-per-step", type=int, metavar="K", help="top-k style schedulers: K slots per step")
    ev.add_argument("--threshold", type=float, metavar="X", help="confidence threshold")
    ev.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2",
                    help="sweep a setting (tokens_per_step or a SamplingParams field); repeat for a grid")
    ev.add_argument("--set", action="append", default=[], metavar="NAME=V",
                    help="fix a SamplingParams field for every point (e.g. block_length=8, cache=dual)")
    ev.add_argument("--mode", choices=("free", "infill"),
                    help="free: generate the whole answer; infill: the answer's format is fixed and only the "
                         "item slots are generated (default: infill for the oracle, free for models)")
    ev.add_argument("--constrain", action="store_true", help="decode under the task's regex / JSON schema constraint")
    ev.add_argument("--shots", type=int, choices=(0, 1), default=1,
                    help="one-shot example turn before the prompt (default: 1, as ParallelBench; 0 for models "
                         "trained without one, such as the shipped default)")
    ev.add_argument("--samples", type=int, default=50, metavar="M", help="examples per point (default: 50)")
    ev.add_argument("--seed", type=int, default=0, metavar="S", help="example seed (default: 0)")
    ev.add_argument("--batch-size", type=int, default=32, metavar="B", help="examples decoded together (default: 32)")
    ev.add_argument("--output", metavar="FILE.jsonl", help="append the rows to this file")
    ev.add_argument("--plot", metavar="FILE.png", help="accuracy vs tokens per forward, with the Pareto front")
    ev.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    ev.add_argument("--dtype", choices=("float32", "bfloat16", "float16"))
    ev.set_defaults(func=cmd_eval)


def _task_names() -> str:
    from dllm.evals.tasks import TASKS
    return ", ".join(TASKS)


def cmd_eval(args) -> int:
    from dllm.default_model import resolve_model
    from dllm.evals.runner import Progress, Subject, parse_sweep, run_task
    from dllm.evals.summary import summarize, table
    from dllm.evals.tasks import get_task
    from dllm.sampling_params import check_fields

    for name in ("samples", "batch_size"):
        if not 0 < getattr(args, name) <= MAX_SAMPLES:
            raise DllmError(f"--{name.replace('_', '-')} must be an integer in [1, {MAX_SAMPLES:,}].")
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    for t in tasks:
        get_task(t)
    schedulers = [s.strip() for s in args.scheduler.split(",") if s.strip()]
    base = {}
    for spec in args.set:
        base.update(parse_sweep([spec])[0]) if "," not in spec.partition("=")[2] else None
        if "," in spec.partition("=")[2]:
            raise DllmError(f"--set takes one value (use --sweep for several), got {spec!r}.")
    grid = parse_sweep(args.sweep)
    fixed = {k: v for k, v in (("tokens_per_step", args.tokens_per_step), ("threshold", args.threshold)) if v is not None}
    grid = [{**fixed, **p} for p in grid]
    for point in [base, *grid]:   # every value of its field's type before any model is loaded
        check_fields({k: v for k, v in point.items() if k != "tokens_per_step"})
    subjects = []
    for m in args.model or ["default"]:
        if m == "oracle":
            subjects.append(Subject("oracle", oracle=True))
        else:
            from dllm.llm import LLM

            path = resolve_model(m)
            subjects.append(Subject(m if m != "default" else "default", LLM(path, device=args.device, dtype=args.dtype)))
    progress = Progress(len(subjects) * len(tasks) * len(schedulers) * len(grid))
    rows = []
    for subject in subjects:
        for t in tasks:
            rows += run_task(subject, t, args.n, schedulers, grid, samples=args.samples, seed=args.seed,
                             mode=args.mode, constrain=args.constrain, batch_size=args.batch_size, base=base, shots=args.shots,
                             progress=progress)
    if args.output:
        try:
            with Path(args.output).open("a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        except OSError as e:
            raise DllmError(f"cannot write the rows to {args.output!r}: {e.strerror or e}.") from None
    print(table(rows, summarize(rows)), file=sys.stderr)
    if args.plot:
        from dllm.evals.plot import plot

        try:
            plot(rows, args.plot)
        except OSError as e:
            raise DllmError(f"cannot write the plot to {args.plot!r}: {e.strerror or e}.") from None
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
