"""Read what a TensorRT plan file says about itself without TensorRT or a GPU.

trtexec's ``--getPlanVersionOnly`` "works without deserialization of the plan": a plan starts with the
uint32 tag ``0x74727466`` (bytes ``ftrt``); when the second uint32 is 0, bytes 24..27 hold the TensorRT
major.minor.patch.build that wrote it (``printPlanVersion`` in ``samples/common/sampleEngines.cpp`` of the
TensorRT OSS tags v9.1.0 and v9.3.0 through v11.1; the v8.6.0, v8.6.1 and v9.2.0 sources have no such function). The sample warns the layout
"may depend on the serialization version", so each layout we rely on is checked against real plans: bytes 24..27
read 8.6.1.6, 10.3.0.26 and 10.15.1.29 in real ``ftrt`` plans published on GitHub (sources and bytes in
``tests/data/planfile/README.md``), and in every one of them bytes 16..23 are the file's size (uint64).

Plans written before TensorRT 8.6 look different: a real plan carrying serialization version 205 (what TensorRT
8.2.1.8 writes, https://github.com/NVIDIA/TensorRT/issues/3073) starts with ``ptrt``, its second uint32 is 0,
byte 8 holds the serialization version and bytes 24..27 are not a version. TensorRT 8.2/8.4/8.5 are
therefore recognised as plans without a version: the version check is advisory for them (the sidecar manifest,
the authoritative record, still decides), never a refusal.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError

PLAN_TAG = 0x74727466
#: TensorRT-RTX plans start with "vtrt" instead (edgeresnet/trt/rtx.py, seen on real RTX 1.7 builds).
RTX_PLAN_TAG = 0x74727476
#: TensorRT before 8.6 (a real serialization-version-205 plan; tests/data/planfile/README.md): "ptrt".
LEGACY_PLAN_TAG = 0x74727470
_FLAVORS = {PLAN_TAG: "tensorrt", RTX_PLAN_TAG: "tensorrt-rtx", LEGACY_PLAN_TAG: "tensorrt"}
HEADER_BYTES = 28  # trtexec: "Plan file is incorrect" below 28 bytes
# Smallest plausible real engine; a header-only or cut-off file is far below this.
MIN_PLAUSIBLE_PLAN_BYTES = 1024
#: Serialization versions seen in TensorRT's own error messages ("Current Version: N") next to a named release:
#: 205 = 8.2.1.8, 213 = 8.4.3.1, 232 = 8.5.3.1 (https://github.com/NVIDIA/TensorRT/issues/3073). Advisory only.
LEGACY_SERIALIZATION_RELEASES = {205: "8.2", 213: "8.4", 232: "8.5"}


@dataclass(frozen=True)
class PlanHeader:
    """What the first bytes of a file say: is it a plan, and which TensorRT wrote it (if readable)."""

    size: int
    is_plan: bool
    version: tuple[int, int, int, int] | None = None
    serialization_word: int | None = None
    reason: str = ""
    flavor: str | None = None  # "tensorrt" or "tensorrt-rtx" when the tag is known
    layout: str | None = None  # "ftrt" (8.6+), "vtrt" (TensorRT-RTX) or "ptrt" (before 8.6)
    declared_size: int | None = None  # bytes 16..23 of an ftrt/vtrt plan: the whole plan's size (check_plan_file)
    serialization_version: int | None = None  # byte 8 of a ptrt plan

    @property
    def version_string(self) -> str | None:
        return ".".join(str(p) for p in self.version) if self.version else None

    @property
    def trt_version(self) -> tuple[int, int, int] | None:
        return self.version[:3] if self.version else None  # type: ignore[return-value]

    @property
    def legacy_release(self) -> str | None:
        """The release a pre-8.6 serialization version is known to come from (advisory), or None."""
        return LEGACY_SERIALIZATION_RELEASES.get(self.serialization_version or -1)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "is_plan": self.is_plan, "version": self.version_string,
                "serialization_word": self.serialization_word, "reason": self.reason, "flavor": self.flavor,
                "layout": self.layout, "declared_size": self.declared_size,
                "serialization_version": self.serialization_version}


def parse_plan_header(data: bytes, size: int | None = None) -> PlanHeader:
    """Parse the head of a plan. ``data`` may be just the first bytes; ``size`` is the whole file's size."""
    total = len(data) if size is None else int(size)
    if total == 0:
        return PlanHeader(size=0, is_plan=False, reason="file is empty")
    if len(data) < 8:
        return PlanHeader(size=total, is_plan=False, reason=f"only {total} bytes, too short for a plan header")
    tag, word = struct.unpack_from("<II", data, 0)
    flavor = _FLAVORS.get(tag)
    if flavor is None:
        return PlanHeader(size=total, is_plan=False, serialization_word=word,
                          reason=f"no TensorRT plan tag (first bytes {data[:4].hex()}, expected 66747274 'ftrt')")
    layout = data[:4].decode("ascii")
    if len(data) < HEADER_BYTES or total < HEADER_BYTES:
        return PlanHeader(size=total, is_plan=True, serialization_word=word, flavor=flavor, layout=layout,
                          reason=f"plan tag present but only {total} bytes: truncated")
    if tag == LEGACY_PLAN_TAG:
        serial = struct.unpack_from("<I", data, 8)[0] if word == 0 else None
        known = LEGACY_SERIALIZATION_RELEASES.get(serial or -1)
        return PlanHeader(size=total, is_plan=True, serialization_word=word, flavor=flavor, layout=layout,
                          serialization_version=serial,
                          reason=("plan of TensorRT before 8.6 (tag 'ptrt'"
                                  + (f", serialization version {serial}" if serial is not None else "")
                                  + (f", as TensorRT {known} writes" if known else "")
                                  + "): its header names no TensorRT version (advisory only)"))
    declared = struct.unpack_from("<Q", data, 16)[0] or None  # 0 only in synthetic headers
    if word != 0 or flavor != "tensorrt":
        return PlanHeader(size=total, is_plan=True, serialization_word=word, flavor=flavor, layout=layout,
                          declared_size=declared,
                          reason="plan tag present; version bytes in an unknown layout (best effort only)")
    version = tuple(int(b) for b in data[24:28])
    return PlanHeader(size=total, is_plan=True, version=version, serialization_word=word, flavor=flavor,  # type: ignore[arg-type]
                      layout=layout, declared_size=declared)


