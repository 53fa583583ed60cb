"""Running a TensorRT engine: refuse a foreign engine before TensorRT sees it, then execute with v3 calls.

Deserializing runs native code and a foreign engine only yields ``None`` plus a log line ("Version tag does
not match", "generated on an incompatible device"; the ``Runtime`` constructor itself fails without a CUDA
driver), so the decision comes first and is pure: ``check_engine_compat`` compares the
sidecar manifest and the plan header with the running TensorRT and GPU and returns the problems, each
naming what differs. ``EngineSession`` then deserializes (a None becomes trt-core's classified error),
sets the input shape per call (dynamic batch), binds addresses with ``set_tensor_address`` and runs
``execute_async_v3`` on a non-default stream; device memory goes through ``cuda_mem.DeviceBackend``.
"""

from __future__ import annotations

import shlex
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.artifacts.manifests import EngineManifest, EngineSection, GpuRecord, as_manifest
from edgeresnet.errors import UserError


def _parts(version: Any, n: int = 3) -> tuple[int, ...] | None:
    """"10.3.0.26" / (10, 3, 0) -> (10, 3, 0); None for unknown."""
    if version is None or version == "":
        return None
    if isinstance(version, (tuple, list)):
        values = [int(p) for p in version]
    else:
        values = []
        for piece in str(version).split("."):
            digits = "".join(ch for ch in piece if ch.isdigit())
            if not digits:
                break
            values.append(int(digits))
    return tuple(values[:n]) if values else None


def _vstr(parts: tuple[int, ...] | None) -> str:
    return ".".join(str(p) for p in parts) if parts else "?"


def _flavor(name: Any) -> str:
    return "tensorrt-rtx" if str(name or "tensorrt").lower() in ("rtx", "tensorrt-rtx", "tensorrt_rtx") else "tensorrt"


def _label(flavor: str) -> str:
    return "TensorRT-RTX" if flavor == "tensorrt-rtx" else "TensorRT"


def _cc(value: Any) -> tuple[int, int] | None:
    if value is None or value == "":
        return None
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[1]))
    major, _, minor = str(value).partition(".")
    try:
        return (int(major), int(minor or 0))
    except ValueError:
        return None


def check_engine_compat(
    manifest: EngineManifest | dict[str, Any] | None,
    header: Any,
    running_trt_version: Any,
    gpu_name: str | None,
    compute_capability: Any,
    *,
    running_flavor: str = "tensorrt",
) -> list[str]:
    """Why this engine cannot run here (empty list = it can). Pure: no TensorRT, no GPU calls.

    ``manifest`` is the engine's sidecar (or None), ``header`` a ``planfile.PlanHeader`` (or None),
    ``gpu_name``/``compute_capability`` the running GPU (None when there is none: GPU checks skipped)."""
    problems: list[str] = []
    running = _flavor(running_flavor)
    running_version = _parts(running_trt_version)
    typed = as_manifest(manifest, EngineManifest)
    section = typed.engine if typed is not None else EngineSection()
    version_compatible = section.version_compatible

    # -- the file itself
    if header is not None:
        if not header.is_plan:
            problems.append(f"not a TensorRT engine ({header.reason})")
            return problems
        if "truncated" in (header.reason or ""):
            problems.append(f"the engine is truncated ({header.size} bytes)")
        expected_size = typed.size_bytes if typed is not None else None
        if expected_size is not None and header.size != int(expected_size):
            problems.append(f"the engine is {header.size} bytes but its manifest says {int(expected_size)}: "
                            "truncated or replaced")
        if header.flavor and _flavor(header.flavor) != running:
            problems.append(f"the plan was written by {_label(_flavor(header.flavor))}, this runtime is {_label(running)}")
        header_version = _parts(getattr(header, "version", None))
        if header_version and running_version and _flavor(header.flavor) == running:
            if not _version_ok(header_version, running_version, version_compatible):
                problems.append(f"the plan header says {_label(running)} {_vstr(header_version)} built it, "
                                f"this runtime is {_vstr(running_version)}")

    # -- the manifest's record of the build
    if typed is not None:
        built_flavor = _flavor(section.builder)
        built_version = _parts(section.tensorrt_version)
        if built_flavor != running:
            if not any("written by" in p for p in problems):
                problems.append(f"built by {_label(built_flavor)}, this runtime is {_label(running)}")
        elif built_version and running_version and not _version_ok(built_version, running_version, version_compatible):
            if not any("plan header says" in p for p in problems):
                problems.append(f"built by {_label(built_flavor)} {_vstr(built_version)}, "
                                f"this runtime is {_label(running)} {_vstr(running_version)}")
        gpu = typed.gpu
        built_cc = _cc(gpu.compute_capability)
        running_cc = _cc(compute_capability)
        if built_cc and running_cc and built_cc != running_cc:
            level = section.hardware_compatibility
            if level == "AMPERE_PLUS" and running_cc >= (8, 0):
                # "only supported for engines built on NVIDIA Ampere and later GPUs"
                # (TensorRT 10.13 HardwareCompatibilityLevel docstring)
                pass
            else:
                built_name = gpu.name or "?"
                problems.append(f"built for compute capability {built_cc[0]}.{built_cc[1]} ({built_name}), "
                                f"this GPU is {running_cc[0]}.{running_cc[1]} ({gpu_name or '?'})")
    return problems


