#!/usr/bin/env python3
"""GPU self-check: run, on a machine with a CUDA GPU but no TensorRT, every part of edgeresnet that can run there.

Checks (each in its own child process, so a native crash, a hang or a failed import in one leaves the others
running; the parent itself imports neither torch nor CUDA):

* ``probe``: torch, CUDA as torch and as cuda-python see it, and which of our modules import.
* ``cuda-python-memory``: ``CudaPythonBackend`` (edgeresnet/trt/cuda_python_backend.py) for real: device buffers, pageable and
  pinned host buffers, a non-blocking stream, events around copies, the one-line error of a failed cudaMalloc.
* ``trt-timed-step``: ``EngineSession``/``TimedStep`` (edgeresnet/trt/runtime.py) with a stand-in engine whose
  ``execute_async_v3`` enqueues real device-to-device copies on the given stream; buffers, stream, events and
  copies are the backend's own, so everything but TensorRT's own execute call is real.
* ``trt-runner``: ``TrtRunner.load`` (edgeresnet/runners/trt_runner.py) on a plan-tagged file whose manifest names
  this GPU, with the real GPU probe and backend choice, then ``infer`` and ``benchmark_step`` under ``measure``.
* ``torch-cuda-step`` / ``torch-cuda-graph``: ``TorchCudaStep`` (edgeresnet/bench/timing.py) with and without
  transfers, and with CUDA-graph capture and replay, timed by ``measure``.
* ``torch-benchmark``: ``bench.core.benchmark_artifact`` on a checkpoint through ``TorchRunner`` on CUDA.
* ``train-fp16`` / ``train-bf16``: optimizer steps through ``train.loop.fit`` under autocast (fp16 with the
  GradScaler; bf16 without).
* ``pycuda-install`` / ``pycuda-memory``: pycuda's source distribution from ``wheels/`` built against the machine's
  CUDA toolkit (``pip install --no-index --find-links wheels/ --no-build-isolation --target DIR``, with a
  siteconf.py naming the toolkit), then the ``PycudaBackend`` memory checks. A failed build SKIPs with its cause.

One line per check on stdout: ``PASS name: detail``, ``FAIL name: reason`` or ``SKIP name: reason``; exit 1 when any
check FAILs, 2 for bad options, else 0. ``--json PATH`` writes every result (with a failing check's traceback).
``--require-gpu`` turns "no CUDA device" into a FAIL (use it on the GPU machine, where skips would hide a fault).

Run from the repository root: ``PYTHONPATH=. python benchmarks/gpu_check.py [--json results.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the package need not be installed: the checkout is the package
    sys.path.insert(0, str(REPO))

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
DEFAULT_WHEELS = REPO / "wheels"


class Skip(Exception):
    """Raised by a check that cannot run here; its message is the reason."""


class CheckFailed(AssertionError):
    """A failure that still carries the check's data (the probe's facts are needed even when it fails)."""

    def __init__(self, message: str, data: dict[str, Any]) -> None:
        super().__init__(message)
        self.data = data


@dataclass
class Result:
    name: str
    status: str
    detail: str
    seconds: float = 0.0
    data: dict[str, Any] | None = None
    traceback: str | None = None

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.detail}"


@dataclass(frozen=True)
class Check:
    name: str
    func: Callable[[dict[str, Any], argparse.Namespace], tuple[str, dict[str, Any]]]
    needs: tuple[str, ...]  # facts of the probe that must be true: "torch_cuda", "cudart", "pycuda"
    timeout_s: float = 150.0


# -- helpers used inside the child processes -----------------------------------------------------------------------


def _one_line(text: Any, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def _cudart() -> Any:
    from edgeresnet.trt.cuda_python_backend import import_cudart

    return import_cudart()


def _check(cond: bool, message: str) -> None:
    """Like ``assert`` but kept under ``python -O``."""
    if not cond:
        raise AssertionError(message)


def _short_timing(min_iterations: int = 20) -> Any:
    from edgeresnet.bench.timing import TimingConfig

    return TimingConfig(warmup_ms=20.0, warmup_iterations=3, min_iterations=min_iterations, duration_s=0.2)


# -- probe -------------------------------------------------------------------------------------------------------

MODULES = ("edgeresnet.errors", "edgeresnet.artifacts", "edgeresnet.train.recipe", "edgeresnet.models",
           "edgeresnet.data", "edgeresnet.train.loop", "edgeresnet.train.state", "edgeresnet.bench.timing",
           "edgeresnet.bench.core", "edgeresnet.runners.torch_runner", "edgeresnet.runners.trt_runner",
           "edgeresnet.trt.cuda_mem", "edgeresnet.trt.runtime", "edgeresnet.trt.adapter", "edgeresnet.trt.planfile")
OPTIONAL = ("typer", "rich", "yaml", "sklearn", "PIL", "torchvision", "onnxruntime", "pycuda")


def probe(_: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """What this machine has; the parent decides from it which checks can run."""
    import importlib

    facts: dict[str, Any] = {"python": sys.version.split()[0], "torch_cuda": False, "cudart": False, "pycuda": False}
    broken = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # report every module, not just the first that fails
            broken.append(f"{name} ({type(exc).__name__}: {_one_line(exc, 120)})")
    facts["broken_modules"] = broken
    facts["optional"] = {}
    for name in OPTIONAL:
        try:
            module = importlib.import_module(name)
            facts["optional"][name] = str(getattr(module, "__version__", "present"))
        except Exception as exc:
            facts["optional"][name] = f"missing ({type(exc).__name__})"
    facts["pycuda"] = not facts["optional"]["pycuda"].startswith("missing")
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_cuda_build"] = torch.version.cuda
        if torch.cuda.is_available():
            facts["torch_cuda"] = True
            facts["torch_device"] = torch.cuda.get_device_name(0)
            facts["bf16"] = bool(torch.cuda.is_bf16_supported())
        else:
            facts["torch_reason"] = "torch.cuda.is_available() is False"
    except Exception as exc:
        facts["torch_reason"] = f"torch does not import ({type(exc).__name__}: {_one_line(exc, 120)})"
    try:
        from edgeresnet.trt.cuda_python_backend import probe_gpu

        count, reason = probe_gpu()
        facts["cudart"], facts["cudart_reason"] = count > 0, reason
        try:
            import cuda.bindings

            facts["cuda_bindings"] = cuda.bindings.__version__
        except Exception:
            facts["cuda_bindings"] = "legacy or missing"
    except Exception as exc:
        facts["cudart_reason"] = f"edgeresnet.trt.cuda_mem does not import ({_one_line(exc, 120)})"
    if broken:
        raise CheckFailed(f"{len(broken)} module(s) do not import: {'; '.join(broken)}", facts)
    gpu = facts.get("torch_device") or ("no CUDA for torch: " + facts.get("torch_reason", "?"))
    detail = (f"Python {facts['python']}, torch {facts.get('torch', '-')} (CUDA {facts.get('torch_cuda_build')}), "
              f"{gpu}; cuda-python: {facts.get('cudart_reason')}; "
              + ", ".join(f"{k} {v}" for k, v in facts["optional"].items()))
    return detail, facts


# -- cuda-python / pycuda device memory -----------------------------------------------------------------------------


def _memory_checks(backend: Any) -> tuple[str, dict[str, Any]]:
    """The DeviceBackend contract on the real device: probe, current device, buffers, pinned host arrays, stream,
    events, copies, and a refused allocation as a one-line UserError."""
    import numpy as np

    from edgeresnet.errors import UserError

    data: dict[str, Any] = {}
    if callable(getattr(backend, "device_count", None)):  # the probe through this very backend
        count, reason = backend.device_count()
        _check(count > 0, f"device_count() found none: {reason}")
        data["device_count"] = [count, reason]
    if callable(getattr(backend, "use_device", None)):
        backend.use_device(0)  # cudaSetDevice / a context on Device(0), before any buffer
    info = backend.gpu_info(0)
    _check(bool(info.name) and info.compute_capability >= (5, 0) and info.total_memory > 0, f"odd GPU info {info}")
    data.update(gpu=info.name, cc=info.cc_string, total_memory=info.total_memory)
    stream = backend.stream_create()
    _check(stream != 0, "stream_create returned the default stream 0")
    events = [backend.event_create() for _ in range(3)]
    small = np.arange(4096, dtype=np.float32)
    back = np.zeros_like(small)
    pointer = backend.alloc(small.nbytes)
    try:
        backend.h2d_async(pointer, small, stream)
        backend.d2h_async(back, pointer, stream)
        backend.stream_sync(stream)
        _check(bool(np.array_equal(back, small)), "pageable H2D -> D2H round trip changed the data")
    finally:
        backend.free(pointer)
    # 64 MiB each way, timed with events: pageable numpy arrays, then the backend's page-locked ones (host_empty)
    nbytes, shape = 64 << 20, ((64 << 20) // 4,)
    rng = np.random.default_rng(0)
    pinned = callable(getattr(backend, "host_empty", None))
    if not pinned:
        data["pinned"] = "the backend offers no pinned host buffers (no host_empty)"
    pointer = backend.alloc(nbytes)
    try:
        for label in ("pageable", "pinned") if pinned else ("pageable",):
            if label == "pinned":
                host, out = backend.host_empty(shape, np.float32), backend.host_empty(shape, np.float32)
                _check(isinstance(host, np.ndarray) and host.shape == shape and host.dtype == np.float32,
                       f"host_empty gave {type(host).__name__} {getattr(host, 'shape', '?')}")
            else:
                host, out = np.empty(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
            try:
                host[...] = rng.standard_normal(shape, dtype=np.float32)
                out[...] = 0
                backend.event_record(events[0], stream)
                backend.h2d_async(pointer, host, stream)
                backend.event_record(events[1], stream)
                backend.d2h_async(out, pointer, stream)
                backend.event_record(events[2], stream)
                backend.stream_sync(stream)
                h2d = backend.event_elapsed_ms(events[0], events[1])
                d2h = backend.event_elapsed_ms(events[1], events[2])
                _check(bool(np.array_equal(out, host)), f"{label} 64 MiB round trip changed the data")
                _check(h2d > 0 and d2h > 0, f"{label} copies timed {h2d} / {d2h} ms")
            finally:
                if label == "pinned" and callable(getattr(backend, "host_free", None)):
                    backend.host_free(host)
                    backend.host_free(out)
            data[label] = {"h2d_ms": h2d, "d2h_ms": d2h, "h2d_GBps": nbytes / h2d / 1e6, "d2h_GBps": nbytes / d2h / 1e6}
    finally:
        backend.free(pointer)
    try:
        huge = backend.alloc(1 << 50)  # 1 PiB: the driver refuses with an error code, not a crash
    except UserError as exc:
        _check("\n" not in str(exc), "the allocation error is not one line")
        data["alloc_error"] = str(exc)
    except Exception as exc:
        raise AssertionError(f"{type(backend).__name__}.alloc(1 PiB) let {type(exc).__module__}.{type(exc).__name__} "
                             f"({_one_line(exc, 120)}) through instead of a one-line UserError") from exc
    else:
        backend.free(huge)
        raise AssertionError("a 1 PiB allocation succeeded")
    for event in events:
        backend.event_destroy(event)
    backend.stream_destroy(stream)
    parts = [f"{info.name} cc {info.cc_string}, {info.total_memory / 2**30:.0f} GiB"]
    for label in ("pageable", "pinned"):
        if isinstance(data.get(label), dict):
            d = data[label]
            parts.append(f"{label} 64 MiB H2D {d['h2d_GBps']:.1f} GB/s D2H {d['d2h_GBps']:.1f} GB/s")
        elif label in data:
            parts.append(str(data[label]))
    parts.append(f"1 PiB alloc refused: {_one_line(data['alloc_error'], 100)}")
    return "; ".join(parts), data


def _backend(name: str) -> Any:
    """The backend as the runners get it: ``select_backend`` (probed through itself, device made current)."""
    from edgeresnet.trt import cuda_mem

    backend, reason = cuda_mem.select_backend(name, 0)
    _check(backend is not None, f"select_backend({name!r}) found no device: {reason}")
    return backend


def check_cuda_python(_: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    from edgeresnet.trt.cuda_python_backend import CudaPythonBackend

    backend = _backend("cuda-python")
    _check(isinstance(backend, CudaPythonBackend), f"the cuda-python backend is a {type(backend).__name__}")
    return _memory_checks(backend)


def check_pycuda(_: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    from edgeresnet.trt.pycuda_backend import PycudaBackend

    backend = _backend("pycuda")
    _check(isinstance(backend, PycudaBackend), f"the pycuda backend is a {type(backend).__name__}")
    import pycuda

    detail, data = _memory_checks(backend)
    return f"pycuda {getattr(pycuda, 'VERSION_TEXT', '?')}: {detail}", data


def cuda_toolkit_root(environ: dict[str, str] | None = None) -> Path | None:
    """The CUDA toolkit folder holding both ``bin/nvcc`` and ``include/cuda.h``.

    pycuda's setup.py takes CUDA_ROOT as the parent of the folder of the first ``nvcc`` on PATH (pycuda 2026.1
    setup.py, ``get_config_schema``); a wrapper such as /usr/local/bin/nvcc then yields /usr/local, whose include/
    has no cuda.h, and the build stops at ``#include <cuda.h>``. So look for the real toolkit first."""
    environ = dict(os.environ) if environ is None else environ
    candidates: list[Path] = []
    found = shutil.which("nvcc", path=environ.get("PATH"))
    if found:
        candidates.append(Path(os.path.realpath(found)).parent.parent)
    candidates += [Path(environ[k]) for k in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT") if environ.get(k)]
    candidates.append(Path("/usr/local/cuda"))
    candidates += sorted(Path("/usr/local").glob("cuda-*"), reverse=True)
    for root in candidates:
        if (root / "bin" / "nvcc").is_file() and (root / "include" / "cuda.h").is_file():
            return root
    return None


LIBCUDA_DIRS = ("lib64/stubs", "targets/x86_64-linux/lib/stubs", "targets/sbsa-linux/lib/stubs", "lib/stubs")
DRIVER_DIRS = ("/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
               "/usr/local/cuda/compat")


def pycuda_siteconf(root: Path) -> str:
    """pycuda's siteconf.py (read by its aksetup_helper.ConfigSchema from the source folder) for this toolkit:
    CUDA_ROOT, cuRAND only when its header is there, and a libcuda to link: the toolkit's stub ``libcuda.so``,
    else the driver's own, by its versioned name when no unversioned link exists (``-l:libcuda.so.1``, GNU ld)."""
    lib_dirs = [str(root / "lib64"), str(root / "lib")]
    libname = ["cuda"]
    found = [root / d for d in LIBCUDA_DIRS if (root / d / "libcuda.so").exists()]
    found += [Path(d) for d in DRIVER_DIRS if (Path(d) / "libcuda.so").exists()]
    if found:
        lib_dirs = [str(found[0])] + lib_dirs
    else:
        versioned = [Path(d) for d in DRIVER_DIRS if (Path(d) / "libcuda.so.1").exists()]
        if versioned:
            lib_dirs, libname = [str(versioned[0])] + lib_dirs, [":libcuda.so.1"]
    curand = (root / "include" / "curand.h").is_file()
    return "\n".join([f"CUDA_ROOT = {str(root)!r}", f"CUDA_ENABLE_CURAND = {curand!r}",
                      f"CUDADRV_LIB_DIR = {lib_dirs!r}", f"CUDADRV_LIBNAME = {libname!r}",
                      f"CUDART_LIB_DIR = {lib_dirs!r}", f"CURAND_LIB_DIR = {lib_dirs!r}", ""])


def unpack_sdist(sdist: Path, into: Path) -> Path:
    """The sdist's top folder, unpacked (the tar's "data" filter where this Python has it: no absolute paths,
    no links out of the folder)."""
    import tarfile

    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(into, filter="data")
        else:  # pragma: no cover - Python < 3.10.12
            for member in archive.getmembers():
                if member.name.startswith(("/", "..")) or ".." in Path(member.name).parts:
                    raise ValueError(f"{sdist}: unsafe member {member.name}")
            archive.extractall(into)
    folders = [p for p in into.iterdir() if p.is_dir()]
    if len(folders) != 1:
        raise ValueError(f"{sdist}: expected one top folder, found {len(folders)}")
    return folders[0]


def pycuda_install(args: argparse.Namespace, timeout_s: float) -> Result:
    """Build pycuda from carried files (no network there): a failure is a SKIP with pip's last words."""
    wheels = Path(args.wheels)
    sdists = sorted(wheels.glob("pycuda-*.tar.gz"))
    if not sdists:
        return Result("pycuda-install", SKIP, f"no pycuda source distribution in {wheels}/ "
                      "(benchmarks/gpu_check.sh download fills it; carry it to the GPU machine)")
    root = cuda_toolkit_root()
    if root is None:
        return Result("pycuda-install", SKIP, "no CUDA toolkit with bin/nvcc and include/cuda.h found (PATH, "
                      "CUDA_HOME, CUDA_PATH, /usr/local/cuda*)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_pycuda_") as tmp:
        try:
            source = unpack_sdist(sdists[-1], Path(tmp))
        except Exception as exc:
            return Result("pycuda-install", SKIP, f"{sdists[-1].name} does not unpack: {_one_line(exc, 200)}")
        siteconf = pycuda_siteconf(root)
        (source / "siteconf.py").write_text(siteconf)
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
                   "--no-build-isolation", "--no-cache-dir", "--disable-pip-version-check", "--target",
                   str(args.site), str(source)]
        env = dict(os.environ, PATH=os.pathsep.join([str(root / "bin"), os.environ.get("PATH", "")]))
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            return Result("pycuda-install", SKIP, f"pip did not finish within {timeout_s:.0f} s",
                          time.perf_counter() - started)
    seconds = time.perf_counter() - started
    log = f"siteconf.py:\n{siteconf}\n{done.stdout}{done.stderr}"
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
        causes = [ln for ln in lines if any(k in ln for k in ("fatal error", "undefined reference", "cannot find -l",
                                                              "No matching distribution", "ModuleNotFoundError"))]
        errors = causes[:2] or [ln for ln in lines if "error" in ln.lower()][-3:] or lines[-3:]
        return Result("pycuda-install", SKIP, f"pip exited {done.returncode} (CUDA_ROOT {root}): "
                      f"{_one_line(' | '.join(errors), 400)}", seconds, traceback=log[-12000:])
    return Result("pycuda-install", PASS, f"{sdists[-1].name} built against {root} and installed into {args.site} "
                  f"in {seconds:.0f} s", seconds)


