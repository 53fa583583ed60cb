"""Post-training INT8 quantization of an FP32 ONNX (``edgeresnet calibrate``): calibrate, build the chosen
flavour (``int8_flavours``), gate it on held-out accuracy, write it with its manifest.

Calibration runs once per source ONNX, image list and method (``onnx_calibration``, cached); every result
goes through the accuracy gate (``sensitivity.run_gate``) on held-out data, measured by ONNX Runtime on the
artifact itself (``int8_accuracy``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgeresnet.compress import calibration as cal
from edgeresnet.compress import qdq
from edgeresnet.compress.int8_accuracy import (
    Int8Report,
    eval_splits,
    fused_kernels_top1,
    int8_speedup,
    measure_accuracy,
)
from edgeresnet.compress.int8_flavours import DEFAULT_ORT_FORMAT, build_ort, build_trt, default_reduce_range, gate_units
from edgeresnet.compress.onnx_calibration import (
    BatchSource,
    calibrate,
    calibration_batch,
    default_cache_path,
    prepare_float_model,
    write_cache,
)
from edgeresnet.compress.ort_cpu import input_info, ort_session, output_classes, run_logits, with_dynamic_batch
from edgeresnet.compress.sensitivity import Progress, run_gate
from edgeresnet.data.sources import BUILTIN_SOURCES
from edgeresnet.errors import UserError


@dataclass
class PtqOptions:
    method: str = "entropy"
    flavour: str = "trt"
    flavour_reason: str = ""
    ort_format: str = DEFAULT_ORT_FORMAT
    reduce_range: bool | None = None  # None: default_reduce_range() for this machine
    percentile: float = cal.DEFAULT_PERCENTILE
    max_drop: float = 1.0
    max_keep: int | None = None
    cache: Path | None = None
    trt_version: tuple[int, int, int] = cal.DEFAULT_TRT_VERSION
    bench_iterations: int = 30
    eval_images: int | None = None
    data_spec: str | None = None



@dataclass
class PtqReport(Int8Report):
    JSON_KEYS: ClassVar[tuple[str, ...]] = ("out", "written", "flavour", "method", "gate", "accuracy", "latency",
                                            "cache", "calibration", "structure", "warnings")
    flavour: str
    method: str
    cache: dict[str, Any]


def quantize_onnx(source: Path, out: Path, calib: cal.CalibrationSet, data: Any, options: PtqOptions,
                  progress: Progress | None = None, command: str = "calibrate") -> PtqReport:
    """Calibrate (or reuse the cache), quantize, gate on ``data``'s val split, report test too, write + manifest."""
    from edgeresnet.artifacts import sha256_file
    from edgeresnet.export.onnx_meta import load_onnx_model, preprocess_of

    cal.check_method(options.method)
    original = load_onnx_model(source, weights=True, option="MODEL")
    qdq.check_float_source(original, source)
    preprocess = preprocess_of(source, required=True)
    fixed_batch = _check_model_fits(source, original, preprocess, data)
    data = dataclasses.replace(data, preprocess=preprocess)
    warnings = list(calib.warnings)
    model, folded = prepare_float_model(original)
    if options.flavour == "ort" and options.reduce_range is None:
        options = dataclasses.replace(options, reduce_range=default_reduce_range()[0])
    # calibration and the sweep run batched on a dynamic-batch copy when the export pinned batch 1
    work = with_dynamic_batch(model) if fixed_batch else model
    work_batch = fixed_batch if work is None else None
    work = work if work is not None else model
    if folded == 0 and work_batch is None and fixed_batch:
        fp32_model, fp32_batch = work, None  # the source graph, only renamed and batch-relaxed (probe-checked)
    else:
        fp32_model = (with_dynamic_batch(original) if fixed_batch else None) or original
        fp32_batch = None if fp32_model is not original else fixed_batch

    source_sha = sha256_file(source)
    cache_path = options.cache or default_cache_path(out, source, options.method)
    batches = BatchSource(calib, preprocess, work_batch or calibration_batch(preprocess.image_size),
                          digits_loader=(lambda: data) if data.name in BUILTIN_SOURCES else None)
    table, cache_info = _range_table(work, source, source_sha, calib, batches, cache_path, options, progress)

    def build(base: Any, keep: frozenset) -> tuple[Any, dict]:
        if options.flavour == "trt":
            return build_trt(base, table, keep)
        return build_ort(base, table, keep, options.ort_format, options.reduce_range)

    held_out = eval_splits(data, options.eval_images)
    emulate = options.flavour == "trt"  # TensorRT's INT8 numerics, not this CPU's int8 kernels
    fp32_session = ort_session(fp32_model)
    fp32_logits = {s: run_logits(fp32_session, x, fp32_batch) for s, (x, _) in held_out.items()}

    def evaluate(keep: frozenset) -> np.ndarray:
        candidate, _ = build(work, keep)
        return run_logits(ort_session(candidate, emulate=emulate), held_out["val"][0], work_batch)

    gate = run_gate(gate_units(model, options.flavour), evaluate, fp32_logits["val"], held_out["val"][1],
                    options.max_drop, options.max_keep, progress=progress)
    keep = frozenset(gate.kept_float)
    int8_model, structure = build(model, keep)  # the artifact itself, with the source's input shape
    structure = {**structure, "batchnorm_folded": folded}
    int8_session = ort_session(int8_model)
    # the artifact's own graph, batched through its dynamic-batch twin when that provably gives the same outputs
    batched = with_dynamic_batch(int8_model) if fixed_batch else None
    eval_model, eval_batch = (batched, None) if batched is not None else (int8_model, fixed_batch)
    accuracy = measure_accuracy(ort_session(eval_model, emulate=emulate), fp32_logits, held_out, eval_batch, emulate)
    if emulate:
        accuracy["test_ort_cpu_int8_kernels"] = fused_kernels_top1(ort_session(eval_model), held_out, eval_batch)
    bench_shape = (fixed_batch or 1, 3, preprocess.image_size, preprocess.image_size)
    latency = int8_speedup(ort_session(original), int8_session, bench_shape, options.bench_iterations)
    if latency:
        latency["batch"] = bench_shape[0]
    report = PtqReport(out, gate, accuracy, latency, calib.describe(), structure, flavour=options.flavour,
                       method=options.method, cache=cache_info, warnings=warnings)
    if not gate.passed:
        return report
    _write_int8(int8_model, original, source, out, calib, options, command, {
        "preprocess": preprocess.to_dict(),
        "precision": "int8",
        "quantization": {"flavour": options.flavour, "method": options.method,
                         "for_runtime": "tensorrt" if options.flavour == "trt" else "onnxruntime-cpu",
                         "calibration": calib.describe(),
                         "source_sha256": source_sha, "kept_in_float": sorted(keep), "structure": structure,
                         "accuracy": accuracy, "gate": gate.to_dict(), "latency_ort_cpu": latency,
                         "cache": cache_info},
    }, data_name=data.name, cache_path=cache_path)
    report.written = True
    return report