def _version_ok(built: tuple[int, ...], running: tuple[int, ...], version_compatible: bool) -> bool:
    if built[:3] == running[:3]:
        return True
    if version_compatible:
        # same major and newer, or TensorRT 10 -> 11 / 8 -> 10 (TensorRT 11.4.1 support matrix, version compatibility)
        return running >= built and (running[0] == built[0] or (built[0], running[0]) in ((10, 11), (8, 10)))
    return False


def engine_compat_notes(manifest: EngineManifest | dict[str, Any] | None, gpu_name: str | None) -> list[str]:
    """Differences that do not stop the engine but the user should know (same SM, another GPU model)."""
    notes: list[str] = []
    typed = as_manifest(manifest, EngineManifest)
    if typed is None:
        notes.append("no manifest beside the engine: only the plan header could be checked")
        return notes
    gpu: GpuRecord = typed.gpu
    built_name = gpu.name
    if gpu_name and built_name and gpu.source != "target file" and built_name.strip() != gpu_name.strip():
        notes.append(f"built on {built_name}, running on {gpu_name} (same compute capability): "
                     "tactics were timed on the other GPU, rebuild for best performance")
    return notes


def rebuild_command(manifest: EngineManifest | dict[str, Any] | None, engine_path: str | Path) -> str:
    """The ``edgeresnet build`` line that makes this engine for the current machine."""
    typed = as_manifest(manifest, EngineManifest) or EngineManifest()
    if typed.rebuild_command:
        return typed.rebuild_command
    section = typed.engine
    onnx_input = typed.input("onnx")
    onnx = (onnx_input.path if onnx_input else None) or typed.setting("onnx") or "MODEL.onnx"
    target = section.target or "TARGET"
    precision = section.precision or typed.setting("precision") or "fp32"
    args = ["edgeresnet", "build", str(onnx), "--target", str(target), "--precision", str(precision)]
    if section.profiles:
        lo, opt, hi = section.profiles[0].min, section.profiles[0].opt, section.profiles[0].max
        args += ["--batch", str(lo) if lo == opt == hi else f"{lo}:{opt}:{hi}"]
    if section.dla_core is not None:
        args += ["--dla", str(section.dla_core)]
    args += ["--out", str(Path(engine_path).parent)]
    return shlex.join(args)


