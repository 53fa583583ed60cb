"""A calibration cache made ready for the TensorRT release that reads it: one place for the header rewrite.

TensorRT skips a cache whose ``TRT-<version>-<algorithm>`` header is not its own ("trt will skip the file if it
is incompatible", https://github.com/NVIDIA/TensorRT/issues/1378) and then calibrates on nothing. The scales do
not depend on the release, so a header naming another release is rewritten; a cache made by another calibrator
algorithm cannot be fixed that way, and each caller decides what happens then (recalibrate, or refuse).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeresnet.errors import UserError

if TYPE_CHECKING:
    from edgeresnet.compress.calibration import TrtCache


def calibrator_algorithm(kind: str) -> str:
    """The algorithm name a calibrator ``kind`` writes in the cache header, or a one-line error."""
    from edgeresnet.compress.calibration import CACHE_ALGORITHMS

    algorithm = CACHE_ALGORITHMS.get(kind)
    if algorithm is None:
        raise UserError(f"calibrator {kind!r}: choose one of {', '.join(CACHE_ALGORITHMS)}")
    return algorithm


@dataclass(frozen=True)
class CacheForRelease:
    """A cache as read, against the calibrator and the TensorRT release of one build."""

    cache: TrtCache
    algorithm: str  # what the build's calibrator writes (and so reads)
    version_code: int  # NV_TENSORRT_VERSION of the release that reads the cache

    @property
    def same_algorithm(self) -> bool:
        return self.cache.algorithm == self.algorithm

    @property
    def rewritten(self) -> bool:
        return self.cache.version_code != self.version_code

    def text(self) -> str:
        """The cache with the reader's header (scales unchanged)."""
        return self.cache.text(self.version_code)

    def rewrite_note(self, what: str, reader: str) -> str:
        return (f"{what} header {self.cache.header} rewritten as TRT-{self.version_code}-{self.algorithm} for "
                f"{reader} (scales unchanged)")


def cache_for_release(path: str | Path, kind: str, version: tuple[int, int, int]) -> CacheForRelease:
    """Read the cache at ``path`` for a ``kind`` calibrator of TensorRT ``version``."""
    from edgeresnet.compress.calibration import read_trt_cache, trt_version_code

    algorithm = calibrator_algorithm(kind)
    return CacheForRelease(read_trt_cache(path), algorithm, trt_version_code(version))
