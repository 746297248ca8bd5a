"""Issue 20's evaluation of the seed papers' decoders against the others: `dllm eval` on dllm-tiny
(copy, reverse, sort, json_fill; block_length 8) and on the exact-marginal oracles (copy,
replace_random, shuffle; n = 6, infill), every scheduler at its defaults, plus sweeps of each
scheduler's knob on sort and on the oracles for the Pareto plot.

    python -m benchmarks.seed_decoders --out DIR [--tiny-samples 50] [--oracle-samples 100]

Writes DIR/rows.jsonl (one `dllm eval` row per point), DIR/pareto.png (accuracy against tokens
per forward, one panel per model and task, with the Pareto front) and prints the table of
accuracy and tokens per forward per scheduler. The rows come from the `dllm eval` commands
printed before each run, so any one can be rerun alone. Needs matplotlib ('dllm[plot]').
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

DEFAULTS = "topk,threshold,factor,credit,localleap,eb,klass,ete,adablock,freedave,wino"
SWEEPS = [("topk", "tokens_per_step=2,4,8"), ("threshold,localleap,adablock,wino", "threshold=0.5,0.7,0.95"),
          ("eb", "eb_gamma=0.1,1.0,3.0"), ("ete", "ete_budget_bits=0.25,4.0,16.0"),
          ("klass", "klass_conf_threshold=0.3,0.9"), ("freedave", "freedave_threshold=0.7,0.9")]


def commands(tiny_samples: int, oracle_samples: int) -> list[list[str]]:
    tiny = ["--model", "default", "--n", "5", "--shots", "0", "--set", "block_length=8", "--samples", str(tiny_samples)]
    oracle = ["--model", "oracle", "--n", "6", "--samples", str(oracle_samples)]
    out = [oracle + ["--task", "copy,replace_random,shuffle", "--scheduler", DEFAULTS],
           tiny + ["--task", "copy,reverse,sort,json_fill", "--scheduler", DEFAULTS]]
    for scheds, sweep in SWEEPS:
        out.append(oracle + ["--task", "replace_random,shuffle", "--scheduler", scheds, "--sweep", sweep])
        out.append(tiny + ["--task", "sort", "--scheduler", scheds, "--sweep", sweep])
    out.append(oracle + ["--task", "replace_random,shuffle", "--scheduler", "freedave", "--sweep", "freedave_drafts=2,8"])
    return out


def table(rows: list[dict]) -> str:
    """accuracy / tokens per forward per (model, task) column and (scheduler, settings) row."""
    cols = sorted({(r["model"], r["task"]) for r in rows})
    cells = defaultdict(dict)
    for r in rows:
        key = (r["scheduler"], json.dumps({k: v for k, v in r["settings"].items() if k != "block_length"}))
        cells[key][(r["model"], r["task"])] = f"{r['accuracy']:.2f} / {r['tokens_per_forward']:.2f}"
    lines = ["| scheduler | settings | " + " | ".join(f"{m} {t}" for m, t in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for (sched, settings), row in sorted(cells.items()):
        lines.append(f"| {sched} | {settings} | " + " | ".join(row.get(c, "") for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for rows.jsonl and pareto.png")
    ap.add_argument("--tiny-samples", type=int, default=50)
    ap.add_argument("--oracle-samples", type=int, default=100)
    ap.add_argument("--plot-only", action="store_true", help="redraw from DIR/rows.jsonl without running")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    if not a.plot_only:
        for cmd in commands(a.tiny_samples, a.oracle_samples):
            full = ["dllm", "eval", *cmd, "--output", str(rows_path)]
            print(" ".join(full), file=sys.stderr)
            subprocess.run(full, check=True)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    from dllm.evals.plot import plot

    plot(rows, str(out / "pareto.png"))
    print(table(rows))
    print(f"rows: {rows_path}  plot: {out / 'pareto.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
