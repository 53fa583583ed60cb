"""Device memory, streams and events behind one small interface.

TensorRT needs device pointers and a CUDA stream; where they come from is not its business. The
default backend is cuda-python (``cuda.bindings.runtime``, or ``from cuda import cudart`` on the
pre-12.9 wheels JetPack users often have); pycuda is the alternative many Jetson images ship. Neither
is imported until a backend is actually created, so importing this module costs nothing.

``gpu_available()`` is the safe probe: ``cudaGetDeviceCount`` returns an error code without raising
on a machine with no driver (tensorrt.md §1.11), whereas constructing TensorRT objects there can crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from edgeresnet.errors import UserError

BACKENDS = ("cuda-python", "pycuda")

_INSTALL_HINT = "install cuda-python (pip install 'edgeresnet[trt]') or pycuda (JetPack images often have it)"


@dataclass(frozen=True)
class GpuInfo:
    """What the running GPU is, for the engine compatibility check and the manifest."""

    name: str
    compute_capability: tuple[int, int]
    total_memory: int
    driver_version: int | None = None  # CUDA driver API version, e.g. 12060
    runtime_version: int | None = None

    @property
    def cc_string(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


@runtime_checkable
class DeviceBackend(Protocol):
    """The device operations the TensorRT runner needs; pointers and handles are plain ints."""

    name: str

    def alloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...

    def h2d_async(self, dst: int, host: Any, stream: int) -> None: ...

    def d2h_async(self, host: Any, src: int, stream: int) -> None: ...

    def stream_create(self) -> int: ...

    def stream_sync(self, stream: int) -> None: ...

    def stream_destroy(self, stream: int) -> None: ...

    def event_create(self) -> int: ...

    def event_record(self, event: int, stream: int) -> None: ...

    def event_elapsed_ms(self, start: int, end: int) -> float: ...

    def event_destroy(self, event: int) -> None: ...

    def gpu_info(self, device: int = 0) -> GpuInfo: ...


# -- cuda-python ------------------------------------------------------------------------------------


def _import_cudart() -> Any:
    """``cuda.bindings.runtime`` (cuda-python >= 12.6), else the legacy ``cuda.cudart`` (removed in 13)."""
    try:
        from cuda.bindings import runtime as cudart

        return cudart
    except ImportError:
        pass
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from cuda import cudart  # type: ignore[attr-defined,no-redef]

        return cudart
    except ImportError as exc:
        raise UserError(f"cuda-python is not installed; {_INSTALL_HINT}") from exc


class CudaPythonBackend:
    """cuda-python runtime API; every call returns ``(err, *values)``, checked by ``_call``."""

    name = "cuda-python"

    def __init__(self, cudart: Any | None = None) -> None:
        self.rt = cudart if cudart is not None else _import_cudart()
        self._streams: dict[int, Any] = {}
        self._events: dict[int, Any] = {}

    def _call(self, what: str, result: Any) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            try:
                _, text = self.rt.cudaGetErrorString(err)
                text = text.decode() if isinstance(text, bytes) else str(text)
            except Exception:  # pragma: no cover - only on a broken runtime
                text = str(err)
            raise CudaError(what, int(err), text)
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def alloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self.rt.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", self.rt.cudaFree(ptr))

    def h2d_async(self, dst: int, host: Any, stream: int) -> None:
        self._call("cudaMemcpyAsync(H2D)", self.rt.cudaMemcpyAsync(
            dst, host.ctypes.data, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._streams[stream]))

    def d2h_async(self, host: Any, src: int, stream: int) -> None:
        self._call("cudaMemcpyAsync(D2H)", self.rt.cudaMemcpyAsync(
            host.ctypes.data, src, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._streams[stream]))

    def stream_create(self) -> int:
        # Non-blocking: TensorRT warns that the default stream adds cudaDeviceSynchronize calls (§1.7).
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


# -- pycuda -----------------------------------------------------------------------------------------


class PycudaBackend:
    """pycuda (``pycuda.autoinit`` creates the context); streams and events are kept by handle."""

    name = "pycuda"

    def __init__(self) -> None:
        try:
            import pycuda.autoinit  # noqa: F401  (creates the CUDA context)
            import pycuda.driver as cuda
        except ImportError as exc:
            raise UserError(f"--cuda-backend pycuda: pycuda is not installed; {_INSTALL_HINT}") from exc
        self.cuda = cuda
        self._allocations: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}
        self._events: dict[int, Any] = {}

    def alloc(self, nbytes: int) -> int:
        allocation = self.cuda.mem_alloc(max(int(nbytes), 1))
        ptr = int(allocation)
        self._allocations[ptr] = allocation
        return ptr

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr).free()

    def h2d_async(self, dst: int, host: Any, stream: int) -> None:
        self.cuda.memcpy_htod_async(dst, host, self._streams[stream])

    def d2h_async(self, host: Any, src: int, stream: int) -> None:
        self.cuda.memcpy_dtoh_async(host, src, self._streams[stream])

    def stream_create(self) -> int:
        stream = self.cuda.Stream()
        self._streams[int(stream.handle)] = stream
        return int(stream.handle)

    def stream_sync(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def stream_destroy(self, stream: int) -> None:
        self._streams.pop(stream, None)

    def event_create(self) -> int:
        event = self.cuda.Event()
        self._events[id(event)] = event
        return id(event)

    def event_record(self, event: int, stream: int) -> None:
        self._events[event].record(self._streams[stream])

    def event_elapsed_ms(self, start: int, end: int) -> float:
        self._events[end].synchronize()
        return float(self._events[end].time_since(self._events[start]))

    def event_destroy(self, event: int) -> None:
        self._events.pop(event, None)

    def gpu_info(self, device: int = 0) -> GpuInfo:
        dev = self.cuda.Device(device)
        major, minor = dev.compute_capability()
        return GpuInfo(name=str(dev.name()), compute_capability=(int(major), int(minor)),
                       total_memory=int(dev.total_memory()), driver_version=int(self.cuda.get_driver_version()))


# -- selection and probing --------------------------------------------------------------------------


class CudaError(UserError):
    """A failed CUDA runtime call, reported in one line with its error code."""

    def __init__(self, what: str, code: int, text: str) -> None:
        super().__init__(f"CUDA {what} failed: error {code} ({text})")
        self.code = code
        self.call = what


def get_backend(name: str = "auto") -> DeviceBackend:
    """``auto`` = cuda-python, else pycuda; an explicit name is used or refused in one line."""
    if name not in ("auto",) + BACKENDS:
        raise UserError(f"--cuda-backend {name!r}: choose one of auto, {', '.join(BACKENDS)}")
    if name == "pycuda":
        return PycudaBackend()
    if name == "cuda-python":
        return CudaPythonBackend()
    try:
        return CudaPythonBackend()
    except UserError:
        pass
    try:
        return PycudaBackend()
    except UserError as exc:
        raise UserError(f"no CUDA Python binding found; {_INSTALL_HINT}") from exc


def probe_gpu(cudart: Any | None = None) -> tuple[int, str]:
    """``(device_count, reason)`` without raising: reason says why the count is 0."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("-1",):
        return 0, "CUDA_VISIBLE_DEVICES=-1 hides every GPU"
    try:
        rt = cudart if cudart is not None else _import_cudart()
        err, count = rt.cudaGetDeviceCount()
    except Exception as exc:  # UserError (no cuda-python), DynamicLibNotFoundError, anything from a broken install
        return 0, f"CUDA not usable: {' '.join(str(exc).split())[:160] or exc.__class__.__name__}"
    if int(err) != 0:
        try:
            _, text = rt.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:
            text = str(err)
        return 0, f"no usable CUDA device: error {int(err)} ({text})"
    if not count:
        return 0, "no CUDA device found"
    return int(count), f"{int(count)} CUDA device(s)"


def gpu_available() -> bool:
    """True when a CUDA device can be used from this process; never raises, never touches TensorRT."""
    return probe_gpu()[0] > 0
