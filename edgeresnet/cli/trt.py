"""``edgeresnet targets list|show`` and ``edgeresnet build``: plan, emit trtexec, build TensorRT engines.

The build command reads the ONNX facts, plans with the target's (or the installed) TensorRT release,
prints the plan, and then does what was asked: ``--emit-trtexec`` writes the equivalent trtexec command
and a script for the board, ``--deploy-configs`` writes DeepStream/Triton configs, and without
``--dry-run`` the engine is built through ``edgeresnet.trt.adapter`` (the only code touching TensorRT).
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgeresnet.cli import common
from edgeresnet.cli.common import JsonOut, OutDir

targets_app = typer.Typer(name="targets", help="Deployment targets: boards and GPU classes.", no_args_is_help=True)


# -- targets -------------------------------------------------------------------------------------


def targets_list(
    json_out: str | None = typer.Option(None, "--json", help="Write the targets as JSON to PATH ('-' = stdout)."),
) -> None:
    """List every target with its software stack and GPU capabilities."""
    from rich.table import Table

    from edgeresnet.artifacts import emit_json
    from edgeresnet.trt.targets import list_targets

    targets = list_targets()
    if json_out == "-":
        emit_json([t.to_dict() for t in targets], "-")
        return
    table = Table(title="edgeresnet targets")
    table.add_column("name", no_wrap=True)
    for column in ("kind", "TensorRT", "SM", "fast", "DLA", "opset", "Python", "install"):
        table.add_column(column)
    for t in targets:
        stack = "-" if not t.tensorrt else t.tensorrt + (f" (JP {t.jetpack})" if t.jetpack else "")
        precisions = "+".join(p for p, ok in (("fp16", t.fp16), ("int8", t.int8)) if ok) or "fp32"
        table.add_row(t.name, t.kind, stack, t.compute_capability or "-", precisions, str(t.dla_cores),
                      str(t.max_onnx_opset or "-"), t.python, t.install_path)
    common.console().print(table)
    emit_json([t.to_dict() for t in targets], json_out)


def targets_show(
    name: str = typer.Argument(..., help="Target name (see 'edgeresnet targets list') or a YAML path."),
    json_out: str | None = typer.Option(None, "--json", help="Write the target as JSON to PATH ('-' = stdout)."),
) -> None:
    """Show one target: stack, capabilities, reference latencies with sources, notes."""
    from rich.table import Table

    from edgeresnet.artifacts import emit_json
    from edgeresnet.trt.targets import load_target

    target = load_target(name, option="NAME")
    if json_out == "-":
        emit_json(target.to_dict(), "-")
        return
    console = common.console()
    table = Table(title=f"{target.name}: {target.description}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key in ("kind", "gpu", "jetpack", "tensorrt", "cuda", "compute_capability", "fp16", "int8", "dla_cores",
                "max_onnx_opset", "python", "power_mode", "backend", "install_path"):
        table.add_row(key, str(getattr(target, key)))
    if target.kind != "cpu":
        table.add_row("plans for", f"TensorRT {target.default_trt_version} (override with --trt-version)")
    for stack in target.alt_stacks:
        table.add_row("also", f"JetPack {stack.jetpack}: TensorRT {stack.tensorrt}, CUDA {stack.cuda}, Python {stack.python}")
    console.print(table)
    if target.reference_latencies:
        refs = Table(title="reference latencies (published; not ours)")
        for column in ("model", "metric", "value", "batch", "precision", "input", "source"):
            refs.add_column(column)
        for r in target.reference_latencies:
            refs.add_row(r.model, r.metric, f"{r.value:g} {r.unit}", str(r.batch), r.precision, r.input or "-",
                         r.source + (f" [{r.stack}]" if r.stack else ""))
        console.print(refs)
    else:
        console.print("reference latencies: none published that we could source")
    for note in target.notes:
        console.print(f"note: {note}", highlight=False)
    emit_json(target.to_dict(), json_out)


# -- build ---------------------------------------------------------------------------------------


def build(
    onnx: Path = typer.Argument(..., help="The ONNX model (from edgeresnet export)."),
    target_name: str = typer.Option(..., "--target", help="Target name (edgeresnet targets list) or YAML path."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | int8 | best (fp16+int8 where allowed)."),
    batch: str = typer.Option("1", "--batch", help="Batch size N, or MIN:OPT:MAX for a dynamic profile."),
    dla: int | None = typer.Option(None, "--dla", help="Run on DLA core N (Jetson Xavier/Orin; static shapes)."),
    gpu_fallback: bool = typer.Option(False, "--gpu-fallback", help="Let layers DLA cannot run fall back to the GPU."),
    workspace: int | None = typer.Option(None, "--workspace", help="Builder workspace limit in MiB."),
    timing_cache: str | None = typer.Option(None, "--timing-cache", help="Timing cache file, or a directory (file keyed by GPU + TensorRT)."),
    calib_cache: Path | None = typer.Option(None, "--calib-cache", help="INT8 calibration cache (from edgeresnet calibrate)."),
    calib_data: str | None = typer.Option(None, "--calib-data", help="Calibration images: 'digits', an ImageFolder, or .npy/.npz."),
    trt_version: str | None = typer.Option(None, "--trt-version", help="Plan for this TensorRT version when it is not installed (default: the target's)."),
    builder: str = typer.Option("auto", "--builder", help="auto | tensorrt | rtx (the CPU-only TensorRT-RTX builder)."),
    typing_mode: str = typer.Option("auto", "--typing", help="auto | strong | weak network typing."),
    opt_level: int | None = typer.Option(None, "--opt-level", help="Builder optimization level 0-5 (TensorRT >= 8.6)."),
    hardware_compat: str | None = typer.Option(None, "--hardware-compat", help="AMPERE_PLUS or SAME_COMPUTE_CAPABILITY (desktop only)."),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="Build a version-compatible engine (TensorRT >= 8.6)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and print only; build nothing."),
    emit_trtexec: bool = typer.Option(False, "--emit-trtexec", help="Write the equivalent trtexec command and build script into --out."),
    deploy_configs: bool = typer.Option(False, "--deploy-configs", help="Write DeepStream nvinfer and Triton configs into --out."),
    name: str | None = typer.Option(None, "--name", help="Base name of the outputs (default: the ONNX file's stem)."),
    out: OutDir = ...,
    json_out: JsonOut = None,
) -> None:
    """Plan (and build) a TensorRT engine for a target; optionally emit trtexec and deployment configs."""
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.trt.build import BuildSettings
    from edgeresnet.trt.build import build as build_stage

    check_json_dest(json_out)  # a --json PATH that cannot be written fails before the work
    settings = BuildSettings(
        onnx=onnx, target=target_name, out=out, precision=precision, batch=batch, dla=dla, gpu_fallback=gpu_fallback,
        workspace=workspace, timing_cache=timing_cache, calib_cache=calib_cache, calib_data=calib_data,
        trt_version=trt_version, builder=builder, typing=typing_mode, opt_level=opt_level,
        hardware_compat=hardware_compat, version_compatible=version_compatible, dry_run=dry_run,
        emit_trtexec=emit_trtexec, deploy_configs=deploy_configs, name=name,
    )
    result = build_stage(settings, console=common.console(json_out))
    emit_json(result.to_dict(), json_out)


def register(app: typer.Typer) -> None:
    """Add ``build`` and the ``targets`` sub-app."""
    app.command("build")(build)
    targets_app.command("list")(targets_list)
    targets_app.command("show")(targets_show)
    app.add_typer(targets_app, name="targets")