def read_plan_header(path: str | Path) -> PlanHeader:
    """Read the first bytes of ``path`` (never the whole engine) and parse them."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: engine file not found; build one with edgeresnet build")
    with p.open("rb") as handle:
        head = handle.read(64)
    return parse_plan_header(head, size=p.stat().st_size)


def check_plan_file(path: str | Path, expected_version: Any = None) -> PlanHeader:
    """Refuse, before TensorRT sees it, a file that is not a plan, is cut short, or was written by another
    TensorRT than ``expected_version`` (compared on the parts given, e.g. "10.3" or "10.3.0") when the
    header says so. Skip ``expected_version`` for VERSION_COMPATIBLE engines, which newer runtimes load.

    A plan whose header names no version (TensorRT before 8.6, an unknown layout) is not refused on the
    version: ``header.reason`` says so and the caller's manifest check decides."""
    header = read_plan_header(path)
    if not header.is_plan:
        raise UserError(f"{path}: not a TensorRT engine ({header.reason}); pass the .engine written by edgeresnet build")
    if header.size < MIN_PLAUSIBLE_PLAN_BYTES or "truncated" in header.reason:
        raise UserError(f"{path}: engine is truncated ({header.size} bytes); copy it again or rebuild it")
    if header.declared_size is not None and header.size < header.declared_size:
        raise UserError(f"{path}: engine is truncated ({header.size} bytes, its header says {header.declared_size}); "
                        "copy it again or rebuild it")
    if expected_version is not None and header.version is not None:
        if isinstance(expected_version, (tuple, list)):
            want = tuple(int(p) for p in expected_version[:3])
        else:
            want = tuple(int(p) for p in str(expected_version).split(".")[:3] if p.isdigit())
        if tuple(header.version[: len(want)]) != want:
            raise UserError(
                f"{path}: built by TensorRT {header.version_string}, this runtime is "
                f"{'.'.join(str(p) for p in want)}; rebuild the engine here with edgeresnet build"
            )
    return header
