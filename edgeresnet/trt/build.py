"""The build stage: plan a TensorRT engine for a target, then emit trtexec, deployment configs, or the engine.

``build(BuildSettings(...))`` reads the ONNX facts, picks the TensorRT module and the feature table to plan
with (the installed module's when building, else ``--trt-version`` or the target's), picks the device
(the live GPU's name and SM on a real build), prints the plan, and does what was asked: ``emit_trtexec``
writes the equivalent trtexec command and a script for the board, ``deploy_configs`` writes DeepStream/Triton
configs, and without ``dry_run`` the engine is built through ``edgeresnet.trt.adapter`` (the only code
touching TensorRT) and written with its manifest. ``edgeresnet build`` is this function behind options.
"""

from __future__ import annotations

import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError

RTX_DEFAULT_VERSION = "1.7.1"  # the pinned TensorRT-RTX of the [rtx] extra (pyproject.toml)


@dataclass
class BuildSettings:
    """What ``edgeresnet build`` takes, one field per option (same names, same defaults)."""

    onnx: Path
    target: str
    out: Path
    precision: str = "fp32"
    batch: str = "1"
    dla: int | None = None
    gpu_fallback: bool = False
    workspace: int | None = None
    timing_cache: str | None = None
    calib_cache: Path | None = None
    calib_data: str | None = None
    trt_version: str | None = None
    builder: str = "auto"
    typing: str = "auto"
    opt_level: int | None = None
    hardware_compat: str | None = None
    version_compatible: bool = False
    dry_run: bool = False
    emit_trtexec: bool = False
    deploy_configs: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        self.onnx = Path(self.onnx)
        self.out = Path(self.out)
        if self.calib_cache is not None:
            self.calib_cache = Path(self.calib_cache)


@dataclass
class BuildResult:
    """The plan and what was written; ``to_dict()`` is the ``--json`` document."""

    target: str
    onnx: str
    plan: dict[str, Any]
    rebuild_command: str
    fp16_conversion: dict[str, Any] | None = None
    files: dict[str, Any] = field(default_factory=dict)
    built: bool = False
    trtexec: dict[str, Any] | None = None
    engine_sha256: str | None = None

    @property
    def engine(self) -> Path | None:
        """The engine file, when one was built."""
        return Path(self.files["engine"]) if "engine" in self.files else None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"target": self.target, "onnx": self.onnx, "plan": self.plan, "files": self.files,
                                  "built": self.built, "rebuild_command": self.rebuild_command,
                                  "fp16_conversion": self.fp16_conversion}
        if self.trtexec is not None:
            result["trtexec"] = self.trtexec
        if self.engine_sha256 is not None:
            result["engine_sha256"] = self.engine_sha256
        return result


def _quiet_console() -> Any:
    from rich.console import Console

    return Console(quiet=True)


def _echo(console: Any, text: str) -> None:
    """One line as it is (a trtexec command is copied and pasted: no wrapping, no markup, no emoji codes)."""
    console.print(text, soft_wrap=True, markup=False, highlight=False, emoji=False)


# -- build helpers -------------------------------------------------------------------------------


def _out_dir(out: Path) -> Path:
    """--out is created with its missing parents; a file in the way or no permission is one line."""
    from edgeresnet.artifacts import make_output_dir

    return make_output_dir(out, "--out")


def _copy_into(src: Path, out: Path) -> str:
    """Copy ``src`` into ``out`` (with its sidecar manifest) unless it is already there; return the name."""
    from edgeresnet.artifacts import atomic_output, manifest_path

    dest = out / src.name
    if dest.resolve() != src.resolve():
        with atomic_output(dest) as tmp:
            shutil.copyfile(src, tmp)
        side = manifest_path(src)
        if side.is_file():
            with atomic_output(manifest_path(dest)) as tmp:
                shutil.copyfile(side, tmp)
    return src.name