# -- the stand-in TensorRT engine -------------------------------------------------------------------------------------


class StandInTrt:
    """A ``tensorrt``-shaped namespace with just what EngineSession and TrtRunner use; its engine's execute is real.

    ``execute_async_v3(stream)`` enqueues, on that stream, ``repeats`` device-to-device copies of the bound input
    into a workspace (so the timed compute grows with the batch) and one strided 2D copy that writes
    ``logits[n, :] = input[n].flat[:classes]``, so the outputs show that every address and shape was bound right.
    ``copy`` is injected: cuda-python's cudaMemcpy2DAsync on a GPU, a numpy copy in the CPU test.
    """

    __name__ = "tensorrt"
    __version__ = "10.3.0"

    def __init__(self, copy2d: Callable[..., None], alloc: Callable[[int], int], free: Callable[[int], None], *,
                 channels: int = 3, size: int = 128, classes: int = 10, profile: tuple[int, int, int] = (1, 8, 64),
                 repeats: int = 4) -> None:
        import numpy as np

        outer = self
        self.copy2d, self.alloc, self.free = copy2d, alloc, free
        self.shape = (channels, size, size)
        self.classes, self.profile, self.repeats = classes, profile, repeats
        self.executions = 0

        class DataType:
            FLOAT = "FLOAT"

        class TensorIOMode:
            INPUT = "INPUT"
            OUTPUT = "OUTPUT"

        class ILogger:
            def __init__(self) -> None:
                pass

        class Runtime:
            def __init__(self, logger: Any) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, data: Any) -> Any:
                return _Engine(outer) if bytes(data[:4]) == b"ftrt" else None  # real TensorRT: None + a log line

        self.DataType, self.TensorIOMode, self.ILogger, self.Runtime = DataType, TensorIOMode, ILogger, Runtime
        self.nptype = lambda dtype: np.float32


