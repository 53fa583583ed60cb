"""Post-training INT8 quantization of an FP32 ONNX (``edgeresnet calibrate``), one flavour per runtime.

* ``trt`` (TensorRT targets): symmetric int8 activations and weights, per-channel weights (axis 0), Q/DQ on
  the inputs of weighted layers and on residual Add inputs, biases float. Written by our own graph pass
  (``qdq.insert_trt_qdq``) so the placement is exactly TensorRT's, not ONNX Runtime's "quantize everything".
* ``ort`` (CPU targets): uint8 asymmetric activations, symmetric per-channel int8 weights, written by ONNX
  Runtime's own quantizer in QDQ (default) or QOperator form: on AVX2 machines without VNNI this is the
  combination ONNX Runtime runs faster than FP32 (symmetric int8 activations do not).

Both read the same calibration table (our streaming statistics; see ``calibration.py``), cached beside the
output and keyed by the source ONNX sha256, the image-list sha256 and the method, so a rebuild skips calibration.
Every result goes through the accuracy gate (``sensitivity.run_gate``) on held-out data, measured by ONNX Runtime
on the artifact itself.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.compress import calibration as cal
from edgeresnet.compress import qdq
from edgeresnet.compress.sensitivity import GATE_FAILED_EXIT, GateResult, run_gate
from edgeresnet.data.sources import BUILTIN_SOURCES
from edgeresnet.errors import UserError
from edgeresnet.evaluate import top1
from edgeresnet.evaluate.intervals import wilson_interval
from edgeresnet.evaluate.paired import compare_logits

FLAVOURS = ("trt", "ort")
ORT_FORMATS = ("qdq", "qoperator")
# Measured by benchmarks/bench_int8_latency.py on our AVX2 (no VNNI) machines: see /tmp/readme_quant.md.
DEFAULT_ORT_FORMAT = "qdq"
ORT_OP_TYPES = ("Conv", "Gemm", "MatMul", "Add", "Relu", "MaxPool", "GlobalAveragePool", "AveragePool", "Flatten",
                "Reshape", "Concat")
ORT_GATE_OPS = ("Conv", "Gemm", "MatMul", "Add")
CACHE_SUFFIX = ".calib"
MAX_CACHED_BATCH_BYTES = 256 << 20

ProgressFn = Callable[[str, int, int], None]


# -- choosing the flavour --------------------------------------------------------------------------
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


# -- model facts -----------------------------------------------------------------------------------
def preprocess_for_onnx(path: Path, model: Any = None) -> Any:
    """The preprocessing contract recorded with the ONNX (metadata_props, else its manifest)."""
    from edgeresnet.export.onnx_meta import preprocess_of

    return preprocess_of(path, required=True)


def recorded_data_spec(path: Path) -> str | None:
    """The data set the model was made from, as its manifest chain records it."""
    from edgeresnet.export.onnx_meta import data_spec_of

    return data_spec_of(path)


def with_dynamic_batch(model: Any) -> Any | None:
    """A copy whose batch is symbolic, so calibration and the sensitivity sweep can run in batches.

    Exporters pin batch 1 in the input shape and often in the classifier's Reshape ([1, C]); both are relaxed
    (the Reshape's leading 1 becomes -1). The copy is accepted only if a batch of 2 gives exactly the two
    batch-1 results; otherwise None and everything runs batch 1. The written artifact keeps its own shape.
    """
    from onnx import numpy_helper

    work = copy.deepcopy(model)
    _, fixed, shape = input_info(work)
    for value in list(work.graph.input[:1]) + list(work.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"
    del work.graph.value_info[:]
    inits = {i.name: i for i in work.graph.initializer}
    for node in work.graph.node:
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in inits:
            target = numpy_helper.to_array(inits[node.input[1]]).copy()
            if target.ndim == 1 and len(target) >= 1 and fixed and target[0] == fixed and -1 not in target:
                target[0] = -1
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(target, node.input[1]))
    try:
        static_session, dynamic_session = ort_session(model, quiet=True), ort_session(work, quiet=True)
        probe = np.random.default_rng(0).standard_normal(
            (2, *[d if isinstance(d, int) and d > 0 else 1 for d in shape[1:]])).astype(np.float32)
        name = static_session.get_inputs()[0].name
        together = dynamic_session.run(None, {name: probe})[0]
        apart = np.concatenate([static_session.run(None, {name: probe[i:i + 1]})[0] for i in range(2)])
    except Exception:  # noqa: BLE001 - any failure means "keep batch 1"
        return None
    return work if together.shape == apart.shape and np.allclose(together, apart, rtol=1e-4, atol=1e-5) else None


def input_info(model: Any) -> tuple[str, int | None, tuple[Any, ...]]:
    """(input name, fixed batch size or None, shape as ints/strings)."""
    inits = {i.name for i in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in inits)
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in graph_input.type.tensor_type.shape.dim)
    batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
    return graph_input.name, batch, dims


def output_classes(model: Any) -> int | None:
    out = model.graph.output[0].type.tensor_type.shape.dim
    return out[-1].dim_value if out and out[-1].HasField("dim_value") else None


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


# -- ONNX Runtime helpers --------------------------------------------------------------------------
def ort_session(model: Any, threads: int | None = None, quiet: bool = False, emulate: bool = False) -> Any:
    """A CPU session from a ModelProto or a path, opened by ``runners.ort_runner.open_session`` (the one place
    the package creates an ONNX Runtime session).

    Default: full graph optimization, as a CPU deployment runs it. ``emulate=True`` turns the QDQ fusions off so a
    Q/DQ graph runs as written (QuantizeLinear/DequantizeLinear + float ops): the exact INT8 numerics TensorRT
    implements with int32 accumulation. ONNX Runtime's fused int8 kernels on AVX2 CPUs without VNNI sum u8 x s8
    products in saturating int16, which is not what a GPU does, so TensorRT-flavour accuracy is measured emulated
    (and reported with the fused kernels beside it).
    """
    from edgeresnet.runners.ort_runner import open_session

    return open_session(model, threads=threads, quiet=quiet, emulate=emulate)


def run_logits(session: Any, images: np.ndarray, batch: int | None = None, chunk: int = 64) -> np.ndarray:
    name = session.get_inputs()[0].name
    step = batch or chunk
    outs = [session.run(None, {name: images[i:i + step]})[0] for i in range(0, len(images), step)]
    return np.concatenate(outs).astype(np.float32)


def measure_latency(sessions: dict[str, Any], shape: tuple[int, ...], iterations: int = 30, warmup: int = 5,
                    seed: int = 0) -> dict[str, dict[str, float]]:
    """Median batch latency of each session, interleaved round-robin so load changes hit all equally: one
    ``bench.timing.measure`` sample per session per round (the benchmark's clock and loop)."""
    from edgeresnet.bench.timing import TimingConfig, measure

    if iterations <= 0:
        return {}
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)  # timing only: values do not matter

    def step_of(session: Any) -> Callable[[], None]:
        feed = {session.get_inputs()[0].name: x}

        def step() -> None:
            session.run(None, feed)

        return step

    steps = {k: step_of(s) for k, s in sessions.items()}
    warm = TimingConfig(warmup_ms=0.0, warmup_iterations=0, min_iterations=1, duration_s=0.0)
    for _ in range(warmup):
        for step in steps.values():
            step()
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(iterations):
        for k, step in steps.items():
            samples[k] += measure(step, warm).latency_ms
    return {k: {"median_ms": round(statistics.median(v), 3), "min_ms": round(min(v), 3), "iterations": len(v)}
            for k, v in samples.items()}


# -- calibration -----------------------------------------------------------------------------------
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
        return -(-len(self.calib) // self.batch)


def calibration_batch(image_size: int) -> int:
    """Images per calibration batch: every intermediate tensor is an output, so keep big inputs few."""
    return max(1, min(32, 1_200_000 // (3 * image_size * image_size)))


def collect_statistics(model: Any, tensors: list[str], source: BatchSource, method: str,
                       progress: ProgressFn | None = None) -> cal.StatsCollector:
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
              percentile: float, progress: ProgressFn | None = None) -> cal.CalibrationTable:
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


# -- the two flavours ------------------------------------------------------------------------------
def build_trt(model: Any, table: cal.CalibrationTable, keep_float: frozenset = frozenset()) -> tuple[Any, dict]:
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
        return _build_ort(model, table, keep_float, fmt, reduce_range, data)
    finally:
        root_logger.setLevel(level)


def _build_ort(model: Any, table: cal.CalibrationTable, keep_float: frozenset, fmt: str, reduce_range: bool,
               data: dict[str, Any]) -> tuple[Any, dict]:
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
    if flavour == "trt":
        return qdq.quantizable_units(model)
    return [n.name for n in model.graph.node if n.op_type in ORT_GATE_OPS]


# -- the command's core ----------------------------------------------------------------------------
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
class PtqReport:
    out: Path
    flavour: str
    method: str
    gate: GateResult
    accuracy: dict[str, Any]
    latency: dict[str, Any]
    cache: dict[str, Any]
    calibration: dict[str, Any]
    structure: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    written: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "written": self.written, "flavour": self.flavour, "method": self.method,
                "gate": self.gate.to_dict(), "accuracy": self.accuracy, "latency": self.latency, "cache": self.cache,
                "calibration": self.calibration, "structure": self.structure, "warnings": self.warnings}


def eval_splits(data: Any, limit: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: data.arrays(split, limit) for split in ("val", "test")}


def quantize_onnx(source: Path, out: Path, calib: cal.CalibrationSet, data: Any, options: PtqOptions,
                  progress: ProgressFn | None = None, command: str = "calibrate") -> PtqReport:
    """Calibrate (or reuse the cache), quantize, gate on ``data``'s val split, report test too, write + manifest."""
    import onnx

    from edgeresnet.artifacts import atomic_output, build_manifest, sha256_file, write_manifest

    cal.check_method(options.method)
    original = qdq.load_onnx(source)
    qdq.check_float_source(original, source)
    preprocess = preprocess_for_onnx(source, original)
    input_name, fixed_batch, shape = input_info(original)
    if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]) and tuple(shape[2:]) != (
            preprocess.image_size, preprocess.image_size):
        raise UserError(f"MODEL {source}: input is {shape[2]}x{shape[3]} but its preprocessing says "
                        f"{preprocess.image_size}; re-export the model")
    classes = output_classes(original)
    if classes and data.num_classes != classes:
        raise UserError(f"--data {data.name}: {data.num_classes} classes, the model outputs {classes}; "
                        "pass the data set the model was trained on")
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
    key = cal.cache_key(source_sha, calib.sha256, options.method, options.percentile)
    cache_path = options.cache or default_cache_path(out, source, options.method)
    table = cal.load_cached_table(cache_path, key)
    cache_info = {"path": str(cache_path), "hit": table is not None, "key": key}
    if table is None:
        batches = BatchSource(calib, preprocess, work_batch or calibration_batch(preprocess.image_size),
                              digits_loader=(lambda: data) if data.name in BUILTIN_SOURCES else None)
        table = calibrate(work, source_sha, calib, batches, options.method, options.percentile, progress)
        write_cache(cache_path, table, source, calib, options.trt_version)

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
        x, y = held_out["test"]
        accuracy["test_ort_cpu_int8_kernels"] = round(top1(run_logits(ort_session(eval_model), x, eval_batch), y), 3)
    bench_shape = (fixed_batch or 1, 3, preprocess.image_size, preprocess.image_size)
    latency = measure_latency({"fp32": ort_session(original), "int8": int8_session}, bench_shape,
                              options.bench_iterations)
    if latency:
        latency["speedup"] = round(latency["fp32"]["median_ms"] / latency["int8"]["median_ms"], 3)
        latency["batch"] = bench_shape[0]
    report = PtqReport(out, options.flavour, options.method, gate, accuracy, latency, cache_info,
                       calib.describe(), structure, warnings)
    if not gate.passed:
        return report
    _set_metadata(int8_model, original, {"flavour": options.flavour, "method": options.method,
                                         "kept_in_float": sorted(keep)})
    with atomic_output(out) as tmp:
        onnx.save(int8_model, str(tmp))
    inputs: dict[str, Any] = {"source": source, "calibration_cache": cache_path}
    if calib.list_path is not None and calib.list_path.is_file():
        inputs["calibration_list"] = calib.list_path
    settings = {"method": options.method, "flavour": options.flavour, "flavour_reason": options.flavour_reason,
                "percentile": options.percentile if options.method == "percentile" else None,
                "ort_format": options.ort_format if options.flavour == "ort" else None,
                "reduce_range": options.reduce_range if options.flavour == "ort" else None,
                "max_drop": options.max_drop, "max_keep": options.max_keep, "data": options.data_spec or data.name}
    manifest = build_manifest("onnx-int8", out, command=command, inputs=inputs, settings=settings, extra={
        "preprocess": preprocess.to_dict(),
        "precision": "int8",
        "quantization": {"flavour": options.flavour, "method": options.method,
                         "for_runtime": "tensorrt" if options.flavour == "trt" else "onnxruntime-cpu",
                         "calibration": calib.describe(),
                         "source_sha256": source_sha, "kept_in_float": sorted(keep), "structure": structure,
                         "accuracy": accuracy, "gate": gate.to_dict(), "latency_ort_cpu": latency,
                         "cache": cache_info},
    })
    write_manifest(out, manifest)
    report.written = True
    return report