def _bundle_calib_cache(plan: Any, out: Path, console: Any) -> str:
    """Copy the calibration cache for trtexec on the device, its header naming the TensorRT that reads it there
    (``calib_cache``); trtexec cannot recalibrate, so a cache of another algorithm is refused."""
    from edgeresnet.artifacts import write_text_atomic
    from edgeresnet.trt.calib_cache import cache_for_release

    step = plan.find("calibrator")
    src = Path(step.args["cache"])
    fitted = cache_for_release(src, step.args.get("kind", "entropy2"), tuple(int(p) for p in plan.features.version[:3]))
    if not fitted.same_algorithm:
        raise UserError(f"--calib-cache {src}: written by the {fitted.cache.algorithm} calibrator but trtexec calibrates "
                        f"with {fitted.algorithm}; make the cache with the matching edgeresnet calibrate --method")
    if not fitted.rewritten:
        return _copy_into(src, out)
    write_text_atomic(out / src.name, fitted.text())  # no sidecar: its sha256 is the original file's
    console.print("note: " + fitted.rewrite_note(src.name, f"{plan.features.version_string} in the bundle"),
                  highlight=False)
    return src.name


def _print_plan(plan: Any, target: Any, info: Any, console: Any) -> None:
    from rich.table import Table

    device = plan.device
    dla = f"DLA core {plan.dla_core}" + (" + GPU fallback" if plan.gpu_fallback else "") if plan.dla_core is not None else "GPU"
    typing_ = "strongly typed" if plan.strongly_typed else "weakly typed"
    int8 = {"explicit": ", INT8 from Q/DQ scales", "implicit": ", INT8 by calibration"}.get(plan.int8_mode or "", "")
    console.print(
        f"[bold]build plan[/bold] {Path(info.path).name} (opset {info.opset}) -> {target.name} "
        f"({device.name}, SM {device.cc_string}) with {plan.features.version_string}: "
        f"{plan.precision_label} ({typing_}{int8}), {dla}", highlight=False,
    )
    table = Table(show_header=True)
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("arguments")
    for i, step in enumerate(plan.steps, 1):
        table.add_row(str(i), step.op, ", ".join(f"{k}={v}" for k, v in step.args.items()))
    console.print(table)
    for warning in plan.warnings:
        console.print(f"warning: {warning}", highlight=False, style="yellow")


def _features(target: Any, builder: str, trt_version: str | None, trt: Any) -> Any:
    """The feature table to plan with: the installed module's when building, else the target's."""
    from edgeresnet.trt.features import TrtFeatures

    if builder == "rtx":
        if target.kind != "desktop":
            raise UserError(f"--builder rtx: TensorRT-RTX builds for desktop RTX GPUs; {target.name} is a {target.kind} "
                            "target (plan for it with --dry-run/--emit-trtexec, or build on the device)")
        if trt is not None:
            from edgeresnet.trt.adapter import trt_version as module_version

            return TrtFeatures.for_rtx(module_version(trt))
        return TrtFeatures.for_rtx(trt_version or RTX_DEFAULT_VERSION)
    if trt is not None:
        from edgeresnet.trt.adapter import features_for, trt_flavor
        from edgeresnet.trt.adapter import trt_version as module_version

        if trt_flavor(trt) == "rtx":
            if target.kind != "desktop":
                raise UserError(f"TensorRT is not installed here (only TensorRT-RTX, which builds desktop targets); "
                                f"plan {target.name} with --dry-run or --emit-trtexec and build on the device")
            return _features(target, "rtx", trt_version, trt)
        installed = ".".join(str(p) for p in module_version(trt))
        try:
            stack = target.resolve_stack(installed)
        except UserError as exc:
            raise UserError(
                f"TensorRT {installed} is installed here but target {target.name} runs TensorRT {target.tensorrt}; "
                "build on the device, or plan for it with --dry-run/--emit-trtexec"
            ) from exc
        return features_for(trt, platform=target.platform, board=target.name, jetpack=stack.jetpack)
    return target.features(trt_version)


def _load_module(builder: str) -> Any:
    from edgeresnet.trt.adapter import load_trt

    try:
        return load_trt(builder)
    except UserError as exc:
        raise UserError(f"{exc}; or plan without it: add --dry-run or --emit-trtexec") from exc


def _module_matches(trt: Any, features: Any) -> bool:
    from edgeresnet.trt.adapter import trt_flavor, trt_version

    return trt_flavor(trt) == features.flavor and tuple(trt_version(trt)[:2]) == tuple(features.version[:2])


