"""Benchmark CLI: ``benchmark``, ``compare`` and ``report``.

Parsing, printing and exit codes only; the measuring lives in ``edgeresnet.bench``, tables and plots in
``edgeresnet.report``. Heavy imports stay inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgeresnet.cli import common
from edgeresnet.errors import UserError


def _print_results(console: Any, document: dict[str, Any]) -> None:
    from rich.markup import escape

    from edgeresnet.report import compare

    rows = compare.rows_from([(Path("-"), document)])
    console.print(compare.rich_table(rows))
    by_warning: dict[str, list[str]] = {}
    for row in rows:
        for warning in row["warnings"]:
            by_warning.setdefault(warning, []).append(f"batch {row['batch']}")
    for warning, where in by_warning.items():
        scope = "" if len(where) == len(rows) else f" ({', '.join(where)})"
        console.print(f"[yellow]warning:[/yellow] {escape(warning + scope)}", highlight=False)


def benchmark(
    models: list[Path] | None = typer.Argument(
        None, metavar="MODEL...", help="Checkpoint (.pt), ONNX (.onnx) or TensorRT engine (.engine)."),
    backend: str | None = typer.Option(None, "--backend", help="torch | ort | trt (default: from the file type)."),
    batch: str | None = typer.Option(None, "--batch", help="Batch sizes to sweep, e.g. 1,8,32 (default 1)."),
    warmup_ms: float = typer.Option(200.0, "--warmup-ms", help="Warm-up wall time (ms), with --warmup-iterations."),
    warmup_iterations: int = typer.Option(5, "--warmup-iterations", help="Minimum warm-up iterations."),
    min_iterations: int = typer.Option(10, "--min-iterations", help="Minimum timed iterations."),
    duration: float = typer.Option(3.0, "--duration", help="Minimum timed wall time per batch size (s)."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for the runtime."),
    data: str | None = typer.Option(None, "--data", help="'digits', 'fashion-mnist', an IDX or ImageFolder dir: timing inputs and accuracy."),
    accuracy: bool | None = typer.Option(None, "--accuracy/--no-accuracy",
                                            help="Top-1/top-5 on the test split of --data (default on with --data)."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size when the model does not say."),
    no_transfers: bool = typer.Option(False, "--no-transfers", help="Device-resident inputs/outputs (torch on CUDA)."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="Replay a captured CUDA graph (torch on CUDA)."),
    device: str | None = typer.Option(None, "--device", help="torch: cpu or cuda[:N] (default: cuda if present); "
                                      "trt: cuda, cuda:N or N (default 0)."),
    cuda_backend: str = typer.Option("auto", "--cuda-backend", help="trt: CUDA binding for memory, streams and "
                                     "the device probe: auto (cuda-python, else pycuda) | cuda-python | pycuda."),
    target: str | None = typer.Option(None, "--target", help="Where this runs, e.g. host-cpu, orin-nano."),
    model_name: str | None = typer.Option(None, "--model-name", help="Name used to pair results (default: file stem)."),
    precision: str | None = typer.Option(None, "--precision", help="Override the precision label."),
    from_trtexec: list[Path] | None = typer.Option(
        None, "--from-trtexec", help="Import a trtexec log and/or its --exportTimes JSON instead of measuring."),
    seed: int = typer.Option(0, "--seed", help="Seed for noise inputs and the bootstrap."),
    rounds: int = typer.Option(1, "--rounds", help="Time all MODELs interleaved in N rounds: A B, B A, ... "
                               "(more models: a balanced order), each round a 1/N share of --duration and "
                               "--min-iterations, samples pooled: a load change then hits every model alike "
                               "(baseline vs current on shared CI machines; use an even N)."),
    split: bool = typer.Option(False, "--split", help="With --out: one results file per MODEL, named after "
                               "its file (e.g. base_*.json and head_*.json for 'edgeresnet regress')."),
    json_out: str | None = typer.Option(None, "--json", help="Write results JSON here ('-' = stdout)."),
    out: Path | None = typer.Option(None, "--out", help="Directory to write the results JSON into."),
) -> None:
    """Measure latency (trtexec statistics), throughput and accuracy of a model, or import a trtexec run.

    Several MODELs with --rounds N are measured interleaved in one process, the protocol the regression
    gate trusts on noisy machines: 'edgeresnet benchmark base.onnx head.onnx --rounds 6 --model-name m
    --split --out gate/' then 'edgeresnet regress --baseline gate/base_*.json --current gate/head_*.json'.
    """
    from edgeresnet.artifacts import emit_json
    from edgeresnet.bench.artifact import BenchSettings, parse_batches
    from edgeresnet.bench.stage import benchmark as benchmark_models
    from edgeresnet.bench.stage import import_trtexec_run
    from edgeresnet.bench.timing import TimingConfig

    console = common.console(json_out, wide=True)
    batches = parse_batches(batch if batch is not None else "1")
    if from_trtexec:
        if models:
            raise UserError("--from-trtexec: pass either MODEL files to measure or trtexec files to import, not both")
        if len(batches) > 1:
            raise UserError(f"--batch {batch}: a trtexec run has one batch size; pass one value or leave it out")
        output = import_trtexec_run(from_trtexec, batch=batches[0] if batch is not None else None, precision=precision,
                                    model_name=model_name, target=target, seed=seed, json_out=json_out, out=out,
                                    on_measured=lambda document: _print_results(console, document))
    else:
        settings = BenchSettings(
            backend=backend, batches=batches,
            timing=TimingConfig(warmup_ms=warmup_ms, warmup_iterations=warmup_iterations,
                                min_iterations=min_iterations, duration_s=duration),
            threads=threads, no_transfers=no_transfers, cuda_graph=cuda_graph, target=target,
            model_name=model_name, precision=precision, image_size=image_size, device=device, seed=seed,
            cuda_backend=cuda_backend,
        )
        output = benchmark_models(models or [], settings, data=data, accuracy=accuracy, rounds=rounds, split=split,
                                  json_out=json_out, out=out, progress=True,
                                  on_measured=lambda document: _print_results(console, document))
    if json_out == "-":
        emit_json(output.document, "-")
    for path in output.written:
        console.print(f"results: {path}", highlight=False, markup=False)


def compare_cmd(
    files: list[Path] = typer.Argument(..., metavar="RESULTS.json...", help="Results files to put side by side."),
    out: Path | None = typer.Option(None, "--out", help="Directory for latency_cdf.png and pareto.png."),
    json_out: str | None = typer.Option(None, "--json", help="Write the comparison table as JSON ('-' = stdout)."),
) -> None:
    """One table across targets, backends, precisions and batches, plus latency-CDF and Pareto plots."""
    from edgeresnet.artifacts import emit_json
    from edgeresnet.report import compare, plots

    console = common.console(json_out, wide=True)
    documents, notes = compare.load_documents(files)
    if not documents:
        raise UserError("compare: no results files left after skipping manifests; pass results/*.json")
    rows = compare.rows_from(documents)
    console.print(compare.rich_table(rows, title=f"{len(rows)} results from {len(documents)} files"))
    keys = {}
    for row in rows:
        keys.setdefault(tuple(row[k] for k in compare.PAIR_KEY), []).append(row["file"])
    dupes = [f"{'/'.join(map(str, k))} appears in {len(v)} files" for k, v in keys.items() if len(v) > 1]
    for note in notes + dupes:
        console.print(f"note: {note}", highlight=False, markup=False)
    if out is not None:
        from edgeresnet.artifacts import make_output_dir

        make_output_dir(out, "--out")  # with missing parents; a file in the way is one line
        written = []
        if plots.latency_cdf(rows, out / "latency_cdf.png") is not None:
            written.append(out / "latency_cdf.png")
        if plots.pareto(rows, out / "pareto.png") is not None:
            written.append(out / "pareto.png")
        else:
            console.print("note: no accuracy in these results, so no Pareto plot (benchmark with --data)")
        for path in written:
            console.print(f"plot: {path}", highlight=False, markup=False)
    emit_json(compare.comparison_json(rows, notes + dupes), json_out)


def report_cmd(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Directory the pipeline wrote into."),
    out: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write."),
    title: str | None = typer.Option(None, "--title", help="Report title."),
) -> None:
    """One self-contained HTML file with every stage found in RUN_DIR (plots embedded)."""

    from edgeresnet.report.html import write_report

    path = write_report(run_dir, out, title)
    common.console().print(f"report: {path}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add benchmark, compare and report to the app."""
    app.command("benchmark")(benchmark)
    app.command("compare")(compare_cmd)
    app.command("report")(report_cmd)
