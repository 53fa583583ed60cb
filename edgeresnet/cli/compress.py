"""``edgeresnet prune`` and ``edgeresnet distill`` (and, from ``compress_quant``, ``qat`` and ``calibrate``).

Parsing and printing only; the work is in ``edgeresnet.compress.pipeline`` (and ``prune_sweep``). Heavy imports stay inside
the commands so ``edgeresnet --help`` is fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from edgeresnet.cli import common, compress_quant
from edgeresnet.cli.common import JsonOut


def register(app: typer.Typer) -> None:
    """Add this group's commands: prune, distill, then qat and calibrate."""
    app.command("prune")(prune_cmd)
    app.command("distill")(distill_cmd)
    compress_quant.register(app)


def _say(console: Any) -> Any:
    return lambda msg: console.print(f"[dim]{msg}[/dim]", highlight=False)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def prune_cmd(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) to prune."),
    out: Path = typer.Option(..., "--out", help="Pruned checkpoint (.pt); with --sweep, a directory."),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="Fraction of channels removed from every "
                                          "prunable group, in (0, 1)."),
    flops: Optional[float] = typer.Option(None, "--flops", help="Fraction of FLOPs (MACs) to keep, in (0, 1); the "
                                          "ratio is searched."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="TAO's threshold: keep filters whose "
                                              "max-normalised norm is above it, in (0, 1)."),
    criterion: str = typer.Option("l2", "--criterion", help="Filter importance: l2 or l1 kernel norm."),
    normalize: bool = typer.Option(False, "--normalize/--no-normalize", help="Divide each layer's norms by its "
                                   "largest before merging coupled layers (always on with --threshold)."),
    equalization: str = typer.Option("union", "--equalization", help="Merging of residual-coupled layers: union "
                                     "(max), intersection (min), arithmetic_mean or geometric_mean."),
    granularity: int = typer.Option(8, "--granularity", help="Kept channel counts are multiples of this."),
    min_filters: int = typer.Option(16, "--min-filters", help="Never keep fewer channels in a layer."),
    allocation: Optional[str] = typer.Option(None, "--allocation", help="How channels are shared out: uniform "
                                             "(TAO: the same ratio per group), global (normalised scores ranked "
                                             "across the network) or latency (measured cost); default: latency "
                                             "with --speedup/--latency-ms, else uniform."),
    speedup: Optional[float] = typer.Option(None, "--speedup", help="Latency allocation: wanted end-to-end "
                                            "speedup on --latency-backend, > 1 (measured after pruning)."),
    latency_ms: Optional[float] = typer.Option(None, "--latency-ms", help="Latency allocation: wanted end-to-end "
                                               "batch-1 latency in ms on --latency-backend."),
    latency_backend: str = typer.Option("ort-cpu", "--latency-backend", help="Backend the latency table and the "
                                        "end-to-end check are measured on (ort-cpu: ONNX Runtime on this CPU)."),
    latency_table: Optional[Path] = typer.Option(None, "--latency-table", help="Per-conv latency table (JSON), "
                                                 "reused when it exists; default: a cache file per machine, "
                                                 "backend and onnxruntime version."),
    width_grid: str = typer.Option("0.25,0.375,0.5,0.625,0.75,0.875", "--width-grid", help="Latency allocation: "
                                   "candidate widths, as fractions of each group's channels."),
    table_duration: float = typer.Option(0.1, "--table-duration", help="Latency allocation: seconds each conv "
                                         "shape is timed for the table."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show fine-tune progress bars."),
    bn_images: int = typer.Option(512, "--bn-images", help="Training images used to re-estimate BatchNorm "
                                  "statistics right after pruning (0 = off)."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="Fine-tune epochs after pruning (0 = none)."),
    finetune_images: int = typer.Option(0, "--finetune-images", help="Fine-tune on this many training images "
                                        "(stratified by class, seeded; 0 = the whole train split)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="KD teacher for the fine-tune: a checkpoint, or "
                                          "'none'; default: the unpruned model."),
    temperature: float = typer.Option(4.0, "--temperature", help="KD temperature."),
    alpha: float = typer.Option(0.7, "--alpha", help="KD weight of the teacher term (1 - alpha: labels)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Fine-tune learning rate (default 0.01, cosine, "
                                       "no warm-up)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Fine-tune batch size."),
    data: Optional[str] = typer.Option(None, "--data", help="'digits', 'fashion-mnist', an IDX or ImageFolder dir (default: the data set "
                                       "recorded with the model)."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="Comma-separated ratios, e.g. 0.2,0.3,0.4,0.5,0.6: "
                                        "prune + fine-tune at each, write a Pareto table and plot into --out."),
    latency_rounds: int = typer.Option(3, "--latency-rounds", help="Sweep and latency allocation: interleaved "
                                       "end-to-end latency rounds."),
    latency_duration: float = typer.Option(1.0, "--latency-duration", help="Sweep and latency allocation: "
                                           "seconds per model per round."),
    latency_threads: Optional[int] = typer.Option(None, "--latency-threads", help="Sweep and latency allocation: "
                                                  "ONNX Runtime intra-op threads (default: ONNX Runtime's)."),
    exporter: Optional[str] = typer.Option(None, "--exporter", help="ONNX exporter for the size/latency "
                                           "measurements: dynamo or torchscript (default: export's default)."),
    seed: int = typer.Option(0, "--seed", help="Data split and fine-tune seed."),
    json_out: JsonOut = None,
) -> None:
    """Structured channel pruning to a smaller dense model, with its accuracy cost measured."""
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.compress import pipeline, prune_sweep
    from edgeresnet.compress.prune import PruneSettings
    from edgeresnet.errors import UserError

    check_json_dest(json_out)  # a --json PATH that cannot be written fails before the work

    if exporter not in (None, "auto", "dynamo", "torchscript"):
        raise UserError(f"--exporter {exporter}: choose dynamo or torchscript")
    options = pipeline.FinetuneOptions(finetune_epochs, batch_size, lr, seed, temperature, alpha,
                                       progress=progress and json_out != "-", bn_images=bn_images,
                                       images=finetune_images).validate()
    console = common.console(json_out)
    base = {"criterion": criterion, "normalize": normalize, "equalization": equalization,
            "granularity": granularity, "min_filters": min_filters, "allocation": allocation}
    if sweep is not None:
        if ratio is not None or flops is not None or threshold is not None:
            raise UserError("--sweep takes its own ratios; drop --ratio/--flops/--threshold")
        if allocation == "latency" or speedup is not None or latency_ms is not None:
            raise UserError("--sweep prunes at fixed ratios; drop --speedup/--latency-ms/--allocation latency "
                            "(use --allocation uniform or global)")
        report = prune_sweep.run_sweep(model, out, prune_sweep.parse_levels(sweep), base, options, teacher=teacher,
                                       data=data, say=_say(console), latency_rounds=latency_rounds,
                                       latency_duration_s=latency_duration, latency_threads=latency_threads,
                                       exporter=exporter)
        _print_sweep(console, report)
    else:
        from edgeresnet.compress.allocation import parse_grid

        settings = PruneSettings(ratio=ratio, flops=flops, threshold=threshold, speedup=speedup,
                                 latency_ms=latency_ms, latency_backend=latency_backend,
                                 latency_table=None if latency_table is None else str(latency_table),
                                 latency_threads=latency_threads, width_grid=parse_grid(width_grid),
                                 table_duration_s=table_duration, latency_rounds=latency_rounds,
                                 latency_duration_s=latency_duration, **base)
        report = pipeline.run_prune(model, out, settings, options, teacher=teacher, data=data, say=_say(console),
                                    exporter=exporter)
        _print_prune(console, report)
    emit_json(report, json_out)


