"""A build plan as the equivalent ``trtexec`` command, and a small POSIX script for the board.

For boards where our package cannot run (Nano/TX2: Python 3.6 + TensorRT 8.2; Xavier: Python 3.8 + 8.5)
the same validated plan is spelled as trtexec flags of *that* release. Flag spellings per version, from
trtexec's ``sampleOptions.cpp`` (release/8.2 and 8.6 branches) and NVIDIA's "Migrating trtexec Usage from
TensorRT 8.x to 10.x" page:

* workspace: ``--workspace=N`` (MiB) before 8.4; ``--memPoolSize=workspace:N`` (MiB) from 8.4; 10.x
  documents base-2 suffixes, so ``workspace:NM`` there;
* ``--explicitBatch``: accepted with "no effect" in 8.x (ONNX is always explicit batch), removed in 10
  ("Unknown argument: --explicitBatch", jetson_benchmarks issue 9);
* build only: ``--buildOnly`` before 8.6, ``--skipInference`` from 8.6 (``--buildOnly`` deprecated there);
* ``--stronglyTyped`` where the plan is strongly typed (a no-op that is still accepted on 11.x);
* DLA: ``--useDLACore=N [--allowGPUFallback]``; trtexec then applies PREFER_PRECISION_CONSTRAINTS,
  DIRECT_IO and FP16 itself (sampleEngines.cpp), which is exactly what the plan's extra flags say.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.trt.features import format_version

JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
_HW_COMPAT = {"AMPERE_PLUS": "ampere+", "SAME_COMPUTE_CAPABILITY": "sameComputeCapability"}


@dataclass(frozen=True)
class TrtexecFiles:
    """File names the command refers to (relative names keep a bundle relocatable)."""

    onnx: str
    engine: str
    layer_info: str
    timing_cache: str | None = None
    calib_cache: str | None = None

    @classmethod
    def for_plan(cls, plan: Any, name: str) -> TrtexecFiles:
        """The bundle's names: the plan's ONNX and caches by base name (copied beside the script), the engine and
        its layer report named after ``name``."""
        timing, calib = plan.find("timing_cache"), plan.find("calibrator")
        return cls(
            onnx=Path(plan.spec.onnx).name, engine=f"{name}.engine",
            layer_info=f"{name}.layers.json",
            timing_cache=Path(timing.args["path"]).name if timing else None,
            calib_cache=Path(calib.args["cache"]).name if calib and calib.args.get("cache_exists") else None,
        )


def _dims(values: list[int]) -> str:
    return "x".join(str(int(v)) for v in values)


def _spelled(plan: Any, op: str, spell: Callable[[dict[str, Any]], list[str]]) -> list[str]:
    """The trtexec arguments ``spell`` makes of the plan's ``op`` step, none when the plan has no such step."""
    step = plan.find(op)
    return spell(step.args) if step is not None else []


def _dla_core(args: dict[str, Any]) -> list[str]:
    return [f"--useDLACore={int(args['core'])}"]


def _workspace(features: Any) -> Callable[[dict[str, Any]], list[str]]:
    """``--workspace=N`` (MiB) before 8.4, ``--memPoolSize=workspace:N``, with the ``M`` suffix 10.x documents."""
    def spell(args: dict[str, Any]) -> list[str]:
        mib = max(1, int(args["bytes"]) >> 20)
        if not features.trtexec_mem_pool_size:
            return [f"--workspace={mib}"]
        return [f"--memPoolSize=workspace:{mib}M" if features.trtexec_mem_pool_suffix else f"--memPoolSize=workspace:{mib}"]

    return spell


def build_args(plan: Any, files: TrtexecFiles, trtexec: str = "trtexec") -> list[str]:
    """The trtexec argv (first element ``trtexec``) that builds what ``plan`` describes."""
    f = plan.features
    if f.flavor != "tensorrt":
        raise UserError("--emit-trtexec: TensorRT-RTX has no trtexec build path here; plan for a TensorRT target")
    flags = plan.flags
    calib = plan.find("calibrator")
    if calib is not None and not (calib.args.get("cache_exists") and (files.calib_cache or calib.args.get("cache"))):
        raise UserError(
            "--emit-trtexec: trtexec cannot calibrate (it reads a cache only); make the cache first with "
            "edgeresnet calibrate and pass --calib-cache PATH"
        )
    args = [trtexec, f"--onnx={files.onnx}", f"--saveEngine={files.engine}"]
    args += ["--explicitBatch"] if f.trtexec_explicit_batch else []
    args += ["--stronglyTyped"] if plan.strongly_typed else []
    args += [option for flag, option in (("FP16", "--fp16"), ("INT8", "--int8")) if flag in flags]
    args += _spelled(plan, "calibrator", lambda a: [f"--calib={files.calib_cache or a['cache']}"])
    args += _spelled(plan, "dla", _dla_core)
    args += ["--allowGPUFallback"] if "GPU_FALLBACK" in flags else []
    args += _spelled(plan, "profile", lambda a: [f"--{kind}Shapes={a['input']}:{_dims(a[kind])}"
                                                 for kind in ("min", "opt", "max")])
    args += _spelled(plan, "memory_pool", _workspace(f)) + _spelled(plan, "max_workspace", _workspace(f))
    args += _spelled(plan, "timing_cache", lambda a: [f"--timingCacheFile={files.timing_cache or a['path']}"])
    args += _spelled(plan, "builder_optimization_level", lambda a: [f"--builderOptimizationLevel={int(a['level'])}"])
    args += _spelled(plan, "hardware_compatibility", lambda a: [f"--hardwareCompatibilityLevel={_HW_COMPAT[a['level']]}"])
    args += ["--versionCompatible"] if "VERSION_COMPATIBLE" in flags else []
    args += ["--profilingVerbosity=detailed", f"--exportLayerInfo={files.layer_info}", f.trtexec_build_only_flag]
    return args


