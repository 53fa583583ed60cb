"""The sidecar manifest of a TensorRT engine: everything needed to decide, before deserializing, whether
this engine can run here, and to rebuild it if not.

Written by ``edgeresnet build`` (``model.engine.json``), read back by the TensorRT runner. The
``engine`` section comes from the validated plan; ``environment`` is what the build machine reported
(TensorRT/CUDA/driver versions, GPU name and compute capability, JetPack/L4T and power mode on Jetson).
Probing is best effort and never fails a build: an unknown value is ``None``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgeresnet.artifacts import build_manifest
from edgeresnet.artifacts.manifests import ENGINE_FORMAT, ENGINE_FORMAT_VERSION, ENGINE_KIND, EngineManifest
from edgeresnet.errors import UserError
from edgeresnet.trt.features import format_version

TEGRA_RELEASE = Path("/etc/nv_tegra_release")


def _dims(shape: Any) -> list[int]:
    return [-1 if d is None else int(d) for d in shape]


def engine_section(
    plan: Any, *, target: Any = None, onnx_info: Any = None, engine_file: str = "model.engine",
    calib_cache: str | None = None,
) -> dict[str, Any]:
    """What the engine is, from its plan: also what deployment configs are generated from."""
    spec = plan.spec
    profile = plan.profile
    static = [int(d) for d in spec.input_shape] if all(d is not None for d in spec.input_shape) else None
    if profile is None and static is not None:
        profile = {"input": spec.input_name, "min": static, "opt": static, "max": static}
    timing = plan.find("timing_cache")
    return {
        "format": ENGINE_FORMAT,
        "format_version": ENGINE_FORMAT_VERSION,
        "file": engine_file,
        "builder": "tensorrt-rtx" if plan.features.flavor == "rtx" else "tensorrt",
        "tensorrt_version": format_version(plan.features.version),
        "target": getattr(target, "name", None),
        "target_kind": getattr(target, "kind", None),
        "precision": spec.precision,
        "precision_label": plan.precision_label,
        "precisions": list(plan.precisions),
        "strongly_typed": plan.strongly_typed,
        "int8_mode": plan.int8_mode,
        "flags": list(plan.flags),
        "input": {
            "name": spec.input_name,
            "shape": _dims(spec.input_shape),
            "dtype": getattr(onnx_info, "input_dtype", "float32"),
        },
        "outputs": list(getattr(onnx_info, "output_names", ()) or ["logits"]),
        "dynamic_batch": spec.input_shape[0] is None,
        "profiles": [profile] if profile else [],
        "dla_core": plan.dla_core,
        "gpu_fallback": plan.gpu_fallback,
        "timing_cache": None if timing is None else {"path": timing.args["path"], "key": timing.args["key"]},
        "calibration_cache": Path(calib_cache).name if calib_cache else None,
        "onnx_opset": spec.onnx_opset,
        "build_options": {
            "workspace_mib": spec.workspace_mib,
            "typing": spec.typing,
            "builder_optimization_level": spec.builder_optimization_level,
            "hardware_compatibility": spec.hardware_compatibility,
            "version_compatible": spec.version_compatible,
            "profiling_verbosity": "DETAILED",
        },
        "steps": [s.to_dict() for s in plan.steps],
        "warnings": list(plan.warnings),
    }


def rebuild_command(spec: Any, target: str, out: str | None = None, trt_version: str | None = None) -> str:
    """The ``edgeresnet build`` line that reproduces ``spec`` (shown when an engine is refused)."""
    lo, opt, hi = spec.batch
    args = ["edgeresnet", "build", spec.onnx, "--target", target, "--precision", spec.precision,
            "--batch", str(lo) if lo == opt == hi else f"{lo}:{opt}:{hi}"]
    if spec.dla_core is not None:
        args += ["--dla", str(spec.dla_core)]
        if spec.gpu_fallback:
            args.append("--gpu-fallback")
    if spec.workspace_mib is not None:
        args += ["--workspace", str(spec.workspace_mib)]
    if spec.calib_cache:
        args += ["--calib-cache", spec.calib_cache]
    if spec.calib_data:
        args += ["--calib-data", spec.calib_data]
    if spec.timing_cache:
        args += ["--timing-cache", spec.timing_cache]
    if trt_version:
        args += ["--trt-version", trt_version]
    args += ["--out", out or "engines"]
    return shlex.join(args)


# -- environment probing (thin, guarded) -----------------------------------------------------------


def parse_nv_tegra_release(text: str) -> str | None:
    """``# R35 (release), REVISION: 4.1, ...`` -> ``"35.4.1"`` (the L4T version)."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def parse_nvpmodel_query(text: str) -> dict[str, Any] | None:
    """``nvpmodel -q`` prints ``NV Power Mode: MAXN`` and the mode id on the next line."""
    match = re.search(r"NV Power Mode:\s*(\S+)\s*(?:\n\s*(\d+))?", text)
    if not match:
        return None
    return {"name": match.group(1), "id": int(match.group(2)) if match.group(2) else None}


