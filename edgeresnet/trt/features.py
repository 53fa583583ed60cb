"""What a given TensorRT release can do, as a pure table keyed by version (and platform for DLA).

Every rule cites its primary source in brackets: NVIDIA docs pages, or files of github.com/NVIDIA/TensorRT at a
release tag, written ``TRT@<tag>:<path>`` (``python/src/infer/pyCore.cpp`` holds the pybind11 definitions of the
``tensorrt`` module, ``python/docstrings/infer/pyCoreDoc.h`` their docstrings). The build plan, the trtexec
emitter and the adapter all ask this table instead of testing version numbers themselves, so a new release
changes one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edgeresnet.errors import UserError

Version = tuple[int, int, int]
#: What a version may be written as: "10.3", 10.3 (YAML reads it as a float), (10, 3), ["10", "3"]
VersionLike = str | int | float | tuple[int | str, ...] | list[int | str]

#: Oldest TensorRT we plan for: JetPack 4.6.x on Nano/TX2 ships 8.2.1 [JetPack 4.6.1/4.6.2 components:
#: TensorRT 8.2.1, CUDA 10.2]. Older releases lack the DETAILED profiling verbosity and the engine inspector
#: (both 8.2, trtexec release/8.2 sampleOptions.cpp).
MIN_VERSION: Version = (8, 2, 0)

#: ONNX opset ceilings of the TensorRT ONNX parser, from onnx/onnx-tensorrt ``docs/operators.md`` per
#: release branch: "TensorRT 8.2 supports operators up to Opset 13", "8.5 ... up to Opset 17",
#: "9.2 ... up to Opset 19", "10.0 ... opset 9 to opset 20", "10.15 ... opset 9 to opset 24".
#: Conservative: a release gets the value of the newest *documented* release at or below it
#: (8.6 and 10.3 are not documented separately, so they get 17 and 20).
_OPSET_TABLE: tuple[tuple[Version, int], ...] = (
    ((8, 0, 0), 13),
    ((8, 5, 0), 17),
    ((9, 2, 0), 19),
    ((10, 0, 0), 20),
    ((10, 15, 0), 24),
)

#: TensorRT-RTX (CPU-only ahead-of-time builder, versions 1.x): opset 20 is the highest one checked by
#: building a real dynamo export with tensorrt-rtx-cu12 1.7.1.116 (tests/test_trt_rtx_build.py); newer opsets
#: are probably accepted.
_RTX_MAX_OPSET = 20

HARDWARE_COMPAT_LEVELS = ("AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")


def parse_version(value: VersionLike, what: str = "--trt-version") -> Version:
    """``"10.3"``, ``"10.3.0.30"``, ``(10, 3)`` or ``"v100300"``-free strings -> ``(10, 3, 0)``."""
    if isinstance(value, (tuple, list)):
        parts = [int(p) for p in value]
    else:
        text = str(value).strip().lstrip("vV")
        if not re.fullmatch(r"\d+(\.\d+){0,3}", text):
            raise UserError(f"{what} {value!r}: not a version; write it as MAJOR.MINOR[.PATCH], e.g. 10.3")
        parts = [int(p) for p in text.split(".")]
    if not parts or len(parts) > 4:
        raise UserError(f"{what} {value!r}: not a version; write it as MAJOR.MINOR[.PATCH], e.g. 10.3")
    parts = (parts + [0, 0, 0])[:3]
    return (parts[0], parts[1], parts[2])


def format_version(version: Version) -> str:
    return ".".join(str(p) for p in version)


def max_onnx_opset(version: Version) -> int:
    """Highest ONNX opset the parser of this TensorRT release is documented to take."""
    best = _OPSET_TABLE[0][1]
    for since, opset in _OPSET_TABLE:
        if version >= since:
            best = opset
    return best


@dataclass(frozen=True)
class TrtFeatures:
    """Capabilities of one TensorRT release on one platform. Build with :meth:`for_version`."""

    version: Version
    flavor: str = "tensorrt"  # "tensorrt" or "rtx" (TensorRT-RTX, strongly typed like 11.x)
    platform: str = "desktop"  # "desktop" or "jetson"
    board: str | None = None  # target name, for DLA rules that name a board
    jetpack: Version | None = None
    # -- network creation [TRT@release/8.2, release/8.5, v10.3.0, HEAD (11.x): python/src/infer/pyCore.cpp]
    explicit_batch_default: bool = True  # >= 10: "networks are always explicit batch"
    explicit_batch_flag: bool = False  # 8.x/9.x: ONNX needs 1 << EXPLICIT_BATCH; flag gone in 11
    build_serialized_network: bool = True  # exists from 8.0; build_engine gone in 10 [not in TRT@v10.3.0 pyCore.cpp]
    # -- typing and precision [TRT@v10.3.0, v10.13.3: pyCoreDoc.h, pyInt8Doc.h; TRT@HEAD (11.x): pyCore.cpp]
    weak_typing: bool = True  # BuilderFlag.FP16/INT8 exist (< 11)
    calibrators: bool = True  # IInt8*Calibrator exist (< 11; deprecated 10.1)
    strongly_typed_flag: bool = False  # NetworkDefinitionCreationFlag.STRONGLY_TYPED (>= 9.1)
    strongly_typed_recommended: bool = False  # >= 10.12: precision flags deprecated
    strongly_typed_mandatory: bool = False  # >= 11: weak typing removed
    precision_flags_deprecated: bool = False  # FP16/INT8 flags deprecated in 10.12
    calibrators_deprecated: bool = False  # "Deprecated in TensorRT 10.1"
    precision_constraints: bool = True  # PREFER/OBEY_PRECISION_CONSTRAINTS (8.2 .. 10.x)
    direct_io: bool = True  # BuilderFlag.DIRECT_IO usable (deprecated in 10.7, gone in 11)
    # -- execution and memory [TRT@release/8.2, release/8.5, v10.3.0: python/src/infer/pyCore.cpp]
    v3_execution: bool = True  # execute_async_v3 / set_tensor_address from 8.5
    memory_pools: bool = True  # set_memory_pool_limit from 8.4
    max_workspace_size: bool = False  # IBuilderConfig.max_workspace_size (< 10)
    # -- DLA [TensorRT 11.4.1 docs, inference-library/work-with-dla.html]
    dla: bool = False
    dla_reason: str = ""
    # -- portability [TRT@v10.13.3 pyCoreDoc.h HardwareCompatibilityLevelDoc; TensorRT 10.16.1 docs,
    # inference-library/version-compatibility.html: "supported from version 8.6"]
    hardware_compat_levels: tuple[str, ...] = ()
    version_compatible: bool = False  # BuilderFlag.VERSION_COMPATIBLE from 8.6
    builder_optimization_level: bool = False  # IBuilderConfig.builder_optimization_level from 8.6
    # -- parser and hardware floor
    max_onnx_opset: int = 13
    min_compute_capability: tuple[int, int] = (5, 3)
    # -- trtexec spelling differences [TRT@release/8.2, release/8.6: samples/common/sampleOptions.cpp]
    trtexec_mem_pool_size: bool = True  # --memPoolSize from 8.4, --workspace before
    trtexec_mem_pool_suffix: bool = True  # "workspace:1024M" base-2 suffixes documented in 10.x
    trtexec_build_only_flag: str = "--skipInference"  # --buildOnly before 8.6 (deprecated alias there)
    trtexec_explicit_batch: bool = False  # --explicitBatch accepted (no effect) in 8.x, removed in 10
    notes: tuple[str, ...] = field(default_factory=tuple)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def for_version(
        cls,
        version: VersionLike,
        *,
        platform: str = "desktop",
        board: str | None = None,
        jetpack: VersionLike | None = None,
    ) -> TrtFeatures:
        """The feature table of TensorRT ``version`` (tuple or "X.Y[.Z]") on ``platform``."""
        v = parse_version(version)
        if platform not in ("desktop", "jetson"):
            raise ValueError(f"platform must be 'desktop' or 'jetson', not {platform!r}")
        if v < MIN_VERSION:
            raise UserError(
                f"--trt-version {format_version(v)}: TensorRT older than {format_version(MIN_VERSION)} "
                "(JetPack 4.6.1) is not supported; upgrade JetPack/TensorRT"
            )
        jp = parse_version(jetpack, "jetpack") if jetpack not in (None, "") else None
        dla, dla_reason = _dla_rule(v, platform, board, jp)
        hw_levels: tuple[str, ...] = ()
        if platform == "desktop":
            # AMPERE_PLUS from 8.6, SAME_COMPUTE_CAPABILITY added in 10.9 [TRT@v10.13.3 pyCoreDoc.h
            # HardwareCompatibilityLevelDoc]; not on JetPack.
            if v >= (8, 6, 0):
                hw_levels += ("AMPERE_PLUS",)
            if v >= (10, 9, 0):
                hw_levels += ("SAME_COMPUTE_CAPABILITY",)
        notes: list[str] = []
        if (10, 0, 0) <= v < (11, 0, 0) and platform == "jetson":
            notes.append("DLA needs TensorRT <= 10.7 on JetPack; 10.8+ has no DLA")
        return cls(
            version=v,
            flavor="tensorrt",
            platform=platform,
            board=board,
            jetpack=jp,
            explicit_batch_default=v >= (10, 0, 0),
            explicit_batch_flag=v < (10, 0, 0),
            build_serialized_network=True,
            weak_typing=v < (11, 0, 0),
            calibrators=v < (11, 0, 0),
            strongly_typed_flag=v >= (9, 1, 0),
            strongly_typed_recommended=v >= (10, 12, 0),
            strongly_typed_mandatory=v >= (11, 0, 0),
            precision_flags_deprecated=(10, 12, 0) <= v < (11, 0, 0),
            calibrators_deprecated=(10, 1, 0) <= v < (11, 0, 0),
            precision_constraints=v < (11, 0, 0),
            direct_io=v < (10, 7, 0),
            v3_execution=v >= (8, 5, 0),
            memory_pools=v >= (8, 4, 0),
            max_workspace_size=v < (10, 0, 0),
            dla=dla,
            dla_reason=dla_reason,
            hardware_compat_levels=hw_levels,
            version_compatible=v >= (8, 6, 0),
            builder_optimization_level=v >= (8, 6, 0),
            max_onnx_opset=max_onnx_opset(v),
            # TensorRT 9.0 dropped Maxwell (8.5.2 release notes); 10.1: "SM 7.0 or higher" [TensorRT 10.1 support
            # matrix].
            min_compute_capability=(5, 3) if v < (9, 0, 0) else (7, 0),
            trtexec_mem_pool_size=v >= (8, 4, 0),
            trtexec_mem_pool_suffix=v >= (10, 0, 0),
            trtexec_build_only_flag="--skipInference" if v >= (8, 6, 0) else "--buildOnly",
            trtexec_explicit_batch=v < (10, 0, 0),
            notes=tuple(notes),
        )

    @classmethod
    def for_rtx(cls, version: VersionLike) -> TrtFeatures:
        """TensorRT-RTX 1.x: the CPU-capable ahead-of-time builder, strongly typed like 11.x,
        no calibrators, no DLA, no weak precision flags (names of the 1.7 bindings:
        edgeresnet/trt/api/trt-rtx-1.7.json). Fields not named here keep their defaults, which are the
        current TensorRT's (explicit batch, v3 execution, memory pools, trtexec spellings)."""
        return cls(
            version=parse_version(version, "TensorRT-RTX version"),
            flavor="rtx",
            weak_typing=False,
            calibrators=False,
            strongly_typed_flag=True,
            strongly_typed_recommended=True,
            strongly_typed_mandatory=True,
            precision_constraints=False,
            direct_io=False,
            dla_reason="TensorRT-RTX has no DLA support",
            builder_optimization_level=True,
            max_onnx_opset=_RTX_MAX_OPSET,
            min_compute_capability=(7, 5),
            notes=("TensorRT-RTX engines need an RTX-class GPU (SM 7.5+) to run; building works on CPU",),
        )

    # -- derived --------------------------------------------------------------------------------
    @property
    def version_string(self) -> str:
        prefix = "TensorRT-RTX " if self.flavor == "rtx" else "TensorRT "
        return prefix + format_version(self.version)

    @property
    def is_jetson(self) -> bool:
        return self.platform == "jetson"

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        data = dataclasses.asdict(self)
        data["version"] = format_version(self.version)
        data["jetpack"] = format_version(self.jetpack) if self.jetpack else None
        data["hardware_compat_levels"] = list(self.hardware_compat_levels)
        data["min_compute_capability"] = ".".join(str(p) for p in self.min_compute_capability)
        data["notes"] = list(self.notes)
        return data


