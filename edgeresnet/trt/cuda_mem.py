"""Device memory, streams and events behind one small interface.

TensorRT needs device pointers and a CUDA stream; where they come from is not its business. The
default backend is cuda-python (``cuda.bindings.runtime``, or ``from cuda import cudart`` on the
pre-12.9 wheels JetPack users often have); pycuda is the alternative many Jetson images ship. Neither
is imported until a backend is actually created, so importing this module costs nothing.

The device probe goes through the backend that will run the engine (``select_backend``): a machine with
pycuda alone is asked through pycuda, never told "no GPU" because cuda-python is missing. cuda-python
reports failures as return values, not exceptions: every runtime call returns ``(cudaError_t, *values)``
(cuda-python docs, "Overview": "the first element of the return tuple is the error code"), so probing a
machine without a driver is safe, whereas constructing TensorRT objects there can crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from edgeresnet.errors import UserError

BACKENDS = ("cuda-python", "pycuda")

_INSTALL_HINT = ("install cuda-python for your CUDA major (pip install 'edgeresnet[trt-cu12]' on JetPack 6 / "
                 "CUDA 12, 'edgeresnet[trt-cu13]' with an r580+ driver) or pycuda (JetPack images often have it)")

# cudaError_t values (CUDA runtime API, driver_types.h): 35 = cudaErrorInsufficientDriver ("the installed NVIDIA
# CUDA driver is older than the CUDA runtime library"; also returned when no driver is loaded at all),
# 100 = cudaErrorNoDevice.
CUDA_ERROR_INSUFFICIENT_DRIVER = 35
CUDA_ERROR_NO_DEVICE = 100

# The oldest driver branch each CUDA runtime major runs on with minor-version compatibility: CUDA 12.x >= 525,
# CUDA 13.x >= 580 (https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html, Table 1;
# the exact Linux x86_64 minimums are 525.60.13 for 12.0 GA and 580.65.06 for 13.0 GA, CUDA Toolkit release notes).
DRIVER_MINIMUM = {12: "525.60.13", 13: "580.65.06"}


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

    def device_count(self) -> tuple[int, str]: ...

    def use_device(self, device: int) -> None: ...

    def alloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> Any: ...

    def host_free(self, array: Any) -> None: ...

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


def parse_device(value: Any, option: str = "--device") -> int:
    """``None``/``cuda``/``gpu`` -> 0, ``cuda:N``/``N`` -> N: the one CUDA device index every TensorRT call uses."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise UserError(f"{option} {value!r}: use cuda, cuda:N or a device number N")
    if isinstance(value, int):
        index = value
    else:
        text = str(value).strip().lower()
        if text in ("cuda", "gpu"):
            return 0
        if text == "cpu":
            raise UserError(f"{option} cpu: TensorRT engines run on a CUDA GPU; use --device cuda[:N], or evaluate "
                            "the ONNX model with the ort backend on the CPU")
        for prefix in ("cuda:", "gpu:"):
            if text.startswith(prefix):
                text = text[len(prefix):]
                break
        if not text.isdigit():
            raise UserError(f"{option} {value}: unknown device; use cuda, cuda:N or a device number N")
        index = int(text)
    if index < 0:
        raise UserError(f"{option} {value}: a CUDA device number is 0 or more")
    return index


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


# -- cuda-python ------------------------------------------------------------------------------------


def _import_cudart() -> Any:
    """``cuda.bindings.runtime`` (cuda-python >= 12.6), else the legacy ``cuda.cudart`` (removed in 13)."""
    try:
        from cuda.bindings import runtime as cudart

        return cudart
    except ImportError:
        pass
    except Exception as exc:  # a broken install (missing shared library) is not "not installed"
        raise UserError(f"cuda-python is installed but cannot be imported ({' '.join(str(exc).split())[:160]}); "
                        f"reinstall it: {_INSTALL_HINT}") from exc
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from cuda import cudart  # type: ignore[attr-defined,no-redef]

        return cudart
    except ImportError as exc:
        raise UserError(f"cuda-python is not installed; {_INSTALL_HINT}") from exc


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
        self.rt = cudart if cudart is not None else _import_cudart()
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


# -- pycuda -----------------------------------------------------------------------------------------


def _import_pycuda_driver() -> Any:
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise UserError(f"--cuda-backend pycuda: pycuda is not installed; {_INSTALL_HINT}") from exc
    return cuda