def _cuda_info() -> dict[str, Any]:
    """CUDA runtime/driver versions and device 0 via cuda-python when it is installed; else Nones."""
    info: dict[str, Any] = {"cuda_runtime": None, "cuda_driver": None, "cuda_source": None, "gpu": None}
    try:
        try:
            from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        except ImportError:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
    except Exception:
        return info
    try:
        def _ver(v: int) -> str:
            return f"{v // 1000}.{(v % 1000) // 10}"

        info["cuda_source"] = "cuda-python " + str(getattr(cudart, "__name__", "cudart"))
        err, runtime = cudart.cudaRuntimeGetVersion()
        if int(err) == 0:
            info["cuda_runtime"] = _ver(int(runtime))
        err, driver = cudart.cudaDriverGetVersion()
        if int(err) == 0 and int(driver) > 0:
            info["cuda_driver"] = _ver(int(driver))
        err, count = cudart.cudaGetDeviceCount()
        if int(err) == 0 and int(count) > 0:
            err, props = cudart.cudaGetDeviceProperties(0)
            if int(err) == 0:
                name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
                info["gpu"] = {"name": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}
    except Exception:  # a broken driver must not break a manifest
        pass
    return info


def collect_environment(trt_module: Any = None, target: Any = None) -> dict[str, Any]:
    """Versions and device facts of the build machine (best effort)."""
    env: dict[str, Any] = {"tensorrt": getattr(trt_module, "__version__", None) if trt_module is not None else None}
    env.update(_cuda_info())
    jetson = None
    if TEGRA_RELEASE.is_file() or (target is not None and getattr(target, "is_jetson", False)):
        l4t = None
        try:
            l4t = parse_nv_tegra_release(TEGRA_RELEASE.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            pass
        power = None
        if shutil.which("nvpmodel"):
            try:
                out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5, check=False)
                power = parse_nvpmodel_query(out.stdout + out.stderr)
            except (OSError, subprocess.SubprocessError):
                power = None
        jetson = {
            "jetpack": getattr(target, "jetpack", None),
            "l4t": l4t,
            "power_mode": power,
            "recommended_power_mode": getattr(target, "power_mode", None),
        }
    env["jetson"] = jetson
    return env


# -- writing and reading ---------------------------------------------------------------------------


def build_engine_manifest(
    engine_path: str | Path, *, plan: Any, target: Any, onnx_path: str | Path, command: str,
    environment: dict[str, Any] | None = None, onnx_info: Any = None, calib_cache: str | None = None,
    preprocess: dict[str, Any] | None = None, rebuild: str | None = None, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full manifest dict for ``engine_path`` (write it with ``artifacts.write_manifest``)."""
    section = engine_section(plan, target=target, onnx_info=onnx_info, engine_file=Path(engine_path).name,
                             calib_cache=calib_cache)
    environment = environment or {}
    if environment.get("tensorrt"):
        section["tensorrt_version"] = str(environment["tensorrt"])
    gpu = environment.get("gpu") or {"name": getattr(target, "gpu_name", None),
                                     "compute_capability": getattr(target, "compute_capability", None),
                                     "source": "target file"}
    inputs: dict[str, Any] = {"onnx": onnx_path}
    if calib_cache and Path(calib_cache).is_file():
        inputs["calibration_cache"] = calib_cache
    payload = {
        "engine": section,
        "environment": environment,
        "gpu": gpu,
        "jetson": environment.get("jetson"),
        "preprocess": preprocess,
        "class_names": list((preprocess or {}).get("class_names", []) or []),
        "rebuild_command": rebuild,
    }
    payload.update(extra or {})
    return build_manifest(ENGINE_KIND, engine_path, command=command, inputs=inputs, settings=plan.spec.to_dict(),
                          extra=payload)


def read_engine_manifest(engine_path: str | Path) -> dict[str, Any]:
    """The manifest beside an engine, checked to be one of ours; UserError otherwise."""
    typed = EngineManifest.require(engine_path)
    if not typed.is_edgeresnet_engine:
        raise UserError(f"{engine_path}: its manifest is not an edgeresnet engine manifest; rebuild with edgeresnet build")
    if typed.engine.format_version > ENGINE_FORMAT_VERSION:
        raise UserError(f"{engine_path}: manifest format {typed.engine.format_version} is newer than this edgeresnet; "
                        "upgrade it")
    return typed.to_dict()