@dataclass(eq=False)
class EngineSession:
    """One deserialized engine, its execution context, a stream and device buffers that grow as needed."""

    trt: Any
    data: bytes
    backend: Any
    _: KW_ONLY
    logger: Any = None
    dla_core: int | None = None
    host_code_allowed: bool = False
    source: str = "engine"
    rebuild: str | None = None
    # made by open()
    engine: Any = field(default=None, init=False)
    context: Any = field(default=None, init=False)
    stream: int | None = field(default=None, init=False)
    inputs: list[str] = field(default_factory=list, init=False)
    outputs: list[str] = field(default_factory=list, init=False)
    dtypes: dict[str, Any] = field(default_factory=dict, init=False)
    buffers: dict[str, tuple[int, int]] = field(default_factory=dict, init=False)  # name -> (pointer, capacity)
    bound: Any = field(default=None, init=False)  # the TimedStep whose shapes and addresses the context holds

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> EngineSession:
        from edgeresnet.trt import adapter

        trt = self.trt
        self.logger = self.logger if self.logger is not None else adapter.make_logger(trt)
        engine = adapter.deserialize_engine(trt, self.data, self.logger, dla_core=self.dla_core,
                                            host_code_allowed=self.host_code_allowed, source=self.source,
                                            rebuild=self.rebuild)
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise UserError(f"{self.source}: could not create an execution context (out of device memory?)")
        input_mode = trt.TensorIOMode.INPUT
        for index in range(int(engine.num_io_tensors)):
            name = engine.get_tensor_name(index)
            self.dtypes[name] = self._numpy_dtype(name, engine.get_tensor_dtype(name))
            (self.inputs if engine.get_tensor_mode(name) == input_mode else self.outputs).append(name)
        if len(self.inputs) != 1:
            raise UserError(f"{self.source}: the engine has {len(self.inputs)} inputs; edgeresnet runs single-input classifiers")
        self.stream = self.backend.stream_create()  # non-default stream (TensorRT 10.3 pyCoreDoc.h execute_async_v3)
        return self

    def _numpy_dtype(self, name: str, dtype: Any) -> np.dtype:
        """The numpy type of an I/O tensor. ``trt.nptype`` knows FLOAT, HALF, INT8, INT32, INT64, BOOL and UINT8
        and raises TypeError for the rest ("fp8 and bfloat16 have no equivalent numpy type", TensorRT 10.3
        python/packaging/bindings_wheel/tensorrt/__init__.py); BF16 maps to ml_dtypes.bfloat16 when installed
        (the bfloat16 numpy extension type JAX and TensorFlow use), anything else is a one-line error."""
        try:
            return np.dtype(self.trt.nptype(dtype))
        except TypeError:
            pass
        label = str(getattr(dtype, "name", dtype))
        fix = "rebuild the engine with FP32 inputs and outputs (export the ONNX model with float32 I/O)"
        if self.rebuild:
            fix += f": {self.rebuild}"
        if label == "BF16":
            try:
                import ml_dtypes
            except ImportError:
                raise UserError(f"{self.source}: tensor {name!r} is BF16, which numpy cannot hold without ml_dtypes; "
                                f"pip install ml_dtypes, or {fix}") from None
            return np.dtype(ml_dtypes.bfloat16)
        raise UserError(f"{self.source}: tensor {name!r} is {label}, which has no numpy type; {fix}")

    def close(self) -> None:
        for pointer, _ in self.buffers.values():
            self.backend.free(pointer)
        self.buffers.clear()
        if self.stream is not None:
            self.backend.stream_destroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None

    # -- shapes ---------------------------------------------------------------------------------
    @property
    def input_name(self) -> str:
        return self.inputs[0]

    def batch_range(self) -> tuple[int, int, int] | None:
        """(min, opt, max) batch of profile 0 for a dynamic input, None for a static one."""
        engine = self.engine
        static = tuple(engine.get_tensor_shape(self.input_name))
        if static and int(static[0]) >= 0:
            return None
        shapes = engine.get_tensor_profile_shape(self.input_name, 0)
        return (int(shapes[0][0]), int(shapes[1][0]), int(shapes[2][0]))

    def batch_limits(self) -> tuple[int, int]:
        """(min, max) batch the engine takes: profile 0's range for a dynamic input, (N, N) for a static one."""
        static = self.input_shape()
        if static and static[0] >= 0:
            return (static[0], static[0])
        lo, _, hi = self.batch_range()  # type: ignore[misc]
        return (lo, hi)

    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.engine.get_tensor_shape(self.input_name))

    # -- execution ------------------------------------------------------------------------------
    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, capacity = self.buffers.get(name, (0, 0))
        if capacity < nbytes:
            if capacity:
                self.backend.free(pointer)
            pointer = self.backend.alloc(nbytes)
            self.buffers[name] = (pointer, nbytes)
        return pointer

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch: returns every output by name, copied back to the host."""
        images, results = self._bind(images)
        self.bound = None  # the context now holds this call's shapes, not a timed step's
        stream = self.stream
        self.backend.h2d_async(self.buffers[self.input_name][0], images, stream)
        if not self.context.execute_async_v3(stream):
            raise UserError(f"{self.source}: execute_async_v3 failed; see the TensorRT log")
        for name, host in results.items():
            self.backend.d2h_async(host, self.buffers[name][0], stream)
        self.backend.stream_sync(stream)
        return results

    def timed_step(self, images: np.ndarray, transfers: bool = True) -> TimedStep:
        """A benchmark step for this batch, timed on the stream with CUDA events (trtexec's H2D / GPU compute /
        D2H split). Shapes, addresses and buffers are set once here, not per iteration; without ``transfers``
        the input is copied to the device once and outputs stay there."""
        return TimedStep(self, np.ascontiguousarray(images, dtype=self.dtypes[self.input_name]), transfers)

    def _bind(self, images: np.ndarray, allocate: Any = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Check the batch against the engine, set its shape and every tensor address; host arrays for the outputs
        (``allocate(name, shape, dtype)``, default ``np.empty``: the timed loop passes pinned ones)."""
        context = self.context
        if context is None:
            raise RuntimeError("EngineSession.infer called before open()")
        images = np.ascontiguousarray(images, dtype=self.dtypes[self.input_name])
        expected = self.input_shape()
        if images.ndim != len(expected) or any(e >= 0 and e != g for e, g in zip(expected[1:], images.shape[1:])):
            raise UserError(f"{self.source}: input of shape {list(images.shape)} does not fit the engine's {list(expected)}")
        batch = images.shape[0]
        limits = self.batch_range()
        if limits is not None and not limits[0] <= batch <= limits[2]:
            raise UserError(f"{self.source}: batch {batch} is outside the engine's profile {limits[0]}..{limits[2]}; "
                            f"use --batch-size <= {limits[2]} or rebuild with a wider --batch")
        if limits is None and expected[0] != batch:
            raise UserError(f"{self.source}: the engine takes batches of exactly {expected[0]}, got {batch}")
        if not context.set_input_shape(self.input_name, tuple(images.shape)):
            raise UserError(f"{self.source}: TensorRT rejected input shape {list(images.shape)}")
        context.set_tensor_address(self.input_name, self._buffer(self.input_name, images.nbytes))
        results: dict[str, np.ndarray] = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            host = np.empty(shape, dtype=self.dtypes[name]) if allocate is None else allocate(name, shape, self.dtypes[name])
            results[name] = host
            context.set_tensor_address(name, self._buffer(name, host.nbytes))
        return images, results