def _set_metadata(model: Any, source: Any, quantization: dict[str, Any]) -> None:
    """Carry the source's metadata (preprocessing, class names) over and say how the model was quantized."""
    existing = {p.key for p in model.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in existing:
            model.metadata_props.add(key=prop.key, value=prop.value)
    model.metadata_props.add(key="edgeresnet.quantization", value=json.dumps(quantization))



def _check_model_fits(source: Path, model: Any, preprocess: Any, data: Any) -> int | None:
    """Refuse a model whose input size or class count disagrees with its preprocessing or ``data``; returns
    the batch size its export pinned (None when dynamic)."""
    _, fixed_batch, shape = input_info(model)
    if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]) and tuple(shape[2:]) != (
            preprocess.image_size, preprocess.image_size):
        raise UserError(f"MODEL {source}: input is {shape[2]}x{shape[3]} but its preprocessing says "
                        f"{preprocess.image_size}; re-export the model")
    classes = output_classes(model)
    if classes and data.num_classes != classes:
        raise UserError(f"--data {data.name}: {data.num_classes} classes, the model outputs {classes}; "
                        "pass the data set the model was trained on")
    return fixed_batch


def _range_table(work: Any, source: Path, source_sha: str, calib: cal.CalibrationSet, batches: BatchSource,
                 cache_path: Path, options: PtqOptions, progress: Progress | None
                 ) -> tuple[cal.CalibrationTable, dict[str, Any]]:
    """The cached range table when its key matches (same source, images, method), else a fresh calibration."""
    key = cal.cache_key(source_sha, calib.sha256, options.method, options.percentile)
    table = cal.load_cached_table(cache_path, key)
    cache_info = {"path": str(cache_path), "hit": table is not None, "key": key}
    if table is None:
        table = calibrate(work, source_sha, calib, batches, options.method, options.percentile, progress)
        write_cache(cache_path, table, source, calib, options.trt_version)
    return table, cache_info


def _write_int8(int8_model: Any, original: Any, source: Path, out: Path, calib: cal.CalibrationSet,
                options: PtqOptions, command: str, extra: dict[str, Any], *, data_name: str, cache_path: Path) -> None:
    """The INT8 ONNX (the source's metadata carried over) and its manifest."""
    import onnx

    from edgeresnet.artifacts import atomic_output, build_manifest, write_manifest

    _set_metadata(int8_model, original, {"flavour": options.flavour, "method": options.method,
                                         "kept_in_float": extra["quantization"]["kept_in_float"]})
    with atomic_output(out) as tmp:
        onnx.save(int8_model, str(tmp))
    inputs: dict[str, Any] = {"source": source, "calibration_cache": cache_path}
    if calib.list_path is not None and calib.list_path.is_file():
        inputs["calibration_list"] = calib.list_path
    settings = {"method": options.method, "flavour": options.flavour, "flavour_reason": options.flavour_reason,
                "percentile": options.percentile if options.method == "percentile" else None,
                "ort_format": options.ort_format if options.flavour == "ort" else None,
                "reduce_range": options.reduce_range if options.flavour == "ort" else None,
                "max_drop": options.max_drop, "max_keep": options.max_keep, "data": options.data_spec or data_name}
    write_manifest(out, build_manifest("onnx-int8", out, command=command, inputs=inputs, settings=settings,
                                       extra=extra))
