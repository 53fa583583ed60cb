"""``edgeresnet qat`` and ``edgeresnet calibrate``: INT8 ONNX with its accuracy cost measured on the artifact.

Registered by ``edgeresnet/cli/compress.py`` (``compress_quant.register(app)``). Heavy imports stay inside
the commands so ``edgeresnet --help`` is fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgeresnet.cli import common
from edgeresnet.cli.common import JsonOut
from edgeresnet.compress import ptq_stage  # the stages' settings and entry points; no heavy imports

# what calibrate and qat both take, the same way
MaxDrop = Annotated[float, typer.Option("--max-drop", help="Largest allowed top-1 drop in points vs FP32.")]
Percentile = Annotated[float, typer.Option("--percentile", help="Percentile for --method percentile.")]
EvalImages = Annotated[Optional[int], typer.Option("--eval-images", help="Limit the held-out images per split.")]
BenchIters = Annotated[int, typer.Option("--bench-iters", help="Latency iterations per model (0 = skip timing).")]


@contextlib.contextmanager
def _progress(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr; the callback takes (stage, done, total)."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    labels = {"calibrate": "calibrating", "sweep": "sensitivity sweep", "keep": "keeping layers in float"}
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=common.console(stderr=True), transient=True) as bar:
        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _run_stage(stage: Callable[..., Any], settings_type: type, arguments: dict[str, Any]) -> Any:
    """The stage on settings made from the command's arguments (one settings field per option, same name),
    progress bars and warnings on stderr; a --json PATH that cannot be written fails before the work."""
    from edgeresnet.artifacts import check_json_dest

    check_json_dest(arguments["json_out"])
    settings = settings_type(**{f.name: arguments[f.name] for f in dataclasses.fields(settings_type)})
    return stage(settings, console=common.console(stderr=True), progress=_progress)


def _finish(title: str, report: Any, extra: list[tuple[str, str]], json_out: str | None) -> None:
    """The report's table, then its JSON; a failed gate exits 3 (nothing written), else the files are named."""
    from edgeresnet.artifacts import emit_json
    from edgeresnet.compress.int8_accuracy import gate_failure

    _accuracy_table(title, report.accuracy, report.gate, report.latency, extra)
    emit_json(report.to_dict(), json_out)
    if not report.gate.passed:
        raise gate_failure(report)
    typer.echo(f"wrote {report.out} and {report.out}.json")


