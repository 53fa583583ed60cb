"""PNG plots for compare and the HTML report: latency CDF, accuracy-vs-p99 Pareto front, training curves,
accuracy across compression stages, confusion matrix.

Why Figure + Agg canvas instead of pyplot: no global state, no display needed, safe on headless boards.
Every function returns PNG bytes (for embedding) and writes them to ``path`` when given.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeresnet.report.compare import label, pareto_front

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def _figure(width: float = 7.5, height: float = 4.5) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _finish(fig: Any, path: str | Path | None) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = buffer.getvalue()
    if path is not None:
        from edgeresnet.artifacts import atomic_output

        with atomic_output(path) as tmp:
            tmp.write_bytes(data)
    return data


def latency_cdf(rows: Sequence[dict[str, Any]], path: str | Path | None = None, max_lines: int = 12) -> bytes | None:
    """Empirical CDF of per-iteration latency, one line per result with samples (None if none have any)."""
    with_samples = [r for r in rows if r.get("samples")]
    if not with_samples:
        return None
    fig, ax = _figure()
    for i, row in enumerate(with_samples[:max_lines]):
        xs = sorted(row["samples"])
        n = len(xs)
        ys = [(k + 1) / n for k in range(n)]
        ax.step(xs, ys, where="post", color=_COLORS[i % len(_COLORS)], label=label(row), linewidth=1.4)
    lo = min(min(r["samples"]) for r in with_samples)
    hi = max(max(r["samples"]) for r in with_samples)
    if lo > 0 and hi / lo > 20:
        ax.set_xscale("log")
    for q in (0.5, 0.99):
        ax.axhline(q, color="#999999", linewidth=0.7, linestyle=":")
    ax.set_xlabel("latency per batch (ms)")
    ax.set_ylabel("fraction of iterations")
    ax.set_ylim(0, 1.01)
    ax.set_title("Latency CDF (dotted: median, p99)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if len(with_samples) > max_lines:
        ax.text(0.01, 0.97, f"first {max_lines} of {len(with_samples)} results", transform=ax.transAxes,
                fontsize=7, va="top")
    return _finish(fig, path)


def pareto(rows: Sequence[dict[str, Any]], path: str | Path | None = None) -> bytes | None:
    """Top-1 accuracy vs p99 latency per image (p99 / batch); the front is drawn per batch size."""
    points = [r for r in rows if r.get("top1") is not None and r.get("p99") is not None]
    if not points:
        return None
    fig, ax = _figure()
    batches = sorted({r["batch"] for r in points})
    for bi, batch in enumerate(batches):
        group = [r for r in points if r["batch"] == batch]
        xy = [(r["p99"] / r["batch"], r["top1"]) for r in group]
        color = _COLORS[bi % len(_COLORS)]
        ax.scatter([p[0] for p in xy], [p[1] for p in xy], color=color, s=28, label=f"batch {batch}", zorder=3)
        front = pareto_front(xy)
        if len(front) > 1:
            ax.step([xy[i][0] for i in front], [xy[i][1] for i in front], where="post", color=color, alpha=0.6)
        for row, (x, y) in zip(group, xy, strict=True):
            ax.annotate(f"{row['model']}\n{row['backend']}/{row['precision']}", (x, y), fontsize=6,
                        xytext=(4, 3), textcoords="offset points")
    xs = [r["p99"] / r["batch"] for r in points]
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("p99 latency per image (ms) = p99 of the batch / batch")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy vs p99 latency (Pareto front per batch size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _finish(fig, path)


def training_curves(history: Sequence[dict[str, Any]], path: str | Path | None = None, title: str = "Training") -> bytes | None:
    """Loss and accuracy columns of a per-epoch history against the epoch."""
    if not history:
        return None
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    keys = [k for k in history[0] if k != "epoch" and all(isinstance(h.get(k), (int, float)) for h in history)]
    loss_keys = [k for k in keys if "loss" in k.lower()]
    acc_keys = [k for k in keys if "acc" in k.lower() or "top1" in k.lower()]
    if not loss_keys and not acc_keys:
        return None
    fig, ax = _figure(7.5, 4.0)
    for i, key in enumerate(loss_keys):
        ax.plot(epochs, [h[key] for h in history], color=_COLORS[i % len(_COLORS)], label=key, marker=".")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if acc_keys:
        ax2 = ax.twinx()
        for i, key in enumerate(acc_keys):
            ax2.plot(epochs, [h[key] for h in history], color=_COLORS[(i + 3) % len(_COLORS)], label=key,
                     linestyle="--", marker=".")
        ax2.set_ylabel("accuracy")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    else:
        ax.legend(fontsize=7)
    ax.set_title(title)
    return _finish(fig, path)


def accuracy_stages(stages: Sequence[tuple[str, float]], path: str | Path | None = None) -> bytes | None:
    """Top-1 along the pipeline (baseline, pruned, INT8, ...), one point per stage in order."""
    if not stages:
        return None
    fig, ax = _figure(7.5, 3.6)
    xs = list(range(len(stages)))
    ys = [s[1] for s in stages]
    ax.plot(xs, ys, marker="o", color=_COLORS[0])
    for x, (_name, y) in zip(xs, stages, strict=True):
        ax.annotate(f"{y:.2f}", (x, y), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels([s[0] for s in stages], rotation=15, fontsize=8, ha="right")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy through the pipeline")
    ax.grid(alpha=0.3)
    span = max(ys) - min(ys)
    ax.set_ylim(min(ys) - max(1.0, span * 0.3), max(ys) + max(1.0, span * 0.3))
    return _finish(fig, path)


def confusion(matrix: Sequence[Sequence[float]], class_names: Sequence[str] | None = None,
              path: str | Path | None = None) -> bytes | None:
    if not matrix:
        return None
    n = len(matrix)
    fig, ax = _figure(5.0, 4.4)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    names = list(class_names or [str(i) for i in range(n)])[:n]
    if n <= 30:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(names, fontsize=7, rotation=90)
        ax.set_yticklabels(names, fontsize=7)
        if n <= 12:
            peak = max(max(row) for row in matrix) or 1
            for i in range(n):
                for j in range(n):
                    value = matrix[i][j]
                    ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=7,
                            color="white" if value > peak / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    return _finish(fig, path)