def measure_accuracy(int8: Any, fp32_logits: dict[str, np.ndarray], held_out: dict[str, tuple[np.ndarray, np.ndarray]],
                     batch: int | None, emulate: bool) -> dict[str, Any]:
    """Top-1 of FP32 and INT8 on each held-out split (``int8``: an ONNX Runtime session or a model path)."""
    session = int8 if hasattr(int8, "run") else ort_session(int8, emulate=emulate)
    accuracy: dict[str, Any] = {
        "split_gated": "val",
        "measured_on": "the written INT8 ONNX in ONNX Runtime CPU, " + (
            "Q/DQ executed as written (TensorRT's INT8 numerics)" if emulate else "default (fused int8) kernels")}
    for split, (x, y) in held_out.items():
        int8_logits = run_logits(session, x, batch)
        f, q = top1(fp32_logits[split], y), top1(int8_logits, y)
        # FP32 and INT8 on the same images: McNemar's test on their per-image outcomes says if the drop is real
        paired = compare_logits(fp32_logits[split], int8_logits, y)
        accuracy[split] = {"fp32_top1": round(f, 3), "int8_top1": round(q, 3), "drop": round(f - q, 3), "n": len(y),
                           "fp32_top1_ci95": wilson_interval(paired.both_correct + paired.only_reference,
                                                             paired.n).percent(),
                           "int8_top1_ci95": wilson_interval(paired.both_correct + paired.only_candidate,
                                                             paired.n).percent(),
                           "drop_ci95": paired.to_dict()["drop_ci95"], "p_value": paired.p_value,
                           "significant": paired.significant, "paired": paired.to_dict(),
                           "top1_agreement": round(float(np.mean(np.argmax(int8_logits, 1) ==
                                                                 np.argmax(fp32_logits[split], 1)) * 100), 3)}
    return accuracy


_top1 = top1  # the name qat.py uses


def _set_metadata(model: Any, source: Any, quantization: dict[str, Any]) -> None:
    """Carry the source's metadata (preprocessing, class names) over and say how the model was quantized."""
    existing = {p.key for p in model.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in existing:
            model.metadata_props.add(key=prop.key, value=prop.value)
    model.metadata_props.add(key="edgeresnet.quantization", value=json.dumps(quantization))


def gate_failure(report: PtqReport) -> UserError:
    return UserError(report.gate.message, exit_code=GATE_FAILED_EXIT)
