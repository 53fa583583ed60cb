"""``edgeresnet export`` (checkpoint -> ONNX, parity-checked) and ``edgeresnet verify A B``.

Parsing, printing and exit codes only; the work is in ``edgeresnet.export`` and ``edgeresnet.export.parity``.
Exit codes: 0 parity passed, 1 parity (or the export itself) failed, 2 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgeresnet.cli import common
from edgeresnet.cli.common import JsonOut
from edgeresnet.errors import UserError


class _Progress:
    """Rich progress with one task per stage; the parity stage has a bar of batches."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task: Any = None

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def stage(self, description: str, steps: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total)
        self.task = self.progress.add_task(description, total=max(1, steps))

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)


def _fmt(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.3g}"


def parity_table(report: Any, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("batch", "images", "max-abs", "max-rel", "top-1 agree", "beyond tol", "result"):
        table.add_column(column, justify="right" if column != "result" else "left")
    for case in report.cases:
        table.add_row(str(case.batch), str(case.images), _fmt(case.max_abs), _fmt(case.max_rel),
                      f"{case.top1_agreement:.1%}", str(case.failing_images),
                      "[green]pass[/green]" if case.passed else "[red]FAIL[/red]")
    t = report.tolerance
    table.caption = f"pass: |a-b| <= {t.atol:g} + {t.rtol:g}*max|a| per image, top-1 agreement >= {t.min_agreement:.0%}"
    return table


def _export_table(result: Any) -> Any:
    from rich.table import Table

    m = result.manifest
    table = Table(title=f"exported {result.path}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("exporter", f"{result.exporter} ({m['settings'].get('opset_reason', '')})"),
        ("opset / IR version", f"{result.opset} / {m.get('ir_version')}"),
        ("precision", f"{result.precision} (weights and compute), I/O {result.io_dtype}"),
        ("input", f"{m['input']['name']} {m['input']['shape']} {result.io_dtype} NCHW"),
        ("output", f"{m['output']['name']} {m['output']['shape']} {result.io_dtype}"),
        ("batch profile", str(result.profile)),
        ("size", f"{m['size_bytes'] / 1e6:.2f} MB"),
        ("sha256", m["sha256"][:16] + "..."),
        ("parity data", f"{m['settings'].get('data')} ({m['settings'].get('parity_images')} images)"),
        ("time", ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in result.timings.items())),
    ]
    if result.simplified:
        s = result.simplified
        rows.insert(5, ("simplified", f"{s['tool']} {s['version']}: {s['nodes_before']} -> {s['nodes_after']} nodes"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _tolerance(atol: float, rtol: float, min_agreement: float) -> Any:
    from edgeresnet.export.parity import Tolerance

    return Tolerance(atol=atol, rtol=rtol, min_agreement=min_agreement)


def export_cmd(
    model: Path = typer.Argument(..., metavar="MODEL", help="Our checkpoint (.pt) to export."),
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write (its manifest goes to OUT.json)."),
    target: str | None = typer.Option(None, "--target", help="Pick the opset the target's TensorRT parses."),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (11-17: TorchScript exporter, 18-23: dynamo)."),
    exporter: str = typer.Option("auto", "--exporter", help="auto | dynamo | torchscript (auto picks by opset)."),
    batch: int | None = typer.Option(None, "--batch", help="Static batch size (default 1)."),
    dynamic_batch: str | None = typer.Option(None, "--dynamic-batch", help="Dynamic batch axis MIN:OPT:MAX, e.g. 1:8:32."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size (default: the checkpoint's)."),
    simplify: bool = typer.Option(False, "--simplify", help="Simplify the graph with onnxslim (checked by parity)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16: FP16 weights and compute (for strongly "
                                  "typed TensorRT: 11.x, TensorRT-RTX); inputs/outputs stay float32."),
    io_fp16: bool = typer.Option(False, "--io-fp16", help="With --precision fp16: float16 input and output too."),
    data: str | None = typer.Option(None, "--data", help="Parity images: digits, fashion-mnist, an IDX or ImageFolder dir "
                                    "(default: the checkpoint's data set, else digits)."),
    atol: float | None = typer.Option(None, "--atol", help="Absolute logit tolerance (default 1e-3; fp16: 1e-2)."),
    rtol: float | None = typer.Option(None, "--rtol", help="Tolerance relative to the largest reference logit "
                                      "(default 1e-3; fp16: 1e-2)."),
    min_agreement: float | None = typer.Option(None, "--min-agreement", help="Minimum top-1 agreement (0-1, "
                                               "default 0.99)."),
    parity_images: int = typer.Option(32, "--parity-images", help="Real images for the parity check."),
    seed: int = typer.Option(0, "--seed", help="Split seed for the parity images."),
    json_out: JsonOut = None,
) -> None:
    """Export a checkpoint to ONNX and prove parity against PyTorch on real images.

    ONNX input 'input' (float32 NCHW, batch axis 'batch' when dynamic), output 'logits'. --precision fp16
    writes FP16 weights and compute behind float32 I/O (float16 I/O with --io-fp16), checked against FP32.

    The preprocessing contract and batch profile go into its metadata_props and into OUT.json.
    """
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.export import export_checkpoint

    check_json_dest(json_out)  # a --json PATH that cannot be written fails before the work

    if batch is not None and dynamic_batch is not None:
        raise UserError("--batch and --dynamic-batch: give one of them (static or dynamic batch)")
    profile: Any = dynamic_batch if dynamic_batch is not None else (batch if batch is not None else 1)
    if isinstance(profile, int) and profile < 1:
        raise UserError(f"--batch {profile}: must be at least 1")
    from edgeresnet.export.fp16 import FP16_TOLERANCE, check_precision

    check_precision(precision, io_fp16)
    base = FP16_TOLERANCE if precision == "fp16" else _tolerance(1e-3, 1e-3, 0.99)
    tolerance = _tolerance(base.atol if atol is None else atol, base.rtol if rtol is None else rtol,
                           base.min_agreement if min_agreement is None else min_agreement)
    console = common.console(json_out)
    with _Progress(console) as progress:
        result = export_checkpoint(model, out, opset=opset, batch=profile, exporter=exporter, target=target,
                                   image_size=image_size, simplify=simplify, data=data, tolerance=tolerance,
                                   parity_images=parity_images, seed=seed, stage=progress.stage,
                                   advance=progress.advance, precision=precision, io_fp16=io_fp16)
    console.print(_export_table(result))
    if result.parity is not None:
        console.print(parity_table(result.parity, "parity: PyTorch (reference) vs ONNX Runtime"))
    for note in result.warnings:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"wrote {result.path} and {result.path}.json", highlight=False)
    emit_json({"schema": "edgeresnet.export/1", **result.to_dict()}, json_out)


def verify_cmd(
    a: Path = typer.Argument(..., metavar="A", help="Reference artifact: checkpoint (.pt), ONNX or engine."),
    b: Path = typer.Argument(..., metavar="B", help="Artifact to compare against A."),
    data: str | None = typer.Option(None, "--data", help="digits, fashion-mnist, an IDX or ImageFolder dir (default: A's data set)."),
    atol: float = typer.Option(1e-3, "--atol", help="Absolute logit tolerance."),
    rtol: float = typer.Option(1e-3, "--rtol", help="Tolerance relative to the largest reference logit."),
    min_agreement: float = typer.Option(0.99, "--min-agreement", help="Minimum top-1 agreement (0-1)."),
    parity_images: int = typer.Option(32, "--parity-images", help="Real images to compare on."),
    max_batch: int = typer.Option(8, "--max-batch", help="Largest batch when neither artifact bounds it."),
    seed: int = typer.Option(0, "--seed", help="Split seed for the images."),
    json_out: JsonOut = None,
) -> None:
    """Compare two artifacts (e.g. FP32 ONNX vs INT8 ONNX) at batch 1 and the largest common batch."""
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.export.verify import verify

    check_json_dest(json_out)  # a --json PATH that cannot be written fails before the work
    console = common.console(json_out)
    result = verify(a, b, data=data, atol=atol, rtol=rtol, min_agreement=min_agreement, parity_images=parity_images,
                    max_batch=max_batch, seed=seed, progress=lambda: _Progress(console))
    report = result.report
    console.print(parity_table(report, f"verify: {a} (reference) vs {b}"))
    if result.note:
        console.print(f"[yellow]note:[/yellow] {result.note}", highlight=False)
    emit_json(result.to_dict(), json_out)
    if not report.passed:
        raise UserError(f"parity failed: {report.failure_summary()}", exit_code=1)
    console.print(f"[green]parity passed[/green]: max-abs {_fmt(report.max_abs)}, max-rel {_fmt(report.max_rel)}, "
                  f"top-1 agreement {report.top1_agreement:.1%}")


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``verify``."""
    app.command("export")(export_cmd)
    app.command("verify")(verify_cmd)
