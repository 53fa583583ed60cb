"""Calibrating a float ONNX: its calibration images in batches, streaming statistics from ONNX Runtime, the range
table, and the cache that lets a rebuild skip all of it.

The table (our streaming statistics; see ``calibration.py``) is cached beside the output, keyed by the source
ONNX sha256, the image-list sha256 and the method, in TensorRT's calibration-cache format.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.compress import calibration as cal
from edgeresnet.compress import qdq
from edgeresnet.compress.ort_cpu import ort_session
from edgeresnet.compress.sensitivity import Progress
from edgeresnet.errors import UserError

CACHE_SUFFIX = ".calib"
MAX_CACHED_BATCH_BYTES = 256 << 20


def prepare_float_model(model: Any) -> tuple[Any, int]:
    """A copy with unique node names and BatchNorm folded into the convs (as TensorRT and ORT run it)."""
    work = copy.deepcopy(model)
    qdq.constants_to_initializers(work)
    qdq.name_nodes(work)
    work, folded = qdq.fold_batchnorm(work)
    return work, folded


class BatchSource:
    """Re-iterable preprocessed calibration batches (kept in memory when small, re-read otherwise)."""

    def __init__(self, calib: cal.CalibrationSet, preprocess: Any, batch: int, digits_loader: Any = None) -> None:
        self.calib, self.preprocess, self.batch, self.digits_loader = calib, preprocess, batch, digits_loader
        bytes_needed = len(calib) * 3 * preprocess.image_size ** 2 * 4
        self._cache: list[np.ndarray] | None = [] if bytes_needed <= MAX_CACHED_BATCH_BYTES else None
        self._complete = False

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._complete and self._cache is not None:
            yield from self._cache
            return
        for b in cal.load_calibration_images(self.calib, self.preprocess, self.digits_loader, self.batch):
            if self._cache is not None:
                self._cache.append(b)
            yield b
        self._complete = True

    def batches(self) -> int:
        """How many batches one pass yields."""
        return -(-len(self.calib) // self.batch)


def calibration_batch(image_size: int) -> int:
    """Images per calibration batch: every intermediate tensor is an output, so keep big inputs few."""
    return max(1, min(32, 1_200_000 // (3 * image_size * image_size)))


def collect_statistics(model: Any, tensors: list[str], source: BatchSource, method: str,
                       progress: Progress | None = None) -> cal.StatsCollector:
    """Run the float model in ONNX Runtime with every tensor of interest as an output, streaming statistics."""
    from onnx import TensorProto, helper

    augmented = copy.deepcopy(model)
    present = {o.name for o in augmented.graph.output}
    for name in tensors:
        if name not in present:
            augmented.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort_session(augmented)
    input_name = session.get_inputs()[0].name
    collector = cal.StatsCollector(tensors, method)
    total = collector.passes * source.batches()
    done = 0
    for number in range(1, collector.passes + 1):
        collector.begin_pass(number)
        seen = 0
        for batch in source:
            outs = session.run(tensors, {input_name: batch})
            for name, value in zip(tensors, outs):
                collector.update(name, value)
            seen += len(batch)
            done += 1
            if progress:
                progress("calibrate", done, total)
        if seen == 0:
            raise UserError("calibration: no images were read; check --calib-list / --data")
    return collector


def calibrate(model: Any, source_sha256: str, calib: cal.CalibrationSet, source: BatchSource, method: str,
              percentile: float, progress: Progress | None = None) -> cal.CalibrationTable:
    """The range table of every float activation; the graph input keeps its full range (never clip pixels)."""
    tensors = qdq.float_activations(model)
    collector = collect_statistics(model, tensors, source, method, progress)
    amax = collector.amax(percentile)
    inits = {i.name for i in model.graph.initializer}
    for graph_input in model.graph.input:  # the input's range is set by preprocessing: never clip pixels
        if graph_input.name in amax and graph_input.name not in inits:
            amax[graph_input.name] = collector.stats[graph_input.name].absmax
    ranges = cal.ranges_from_stats(collector.stats, amax)
    return cal.CalibrationTable(method, percentile, source_sha256, calib.sha256, len(calib), amax, ranges)


def default_cache_path(out: Path, source: Path, method: str) -> Path:
    """Beside the output, named by the source model and the method."""
    return out.parent / f"{source.stem}.{method}{CACHE_SUFFIX}"


def write_cache(cache: Path, table: cal.CalibrationTable, source: Path, calib: cal.CalibrationSet,
                trt_version: tuple[int, int, int]) -> None:
    """TensorRT-format cache + sidecar manifest holding the key (both written atomically)."""
    from edgeresnet.artifacts import build_manifest, write_manifest, write_text_atomic

    write_text_atomic(cache, cal.trt_cache_text(table, trt_version), option="--cache")
    inputs: dict[str, Any] = {"source": source}
    if calib.list_path is not None and calib.list_path.is_file():
        inputs["calibration_list"] = calib.list_path
    manifest = build_manifest("calibration-cache", cache, command="calibrate", inputs=inputs,
                              settings={"method": table.method, "percentile": table.percentile},
                              extra={"calibration": table.to_json(), "images": calib.describe()})
    write_manifest(cache, manifest)
