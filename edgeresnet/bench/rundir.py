"""Benchmarking a pipeline's run directory: find the artifacts it made, time them all (``core.run_benchmark``),
write the results document and the HTML report; the console progress bar of the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeresnet.artifacts import read_any_manifest
from edgeresnet.bench.artifact import BenchSettings
from edgeresnet.bench.core import run_benchmark
from edgeresnet.bench.timing import TimingConfig
from edgeresnet.errors import UserError

MODEL_SUFFIXES = (".pt", ".pth", ".onnx", ".engine", ".plan", ".trt")
NOT_MODELS = ("calibration-cache", "benchmark-results", "report")


def find_artifacts(run_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Model files under ``run_dir`` that carry a sidecar manifest (what the pipeline made), plus notes on
    the ones left out (no manifest, TensorRT engines without TensorRT)."""
    root = Path(run_dir)
    found, notes = [], []
    trt_available = _module_available("tensorrt")
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in MODEL_SUFFIXES:
            continue
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        manifest = read_any_manifest(path)
        if manifest is None:
            notes.append(f"{path.relative_to(root)}: no manifest, not made by the pipeline; skipped")
            continue
        if (manifest.kind or "") in NOT_MODELS:
            continue
        if path.name == "last.pt" and (path.parent / "best.pt").exists():
            notes.append(f"{path.relative_to(root)}: training resume state; best.pt beside it is benchmarked")
            continue
        if path.suffix.lower() in (".engine", ".plan", ".trt") and not trt_available:
            notes.append(f"{path.relative_to(root)}: TensorRT is not installed here; skipped")
            continue
        found.append(path)
    return found, notes


def _module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def benchmark_run_dir(
    run_dir: str | Path,
    *,
    artifacts: Sequence[str | Path] | None = None,
    data: str | None = "digits",
    batches: Sequence[int] = (1, 8),
    duration_s: float = 1.0,
    warmup_ms: float = 100.0,
    warmup_iterations: int = 5,
    min_iterations: int = 10,
    target: str | None = None,
    out: str | Path | None = None,
    report: str | Path | None = "report.html",
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark every artifact the pipeline made in ``run_dir`` and write the results and the HTML report.

    Writes ``<run_dir>/benchmark/results.json`` (+ manifest) unless ``out`` names another file, and
    ``<run_dir>/report.html`` unless ``report`` is None or another path. Returns {"results": Path,
    "report": Path | None, "document": dict, "skipped": [notes]}.
    """
    from edgeresnet.bench.schema import write_results

    root = Path(run_dir)
    if not root.is_dir():
        raise UserError(f"{root}: run directory not found; pass the directory the pipeline wrote into")
    if artifacts is None:
        paths, notes = find_artifacts(root)
    else:
        paths, notes = [Path(a) for a in artifacts], []
    if not paths:
        raise UserError(f"{root}: no model artifacts with manifests found (.pt, .onnx, .engine); run the pipeline first")
    settings = BenchSettings(batches=tuple(batches), target=target,
                             timing=TimingConfig(warmup_ms=warmup_ms, warmup_iterations=warmup_iterations,
                                                 min_iterations=min_iterations, duration_s=duration_s))
    callback, finish = console_progress() if progress else (None, lambda: None)
    try:
        names = [_artifact_name(p, root) for p in paths]
        document = run_benchmark(paths, settings, data=data, accuracy=data is not None, progress=callback,
                                 skipped=notes, names=names)
    finally:
        finish()
    results_path = Path(out) if out else root / "benchmark" / "results.json"
    write_results(results_path, document, option="--out", inputs={f"artifact{i}": p for i, p in enumerate(paths)},
                  command="benchmark")
    report_path = None
    if report is not None:
        from edgeresnet.report.html import write_report

        report_path = Path(report) if Path(report).is_absolute() or Path(report).parent != Path(".") else root / report
        write_report(root, report_path)
    return {"results": results_path, "report": report_path, "document": document, "skipped": notes}


def _artifact_name(path: Path, root: Path) -> str:
    """``<run>/train/best.pt`` -> ``train/best``: stable across runs with the same layout (the gate pairs on it)."""
    try:
        relative = Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return Path(path).stem
    return str(relative.with_suffix("")).replace("\\", "/")


def console_progress() -> tuple[Callable[[str, int, float], None], Callable[[], None]]:
    """A rich progress bar fed by benchmark_artifact's callback."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), transient=True)
    bar.start()
    tasks: dict[str, Any] = {}

    def update(label: str, batch: int, fraction: float) -> None:
        key = label.rsplit(" ", 1)[0]
        if key not in tasks:
            tasks[key] = bar.add_task(key, total=1.0)
        bar.update(tasks[key], completed=fraction, description=label)

    return update, bar.stop
