"""The cuda-python backend (the default): the CUDA runtime API, every call checked, and the device probe.

cuda-python reports failures as return values, not exceptions: every runtime call returns
``(cudaError_t, *values)`` (cuda-python docs, "Overview": "the first element of the return tuple is the error
code"), so probing a machine without a driver is safe, whereas constructing TensorRT objects there can crash.
"""

from __future__ import annotations

from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.trt.cuda_mem import INSTALL_HINT, CudaError, GpuInfo, hidden_devices

# cudaError_t 35 = cudaErrorInsufficientDriver (CUDA runtime API, driver_types.h: "the installed NVIDIA CUDA driver
# is older than the CUDA runtime library"; also returned when no driver is loaded at all).
CUDA_ERROR_INSUFFICIENT_DRIVER = 35
# The oldest driver branch each CUDA runtime major runs on with minor-version compatibility: CUDA 12.x >= 525,
# CUDA 13.x >= 580 (https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html, Table 1;
# the exact Linux x86_64 minimums are 525.60.13 for 12.0 GA and 580.65.06 for 13.0 GA, CUDA Toolkit release notes).
DRIVER_MINIMUM = {12: "525.60.13", 13: "580.65.06"}


def _version_text(version: int | None) -> str:
    """12060 -> "12.6" (CUDA encodes 1000 * major + 10 * minor)."""
    if not version:
        return "none"
    return f"{version // 1000}.{(version % 1000) // 10}"


def _cuda_python_version() -> str:
    try:
        from importlib.metadata import version

        for dist in ("cuda-bindings", "cuda-python"):
            try:
                return version(dist)
            except Exception:
                continue
    except ImportError:  # pragma: no cover - importlib.metadata is in every supported Python
        pass
    return "?"


def explain_insufficient_driver(rt: Any) -> str:
    """Error 35 in one line: no driver at all (cudaDriverGetVersion reports 0), or a driver older than the
    runtime cuda-python was built for (cuda-python 13 on a CUDA 12 driver) with the pin that fixes it."""
    driver = runtime = None
    try:
        err, driver = rt.cudaDriverGetVersion()
        driver = int(driver) if int(err) == 0 and driver is not None else None
    except Exception:
        driver = None
    try:
        err, runtime = rt.cudaRuntimeGetVersion()
        runtime = int(runtime) if int(err) == 0 and runtime is not None else None
    except Exception:
        runtime = None
    if not driver:
        return ("no NVIDIA driver is loaded (cudaDriverGetVersion reports 0): install the driver or run on the GPU "
                "machine")
    needed_major = (runtime or 0) // 1000
    minimum = DRIVER_MINIMUM.get(needed_major)
    driver_major = driver // 1000
    if driver_major >= needed_major:
        fix = "upgrade the NVIDIA driver"
    else:
        fix = f"install cuda-python<{needed_major}"
        if driver_major in DRIVER_MINIMUM:
            fix += f" (pip install 'edgeresnet[trt-cu{driver_major}]')"
    needs = f"driver >= {minimum}" if minimum else f"a driver for CUDA {_version_text(runtime)}"
    return (f"cuda-python {_cuda_python_version()} (CUDA runtime {_version_text(runtime)}) needs {needs}; this driver "
            f"supports CUDA {_version_text(driver)}: {fix}")



def import_cudart() -> Any:
    """``cuda.bindings.runtime`` (cuda-python >= 12.6), else the legacy ``cuda.cudart`` (removed in 13)."""
    try:
        from cuda.bindings import runtime as cudart

        return cudart
    except ImportError:
        pass
    except Exception as exc:  # a broken install (missing shared library) is not "not installed"
        raise UserError(f"cuda-python is installed but cannot be imported ({' '.join(str(exc).split())[:160]}); "
                        f"reinstall it: {INSTALL_HINT}") from exc
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from cuda import cudart  # type: ignore[attr-defined,no-redef]

        return cudart
    except ImportError as exc:
        raise UserError(f"cuda-python is not installed; {INSTALL_HINT}") from exc


def _error_text(rt: Any, err: Any) -> str:
    try:
        _, text = rt.cudaGetErrorString(err)
        return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:  # pragma: no cover - only on a broken runtime
        return str(err)


