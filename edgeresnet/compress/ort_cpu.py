"""ONNX Runtime on this CPU, as the INT8 stages measure with it: sessions, batched logits, interleaved latency,
and the dynamic-batch twin of a model whose export pinned batch 1.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np


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
    """The classifier's width, when the export fixed it (checked against the data set's classes)."""
    out = model.graph.output[0].type.tensor_type.shape.dim
    return out[-1].dim_value if out and out[-1].HasField("dim_value") else None


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
    """Logits of ``images`` in slices of ``batch`` (a pinned batch) or ``chunk`` (a dynamic one)."""
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
