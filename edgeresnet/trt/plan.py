"""The engine build as a pure, validated list of steps: every decision that needs no GPU is made here.

``plan_build(spec, features, device)`` turns what the user asked for (``BuildSpec``), what the TensorRT
release can do (``TrtFeatures``) and what the device has (``DeviceCaps``) into a ``BuildPlan`` or one
UserError. The adapter (``edgeresnet/trt/adapter/``) maps each step to TensorRT calls by name; the
trtexec emitter maps the same steps to command-line flags. Neither decides anything. The step ops, their
arguments and the ``BuildPlan`` they form are described in ``plan_steps.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeresnet.errors import UserError
from edgeresnet.trt.features import TrtFeatures, format_version
from edgeresnet.trt.onnx_info import OnnxInfo
from edgeresnet.trt.plan_steps import BuildPlan, Step
from edgeresnet.trt.timing_cache import timing_cache_key

if TYPE_CHECKING:  # for the annotation only: edgeresnet.trt.targets is imported by its callers
    from edgeresnet.trt.targets import Target


PRECISIONS = ("fp32", "fp16", "int8", "best")
TYPINGS = ("auto", "strong", "weak")
CALIBRATORS = ("entropy2", "minmax")
DLA_MAX_BATCH = 4096  # "max batch 4096" (TensorRT docs, inference-library/dla-layer-restrictions.html)


@dataclass(frozen=True)
class DeviceCaps:
    """What the device can do, from the target file or the live GPU."""

    name: str
    compute_capability: tuple[int, int] | None
    fp16: bool = True
    int8: bool = True
    dla_cores: int = 0
    is_jetson: bool = False

    @classmethod
    def from_target(cls, target: Target) -> DeviceCaps:
        cc = None
        if getattr(target, "compute_capability", None):
            major, minor = str(target.compute_capability).split(".")
            cc = (int(major), int(minor))
        return cls(
            name=target.gpu_name,
            compute_capability=cc,
            fp16=bool(target.fp16),
            int8=bool(target.int8),
            dla_cores=int(target.dla_cores),
            is_jetson=target.kind == "jetson",
        )

    @property
    def cc_string(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}" if self.compute_capability else "none"


@dataclass(frozen=True)
class BuildSpec:
    """What the user asked for, plus the facts read from the ONNX file (see ``from_onnx_info``)."""

    onnx: str
    precision: str = "fp32"
    batch: tuple[int, int, int] = (1, 1, 1)  # (min, opt, max)
    input_name: str = "input"
    input_shape: tuple[int | None, ...] = (None, 3, 224, 224)  # from the ONNX; None = dynamic
    onnx_opset: int | None = None
    onnx_has_qdq: bool = False
    onnx_has_fp16: bool = False
    dla_core: int | None = None
    gpu_fallback: bool = False
    workspace_mib: int | None = None
    timing_cache: str | None = None
    calib_cache: str | None = None
    calib_cache_exists: bool = False
    calib_data: str | None = None
    calibrator: str = "entropy2"
    calib_max_images: int = 512  # "at least 500 for CNN" (NVIDIA Model Optimizer examples/onnx_ptq/README.md)
    typing: str = "auto"  # "auto" | "strong" | "weak"
    builder_optimization_level: int | None = None
    hardware_compatibility: str | None = None
    version_compatible: bool = False

    @classmethod
    def from_onnx_info(cls, info: OnnxInfo, **options: Any) -> BuildSpec:
        """Fill the ONNX facts from an ``OnnxInfo``; everything else from ``options``."""
        return cls(
            onnx=info.path,
            input_name=info.input_name,
            input_shape=tuple(info.input_shape),
            onnx_opset=info.opset,
            onnx_has_qdq=info.has_qdq,
            onnx_has_fp16=info.has_fp16,
            **options,
        )

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        data = dataclasses.asdict(self)
        data["batch"] = list(self.batch)
        data["input_shape"] = list(self.input_shape)
        return data


# -- helpers ---------------------------------------------------------------------------------------


def parse_batch(text: str | int, option: str = "--batch") -> tuple[int, int, int]:
    """``"1"`` -> (1, 1, 1); ``"1:8:32"`` -> (1, 8, 32); validated min <= opt <= max, all >= 1."""
    raw = str(text).strip()
    parts = raw.split(":")
    if len(parts) not in (1, 3) or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise UserError(f"{option} {raw!r}: write one batch size (e.g. 1) or MIN:OPT:MAX (e.g. 1:8:32)")
    values = [int(p) for p in parts]
    if len(values) == 1:
        values *= 3
    lo, opt, hi = values
    if lo < 1:
        raise UserError(f"{option} {raw!r}: batch sizes must be at least 1")
    if not lo <= opt <= hi:
        raise UserError(f"{option} {raw!r}: need MIN <= OPT <= MAX")
    return (lo, opt, hi)


def _shape(batch: int, input_shape: tuple[int | None, ...]) -> list[int]:
    return [batch] + [int(d) for d in input_shape[1:]]  # type: ignore[arg-type]


# -- the planner -----------------------------------------------------------------------------------


def plan_build(spec: BuildSpec, features: TrtFeatures, device: DeviceCaps) -> BuildPlan:
    """Validate ``spec`` against the release and the device and return the steps, or raise UserError."""
    warnings: list[str] = []
    trt_name = features.version_string
    onnx = spec.onnx

    # -- request sanity
    if spec.precision not in PRECISIONS:
        raise UserError(f"--precision {spec.precision!r}: choose one of {', '.join(PRECISIONS)}")
    if spec.typing not in TYPINGS:
        raise UserError(f"--typing {spec.typing!r}: choose one of {', '.join(TYPINGS)}")
    if spec.calibrator not in CALIBRATORS:
        raise UserError(f"calibrator {spec.calibrator!r}: choose one of {', '.join(CALIBRATORS)}")
    lo, opt, hi = spec.batch
    if not 1 <= lo <= opt <= hi:
        raise UserError(f"--batch {lo}:{opt}:{hi}: need 1 <= MIN <= OPT <= MAX")
    if spec.workspace_mib is not None and spec.workspace_mib <= 0:
        raise UserError(f"--workspace {spec.workspace_mib}: give a positive size in MiB, e.g. 1024")
    if device.compute_capability is None:
        raise UserError(f"target {device.name} has no NVIDIA GPU; TensorRT engines need one (use the ort backend there)")

    # -- the ONNX against the release
    shape = tuple(spec.input_shape)
    if len(shape) != 4:
        raise UserError(f"{onnx}: input {spec.input_name!r} has rank {len(shape)}; expected NCHW images (rank 4)")
    if any(d is None for d in shape[1:]):
        raise UserError(
            f"{onnx}: input {spec.input_name!r} has dynamic channel/height/width {list(shape)}; "
            "re-export with a fixed image size (edgeresnet export --image-size N)"
        )
    dynamic = shape[0] is None
    if not dynamic and (lo, opt, hi) != (shape[0],) * 3:
        raise UserError(
            f"{onnx}: the model has a fixed batch of {shape[0]} but --batch asks for "
            f"{lo}:{opt}:{hi}; re-export with --batch {lo}:{opt}:{hi} (dynamic batch) or build with --batch {shape[0]}"
        )
    # -- typing: strong where mandatory, or for Q/DQ where recommended (not on DLA before 11)
    want_dla = spec.dla_core is not None
    if spec.typing == "strong" and not features.strongly_typed_flag:
        raise UserError(f"--typing strong: {trt_name} has no strongly typed networks (added in 9.1); use --typing auto")
    if spec.typing == "weak" and features.strongly_typed_mandatory:
        raise UserError(f"--typing weak: {trt_name} builds strongly typed networks only (weak typing was removed in 11.0)")
    if spec.typing == "strong":
        strong = True
    elif spec.typing == "weak":
        strong = False
    elif features.strongly_typed_mandatory:
        strong = True
    else:
        # TensorRT 10.12+ deprecates precision flags: build a Q/DQ model strongly typed there. Before it
        # (e.g. 10.3 on JetPack 6) the conservative path is weak typing + INT8 flag (flags deprecated only from 10.12,
        # TRT@v10.13.3 pyCoreDoc.h); whether
        # STRONGLY_TYPED + DLA works on 10.x was not established, so DLA stays weakly typed.
        strong = spec.onnx_has_qdq and features.strongly_typed_recommended and not want_dla

    # -- precision
    want_fp16 = spec.precision in ("fp16", "best")
    want_int8 = spec.precision in ("int8", "best")
    if spec.onnx_has_qdq and spec.precision in ("fp32", "fp16"):
        raise UserError(
            f"{onnx}: the model carries Q/DQ (INT8) nodes; build it with --precision int8 or best, "
            "or export the float model for fp32/fp16"
        )
    if want_int8 and not device.int8:
        if spec.precision == "int8":
            raise UserError(
                f"--precision int8: {device.name} (SM {device.cc_string}) has no INT8 support; use --precision fp16"
            )
        warnings.append(f"{device.name} has no INT8: 'best' builds FP16 only")
        want_int8 = False
    if want_fp16 and not device.fp16:
        if spec.precision == "fp16":
            raise UserError(f"--precision fp16: {device.name} has no fast FP16; use --precision fp32")
        want_fp16 = False

    int8_mode: str | None = None
    has_calibration = spec.calib_cache is not None or spec.calib_data is not None
    if want_int8:
        if spec.onnx_has_qdq:
            int8_mode = "explicit"
        elif not features.calibrators:
            if spec.precision == "int8":
                raise UserError(
                    f"--precision int8: {trt_name} removed implicit INT8 calibration; quantize the ONNX "
                    "(Q/DQ from edgeresnet calibrate or qat) and build that file"
                )
            warnings.append(f"{trt_name} has no calibrators and {onnx} has no Q/DQ scales: 'best' builds without INT8")
        elif not has_calibration:
            if spec.precision == "int8":
                raise UserError(
                    "--precision int8 needs calibration: pass --calib-cache PATH (from edgeresnet calibrate) or "
                    "--calib-data DATA, or build a Q/DQ ONNX; INT8 without scales is never built"
                )
            warnings.append("no calibration cache/data and no Q/DQ scales: 'best' builds FP16 without INT8")
        elif strong:
            raise UserError(
                "--typing strong: implicit INT8 calibration works only with weakly typed networks; "
                "use --typing auto/weak or a Q/DQ ONNX"
            )
        else:
            int8_mode = "implicit"
    elif spec.calib_cache is not None or spec.calib_data is not None:
        warnings.append(f"--calib-cache/--calib-data ignored: --precision {spec.precision} builds no INT8")

    if strong:
        # Precision lives in the graph; flags do not exist (11) or are deprecated (10.12+).
        if want_fp16 and not spec.onnx_has_fp16 and int8_mode is None:
            raise UserError(
                f"--precision {spec.precision}: {trt_name} builds strongly typed networks, which take precision "
                f"from the ONNX, and {onnx} is FP32; export an FP16 model (or a Q/DQ INT8 model) or use --precision fp32"
            )

    # -- DLA
    if spec.gpu_fallback and not want_dla:
        raise UserError("--gpu-fallback only applies to DLA builds; add --dla N or drop --gpu-fallback")
    force_fp16 = False
    if want_dla:
        core = int(spec.dla_core)  # type: ignore[arg-type]
        if device.dla_cores == 0:
            raise UserError(f"--dla {core}: {device.name} has no DLA cores; build for the GPU (drop --dla)")
        if not features.dla:
            raise UserError(f"--dla {core}: {features.dla_reason} ({trt_name} on {device.name})")
        if not 0 <= core < device.dla_cores:
            cores = ", ".join(str(i) for i in range(device.dla_cores))
            raise UserError(f"--dla {core}: {device.name} has {device.dla_cores} DLA cores ({cores}); pick one of them")
        if not lo == opt == hi:
            raise UserError(
                f"--dla {core} with --batch {lo}:{opt}:{hi}: DLA needs a static shape (min = opt = max); "
                f"build with --batch {opt}"
            )
        if hi > DLA_MAX_BATCH:
            raise UserError(f"--dla {core}: DLA takes batches up to {DLA_MAX_BATCH}, not {hi}")
        if int8_mode == "implicit" and spec.calibrator != "entropy2":
            raise UserError("--dla: DLA needs the entropy2 calibrator (per-activation-tensor scales); drop the minmax choice")
        if int8_mode is None and not want_fp16:
            # trtexec's recipe: "force FP16 if not --int8" (sampleEngines.cpp); DLA runs FP16/INT8 only.
            if strong:
                if not spec.onnx_has_fp16:
                    raise UserError(
                        f"--dla {core}: DLA runs FP16/INT8 only and {trt_name} takes precision from the ONNX; "
                        "export an FP16 or Q/DQ INT8 model"
                    )
            else:
                force_fp16 = True
                warnings.append(f"DLA runs FP16/INT8 only: --precision {spec.precision} is built as FP16 on DLA core {core}")
        if spec.gpu_fallback:
            warnings.append(
                "with --gpu-fallback, layers DLA cannot run fall back to the GPU silently; "
                "check the layer report (inspector JSON) for what landed where"
            )

    # -- the ONNX and the device against the release (after the user's own choices are checked)
    if spec.onnx_opset is not None and spec.onnx_opset > features.max_onnx_opset:
        raise UserError(
            f"{onnx}: opset {spec.onnx_opset} is newer than {trt_name}'s ONNX parser takes "
            f"(<= {features.max_onnx_opset}); re-export with edgeresnet export --opset {features.max_onnx_opset}"
        )
    if device.compute_capability < features.min_compute_capability:
        need = ".".join(str(p) for p in features.min_compute_capability)
        raise UserError(
            f"{trt_name} needs compute capability >= {need}; {device.name} is SM {device.cc_string}; "
            "use the TensorRT version its JetPack ships (--trt-version) or another target"
        )

    # -- portability options
    if spec.builder_optimization_level is not None:
        if not features.builder_optimization_level:
            raise UserError(f"--opt-level: {trt_name} has no builder optimization level (added in 8.6)")
        if not 0 <= spec.builder_optimization_level <= 5:
            raise UserError(f"--opt-level {spec.builder_optimization_level}: choose 0-5 (default 3)")
        if spec.builder_optimization_level == 0 and spec.timing_cache:
            warnings.append("builder optimization level 0 does not use the timing cache")
    if spec.hardware_compatibility is not None:
        level = spec.hardware_compatibility
        if level not in ("AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"):
            raise UserError(f"--hardware-compat {level!r}: choose AMPERE_PLUS or SAME_COMPUTE_CAPABILITY")
        if features.is_jetson:
            raise UserError("--hardware-compat: hardware compatibility is not supported on JetPack; build on the board")
        if level not in features.hardware_compat_levels:
            since = "8.6" if level == "AMPERE_PLUS" else "10.9"
            raise UserError(f"--hardware-compat {level}: needs TensorRT >= {since}; {trt_name} lacks it")
        floor = (8, 0) if level == "AMPERE_PLUS" else (7, 5)
        if device.compute_capability < floor:
            raise UserError(
                f"--hardware-compat {level}: needs a GPU of SM {floor[0]}.{floor[1]}+; {device.name} is SM {device.cc_string}"
            )
        if want_dla:
            raise UserError("--hardware-compat cannot be combined with --dla")
    if spec.version_compatible and not features.version_compatible:
        raise UserError(f"--version-compatible: {trt_name} lacks version-compatible engines (added in 8.6)")

    # -- deprecation notes the user should see
    if not strong and features.precision_flags_deprecated and (want_fp16 or int8_mode or force_fp16):
        warnings.append(f"{trt_name} deprecates the FP16/INT8 builder flags (10.12); TensorRT 11 removes them")
    if int8_mode == "implicit" and features.calibrators_deprecated:
        warnings.append(f"{trt_name} deprecates INT8 calibrators (10.1); a Q/DQ ONNX also builds on TensorRT 11")

    # -- the steps
    steps: list[Step] = [
        Step("create_network", {"strongly_typed": strong, "explicit_batch_flag": features.explicit_batch_flag}),
        Step("parse_onnx", {"path": spec.onnx}),
    ]
    if spec.workspace_mib is not None:
        size = int(spec.workspace_mib) * (1 << 20)
        if features.memory_pools:
            steps.append(Step("memory_pool", {"pool": "WORKSPACE", "bytes": size}))
        else:
            steps.append(Step("max_workspace", {"bytes": size}))
    flags: list[str] = []
    if not strong:
        if want_fp16:
            flags.append("FP16")
        if int8_mode is not None:
            # Weakly typed Q/DQ also needs it: "To enable any quantization operations, the INT8 flag must
            # be set in the builder config" (TensorRT 8.x developer guide, explicit quantization).
            flags.append("INT8")
    steps.extend(Step("set_flag", {"flag": f}) for f in flags)
    if want_dla:
        steps.append(Step("dla", {"core": int(spec.dla_core), "gpu_fallback": bool(spec.gpu_fallback)}))  # type: ignore[arg-type]
        if features.precision_constraints:
            steps.append(Step("set_flag", {"flag": "PREFER_PRECISION_CONSTRAINTS"}))
        if spec.gpu_fallback:
            steps.append(Step("set_flag", {"flag": "GPU_FALLBACK"}))
        elif features.direct_io:
            # "Reformatting runs on GPU, so avoid I/O reformatting" (trtexec sampleEngines.cpp)
            steps.append(Step("set_flag", {"flag": "DIRECT_IO"}))
        else:
            warnings.append(f"{trt_name} deprecates DIRECT_IO (10.7): DLA I/O reformatting may run on the GPU")
        if force_fp16 and "FP16" not in flags:
            steps.append(Step("set_flag", {"flag": "FP16"}))
    if dynamic:
        steps.append(Step("profile", {
            "input": spec.input_name, "min": _shape(lo, shape), "opt": _shape(opt, shape), "max": _shape(hi, shape),
        }))
    if int8_mode == "implicit":
        steps.append(Step("calibrator", {
            "kind": spec.calibrator,
            "cache": spec.calib_cache,
            "cache_exists": bool(spec.calib_cache_exists),
            "data": spec.calib_data,
            "input": spec.input_name,
            "batch_size": opt,
            "shape": _shape(opt, shape),
            "max_images": int(spec.calib_max_images),
            "calibration_profile": dynamic,
        }))
    if spec.timing_cache and features.flavor == "rtx":
        warnings.append("TensorRT-RTX ignores timing caches (no-op since RTX 1.2); --timing-cache not used")
    elif spec.timing_cache:
        key = timing_cache_key(device.name, device.compute_capability, format_version(features.version))
        steps.append(Step("timing_cache", {"path": spec.timing_cache, "key": key, "ignore_mismatch": False}))
    steps.append(Step("profiling_verbosity", {"level": "DETAILED"}))
    if spec.builder_optimization_level is not None:
        steps.append(Step("builder_optimization_level", {"level": int(spec.builder_optimization_level)}))
    if spec.hardware_compatibility is not None:
        steps.append(Step("hardware_compatibility", {"level": spec.hardware_compatibility}))
    if spec.version_compatible:
        steps.append(Step("set_flag", {"flag": "VERSION_COMPATIBLE"}))
    steps.append(Step("build", {}))
    return BuildPlan(
        spec=spec, features=features, steps=tuple(steps), warnings=tuple(warnings), device=device, int8_mode=int8_mode,
    )