def benchmark_args(
    plan: Any, engine: str, times: str, profile_json: str | None = None, trtexec: str = "trtexec",
    warmup_ms: int = 500, duration_s: int = 10, iterations: int = 100,
) -> list[str]:
    """trtexec argv that loads the engine and times it, writing per-query times as JSON for import."""
    args = [trtexec, f"--loadEngine={engine}", *_spelled(plan, "dla", _dla_core)]
    args += _spelled(plan, "profile", lambda a: [f"--shapes={a['input']}:{_dims(a['opt'])}"])
    args += [f"--warmUp={warmup_ms}", f"--duration={duration_s}", f"--iterations={iterations}", f"--exportTimes={times}"]
    if profile_json:
        args += ["--separateProfileRun", f"--exportProfile={profile_json}"]
    return args


def command_line(args: list[str]) -> str:
    return shlex.join(args)


def _sh_args(args: list[str]) -> str:
    """Quote for sh, with the trtexec path left as the variable the script sets."""
    return '"$TRTEXEC" ' + " ".join(shlex.quote(a) for a in args[1:])


def build_script(
    plan: Any, name: str, files: TrtexecFiles, *, target: Any = None, rebuild_hint: str | None = None,
) -> str:
    """A POSIX ``sh`` script: find trtexec, build the engine, then benchmark it with exported times."""
    build = build_args(plan, files)
    times = f"{name}.times.json"
    prof = f"{name}.profile.json"
    bench = benchmark_args(plan, files.engine, times, prof)
    default = JETSON_TRTEXEC if (target is not None and getattr(target, "is_jetson", False)) else "trtexec"
    version = format_version(plan.features.version)
    lines = [
        "#!/bin/sh",
        f"# Build and benchmark {files.engine} with trtexec (TensorRT {version}"
        + (f", target {target.name}" if target is not None else "") + ").",
        "# Generated by edgeresnet from a validated build plan; run it on the device, from this directory.",
    ]
    if target is not None and getattr(target, "power_mode", None):
        lines.append(f"# For comparable numbers set the power mode first: {target.power_mode}")
    if rebuild_hint:
        lines.append(f"# Same plan with the Python package: {rebuild_hint}")
    lines += [
        "set -eu",
        'cd "$(dirname "$0")"',
        f'TRTEXEC="${{TRTEXEC:-{default}}}"',
        'if [ ! -x "$TRTEXEC" ]; then',
        '  if command -v trtexec >/dev/null 2>&1; then',
        '    TRTEXEC="$(command -v trtexec)"',
        "  else",
        f'    echo "error: trtexec not found at $TRTEXEC; install TensorRT (JetPack ships it in {JETSON_TRTEXEC}) '
        'or set TRTEXEC=/path/to/trtexec" >&2',
        "    exit 2",
        "  fi",
        "fi",
        f'for f in {shlex.quote(files.onnx)}'
        + (f" {shlex.quote(files.calib_cache)}" if files.calib_cache else "") + "; do",
        '  if [ ! -f "$f" ]; then echo "error: $f not found next to this script; copy the whole folder" >&2; exit 2; fi',
        "done",
        f'echo "building {files.engine} (log: {name}.build.log)"',
        f"if ! {_sh_args(build)} > {shlex.quote(name + '.build.log')} 2>&1; then",
        f"  tail -n 20 {shlex.quote(name + '.build.log')} >&2",
        f'  echo "error: trtexec build failed; see {name}.build.log" >&2',
        "  exit 1",
        "fi",
        f'if command -v nvpmodel >/dev/null 2>&1; then nvpmodel -q > {shlex.quote(name + ".power.txt")} 2>&1 || true; fi',
        f'echo "benchmarking {files.engine} (log: {name}.bench.log, times: {times})"',
        f"if ! {_sh_args(bench)} > {shlex.quote(name + '.bench.log')} 2>&1; then",
        f"  tail -n 20 {shlex.quote(name + '.bench.log')} >&2",
        f'  echo "error: trtexec benchmark failed; see {name}.bench.log" >&2',
        "  exit 1",
        "fi",
        f'grep -E "Latency|Throughput|GPU Compute Time" {shlex.quote(name + ".bench.log")} || true',
        f'echo "done: {files.engine}, per-query times in {times}, log in {name}.bench.log"',
    ]
    return "\n".join(lines) + "\n"


def script_name(name: str) -> str:
    return f"build_{PurePosixPath(name).name}.sh"