class TimedStep:
    """One timed inference per call, on the session's stream: events around the H2D copy, the enqueued engine
    and the D2H copy, then a stream synchronize; returns the parts in ms (``h2d``, ``gpu_compute``, ``d2h``)
    and ``enqueue``, the host time ``execute_async_v3`` took. Shapes and addresses are bound at creation and
    bound again only when another step or ``infer`` used the context last: once per switch, inside the warm-up
    (interleaved benchmarks time several steps of one session in turn), never per timed iteration."""

    def __init__(self, session: EngineSession, images: np.ndarray, transfers: bool) -> None:
        import time

        self.session = session
        # Pinned host buffers, as trtexec and TensorRT's samples/python/common_runtime.py use (cudaMallocHost):
        # an async copy from pageable memory is staged through a driver buffer and a D2H into it blocks the host
        # (CUDA C++ Programming Guide, "Page-Locked Host Memory"), so pageable H2D/D2H times are not trtexec's.
        self.images = session.backend.host_empty(images.shape, images.dtype)
        self.images[...] = images
        self.outputs: dict[str, np.ndarray] = {}
        self.transfers = transfers
        self.clock = time.perf_counter_ns
        self.events = [session.backend.event_create() for _ in range(4)]
        try:
            self._bind()
        except BaseException:  # a batch outside the profile, a rejected shape: release the pinned memory and events
            self.close()
            raise

    def _pinned_output(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        held = self.outputs.get(name)
        if held is not None and held.shape == tuple(shape) and held.dtype == dtype:
            return held
        if held is not None:
            self.session.backend.host_free(held)
            del self.outputs[name]
        fresh = self.session.backend.host_empty(tuple(shape), dtype)
        self.outputs[name] = fresh  # held here at once, so close() frees it even if binding fails after it
        return fresh

    def _bind(self) -> None:
        session = self.session
        _, self.outputs = session._bind(self.images, allocate=self._pinned_output)
        if not self.transfers:  # the timed loop will not copy it: put the input on the device now
            session.backend.h2d_async(session.buffers[session.input_name][0], self.images, session.stream)
            session.backend.stream_sync(session.stream)
        session.bound = self

    def __call__(self) -> dict[str, float]:
        session, backend = self.session, self.session.backend
        if session.bound is not self:
            self._bind()
        stream = session.stream
        e0, e1, e2, e3 = self.events
        if self.transfers:
            backend.event_record(e0, stream)
            backend.h2d_async(session.buffers[session.input_name][0], self.images, stream)
        backend.event_record(e1, stream)
        started = self.clock()
        if not session.context.execute_async_v3(stream):
            raise UserError(f"{session.source}: execute_async_v3 failed; see the TensorRT log")
        enqueue_ms = (self.clock() - started) / 1e6
        backend.event_record(e2, stream)
        if self.transfers:
            for name, host in self.outputs.items():
                backend.d2h_async(host, session.buffers[name][0], stream)
            backend.event_record(e3, stream)
        backend.stream_sync(stream)
        parts = {"gpu_compute": backend.event_elapsed_ms(e1, e2), "enqueue": enqueue_ms}
        if self.transfers:
            parts.update(h2d=backend.event_elapsed_ms(e0, e1), d2h=backend.event_elapsed_ms(e2, e3))
        return parts

    def close(self) -> None:
        backend = self.session.backend
        for event in self.events:
            backend.event_destroy(event)
        self.events = []
        for host in [self.images, *self.outputs.values()]:
            if host is not None:
                backend.host_free(host)
        self.images, self.outputs = None, {}  # type: ignore[assignment]
        if self.session.bound is self:
            self.session.bound = None
