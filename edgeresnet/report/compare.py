"""Benchmark results side by side: rows, the pairing key, the Pareto front, a rich table.

Why separate from the CLI: ``compare`` and the HTML report show the same table, and the Pareto front is a
pure function worth testing on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeresnet.artifacts import read_any_manifest
from edgeresnet.bench.schema import is_sidecar_manifest, read_results

PAIR_KEY = ("model", "target", "backend", "precision", "batch")


def load_documents(paths: Sequence[str | Path], option: str | None = "RESULTS"
                   ) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Read every results file (validated); sidecar manifests matched by a glob are skipped with a note."""
    documents, notes = [], []
    for raw in paths:
        path = Path(raw)
        if is_sidecar_manifest(path):
            notes.append(f"{path}: sidecar manifest of {path.name[:-5]}, skipped")
            continue
        documents.append((path, read_results(path, option)))
    return documents, notes


def _size(result: dict[str, Any]) -> int | None:
    if isinstance(result.get("model_bytes"), int):
        return result["model_bytes"]
    artifact = result.get("artifact")
    if artifact and Path(artifact).exists():
        manifest = read_any_manifest(artifact)
        if manifest is not None and manifest.size_bytes is not None:
            return manifest.size_bytes
        return Path(artifact).stat().st_size
    return None


def rows_from(documents: Sequence[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One flat row per result, sorted by the pairing key."""
    rows = []
    for path, document in documents:
        env = document.get("environment", {})
        for result in document["results"]:
            lat = result["latency_ms"]
            acc = result.get("accuracy") or {}
            rows.append({
                "file": str(path),
                "artifact": result.get("artifact"),
                "model": result["model"],
                "target": result["target"],
                "backend": result["backend"],
                "precision": result["precision"],
                "batch": result["batch"],
                "min": lat.get("min"), "median": lat.get("median"), "p90": lat.get("p90"), "p95": lat.get("p95"),
                "p99": lat.get("p99"), "max": lat.get("max"), "cv": lat.get("cv"),
                "median_ci": lat.get("median_ci"),
                "throughput_ips": result.get("throughput_ips"),
                "top1": acc.get("top1"), "top5": acc.get("top5"), "accuracy_n": acc.get("n"),
                "top1_ci95": acc.get("top1_ci95") or _ci95(acc.get("top1"), acc.get("n")),
                "top5_ci95": acc.get("top5_ci95") or _ci95(acc.get("top5"), acc.get("n")),
                "model_bytes": _size(result),
                "iterations": result.get("iterations"),
                "latency_kind": result.get("latency_kind", "host_end_to_end"),
                "gpu_compute_median": (result.get("gpu_compute_ms") or {}).get("median"),
                "device": result.get("device") or (env.get("gpu") or {}).get("name") or env.get("host", {}).get("cpu"),
                "warnings": result.get("warnings", []),
                "samples": lat.get("samples") or [],
            })
    rows.sort(key=lambda r: tuple(str(r[k]) if k != "batch" else f"{r[k]:06d}" for k in PAIR_KEY))
    return rows


def _ci95(top: float | None, n: int | None) -> list[float] | None:
    """The Wilson 95 % interval of a top-k recorded as a percentage over n images (None when either is missing)."""
    from edgeresnet.evaluate.intervals import accuracy_interval

    if top is None or not n:
        return None
    try:
        return accuracy_interval(float(top), int(n)).percent()
    except ValueError:  # a top-1 that is no count out of n (rounded or edited): no interval rather than a wrong one
        return None


def label(row: dict[str, Any]) -> str:
    return f"{row['model']} {row['backend']}/{row['precision']} b{row['batch']} @{row['target']}"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats: lower latency and higher accuracy (ties kept), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.1f}"
    if value >= 10:
        return f"{value:.2f}"
    if value >= 0.1:
        return f"{value:.3f}"
    return f"{value:.4f}"


def fmt_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def fmt_pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


TABLE_COLUMNS = ("model", "target", "backend", "precision", "batch", "min", "median", "p90", "p95", "p99", "max",
                 "cv", "throughput_ips", "top1", "top5", "model_bytes")
TABLE_HEADERS = {"model": "model", "target": "target", "backend": "backend", "precision": "precision",
                 "batch": "batch", "min": "min ms", "median": "median ms", "p90": "p90 ms", "p95": "p95 ms",
                 "p99": "p99 ms", "max": "max ms", "cv": "CV %", "throughput_ips": "img/s",
                 "top1": "top-1 % [95 % CI]", "top5": "top-5 % [95 % CI]", "model_bytes": "size"}


def cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if column in ("min", "median", "p90", "p95", "p99", "max"):
        return fmt_ms(value)
    if column == "cv":
        return fmt_pct(value, 1)
    if column == "throughput_ips":
        return "-" if value is None else f"{value:,.1f}"
    if column in ("top1", "top5"):  # '94.1 % [93.6, 94.6]': the Wilson 95 % interval over the test images
        from edgeresnet.evaluate.intervals import format_accuracy

        return format_accuracy(value, row.get(f"{column}_ci95"), 1)
    if column == "model_bytes":
        return fmt_bytes(value)
    return str(value)


def rich_table(rows: Sequence[dict[str, Any]], title: str = "Benchmark results") -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in TABLE_COLUMNS:
        numeric = column not in ("model", "target", "backend", "precision")
        table.add_column(TABLE_HEADERS[column], justify="right" if numeric else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(escape(cell(row, c)) for c in TABLE_COLUMNS))
    return table


def comparison_json(rows: Sequence[dict[str, Any]], notes: Sequence[str] = ()) -> dict[str, Any]:
    """``compare --json``: the table without the raw samples."""
    return {"pair_key": list(PAIR_KEY), "rows": [{k: v for k, v in r.items() if k != "samples"} for r in rows],
            "notes": list(notes)}