class _Engine:
    def __init__(self, trt: StandInTrt) -> None:
        self.trt = trt
        self.num_io_tensors = 2
        self._names = ("input", "logits")

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_dtype(self, name: str) -> str:
        return self.trt.DataType.FLOAT

    def get_tensor_mode(self, name: str) -> str:
        return self.trt.TensorIOMode.INPUT if name == "input" else self.trt.TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, *self.trt.shape) if name == "input" else (-1, self.trt.classes)

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return [(b, *self.trt.shape) for b in self.trt.profile]

    def create_execution_context(self) -> _Context:
        return _Context(self.trt)


class _Context:
    def __init__(self, trt: StandInTrt) -> None:
        self.trt = trt
        self.batch: int | None = None
        self.addresses: dict[str, int] = {}
        per_image = 4 * trt.shape[0] * trt.shape[1] * trt.shape[2]
        self.workspace = trt.alloc(per_image * trt.profile[2])  # like TensorRT: device memory held by the context

    def __del__(self) -> None:
        try:
            self.trt.free(self.workspace)
        except Exception:  # interpreter shutdown: the process's CUDA context goes away anyway
            pass

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(d) for d in shape)
        lo, _, hi = self.trt.profile
        if name != "input" or shape[1:] != self.trt.shape or not lo <= shape[0] <= hi:
            return False  # real TensorRT returns False and logs
        self.batch = shape[0]
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name == "input":
            return (self.batch if self.batch is not None else -1, *self.trt.shape)
        return (self.batch if self.batch is not None else -1, self.trt.classes)

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.addresses[name] = int(pointer)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        if self.batch is None or set(self.addresses) != {"input", "logits"}:
            return False  # real TensorRT: False when a shape or an address is missing
        trt = self.trt
        row = 4 * trt.shape[0] * trt.shape[1] * trt.shape[2]
        for _ in range(trt.repeats):
            trt.copy2d(self.workspace, row, self.addresses["input"], row, row, self.batch, stream)
        trt.copy2d(self.addresses["logits"], 4 * trt.classes, self.addresses["input"], row, 4 * trt.classes,
                   self.batch, stream)
        trt.executions += 1
        return True