def _dla_rule(v: Version, platform: str, board: str | None, jetpack: Version | None) -> tuple[bool, str]:
    """DLA availability: JetPack with TensorRT <= 10.7; none in 11.0-11.4.0; 11.4.1+ only on AGX Orin
    with JetPack >= 7.2.2 ("TensorRT 10.7 was the last 10.x release that supported DLA", TensorRT 11.4.1
    work-with-dla page). Whether the board *has* cores is the device's business, not the release's."""
    if platform != "jetson":
        return False, "DLA exists only on Jetson Xavier and Orin modules"
    if v < (10, 8, 0):
        return True, "DLA supported by TensorRT <= 10.7 on JetPack"
    if v < (11, 0, 0):
        return False, "TensorRT 10.7 was the last 10.x release with DLA; use JetPack's 10.3"
    if v < (11, 4, 1):
        return False, "TensorRT 11.0-11.4.0 has no DLA support"
    if board != "agx-orin":
        return False, "TensorRT 11.4.1+ supports DLA only on Jetson AGX Orin (JetPack >= 7.2.2)"
    if jetpack is not None and jetpack < (7, 2, 2):
        return False, "TensorRT 11.4.1+ DLA needs JetPack >= 7.2.2 on AGX Orin"
    return True, "DLA on AGX Orin with TensorRT 11.4.1+ (JetPack >= 7.2.2), strongly typed only"