def _device_caps(target: Any, environment: dict[str, Any] | None, console: Any) -> Any:
    """The target's capabilities; on a real build the live GPU's name and SM replace the target's."""
    from dataclasses import replace

    from edgeresnet.trt.plan import DeviceCaps

    device = DeviceCaps.from_target(target)
    gpu = (environment or {}).get("gpu")
    if gpu and gpu.get("compute_capability"):
        major, minor = (int(p) for p in str(gpu["compute_capability"]).split("."))
        if (major, minor) != device.compute_capability:
            console.print(
                f"warning: this GPU ({gpu.get('name')}, SM {major}.{minor}) is not target {target.name}'s "
                f"(SM {device.cc_string}); the engine will run only on SM {major}.{minor} GPUs", style="yellow",
                highlight=False)
        device = replace(device, name=str(gpu.get("name") or device.name), compute_capability=(major, minor))
    return device


def _preprocess_contract(info: Any, required: bool) -> Any:
    """The ONNX's preprocessing contract (metadata_props or sidecar manifest), or None / UserError."""
    from edgeresnet.export.onnx_meta import preprocess_of

    preprocess = preprocess_of(info.path, required=False)
    if preprocess is None and info.preprocess_dict():
        from edgeresnet.data.presets import Preprocess

        preprocess = Preprocess.from_dict(info.preprocess_dict())
    if preprocess is None and required:
        raise UserError(f"--deploy-configs: {info.path} has no preprocessing contract (metadata or manifest); "
                        "export it with edgeresnet export")
    return preprocess


def _write_deploy_configs(plan: Any, info: Any, target: Any, out: Path, name: str, onnx_name: str,
                          preprocess: Any, console: Any) -> list[str]:
    from edgeresnet.artifacts import write_text_atomic
    from edgeresnet.trt.deploy import deepstream_config, labels_text, triton_config
    from edgeresnet.trt.engine_manifest import engine_section

    section = engine_section(plan, target=target, onnx_info=info, engine_file=f"{name}.engine",
                             calib_cache=plan.spec.calib_cache)
    ds = deepstream_config(section, preprocess, engine_file=f"{name}.engine", onnx_file=onnx_name)
    tr = triton_config(section, preprocess, model_name=name)
    labels = labels_text(preprocess)
    written = [
        write_text_atomic(out / f"{name}.nvinfer.txt", ds.text),
        write_text_atomic(out / "labels.txt", labels),
    ]
    triton_dir = out / "triton" / name
    (triton_dir / "1").mkdir(parents=True, exist_ok=True)
    written += [write_text_atomic(triton_dir / tr.filename, tr.text), write_text_atomic(triton_dir / "labels.txt", labels)]
    for warning in ds.warnings + tr.warnings:
        console.print(f"warning: {warning}", style="yellow", highlight=False)
    console.print(f"deployment configs: {', '.join(str(p) for p in written)} "
                  f"(copy {name}.engine to {triton_dir / '1' / 'model.plan'} for Triton)", highlight=False)
    return [str(p) for p in written]