def stand_in_for_cuda_python() -> StandInTrt:
    """The stand-in whose copies are cudaMemcpy2DAsync(DeviceToDevice) on the session's stream."""
    rt = _cudart()

    def call(what: str, result: Any) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"{what} failed: {err}")
        return values[0] if values else None

    def copy2d(dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, stream: int) -> None:
        call("cudaMemcpy2DAsync", rt.cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height,
                                                       rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream))

    return StandInTrt(copy2d, lambda n: int(call("cudaMalloc", rt.cudaMalloc(n))),
                      lambda p: call("cudaFree", rt.cudaFree(p)))


def _expected_logits(images: Any, classes: int) -> Any:
    return images.reshape(images.shape[0], -1)[:, :classes]


def run_timed_session(trt: StandInTrt, backend: Any, *, batches: tuple[int, ...] = (1, 64),
                      min_iterations: int = 20) -> tuple[str, dict[str, Any]]:
    """EngineSession.open/infer/timed_step/close with the stand-in engine; returns the detail and the numbers."""
    import numpy as np

    from edgeresnet.bench.timing import measure
    from edgeresnet.trt.runtime import EngineSession

    session = EngineSession(trt, b"ftrt" + bytes(60), backend, source="stand-in.engine").open()
    data: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    try:
        for batch in batches:
            images = rng.standard_normal((batch, *trt.shape), dtype=np.float32)
            logits = session.infer(images)["logits"]
            _check(bool(np.array_equal(logits, _expected_logits(images, trt.classes))),
                   f"infer batch {batch}: the outputs are not the bound input's rows")
            for transfers in (True, False):
                step = session.timed_step(images, transfers=transfers)
                try:
                    timings = measure(step, _short_timing(min_iterations))
                    outputs = {name: np.array(host) for name, host in step.outputs.items()}  # close() frees them
                finally:
                    step.close()
                if transfers:
                    _check(bool(np.array_equal(outputs["logits"], _expected_logits(images, trt.classes))),
                           f"timed step batch {batch}: outputs differ from the input's rows")
                needed = {"gpu_compute", "enqueue"} | ({"h2d", "d2h"} if transfers else set())
                _check(set(timings.components) == needed, f"components {sorted(timings.components)}")
                medians = {k: _median(v) for k, v in timings.components.items()}
                _check(all(len(v) == timings.iterations for v in timings.components.values()),
                       "a component is missing in some iterations")
                _check(medians["gpu_compute"] > 0, f"gpu_compute median {medians['gpu_compute']} ms")
                data[f"b{batch}_{'transfers' if transfers else 'device'}"] = {
                    "iterations": timings.iterations, "latency_ms": _median(timings.latency_ms), **medians}
    finally:
        session.close()
    _check(session.buffers == {} and session.stream is None, "close() left buffers or the stream behind")
    small, large = data[f"b{batches[0]}_device"], data[f"b{batches[-1]}_device"]
    return (f"{trt.executions} stand-in executions; gpu_compute median batch {batches[0]} {small['gpu_compute']:.4f} "
            f"ms, batch {batches[-1]} {large['gpu_compute']:.4f} ms; batch {batches[-1]} with transfers h2d "
            f"{data[f'b{batches[-1]}_transfers']['h2d']:.3f} d2h {data[f'b{batches[-1]}_transfers']['d2h']:.4f} ms"), data