class CudaPythonBackend:
    """cuda-python runtime API; every call returns ``(err, *values)``, checked by ``_call``."""

    name = "cuda-python"

    def __init__(self, cudart: Any | None = None) -> None:
        self.rt = cudart if cudart is not None else import_cudart()
        self._streams: dict[int, Any] = {}
        self._events: dict[int, Any] = {}
        self._pinned: dict[int, tuple[int, Any]] = {}  # id(array) -> (cudaMallocHost pointer, the array)

    def _call(self, what: str, result: Any) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            if int(err) == CUDA_ERROR_INSUFFICIENT_DRIVER:
                raise CudaError(what, int(err), explain_insufficient_driver(self.rt))
            raise CudaError(what, int(err), _error_text(self.rt, err))
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def device_count(self) -> tuple[int, str]:
        return probe_gpu(self.rt)

    def use_device(self, device: int) -> None:
        # The runtime API (and TensorRT on top of it) works on the current device of the calling thread, 0 unless
        # cudaSetDevice chose another (CUDA Runtime API, cudaSetDevice); it must precede deserialization.
        self._call(f"cudaSetDevice({int(device)})", self.rt.cudaSetDevice(int(device)))

    def alloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self.rt.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", self.rt.cudaFree(ptr))

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A page-locked numpy array (cudaMallocHost, as trtexec and TensorRT's common_runtime.py allocate host
        buffers): async copies from pageable memory are staged through a driver buffer instead."""
        import ctypes

        import numpy as np

        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
        ptr = int(self._call("cudaMallocHost", self.rt.cudaMallocHost(nbytes)))
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        count = int(np.prod(shape, dtype=np.int64))
        array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
        self._pinned[id(array)] = (ptr, array)  # kept alive until host_free: the id cannot be reused meanwhile
        return array

    def host_free(self, array: Any) -> None:
        """cudaFreeHost; the array must not be used afterwards (its memory is gone)."""
        entry = self._pinned.pop(id(array), None)
        if entry is not None:
            self._call("cudaFreeHost", self.rt.cudaFreeHost(entry[0]))

    def h2d_async(self, dst: int, host: Any, stream: int) -> None:
        self._call("cudaMemcpyAsync(H2D)", self.rt.cudaMemcpyAsync(
            dst, host.ctypes.data, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._streams[stream]))

    def d2h_async(self, host: Any, src: int, stream: int) -> None:
        self._call("cudaMemcpyAsync(D2H)", self.rt.cudaMemcpyAsync(
            host.ctypes.data, src, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._streams[stream]))

    def stream_create(self) -> int:
        # Non-blocking: TensorRT's execute_async_v3 docstring warns that the default stream adds synchronization.
        stream = self._call("cudaStreamCreateWithFlags", self.rt.cudaStreamCreateWithFlags(
            self.rt.cudaStreamNonBlocking))
        handle = _native_handle(stream)
        self._streams[handle] = stream
        return handle

    def stream_sync(self, stream: int) -> None:
        self._call("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(self._streams[stream]))

    def stream_destroy(self, stream: int) -> None:
        self._call("cudaStreamDestroy", self.rt.cudaStreamDestroy(self._streams.pop(stream)))

    def event_create(self) -> int:
        event = self._call("cudaEventCreate", self.rt.cudaEventCreate())
        handle = _native_handle(event)
        self._events[handle] = event
        return handle

    def event_record(self, event: int, stream: int) -> None:
        self._call("cudaEventRecord", self.rt.cudaEventRecord(self._events[event], self._streams[stream]))

    def event_elapsed_ms(self, start: int, end: int) -> float:
        self._call("cudaEventSynchronize", self.rt.cudaEventSynchronize(self._events[end]))
        return float(self._call("cudaEventElapsedTime", self.rt.cudaEventElapsedTime(
            self._events[start], self._events[end])))

    def event_destroy(self, event: int) -> None:
        self._call("cudaEventDestroy", self.rt.cudaEventDestroy(self._events.pop(event)))

    def gpu_info(self, device: int = 0) -> GpuInfo:
        prop = self._call("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(device))
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        driver = self._call("cudaDriverGetVersion", self.rt.cudaDriverGetVersion())
        runtime = self._call("cudaRuntimeGetVersion", self.rt.cudaRuntimeGetVersion())
        return GpuInfo(name=name.split("\x00")[0].strip(), compute_capability=(int(prop.major), int(prop.minor)),
                       total_memory=int(prop.totalGlobalMem), driver_version=int(driver), runtime_version=int(runtime))


def _native_handle(obj: Any) -> int:
    """The address of a cuda-python stream/event: ``get_cuda_native_handle`` from 13.0 (``int()`` is deprecated)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle

        return int(get_cuda_native_handle(obj))
    except ImportError:
        return int(obj)



def probe_gpu(cudart: Any | None = None) -> tuple[int, str]:
    """``(device_count, reason)`` through cuda-python without raising: reason says why the count is 0."""
    hidden = hidden_devices()
    if hidden:
        return 0, hidden
    try:
        rt = cudart if cudart is not None else import_cudart()
        err, count = rt.cudaGetDeviceCount()
    except Exception as exc:  # UserError (no cuda-python), DynamicLibNotFoundError, anything from a broken install
        return 0, f"CUDA not usable: {' '.join(str(exc).split())[:160] or exc.__class__.__name__}"
    if int(err) == CUDA_ERROR_INSUFFICIENT_DRIVER:
        return 0, f"no usable CUDA device: error {int(err)}: {explain_insufficient_driver(rt)}"
    if int(err) != 0:
        return 0, f"no usable CUDA device: error {int(err)} ({_error_text(rt, err)})"
    if not count:
        return 0, "no CUDA device found"
    return int(count), f"{int(count)} CUDA device(s)"