def _accuracy_table(title: str, accuracy: dict[str, Any], gate: Any, latency: dict[str, Any],
                    extra: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("split", "images", "FP32 top-1 %", "INT8 top-1 %", "drop (pt)"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split in ("val", "test"):
        if split in accuracy:
            a = accuracy[split]
            label = f"{split} (gate)" if split == accuracy.get("split_gated") else split
            table.add_row(label, str(a["n"]), f"{a['fp32_top1']:.2f}", f"{a['int8_top1']:.2f}", f"{a['drop']:+.2f}")
    console = common.console()
    console.print(table)
    console.print(f"measured on: {accuracy.get('measured_on', '?')}", highlight=False)
    for split in ("val", "test"):  # McNemar's test of INT8 against FP32 on the same images
        if isinstance(accuracy.get(split), dict) and "paired" in accuracy[split]:
            console.print(f"{split}: {accuracy[split]['paired']['summary']}", highlight=False)
    if "test_ort_cpu_int8_kernels" in accuracy:
        console.print(f"test top-1 with ONNX Runtime's fused int8 CPU kernels (not TensorRT's numerics): "
                      f"{accuracy['test_ort_cpu_int8_kernels']:.2f} %", highlight=False)
    for key, value in extra:
        console.print(f"{key}: {value}", highlight=False)
    if gate.kept_float:
        console.print(f"kept in float: {', '.join(gate.kept_float)}", highlight=False)
    if latency:
        console.print(f"ONNX Runtime CPU latency (batch {latency.get('batch', 1)}, median of "
                      f"{latency['fp32']['iterations']}, interleaved): FP32 {latency['fp32']['median_ms']:.2f} ms, "
                      f"INT8 {latency['int8']['median_ms']:.2f} ms, speed-up x{latency['speedup']:.2f}", highlight=False)
    console.print(("[green]gate passed[/green]: " if gate.passed else "[red]gate failed[/red]: ") + gate.message,
                  highlight=False)


def calibrate_cmd(
    model: Path = typer.Argument(..., help="FP32 ONNX (from edgeresnet export)."),
    out: Path = typer.Option(..., "--out", help="INT8 Q/DQ ONNX to write."),
    method: str = typer.Option("entropy", "--method", help="Range method: entropy (TensorRT's), max or percentile."),
    flavour: Optional[str] = typer.Option(None, "--flavour", help="trt (TensorRT Q/DQ, symmetric) or ort "
                                          "(ONNX Runtime CPU, uint8 activations); default from --target, else trt."),
    target: Optional[str] = typer.Option(None, "--target", help="Deployment target (targets/*.yaml): picks the flavour."),
    images: Optional[int] = typer.Option(None, "--images", help="Calibrate with the first N train images of --data "
                                         "(default 500, or all there are)."),
    calib_list: Optional[Path] = typer.Option(None, "--calib-list", help="Image list (see calibration/README.md) or "
                                              "a folder of images."),
    data: Optional[str] = typer.Option(None, "--data", help="'digits', 'fashion-mnist', an IDX or ImageFolder dir: held-out data for the "
                                       "accuracy gate (default: the data set recorded with the model)."),
    max_drop: MaxDrop = 1.0,
    max_keep: Optional[int] = typer.Option(None, "--max-keep", help="Most layers the gate may keep in float "
                                           "(default a quarter of them)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Calibration cache (TensorRT format) to reuse or "
                                         "write; default beside --out, keyed by model and image list."),
    percentile: Percentile = 99.99,
    ort_format: str = typer.Option("qdq", "--format", help="ort flavour only: qdq or qoperator."),
    reduce_range: Optional[bool] = typer.Option(None, "--reduce-range/--no-reduce-range", help="ort flavour only: "
                                                "7-bit weights (default: on for x86 CPUs without VNNI, where "
                                                "ONNX Runtime's u8s8 sums saturate)."),
    eval_images: EvalImages = None,
    bench_iters: BenchIters = 30,
    json_out: JsonOut = None,
) -> None:
    """Post-training INT8: calibrate an FP32 ONNX and write a Q/DQ ONNX for TensorRT or ONNX Runtime."""
    done = _run_stage(ptq_stage.calibrate, ptq_stage.CalibrateSettings, locals())
    report, calib, chosen, why = done.report, done.calibration, done.flavour, done.flavour_reason
    extra = [("flavour", f"{chosen} ({why})"), ("method", method),
             ("calibration", f"{len(calib)} images from {calib.source} (sha256 {calib.sha256[:12]})"),
             ("cache", f"{report.cache['path']} ({'reused' if report.cache['hit'] else 'written'})")]
    if chosen == "ort":
        from edgeresnet.compress.int8_flavours import default_reduce_range

        rr = report.structure.get("reduce_range")
        extra.append(("format", f"{ort_format}, {'7-bit weights (reduce-range)' if rr else '8-bit weights'}"
                                f"{'' if reduce_range is not None else ' (auto: ' + default_reduce_range()[1] + ')'}"))
    _finish(f"calibrate {model.name} -> {out.name}", report, extra, json_out)


def qat_cmd(
    model: Path = typer.Argument(..., help="Trained FP32 checkpoint (.pt)."),
    out: Path = typer.Option(..., "--out", help="INT8 Q/DQ ONNX to write (TensorRT placement)."),
    calib_images: Optional[int] = typer.Option(None, "--calib-images", help="Calibration images from the train "
                                               "split (default 500, or all there are)."),
    epochs: int = typer.Option(2, "--epochs", help="Fine-tuning epochs with fake quantization."),
    lr: float = typer.Option(1e-3, "--lr", help="Fine-tuning learning rate (low: the model is already trained)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Fine-tuning batch size (recipe default)."),
    method: str = typer.Option("percentile", "--method", help="Activation range method: percentile, entropy or max."),
    percentile: Percentile = 99.99,
    max_drop: MaxDrop = 1.0,
    max_keep: Optional[int] = typer.Option(None, "--max-keep", help="Most layers the gate may keep in float."),
    data: Optional[str] = typer.Option(None, "--data", help="'digits', 'fashion-mnist', an IDX or ImageFolder dir (default: recorded in "
                                       "the checkpoint)."),
    opset: int = typer.Option(13, "--opset", help="ONNX opset (13..20; 13 parses on every TensorRT since 8.x)."),
    seed: int = typer.Option(0, "--seed", help="Seed for data split and fine-tuning."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop fine-tuning after this many "
                                            "optimizer steps (smoke runs, time budgets)."),
    eval_images: EvalImages = None,
    bench_iters: BenchIters = 30,
    json_out: JsonOut = None,
) -> None:
    """Quantization-aware training: fake-quantize as TensorRT runs INT8, fine-tune, export Q/DQ ONNX."""
    report = _run_stage(ptq_stage.qat, ptq_stage.QatSettings, locals())
    extra = [("calibration", f"{report.calibration['count']} train images, method {method}"),
             ("fine-tune", f"{epochs} epoch(s) at lr {lr:g}; val top-1 (torch) before "
                           f"{report.fine_tune.get('val_top1_before')}, after {report.fine_tune.get('val_top1_after', '-')}"
                           f"{'; kept ' + report.fine_tune['kept'] if report.fine_tune.get('kept') else ''}"),
             ("Q/DQ", f"{report.structure['quantize_linear']} QuantizeLinear, {report.structure['dequantize_linear']} "
                      f"DequantizeLinear, {report.structure['residual_adds_quantized']} residual adds quantized, "
                      f"opset {opset}")]
    _finish(f"qat {model.name} -> {out.name}", report, extra, json_out)


def register(app: typer.Typer) -> None:
    """Add ``qat`` and ``calibrate`` to the app."""
    app.command("calibrate")(calibrate_cmd)
    app.command("qat")(qat_cmd)