def check_trt_timed_step(_: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    backend = _backend("cuda-python")
    detail, data = run_timed_session(stand_in_for_cuda_python(), backend)
    large, small = data["b64_device"]["gpu_compute"], data["b1_device"]["gpu_compute"]
    _check(large > small, f"gpu_compute does not grow with the work: batch 64 {large} ms <= batch 1 {small} ms")
    return detail, data


def write_stand_in_engine(folder: Path, trt: StandInTrt, gpu_name: str, cc: str) -> Path:
    """A plan-tagged file and its manifest saying it was built for this GPU by the stand-in's TensorRT version."""
    import struct

    from edgeresnet.artifacts import build_manifest, write_manifest
    from edgeresnet.trt.planfile import PLAN_TAG

    version = tuple(int(p) for p in trt.__version__.split(".")) + (0,)
    head = struct.pack("<II", PLAN_TAG, 0) + bytes(16) + bytes(version[:4])
    path = folder / "stand-in.engine"
    path.write_bytes(head + bytes(4096 - len(head)))
    lo, opt, hi = trt.profile
    extra = {"engine": {"format": "edgeresnet-trt-engine", "builder": "tensorrt", "tensorrt_version": trt.__version__,
                        "target": "gpu-check", "precision": "fp32", "precision_label": "fp32",
                        "profiles": [{"input": "input", "min": [lo, *trt.shape], "opt": [opt, *trt.shape],
                                      "max": [hi, *trt.shape]}],
                        "input": {"name": "input", "shape": [-1, *trt.shape]}, "dla_core": None, "build_options": {}},
             "gpu": {"name": gpu_name, "compute_capability": cc}}
    write_manifest(path, build_manifest("tensorrt-engine", path, command="build", extra=extra))
    return path


def run_trt_runner(trt: StandInTrt, folder: Path, gpu_name: str, cc: str, device_backend: Any = None,
                   batch: int = 16) -> tuple[str, dict[str, Any]]:
    import numpy as np

    from edgeresnet.bench.timing import measure
    from edgeresnet.runners.base import load_runner
    from edgeresnet.runners.trt_runner import TrtRunner

    path = write_stand_in_engine(folder, trt, gpu_name, cc)
    runner = load_runner(path, trt_module=trt, device_backend=device_backend)
    _check(isinstance(runner, TrtRunner), f"load_runner gave {type(runner).__name__}")
    images = np.random.default_rng(1).standard_normal((batch, *trt.shape), dtype=np.float32)
    with runner:
        logits = runner.infer(images)
        _check(bool(np.array_equal(logits, _expected_logits(images, trt.classes))), "TrtRunner.infer outputs differ")
        step = runner.benchmark_step(images, transfers=True)
        try:
            timings = measure(step, _short_timing())
        finally:
            step.close()
    described = runner.describe()
    medians = {k: _median(v) for k, v in timings.components.items()}
    _check(set(medians) == {"h2d", "gpu_compute", "d2h", "enqueue"}, f"components {sorted(medians)}")
    _check(medians["gpu_compute"] > 0 and medians["h2d"] > 0, f"event timings {medians}")
    return (f"{described['cuda_backend']} backend on {described['gpu']}: batch {batch} h2d {medians['h2d']:.3f} "
            f"gpu_compute {medians['gpu_compute']:.4f} d2h {medians['d2h']:.4f} ms over {timings.iterations} "
            "iterations"), {"describe": described, **medians}


def check_trt_runner(_: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    info = _backend("cuda-python").gpu_info(0)
    with tempfile.TemporaryDirectory(prefix="gpu_check_trt_") as tmp:
        # device_backend=None: TrtRunner.load probes the GPU and picks the backend itself, as in production
        return run_trt_runner(stand_in_for_cuda_python(), Path(tmp), info.name, info.cc_string)


# -- torch: CUDA-event timing and the benchmark path ------------------------------------------------------------------


def _small_model(classes: int = 10) -> tuple[Any, Any]:
    from edgeresnet.models import ModelSpec, build_model

    spec = ModelSpec("resnet18", classes, small_stem=True)
    return build_model(spec).eval(), spec


def _torch_steps(variants: tuple[tuple[str, dict[str, Any]], ...]) -> dict[str, Any]:
    """``TorchCudaStep`` of a small ResNet-18 for each variant, timed by ``measure``; outputs checked against eager."""
    import numpy as np
    import torch

    from edgeresnet.bench.timing import TorchCudaStep, measure

    torch.manual_seed(0)
    model, _ = _small_model()
    model = model.cuda()
    images = np.random.default_rng(0).standard_normal((32, 3, 32, 32), dtype=np.float32)
    with torch.inference_mode():
        reference = model(torch.from_numpy(images).cuda()).float().cpu().numpy()
    data: dict[str, Any] = {}
    for label, options in variants:
        step = TorchCudaStep(model, images, "cuda", **options)
        try:
            if options.get("cuda_graph"):
                _check(step.graph is not None, f"CUDA graph not captured: {step.graph_error}")
            with torch.inference_mode():
                timings = measure(step, _short_timing())
        finally:
            step.close()
        _check(torch.cuda.current_stream() == torch.cuda.default_stream(), "close() did not restore the stream")
        medians = {k: _median(v) for k, v in timings.components.items()}
        _check(medians["gpu_compute"] > 0, f"{label}: gpu_compute {medians['gpu_compute']} ms")
        if options.get("transfers", True):
            _check(medians["h2d"] > 0 and medians["d2h"] > 0, f"{label}: transfers timed {medians}")
            got = step.host_out.float().numpy()
            # loose: cuDNN may pick another (TF32) algorithm on the side stream; a wrong batch is off by O(1)
            _check(bool(np.allclose(got, reference, rtol=1e-2, atol=1e-2)),
                   f"{label}: timed outputs differ from the model's by {float(np.abs(got - reference).max())}")
        data[label] = {"iterations": timings.iterations, "latency_ms": _median(timings.latency_ms), **medians}
    return data


def check_torch_cuda_step(_: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    data = _torch_steps((("transfers", {}), ("device", {"transfers": False})))
    eager, device = data["transfers"], data["device"]
    return (f"ResNet-18 batch 32 @32px, medians: gpu_compute {eager['gpu_compute']:.3f} ms (h2d {eager['h2d']:.3f}, "
            f"d2h {eager['d2h']:.3f}, enqueue {eager['enqueue']:.3f}), device-resident gpu_compute "
            f"{device['gpu_compute']:.3f} ms"), data


def check_torch_cuda_graph(_: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    data = _torch_steps((("graph", {"cuda_graph": True}),))
    graph = data["graph"]
    return (f"ResNet-18 batch 32 @32px graph replay, medians: gpu_compute {graph['gpu_compute']:.3f} ms, enqueue "
            f"{graph['enqueue']:.3f} ms"), data


def run_torch_benchmark(device: str, batches: tuple[int, ...] = (1, 16)) -> tuple[str, dict[str, Any]]:
    """``benchmark_artifact`` on a freshly saved checkpoint, as ``edgeresnet benchmark model.pt`` runs it."""
    import torch

    from edgeresnet.bench.core import BenchSettings, benchmark_artifact
    from edgeresnet.data.presets import preset_for
    from edgeresnet.train.state import save_checkpoint

    torch.manual_seed(0)
    model, spec = _small_model()
    preprocess = preset_for("digits", 32, tuple("0123456789")).to_dict()
    with tempfile.TemporaryDirectory(prefix="gpu_check_bench_") as tmp:
        path = save_checkpoint(Path(tmp) / "model.pt", model, spec, preprocess, recipe={}, epoch=0, metrics={},
                               role="best")
        settings = BenchSettings(backend="torch", batches=batches, timing=_short_timing(), device=device)
        records = benchmark_artifact(path, settings, accuracy=False, environment={})
    _check([r["batch"] for r in records] == list(batches), f"batches {[r['batch'] for r in records]}")
    parts = []
    for record in records:
        _check(str(record["device"]).startswith(device), f"ran on {record['device']}, not {device}")
        _check(record["latency_ms"]["median"] > 0, f"batch {record['batch']}: latency {record['latency_ms']}")
        if device.startswith("cuda"):  # CUDA events only on the device; the CPU path has host latency alone
            for key in ("gpu_compute_ms", "h2d_ms", "d2h_ms"):
                _check(record[key] is not None and record[key]["median"] > 0,
                       f"batch {record['batch']}: {key} {record[key]}")
        gpu = f", gpu_compute {record['gpu_compute_ms']['median']:.3f} ms" if record["gpu_compute_ms"] else ""
        parts.append(f"batch {record['batch']} latency median {record['latency_ms']['median']:.3f} ms{gpu}, "
                     f"{record['throughput_ips']:.0f} img/s")
    return "; ".join(parts), {"records": records}


def check_torch_benchmark(_: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    return run_torch_benchmark("cuda")


# -- training under autocast ----------------------------------------------------------------------------------------


def _splits(image_size: int) -> Any:
    """The digits set (scikit-learn's, no download); random images of 10 classes when scikit-learn is missing."""
    try:
        from edgeresnet.data import load_data

        return load_data("digits", image_size, seed=0)
    except ImportError:
        import numpy as np

        from edgeresnet.data.presets import digits_augment, preset_for
        from edgeresnet.data.sources import DataSplits, Sample

        rng = np.random.default_rng(0)
        splits = {name: [Sample(label=i % 10, array=rng.integers(0, 255, (8, 8), dtype=np.uint8)) for i in range(n)]
                  for name, n in (("train", 640), ("val", 100), ("test", 100))}
        names = tuple(str(i) for i in range(10))
        return DataSplits("random", names, splits, preset_for("digits", image_size, names), digits_augment())


def run_training(precision: str, device: str, steps: int = 8, batch_size: int = 64,
                 splits: Any = None) -> tuple[str, dict[str, Any]]:
    """``fit`` for a few optimizer steps under autocast, watching the GradScaler and the conv output dtype."""
    import math

    import torch

    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.train import fit, seed_everything
    from edgeresnet.train.recipe import TrainRecipe

    splits = splits if splits is not None else _splits(32)
    seed_everything(0)
    spec = ModelSpec("resnet18", splits.num_classes)
    model = build_model(spec)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    dtypes: list[Any] = []
    hook = model.conv1.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype) if model.training else None)
    scalers: list[Any] = []
    original = torch.amp.GradScaler

    class RecordingScaler(original):  # type: ignore[misc,valid-type]
        """The real GradScaler, counting the optimizer steps it takes and keeping its scale."""

        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.steps = 0
            scalers.append(self)

        def step(self, optimizer: Any, *a: Any, **k: Any) -> Any:
            self.steps += 1
            return super().step(optimizer, *a, **k)

    torch.amp.GradScaler = RecordingScaler  # train.loop looks it up on torch.amp at call time
    try:
        recipe = TrainRecipe(image_size=32, batch_size=batch_size, epochs=1, max_steps=steps, precision=precision,
                             device=device, warmup_epochs=0.0, workers=0)
        started = time.perf_counter()
        result = fit(model, splits, recipe, None, progress=False, spec=spec)
        seconds = time.perf_counter() - started
    finally:
        torch.amp.GradScaler = original
        hook.remove()
    _check(result.steps == steps, f"{result.steps} optimizer steps, expected {steps}")
    record = result.history[-1]
    _check(math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"]), f"losses {record}")
    want = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    _check(bool(dtypes) and all(d == want for d in dtypes), f"conv1 ran in {sorted(set(map(str, dtypes)))}, not {want}")
    _check(len(scalers) == 1, f"{len(scalers)} GradScalers made")
    scaler = scalers[0]
    changed = sum(not torch.equal(before[name], p.detach()) for name, p in result.model.named_parameters())
    _check(changed > 0, "no parameter changed: every optimizer step was skipped")
    _check(next(result.model.parameters()).device.type == "cpu", "the trained model is not back on the CPU")
    data = {"steps": result.steps, "train_loss": record["train_loss"], "val_loss": record["val_loss"],
            "val_acc": record["val_acc"], "scaler_enabled": scaler.is_enabled(), "scaler_steps": scaler.steps,
            "seconds": seconds, "changed_tensors": changed, "autocast_dtype": str(want)}
    if precision == "fp16":
        _check(scaler.is_enabled(), "fp16 on CUDA ran without an enabled GradScaler")
        scale = float(scaler.get_scale())
        _check(math.isfinite(scale) and scale > 0, f"GradScaler scale {scale}")
        data["scale"] = scale
        tail = f"GradScaler on ({scaler.steps} steps, scale {scale:g})"
    else:
        _check(not scaler.is_enabled(), "bf16 made an enabled GradScaler")
        tail = "no GradScaler"
    return (f"{steps} steps of batch {batch_size} in {seconds:.1f} s, conv1 in {want}, {tail}, train loss "
            f"{record['train_loss']:.3f}, val loss {record['val_loss']:.3f}"), data


def check_train_fp16(_: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    return run_training("fp16", "cuda")


def check_train_bf16(facts: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if not facts.get("bf16", False):
        raise Skip("torch.cuda.is_bf16_supported() is False on this GPU")
    return run_training("bf16", "cuda")


# -- the parent ---------------------------------------------------------------------------------------------------

CHECKS: tuple[Check, ...] = (
    Check("probe", probe, (), 120.0),
    Check("cuda-python-memory", check_cuda_python, ("cudart",)),
    Check("trt-timed-step", check_trt_timed_step, ("cudart",)),
    Check("trt-runner", check_trt_runner, ("cudart",)),
    Check("torch-cuda-step", check_torch_cuda_step, ("torch_cuda",)),
    Check("torch-cuda-graph", check_torch_cuda_graph, ("torch_cuda",)),
    Check("torch-benchmark", check_torch_benchmark, ("torch_cuda",)),
    Check("train-fp16", check_train_fp16, ("torch_cuda",), 240.0),
    Check("train-bf16", check_train_bf16, ("torch_cuda",), 240.0),
    Check("pycuda-memory", check_pycuda, ("cudart", "pycuda")),
)
NAMES = ("probe", "cuda-python-memory", "trt-timed-step", "trt-runner", "torch-cuda-step", "torch-cuda-graph",
         "torch-benchmark",
         "train-fp16", "train-bf16", "pycuda-install", "pycuda-memory")
_REASONS = {"cudart": "cudart_reason", "torch_cuda": "torch_reason"}


def run_child(name: str, facts: dict[str, Any], args: argparse.Namespace) -> Result:
    """Run one check in this process (the child's side)."""
    check = next(c for c in CHECKS if c.name == name)
    started = time.perf_counter()
    try:
        detail, data = check.func(facts, args)
        return Result(name, PASS, detail, time.perf_counter() - started, data)
    except Skip as exc:
        return Result(name, SKIP, str(exc), time.perf_counter() - started)
    except BaseException as exc:  # every failure becomes this check's FAIL line, never the script's crash
        return Result(name, FAIL, f"{type(exc).__name__}: {_one_line(exc, 400)}", time.perf_counter() - started,
                      getattr(exc, "data", None), traceback=traceback.format_exc())


def spawn(name: str, facts: dict[str, Any], args: argparse.Namespace, timeout_s: float) -> Result:
    """One check in a child process; a crash or a timeout is that check's FAIL."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        facts_file, out_file, log_file = Path(tmp, "facts.json"), Path(tmp, "result.json"), Path(tmp, "log.txt")
        facts_file.write_text(json.dumps(facts, default=str))
        command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-facts", str(facts_file),
                   "--child-out", str(out_file), "--wheels", str(args.wheels), "--site", str(args.site)]
        env = dict(os.environ)
        paths = [str(REPO)] + ([str(args.site)] if Path(args.site).is_dir() else [])
        env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        started = time.perf_counter()
        with log_file.open("w") as log:
            try:
                code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                                      timeout=timeout_s).returncode
            except subprocess.TimeoutExpired:
                code = None
        seconds = time.perf_counter() - started
        tail = log_file.read_text(errors="replace")[-8000:]
        if out_file.is_file():
            result = Result(**json.loads(out_file.read_text()))
            result.seconds = seconds
            return result
        why = f"no result within {timeout_s:.0f} s (killed)" if code is None else f"the child process died (exit {code})"
        last = [ln for ln in tail.splitlines() if ln.strip()][-2:]
        return Result(name, FAIL, f"{why}; last output: {_one_line(' | '.join(last), 300) or '(none)'}", seconds,
                      traceback=tail)


def unmet(check_needs: tuple[str, ...], facts: dict[str, Any], require_gpu: bool) -> Result | None:
    """The SKIP (or, with --require-gpu, FAIL) of a check whose needs the probe did not find."""
    for need in check_needs:
        if facts.get(need):
            continue
        if need == "pycuda":
            return Result("", SKIP, "pycuda is not importable (pycuda-install did not install it)")
        reason = facts.get(_REASONS.get(need, ""), "the probe found out nothing (see its line)")
        label = "CUDA for torch" if need == "torch_cuda" else "CUDA device for cuda-python"
        return Result("", FAIL if require_gpu else SKIP, f"no {label}: {reason}")
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="edgeresnet GPU self-check (no TensorRT needed)")
    parser.add_argument("--json", metavar="PATH", help="write every result (and failing tracebacks) to PATH")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated checks to run, of: {', '.join(NAMES)}")
    parser.add_argument("--require-gpu", action="store_true", help="no CUDA device is a FAIL, not a SKIP")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget for all checks (default 450)")
    parser.add_argument("--pycuda-timeout-s", type=float, default=300.0, help="limit for building pycuda (default 300)")
    parser.add_argument("--wheels", default=str(DEFAULT_WHEELS), help="folder with pycuda's sdist and its wheels")
    parser.add_argument("--site", default=os.path.join(tempfile.gettempdir(), "gpu_check_site"),
                        help="where pycuda is installed (a --target folder, put on the checks' PYTHONPATH)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-facts", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def fail_usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:  # the child's side: one check, its result as JSON
        facts = json.loads(Path(args.child_facts).read_text()) if args.child_facts else {}
        result = run_child(args.child, facts, args)
        Path(args.child_out).write_text(json.dumps(asdict(result), default=str))
        return 0
    wanted = list(NAMES)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in NAMES]
        if unknown:
            return fail_usage(f"--only {','.join(unknown)}: unknown check; choose from {', '.join(NAMES)}")
    if args.budget_s <= 0 or args.pycuda_timeout_s <= 0:
        return fail_usage("--budget-s and --pycuda-timeout-s must be positive seconds")
    if args.json:
        target = Path(args.json)
        if not target.parent.is_dir():
            return fail_usage(f"--json {target}: folder {target.parent} does not exist; create it or pick another path")

    deadline = time.monotonic() + args.budget_s
    results: list[Result] = []

    def report(result: Result) -> None:
        results.append(result)
        print(result.line(), flush=True)

    probe_result = spawn("probe", {}, args, min(120.0, args.budget_s))
    facts = dict(probe_result.data or {})
    if "probe" in wanted or probe_result.status == FAIL:
        report(probe_result)
    for name in wanted:
        if name == "probe":
            continue
        left = deadline - time.monotonic()
        if left < 15:
            report(Result(name, SKIP, f"the {args.budget_s:.0f} s budget is spent"))
            continue
        if name == "pycuda-install":
            if not facts.get("cudart"):
                report(Result(name, SKIP, f"no CUDA device to build pycuda for: {facts.get('cudart_reason', '?')}"))
            elif facts.get("pycuda"):
                report(Result(name, SKIP, f"pycuda {facts['optional']['pycuda']} is already importable"))
            else:
                result = pycuda_install(args, min(args.pycuda_timeout_s, left - 10))
                report(result)
                if result.status == PASS:
                    facts["pycuda"] = True
            continue
        check = next(c for c in CHECKS if c.name == name)
        missing = unmet(check.needs, facts, args.require_gpu)
        if missing is not None:
            missing.name = name
            report(missing)
            continue
        report(spawn(name, facts, args, min(check.timeout_s, left - 5)))

    if args.json:
        from edgeresnet.artifacts import write_text_atomic

        payload = {"facts": facts, "results": [asdict(r) for r in results],
                   "summary": {s: sum(r.status == s for r in results) for s in (PASS, FAIL, SKIP)}}
        write_text_atomic(Path(args.json), json.dumps(payload, indent=2, default=str) + "\n", "--json")
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, SKIP)}
    print(f"gpu_check: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped", flush=True)
    return 1 if counts[FAIL] else 0


if __name__ == "__main__":
    sys.exit(main())