def _print_prune(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    acc = r["accuracy"]
    table = Table(title=f"prune {Path(r['source']).name} -> {Path(r['out']).name}")
    for col in ("", "before", "after", "kept"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("parameters", f"{r['params']['before'] / 1e6:.3f} M", f"{r['params']['after'] / 1e6:.3f} M",
                  f"{r['params']['kept']:.1%}")
    table.add_row(f"MACs at {r['image_size']}px", f"{r['macs']['before'] / 1e9:.4f} G",
                  f"{r['macs']['after'] / 1e9:.4f} G", f"{r['macs']['kept']:.1%}")
    onnx = r["onnx_bytes"]
    table.add_row("ONNX size", _mb(onnx["before"]), _mb(onnx["after"]), f"{onnx['after'] / onnx['before']:.1%}")
    table.add_row(f"top-1 % ({r['test_images']} test)", f"{acc['before']:.2f}", f"{acc['after']:.2f}",
                  f"{-acc['drop']:+.2f} pt")
    console.print(table)
    if "paired" in acc:  # McNemar's test, unpruned vs pruned on the same test images
        console.print(f"test: {acc['paired']['summary']}", highlight=False)
    ft = r["finetune"]
    bn = (f"{acc['pruned_raw']:.2f} % as cut, {acc['pruned_no_finetune']:.2f} % with BatchNorm re-estimated on "
          f"{r['bn_recalibration_images']} images" if r["bn_recalibration_images"] else f"{acc['pruned_raw']:.2f} %")
    console.print(f"right after pruning: {bn}", highlight=False)
    if ft.get("epochs"):
        kd = ft.get("kd")
        console.print(f"fine-tuned {ft['epochs']} epochs "
                      + (f"with KD from {r['teacher']} (T={kd['temperature']}, alpha={kd['alpha']})" if kd else
                         "with cross-entropy only"), highlight=False)
    else:
        console.print(f"no fine-tune (pass --finetune-epochs N to recover accuracy); ratio used: {r['ratio_used']}",
                      highlight=False)
    groups = Table(title="kept channels per coupled group (first conv named; all convs of a group keep the same)")
    for col in ("group", "convs", "channels", "kept"):
        groups.add_column(col, justify="right" if col in ("channels", "kept") else "left")
    for g in r["groups"]:
        groups.add_row(g["producers"][0], str(len(g["producers"])), str(g["channels"]), str(g["kept"]))
    console.print(groups)
    lat = r.get("latency")
    if lat:
        m = lat["measured"]
        console.print(f"latency on {lat['backend']} (batch 1, median, interleaved): {m['unpruned']['median_ms']:.3f} "
                      f"-> {m['pruned']['median_ms']:.3f} ms, measured speedup x{m['speedup']:.2f} (predicted "
                      f"x{lat['predicted_speedup']:.2f}, target x{lat['target_speedup']:.2f}: "
                      f"{'met' if lat['target_met'] else 'NOT met'}); table {lat['table']['path']} "
                      f"({lat['table']['timed_now']} shapes timed now, {lat['table']['reused']} reused)",
                      highlight=False)


def _print_sweep(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"pruning sweep of {Path(r['source']).name} ({r['settings']['finetune_epochs']} fine-tune "
                        f"epochs each; ONNX Runtime CPU batch 1)")
    for col in ("ratio", "params M", "GMACs", "ONNX MB", "top-1 %", "drop pt", "latency ms", "speed-up", "Pareto"):
        table.add_column(col, justify="right")
    for row in r["rows"]:
        table.add_row("orig" if row["ratio"] == 0 else f"{row['ratio']:.2f}", f"{row['params'] / 1e6:.3f}",
                      f"{row['gmacs']:.4f}", f"{row['onnx_bytes'] / 1e6:.2f}", f"{row['top1']:.2f}",
                      f"{row['drop']:+.2f}", f"{row['latency_ms']:.3f}", f"x{row['speedup']:.2f}",
                      "*" if row["pareto"] else "")
    console.print(table)
    console.print(f"wrote {r['files']['table']}, {r['files']['plot']}, {r['files']['json']}", highlight=False)


def distill_cmd(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher checkpoint (.pt), e.g. a ResNet-50."),
    student: str = typer.Option(..., "--student", help="Student: a checkpoint (.pt, e.g. a pruned model) or an "
                                "architecture name (resnet18, resnet50) for a fresh one."),
    out: Path = typer.Option(..., "--out", help="Distilled student checkpoint (.pt)."),
    temperature: float = typer.Option(4.0, "--temperature", help="Softening temperature T (the loss is "
                                      "scaled by T^2)."),
    alpha: float = typer.Option(0.7, "--alpha", help="Weight of the teacher (KL) term; 1 - alpha on the labels."),
    feature_loss: bool = typer.Option(False, "--feature-loss/--no-feature-loss", help="Also match stage outputs "
                                      "(layer1..4), with learned 1x1 adapters where widths differ."),
    feature_weight: float = typer.Option(1.0, "--feature-weight", help="Weight of the feature loss."),
    epochs: int = typer.Option(5, "--epochs", help="Training epochs (the student-alone baseline gets the same)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the training recipe's for a "
                                       "fresh student, 0.01 without warm-up for a checkpoint student)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also train the student without KD, same "
                                  "budget and initial weights, for the side-by-side."),
    data: Optional[str] = typer.Option(None, "--data", help="'digits', 'fashion-mnist', an IDX or ImageFolder dir (default: the teacher's)."),
    seed: int = typer.Option(0, "--seed"),
    json_out: JsonOut = None,
) -> None:
    """Knowledge distillation: teacher -> student, reported beside the student trained alone."""
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.compress import pipeline
    from edgeresnet.compress.distill import DistillSettings

    check_json_dest(json_out)  # a --json PATH that cannot be written fails before the work

    settings = DistillSettings(temperature, alpha, feature_loss, feature_weight)
    console = common.console(json_out)
    report = pipeline.run_distill(teacher, student, out, settings, epochs=epochs, batch_size=batch_size, lr=lr,
                                  seed=seed, data=data, baseline=baseline, progress=json_out != "-",
                                  say=_say(console))
    _print_distill(console, report)
    emit_json(report, json_out)


def _print_distill(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"distill -> {Path(r['out']).name} ({r['settings']['epochs']} epochs, {r['test_images']} "
                        f"test images)")
    for col in ("model", "arch", "params M", "GMACs", "top-1 %"):
        table.add_column(col, justify="left" if col in ("model", "arch") else "right")
    t, s = r["teacher"], r["student"]
    table.add_row("teacher", t["arch"], f"{t['params'] / 1e6:.3f}", f"{t['gmacs']:.4f}", f"{t['top1']:.2f}")
    if "student_alone" in r:
        table.add_row("student alone (no KD)", s["arch"], f"{s['params'] / 1e6:.3f}", f"{s['gmacs']:.4f}",
                      f"{r['student_alone']['top1']:.2f}")
    table.add_row("student distilled", s["arch"], f"{s['params'] / 1e6:.3f}", f"{s['gmacs']:.4f}",
                  f"{r['distilled']['top1']:.2f}")
    console.print(table)
    if "kd_gain" in r:
        console.print(f"KD gain over the student alone: {r['kd_gain']:+.2f} pt", highlight=False)