def build(settings: BuildSettings | None = None, *, console: Any = None, **options: Any) -> BuildResult:
    """Plan (and build) a TensorRT engine for a target; optionally emit trtexec and deployment configs.

    Takes a ``BuildSettings`` or its fields as keywords (``build(onnx=..., target=..., out=..., dry_run=True)``).
    ``console`` (a rich Console) receives the plan, notes and warnings; by default nothing is printed.
    Input a user can fix raises ``UserError`` before anything is written.
    """
    from edgeresnet.artifacts import write_text_atomic
    from edgeresnet.trt.engine_manifest import collect_environment, rebuild_command
    from edgeresnet.trt.onnx_info import inspect_onnx
    from edgeresnet.trt.plan import BuildSpec, parse_batch, plan_build
    from edgeresnet.trt.targets import load_target
    from edgeresnet.trt.timing_cache import resolve_timing_cache

    s = settings if settings is not None else BuildSettings(**options)
    if settings is not None and options:
        raise TypeError("build() takes a BuildSettings or keyword options, not both")
    console = console if console is not None else _quiet_console()
    onnx, calib_cache, builder, emit_trtexec = s.onnx, s.calib_cache, s.builder, s.emit_trtexec
    if builder not in ("auto", "tensorrt", "rtx"):
        raise UserError(f"--builder {builder!r}: choose auto, tensorrt or rtx")
    target = load_target(s.target)
    if target.kind == "cpu":
        raise UserError(f"--target {target.name}: runs the ONNX with ONNX Runtime on the CPU; there is no engine to "
                        "build (benchmark the .onnx with the ort backend)")
    profile = parse_batch(s.batch)
    if calib_cache is not None and calib_cache.is_dir():
        raise UserError(f"--calib-cache {calib_cache}: is a directory, expected a calibration cache file")
    if calib_cache is not None and calib_cache.is_file():
        from edgeresnet.compress.calibration import read_trt_cache

        read_trt_cache(calib_cache)  # a file that is not a TRT-<version>-<Algorithm> cache is refused here
    info = inspect_onnx(onnx)
    preprocess = _preprocess_contract(info, required=s.deploy_configs)
    base = s.name or onnx.stem
    if not base or "/" in base or base.startswith("."):
        raise UserError(f"--name {base!r}: give a plain file name without directories")

    # Which TensorRT to plan for: the installed one when building, else --trt-version or the target's.
    want_build = not s.dry_run
    trt = None
    if want_build and not emit_trtexec:
        trt = _load_module(builder)
    elif want_build and emit_trtexec:
        from edgeresnet.trt.adapter import load_trt

        try:
            trt = load_trt(builder)
        except UserError:
            trt = None
    if trt is not None and s.trt_version is not None and not emit_trtexec:
        from edgeresnet.trt.adapter import trt_label

        features_wanted = _features(target, builder, s.trt_version, None)
        if not _module_matches(trt, features_wanted):
            raise UserError(f"--trt-version {s.trt_version}: {trt_label(trt)} is installed; drop --trt-version to "
                            "build with it, or add --dry-run/--emit-trtexec to plan for the other release")
    if emit_trtexec or trt is None:
        features = _features(target, builder, s.trt_version, None)
    else:
        features = _features(target, builder, s.trt_version, trt)
    building = trt is not None and _module_matches(trt, features)
    environment = collect_environment(trt, target) if building else None
    device = _device_caps(target, environment if (building and features.flavor == "tensorrt") else None, console)

    out_dir = _out_dir(s.out)
    spec = BuildSpec.from_onnx_info(
        info,
        precision=s.precision,
        batch=profile,
        dla_core=s.dla,
        gpu_fallback=s.gpu_fallback,
        workspace_mib=s.workspace,
        timing_cache=resolve_timing_cache(s.timing_cache, device, features),
        calib_cache=str(calib_cache) if calib_cache is not None else None,
        calib_cache_exists=bool(calib_cache is not None and calib_cache.is_file()),
        calib_data=s.calib_data,
        typing=s.typing,
        builder_optimization_level=s.opt_level,
        hardware_compatibility=s.hardware_compat.upper().replace("+", "_PLUS") if s.hardware_compat else None,
        version_compatible=s.version_compatible,
    )
    if spec.calib_cache and not spec.calib_cache_exists and not s.calib_data:
        raise UserError(f"--calib-cache {calib_cache}: file not found; make it with edgeresnet calibrate or add "
                        "--calib-data")
    from edgeresnet.export.fp16 import fp16_for_build

    # strongly typed builders take FP16 from the graph: an FP32 ONNX is converted (and parity-checked) here
    fp16 = fp16_for_build(spec, features, device, out_dir=out_dir, base=base, write=not s.dry_run or emit_trtexec)
    if fp16 is not None:
        spec, info, onnx = fp16.spec, fp16.info or info, Path(fp16.spec.onnx) if fp16.info else onnx
    plan = plan_build(spec, features, device)
    _print_plan(plan, target, info, console)
    for note in fp16.notes if fp16 is not None else []:
        console.print(f"note: {note}", highlight=False)
    rebuild = rebuild_command(spec, target.name, str(out_dir), s.trt_version)
    result = BuildResult(target=target.name, onnx=str(onnx), plan=plan.to_dict(), rebuild_command=rebuild,
                         fp16_conversion=fp16.record if fp16 is not None else None)

    if emit_trtexec:
        from edgeresnet.trt.trtexec import TrtexecFiles, build_args, build_script, command_line, script_name

        _copy_into(Path(onnx), out_dir)
        if plan.find("calibrator") and spec.calib_cache_exists:
            _bundle_calib_cache(plan, out_dir, console)
        files = TrtexecFiles.for_plan(plan, base)
        args = build_args(plan, files)
        line = command_line(args)
        script = build_script(plan, base, files, target=target, rebuild_hint=rebuild)
        cmd_path = write_text_atomic(out_dir / f"{base}.trtexec.txt", line + "\n")
        # What the engine will be, for whoever imports the trtexec-built engine (its manifest needs the file).
        from edgeresnet.artifacts import write_json_atomic
        from edgeresnet.trt.engine_manifest import engine_section

        plan_json = write_json_atomic(out_dir / f"{base}.buildplan.json", {
            "engine": engine_section(plan, target=target, onnx_info=info, engine_file=files.engine,
                                     calib_cache=spec.calib_cache),
            "trtexec": line, "rebuild_command": rebuild,
            "preprocess": preprocess.to_dict() if preprocess is not None else None,
        })
        script_path = write_text_atomic(out_dir / script_name(base), script)
        script_path.chmod(script_path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        _echo(console, "trtexec command:")
        _echo(console, line)
        console.print(f"wrote {cmd_path} and {script_path} (copy {out_dir} to the device and run sh {script_path.name})",
                      highlight=False)
        result.trtexec = {"command": line, "argv": args, "script": str(script_path), "command_file": str(cmd_path),
                          "build_plan": str(plan_json)}

    if s.deploy_configs:
        result.files["deploy"] = _write_deploy_configs(plan, info, target, out_dir, base, Path(onnx).name,
                                                       preprocess, console)

    if not s.dry_run:
        if not building:
            if trt is None:
                console.print("not built: TensorRT is not installed here; the trtexec script builds it on the device",
                              highlight=False)
            else:
                from edgeresnet.trt.adapter import trt_label

                console.print(f"not built: {trt_label(trt)} is installed but the plan is for "
                              f"{features.version_string}; run the script on the device", highlight=False)
        else:
            built = _build_engine(trt, plan, target, info, out_dir, base, environment or {}, rebuild, preprocess,
                                  console)
            result.built = True
            result.engine_sha256 = built["engine_sha256"]
            result.files.update(built["files"])
    return result

def _build_engine(trt: Any, plan: Any, target: Any, info: Any, out: Path, base: str, environment: dict[str, Any],
                  rebuild: str, preprocess: Any, console: Any) -> dict[str, Any]:
    """Build with the adapter, write the engine atomically, then its manifest (and layer info if a GPU is here)."""
    from edgeresnet.artifacts import atomic_output, write_json_atomic, write_manifest
    from edgeresnet.trt.adapter import make_logger, run_build, trt_label
    from edgeresnet.trt.engine_manifest import build_engine_manifest

    logger = make_logger(trt, "WARNING")
    with console.status(f"building {base}.engine with {trt_label(trt)} ..."):
        state = run_build(trt, plan, logger)
    data = state.serialized
    engine_path = out / f"{base}.engine"
    with atomic_output(engine_path) as tmp:  # the engine first: no cache problem after this can lose it
        tmp.write_bytes(data)
    cache_problem = state.save_timing_cache()
    for note in state.notes:
        console.print(f"note: {note}", highlight=False)
    for warning in state.warnings + ([cache_problem] if cache_problem else []):
        console.print(f"warning: {warning}", style="yellow", highlight=False)
    files: dict[str, str] = {"engine": str(engine_path)}
    layers = None
    if environment.get("gpu") and plan.features.flavor == "tensorrt":
        try:
            from edgeresnet.trt.adapter import deserialize_engine, inspect_engine

            # a --version-compatible plan embeds a lean runtime: it loads only with engine host code allowed
            engine = deserialize_engine(trt, data, dla_core=plan.dla_core, source=str(engine_path),
                                        host_code_allowed=bool(plan.spec.version_compatible))
            layers = inspect_engine(trt, engine)
            files["layers"] = str(write_json_atomic(out / f"{base}.layers.json", layers))
        except Exception as exc:  # the engine is built; layer info is a bonus
            console.print(f"warning: no layer report ({' '.join(str(exc).split())[:160]})", style="yellow", highlight=False)
    manifest = build_engine_manifest(
        engine_path, plan=plan, target=target, onnx_path=info.path, command="build", environment=environment,
        onnx_info=info, calib_cache=plan.spec.calib_cache, preprocess=preprocess.to_dict() if preprocess else None,
        rebuild=rebuild, extra={"layer_info": files.get("layers"),
                                "build_log": [list(m) for m in getattr(logger, "messages", [])][-50:]},
    )
    files["manifest"] = str(write_manifest(engine_path, manifest))
    console.print(f"built {engine_path} ({len(data) / 1e6:.1f} MB) with {trt_label(trt)}; manifest {files['manifest']}",
                  highlight=False)
    return {"built": True, "files": files, "engine_sha256": manifest["sha256"]}


