"""Read what a TensorRT plan file says about itself without TensorRT or a GPU.

trtexec's ``--getPlanVersionOnly`` "works without deserialization of the plan": a plan starts with the
uint32 tag ``0x74727466`` (bytes ``ftrt``); when the second uint32 is 0, bytes 24..27 hold the TensorRT
major.minor.patch.build that wrote it (``samples/common/sampleEngines.cpp`` ``getPlanVersion``, v10.3.0 and
HEAD). The sample itself warns the layout "may depend on the serialization version", so the version is best
effort; the sidecar manifest is the authoritative record and this is the second check.
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
_FLAVORS = {PLAN_TAG: "tensorrt", RTX_PLAN_TAG: "tensorrt-rtx"}
HEADER_BYTES = 28  # trtexec: "Plan file is incorrect" below 28 bytes
# Smallest plausible real engine; a header-only or cut-off file is far below this.
MIN_PLAUSIBLE_PLAN_BYTES = 1024


@dataclass(frozen=True)
class PlanHeader:
    """What the first bytes of a file say: is it a plan, and which TensorRT wrote it (if readable)."""

    size: int
    is_plan: bool
    version: tuple[int, int, int, int] | None = None
    serialization_word: int | None = None
    reason: str = ""
    flavor: str | None = None  # "tensorrt" or "tensorrt-rtx" when the tag is known

    @property
    def version_string(self) -> str | None:
        return ".".join(str(p) for p in self.version) if self.version else None

    @property
    def trt_version(self) -> tuple[int, int, int] | None:
        return self.version[:3] if self.version else None  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "is_plan": self.is_plan, "version": self.version_string,
                "serialization_word": self.serialization_word, "reason": self.reason, "flavor": self.flavor}


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
    if len(data) < HEADER_BYTES or total < HEADER_BYTES:
        return PlanHeader(size=total, is_plan=True, serialization_word=word, flavor=flavor,
                          reason=f"plan tag present but only {total} bytes: truncated")
    if word != 0 or flavor != "tensorrt":
        return PlanHeader(size=total, is_plan=True, serialization_word=word, flavor=flavor,
                          reason="plan tag present; version bytes in an unknown layout (best effort only)")
    version = tuple(int(b) for b in data[24:28])
    return PlanHeader(size=total, is_plan=True, version=version, serialization_word=word, flavor=flavor)  # type: ignore[arg-type]


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
    header says so. Skip ``expected_version`` for VERSION_COMPATIBLE engines, which newer runtimes load."""
    header = read_plan_header(path)
    if not header.is_plan:
        raise UserError(f"{path}: not a TensorRT engine ({header.reason}); pass the .engine written by edgeresnet build")
    if header.size < MIN_PLAUSIBLE_PLAN_BYTES or "truncated" in header.reason:
        raise UserError(f"{path}: engine is truncated ({header.size} bytes); copy it again or rebuild it")
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
