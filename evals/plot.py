"""Accuracy vs tokens per forward, one panel per (model, task): a line per scheduler, the Pareto
front over all of them, and for oracle runs in infill mode the closed-form top-k curve."""
from __future__ import annotations

from collections import defaultdict

from dllm.errors import DllmError
from dllm.evals.closed_form import curve
from dllm.evals.summary import pareto


def plot(rows: list[dict], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DllmError("plots need matplotlib; install it with pip install 'dllm[plot]'.") from None
    panels = defaultdict(lambda: defaultdict(list))
    for r in rows:
        panels[(r.get("model", ""), r["task"], r.get("n"), r.get("mode", ""))][r["scheduler"]].append(
            (r["tokens_per_forward"], r["accuracy"]))
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.8 * nrows), squeeze=False)
    names = sorted({s for by_sched in panels.values() for s in by_sched})
    colors = plt.get_cmap("tab20").colors            # a scheduler keeps its colour and marker in every panel
    style = {s: (colors[i % 20], "osD^v<>ph*"[i % 10]) for i, s in enumerate(names)}
    for ax, ((model, task, n, mode), by_sched) in zip(axes.flat, panels.items()):
        for sched, pts in sorted(by_sched.items()):
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker=style[sched][1], color=style[sched][0],
                    label=sched, alpha=0.8)
        front = pareto([p for pts in by_sched.values() for p in pts])
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
        if str(model).startswith("oracle") and mode == "infill" and n:
            cf = curve(task, n)
            if cf:
                ax.plot([p[0] for p in cf], [p[1] for p in cf], "s:", color="gray", label="closed form (top-k)")
        ax.set_title(f"{task} (n={n}, {mode}) - {model}", fontsize=9)
        ax.set_xlabel("tokens per forward")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
