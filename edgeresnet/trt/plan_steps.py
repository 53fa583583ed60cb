"""The build plan's vocabulary: the closed set of step ops, one ``Step``, and the validated ``BuildPlan``.

Step ops (closed set; args may grow, ops may not). Each appears at most once except ``set_flag``; a plan
is ordered: create_network, parse_onnx, max_workspace|memory_pool, precision set_flags (FP16, INT8), dla and
its set_flags (PREFER_PRECISION_CONSTRAINTS, GPU_FALLBACK|DIRECT_IO, forced FP16), profile, calibrator,
timing_cache, profiling_verbosity, builder_optimization_level, hardware_compatibility,
set_flag VERSION_COMPATIBLE, build. TensorRT-RTX plans never contain timing_cache (a no-op there).
``BuildPlan`` also carries ``device`` (``DeviceCaps``; its ``compute_capability`` is the build target) and
``int8_mode`` ("explicit" for Q/DQ, "implicit" for a calibrator, or None).

=========================== ===================================================================================
op                          args
=========================== ===================================================================================
create_network              strongly_typed: bool, explicit_batch_flag: bool
                            (explicit_batch_flag: pass ``1 << EXPLICIT_BATCH`` (TensorRT < 10); strongly_typed:
                            pass ``1 << STRONGLY_TYPED``; both False -> ``create_network(0)``)
parse_onnx                  path: str
max_workspace               bytes: int                      (TensorRT < 8.4: ``config.max_workspace_size``)
memory_pool                 pool: "WORKSPACE", bytes: int   (``set_memory_pool_limit(MemoryPoolType.WORKSPACE, b)``)
set_flag                    flag: BuilderFlag member name, one of FP16, INT8, PREFER_PRECISION_CONSTRAINTS,
                            GPU_FALLBACK, DIRECT_IO, VERSION_COMPATIBLE (``config.set_flag(getattr(BuilderFlag, f))``)
                            Precision flags come first, then the DLA recipe's flags after the ``dla`` step.
dla                         core: int, gpu_fallback: bool
                            -> ``config.default_device_type = DeviceType.DLA``; ``config.DLA_core = core``.
                            Only those two: GPU_FALLBACK / DIRECT_IO / PREFER_PRECISION_CONSTRAINTS / FP16 follow
                            as separate ``set_flag`` steps (trtexec's recipe); ``gpu_fallback`` is informational.
profile                     input: str, min: list[int], opt: list[int], max: list[int]
                            -> one optimization profile, ``set_shape(input, min, opt, max)``,
                            ``config.add_optimization_profile`` (returns -1 if invalid: a build error).
                            Only present when the ONNX input has a dynamic dimension.
calibrator                  kind: "entropy2" | "minmax", cache: str | None, data: str | None, input: str,
                            batch_size: int, shape: list[int] (one calibration batch, = profile opt),
                            max_images: int, calibration_profile: bool (call ``set_calibration_profile``
                            with the profile above), cache_exists: bool (a cache file is there: read it
                            instead of calibrating). Only with weak typing (TensorRT < 11).
timing_cache                path: str, key: str, ignore_mismatch: bool (False)
                            -> ``create_timing_cache(bytes or b"")``/``set_timing_cache``; write back after build.
profiling_verbosity         level: "DETAILED"
builder_optimization_level  level: int (0-5; TensorRT >= 8.6)
hardware_compatibility      level: "AMPERE_PLUS" | "SAME_COMPUTE_CAPABILITY"
build                       {} -> ``build_serialized_network(network, config)``; None is a build failure
=========================== ===================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: plan.py, which makes a BuildPlan, imports this module
    from edgeresnet.trt.features import TrtFeatures
    from edgeresnet.trt.plan import BuildSpec, DeviceCaps

STEP_OPS = (
    "create_network",
    "parse_onnx",
    "max_workspace",
    "memory_pool",
    "set_flag",
    "dla",
    "profile",
    "calibrator",
    "timing_cache",
    "profiling_verbosity",
    "builder_optimization_level",
    "hardware_compatibility",
    "build",
)
FLAGS = ("FP16", "INT8", "PREFER_PRECISION_CONSTRAINTS", "GPU_FALLBACK", "DIRECT_IO", "VERSION_COMPATIBLE")


@dataclass(frozen=True)
class Step:
    """One declarative builder action; ``op`` is one of ``STEP_OPS``."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.op not in STEP_OPS:
            raise ValueError(f"unknown build step {self.op!r}; known: {', '.join(STEP_OPS)}")
        if self.op == "set_flag" and self.args.get("flag") not in FLAGS:
            raise ValueError(f"unknown builder flag {self.args.get('flag')!r}; known: {', '.join(FLAGS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "args": dict(self.args)}

    def describe(self) -> str:
        if not self.args:
            return self.op
        return self.op + " " + ", ".join(f"{k}={v}" for k, v in self.args.items())


@dataclass(frozen=True)
class BuildPlan:
    """The validated steps, with the inputs that produced them and what the user should know."""

    spec: BuildSpec
    features: TrtFeatures
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()
    device: DeviceCaps | None = None
    int8_mode: str | None = None  # "explicit" (Q/DQ), "implicit" (calibrator) or None

    # -- views the adapter, trtexec emitter and manifest use --------------------------------------
    def find(self, op: str) -> Step | None:
        return next((s for s in self.steps if s.op == op), None)

    def ops(self) -> tuple[str, ...]:
        return tuple(s.op for s in self.steps)

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(s.args["flag"] for s in self.steps if s.op == "set_flag")

    @property
    def strongly_typed(self) -> bool:
        step = self.find("create_network")
        return bool(step and step.args["strongly_typed"])

    @property
    def dla_core(self) -> int | None:
        step = self.find("dla")
        return int(step.args["core"]) if step else None

    @property
    def gpu_fallback(self) -> bool:
        return "GPU_FALLBACK" in self.flags

    @property
    def profile(self) -> dict[str, Any] | None:
        step = self.find("profile")
        return dict(step.args) if step else None

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions the engine may use: fp32 always, plus what flags or the typed ONNX allow."""
        result = ["fp32"]
        if "FP16" in self.flags or (self.strongly_typed and self.spec.onnx_has_fp16):
            result.append("fp16")
        if self.int8_mode:
            result.append("int8")
        return tuple(result)

    @property
    def precision_label(self) -> str:
        """The single label benchmarks pair on: int8 if any INT8, else fp16 if any FP16, else fp32."""
        p = self.precisions
        return "int8" if "int8" in p else ("fp16" if "fp16" in p else "fp32")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensorrt": self.features.version_string,
            "precision": self.spec.precision,
            "precision_label": self.precision_label,
            "precisions": list(self.precisions),
            "strongly_typed": self.strongly_typed,
            "int8_mode": self.int8_mode,
            "flags": list(self.flags),
            "dla_core": self.dla_core,
            "gpu_fallback": self.gpu_fallback,
            "profile": self.profile,
            "steps": [s.to_dict() for s in self.steps],
            "warnings": list(self.warnings),
            "spec": self.spec.to_dict(),
            "features": self.features.to_dict(),
            "device": None if self.device is None else {
                "name": self.device.name, "compute_capability": self.device.cc_string, "fp16": self.device.fp16,
                "int8": self.device.int8, "dla_cores": self.device.dla_cores, "is_jetson": self.device.is_jetson,
            },
        }
