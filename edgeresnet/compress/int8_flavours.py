"""The two INT8 flavours ``edgeresnet calibrate`` writes, one per runtime, and how one is chosen.

* ``trt`` (TensorRT targets): symmetric int8 activations and weights, per-channel weights (axis 0), Q/DQ on
  the inputs of weighted layers and on residual Add inputs, biases float. Written by our own graph pass
  (``qdq.insert_trt_qdq``) so the placement is exactly TensorRT's, not ONNX Runtime's "quantize everything".
* ``ort`` (CPU targets): uint8 asymmetric activations, symmetric per-channel int8 weights, written by ONNX
  Runtime's own quantizer in QDQ (default) or QOperator form: on AVX2 machines without VNNI this is the
  combination ONNX Runtime runs faster than FP32 (symmetric int8 activations do not).

Both are built from the same calibration table (``onnx_calibration.calibrate``).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.compress import calibration as cal
from edgeresnet.compress import qdq
from edgeresnet.errors import UserError

FLAVOURS = ("trt", "ort")
ORT_FORMATS = ("qdq", "qoperator")
# QDQ and QOperator ran within noise of each other on AVX2 without VNNI (benchmarks/data/int8_latency.md:
# ResNet-18 50.67 vs 50.70 ms), so QDQ, ONNX Runtime's recommended format that other execution providers
# also run, is the default.
DEFAULT_ORT_FORMAT = "qdq"
ORT_OP_TYPES = ("Conv", "Gemm", "MatMul", "Add", "Relu", "MaxPool", "GlobalAveragePool", "AveragePool", "Flatten",
                "Reshape", "Concat")
ORT_GATE_OPS = ("Conv", "Gemm", "MatMul", "Add")


def choose_flavour(flavour: str | None, target: str | None) -> tuple[str, str, tuple[int, int, int]]:
    """(flavour, why, TensorRT version for the cache header).

    An explicit ``--flavour`` wins; a target whose backend is ONNX Runtime means ``ort``; any other target and
    the default mean ``trt``. A TensorRT target without INT8 (Jetson Nano's Maxwell GPU) is refused.
    """
    if flavour is not None and flavour not in FLAVOURS:
        raise UserError(f"--flavour {flavour}: unknown; choose trt (TensorRT Q/DQ) or ort (ONNX Runtime CPU)")
    if target is None:
        chosen = flavour or "trt"
        why = f"--flavour {flavour}" if flavour else "default (TensorRT Q/DQ; --flavour ort for ONNX Runtime on CPU)"
        return chosen, why, cal.DEFAULT_TRT_VERSION
    from edgeresnet.trt.targets import load_target

    t = load_target(target)
    version = cal.DEFAULT_TRT_VERSION
    trt_text = t.default_trt_version if t.backend != "ort" else None
    if trt_text:
        parts = [int(p) for p in trt_text.split(".")[:3] if p.isdigit()]
        version = tuple((parts + [0, 0, 0])[:3])  # type: ignore[assignment]
    natural = "ort" if t.backend == "ort" else "trt"
    chosen = flavour or natural
    if chosen == "trt" and t.backend != "ort" and not t.int8:
        raise UserError(f"--target {target}: {t.gpu_name} has no INT8 support in TensorRT; deploy FP16 instead")
    why = (f"--flavour {flavour} (target {target} would use {natural})" if flavour and flavour != natural
           else f"--target {target} runs {'ONNX Runtime on the CPU' if natural == 'ort' else 'TensorRT'}")
    return chosen, why, version


def cpu_has_vnni() -> bool | None:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI / AVX-VNNI / AMX); None if unknown."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def default_reduce_range() -> tuple[bool, str]:
    """ONNX Runtime's advice for u8 x s8 on x86 without VNNI: 7-bit weights, else int16 sums saturate.

    Measured here (AVX2, no VNNI): a digits ResNet-18 at 8 px agreed with FP32 on 69 % of test images with full
    8-bit weights and on 94 % with reduce_range; the gate would otherwise keep layers in float to compensate.
    """
    vnni = cpu_has_vnni()
    if vnni is False:
        return True, "this x86 CPU has no VNNI: 7-bit weights avoid int16 saturation in ONNX Runtime's u8s8 kernels"
    return False, "VNNI present (or not x86): full 8-bit weights"


def build_trt(model: Any, table: cal.CalibrationTable, keep_float: frozenset = frozenset()) -> tuple[Any, dict]:
    """TensorRT's placement by our own Q/DQ pass, with the table's symmetric scales."""
    scales = {name: table.scale(name) for name in table.amax}
    return qdq.insert_trt_qdq(copy.deepcopy(model), scales, keep_float)


def build_ort(model: Any, table: cal.CalibrationTable, keep_float: frozenset = frozenset(), fmt: str = DEFAULT_ORT_FORMAT,
              reduce_range: bool = False) -> tuple[Any, dict]:
    """ONNX Runtime's quantizer, fed our calibration ranges through its calibration-cache file."""
    import inspect
    import logging

    from onnxruntime.quantization import quantize_static

    try:
        from onnxruntime.quantization.calibrate import TensorData, save_tensors_data  # noqa: F401
    except ImportError:
        save_tensors_data = None
    if save_tensors_data is None or "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise UserError("--flavour ort needs an onnxruntime whose quantize_static takes calibration_cache_path "
                        "(onnxruntime >= 1.27.0: onnxruntime/quantization/quantize.py of the PyPI wheels); upgrade onnxruntime")
    data = {n: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
            for n, (lo, hi) in table.ranges.items()}

    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # ORT's quantizer logs "consider pre-processing" on the root logger
    try:
        return _build_ort(model, keep_float, fmt, reduce_range, data)
    finally:
        root_logger.setLevel(level)


def _build_ort(model: Any, keep_float: frozenset, fmt: str, reduce_range: bool, data: dict[str, Any]) -> tuple[Any, dict]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    from edgeresnet.export.onnx_meta import load_onnx_model

    with tempfile.TemporaryDirectory(prefix="edgeresnet-ptq-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), cache)
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            copy.deepcopy(model), out, calibration_data_reader=None,
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=list(ORT_OP_TYPES), per_channel=True, reduce_range=reduce_range,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(keep_float), calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=cache,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        result = load_onnx_model(out, weights=True)
    summary = {"format": fmt, "reduce_range": reduce_range, "kept_in_float": sorted(keep_float),
               "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in result.graph.node),
               "qlinear_ops": sum(n.op_type.startswith("QLinear") or n.op_type == "QGemm" for n in result.graph.node)}
    return result, summary


def gate_units(model: Any, flavour: str) -> list[str]:
    """What the accuracy gate may keep in float: the units each flavour quantizes."""
    if flavour == "trt":
        return qdq.quantizable_units(model)
    return [n.name for n in model.graph.node if n.op_type in ORT_GATE_OPS]