class PycudaBackend:
    """pycuda with an explicit context on the chosen device, made before any TensorRT object exists.

    ``pycuda.autoinit`` does ``cuda.init()`` and ``make_context()`` on device 0 (TensorRT's Python samples
    import it first); ``use_device(N)`` does the same on ``Device(N)``, so device N > 0 works too."""

    name = "pycuda"

    def __init__(self, driver: Any | None = None) -> None:
        self.cuda = driver if driver is not None else _import_pycuda_driver()
        self.context: Any = None
        self.device: int | None = None
        self._initialised = False
        self._allocations: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}
        self._events: dict[int, Any] = {}

    def _init(self) -> None:
        if not self._initialised:
            self.cuda.init()  # cuInit; raises pycuda.driver.Error without a driver or device
            self._initialised = True

    def device_count(self) -> tuple[int, str]:
        if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("-1",):
            return 0, "CUDA_VISIBLE_DEVICES=-1 hides every GPU"
        try:
            self._init()
            count = int(self.cuda.Device.count())
        except Exception as exc:  # pycuda.driver.Error (e.g. "cuInit failed: no CUDA-capable device is detected")
            return 0, f"pycuda: {' '.join(str(exc).split())[:160] or exc.__class__.__name__}"
        if not count:
            return 0, "pycuda: no CUDA device found"
        return count, f"{count} CUDA device(s) (pycuda)"

    def use_device(self, device: int) -> None:
        if self.context is not None:
            if self.device == device:
                return
            raise UserError(f"--device {device}: this process already holds a CUDA context on device {self.device}")
        import atexit

        self._init()
        try:
            self.context = self.cuda.Device(int(device)).make_context()  # pushed: current on this thread
        except self.cuda.Error as exc:  # e.g. out of memory, or a GPU in exclusive-process mode held by another
            raise UserError(f"pycuda: cannot make a CUDA context on device {int(device)} "
                            f"({' '.join(str(exc).split())[:160]})") from exc
        self.device = int(device)
        atexit.register(self._pop_context)

    def _pop_context(self) -> None:
        if self.context is not None:
            try:
                self.context.pop()
            except Exception:  # interpreter shutdown: the driver may already have torn the context down
                pass
            self.context = None

    def _require_context(self) -> None:
        if self.context is None:
            self.use_device(0)

    def alloc(self, nbytes: int) -> int:
        self._require_context()
        try:
            allocation = self.cuda.mem_alloc(max(int(nbytes), 1))
        except self.cuda.Error as exc:  # pycuda.driver.MemoryError: "cuMemAlloc failed: out of memory"
            raise UserError(f"pycuda: cannot allocate {int(nbytes)} bytes of device memory "
                            f"({' '.join(str(exc).split())[:120]}); use a smaller --batch or free the GPU") from exc
        ptr = int(allocation)
        self._allocations[ptr] = allocation
        return ptr

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr).free()

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """``pagelocked_empty``: page-locked host memory; its ``.base`` is the allocation (pycuda docs)."""
        self._require_context()
        return self.cuda.pagelocked_empty(tuple(shape), dtype)

    def host_free(self, array: Any) -> None:
        base = getattr(array, "base", None)
        if base is not None and callable(getattr(base, "free", None)):
            base.free()  # HostAllocation.free(): release now, not when the array is collected

    def h2d_async(self, dst: int, host: Any, stream: int) -> None:
        self.cuda.memcpy_htod_async(dst, host, self._streams[stream])

    def d2h_async(self, host: Any, src: int, stream: int) -> None:
        self.cuda.memcpy_dtoh_async(host, src, self._streams[stream])

    def stream_create(self) -> int:
        self._require_context()
        stream = self.cuda.Stream()
        self._streams[int(stream.handle)] = stream
        return int(stream.handle)

    def stream_sync(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def stream_destroy(self, stream: int) -> None:
        self._streams.pop(stream, None)

    def event_create(self) -> int:
        self._require_context()
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
        self._init()
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


def check_backend_name(name: str) -> str:
    if name not in ("auto",) + BACKENDS:
        raise UserError(f"--cuda-backend {name!r}: choose one of auto, {', '.join(BACKENDS)}")
    return name


def get_backend(name: str = "auto") -> DeviceBackend:
    """``auto`` = cuda-python, else pycuda; an explicit name is used or refused in one line."""
    check_backend_name(name)
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


def select_backend(name: str = "auto", device: int = 0) -> tuple[DeviceBackend | None, str]:
    """The backend that sees ``device``, probed through itself, with the device made current
    (``use_device``) before anything TensorRT exists; else ``(None, why)``.

    ``auto`` tries cuda-python, then pycuda: a pycuda-only JetPack image, or cuda-python 13 on a CUDA 12 driver
    beside a working pycuda, still runs; the first binding's reason is kept when neither sees a device."""
    check_backend_name(name)
    names = BACKENDS if name == "auto" else (name,)
    reasons: list[str] = []
    for candidate in names:
        try:
            backend = CudaPythonBackend() if candidate == "cuda-python" else PycudaBackend()
        except UserError as exc:
            reasons.append(str(exc) if name != "auto" else f"{candidate}: not installed")
            continue
        count, reason = backend.device_count()
        if count <= device:
            reasons.append(reason if count == 0 else
                           f"--device {device}: {candidate} sees {count} CUDA device(s), numbered 0..{count - 1}")
            continue
        backend.use_device(device)
        return backend, reason
    if name == "auto" and all(r.endswith(": not installed") for r in reasons):
        return None, f"no CUDA Python binding found; {_INSTALL_HINT}"
    return None, "; ".join(r for r in reasons if not r.endswith(": not installed"))


def require_backend(name: str = "auto", device: int = 0) -> DeviceBackend:
    """``select_backend`` or a one-line error: for the builder's calibrator, whose device buffers must live in the
    context made current before the builder exists (pycuda pushes its own context; TensorRT's Python samples
    create it first, ``import pycuda.autoinit``)."""
    backend, why = select_backend(name, device)
    if backend is None:
        raise UserError(f"INT8 calibration needs a CUDA GPU: {why}")
    return backend


def probe_gpu(cudart: Any | None = None) -> tuple[int, str]:
    """``(device_count, reason)`` through cuda-python without raising: reason says why the count is 0."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("-1",):
        return 0, "CUDA_VISIBLE_DEVICES=-1 hides every GPU"
    try:
        rt = cudart if cudart is not None else _import_cudart()
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


def gpu_available() -> bool:
    """True when a CUDA device can be used from this process (cuda-python, else pycuda); never raises, never
    touches TensorRT and makes no context."""
    if probe_gpu()[0] > 0:
        return True
    try:
        return PycudaBackend().device_count()[0] > 0
    except UserError:
        return False
