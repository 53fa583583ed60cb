"""Recording fakes of cuda-python's runtime module and of ``pycuda.driver``, no kinder than the real ones.

``FakeCudart`` answers like ``cuda.bindings.runtime``: every call returns a tuple whose first item is a
``cudaError_t`` (the real enum when cuda-python is installed, so ``int()``/``==`` behave alike), values after
it, and ``None`` in their place on failure (the real ``cudaGetDeviceCount()`` without a driver returns
``(cudaErrorInsufficientDriver, None)``). Streams and events are the real ``cudaStream_t``/``cudaEvent_t``
when available. ``FakePycudaDriver`` raises ``Error`` from ``init()`` without a device, as pycuda's cuInit
wrapper does. Device memory lives in ``.buffers`` (pointer -> bytearray), the layout the fake TensorRT
engine of ``fake_trt`` reads and writes, and pinned host memory is real host memory (ctypes buffers).
Every call is appended to ``.calls`` (shared with a ``FakeTrt`` to check ordering).
"""

from __future__ import annotations

import ctypes
import enum
from types import SimpleNamespace
from typing import Any

import numpy as np

try:  # the real types: the fake's return values then compare and convert exactly like cuda-python's
    from cuda.bindings import runtime as _real
except ImportError:  # pragma: no cover - cuda-python is in the dev environment
    _real = None


class _CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101


cudaError_t: Any = _real.cudaError_t if _real is not None else _CudaError
_TEXT = {0: b"no error", 2: b"out of memory", 35: b"CUDA driver version is insufficient for CUDA runtime version",
         100: b"no CUDA-capable device is detected", 101: b"invalid device ordinal"}


class FakeCudart:
    """``cuda.bindings.runtime`` for ``devices`` GPUs under a driver for CUDA ``driver`` (0 = no driver) with a
    runtime for CUDA ``runtime`` (13050 = cuda-python 13.5). Too old a driver gives error 35 everywhere."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamNonBlocking = 1

    def __init__(self, devices: int = 1, driver: int = 12060, runtime: int = 12060, cc: tuple[int, int] = (8, 7),
                 calls: list[str] | None = None) -> None:
        self.devices, self.driver, self.runtime, self.cc = devices, driver, runtime, cc
        self.calls = calls if calls is not None else []
        self.current = 0
        self.buffers: dict[int, bytearray] = {}
        self.pinned: dict[int, Any] = {}
        self.next_ptr = 0x7000_0000
        self.handles = 0

    def _status(self) -> Any:
        if not self.driver or self.driver // 1000 < self.runtime // 1000:
            return cudaError_t.cudaErrorInsufficientDriver
        if not self.devices:
            return cudaError_t.cudaErrorNoDevice
        return cudaError_t.cudaSuccess

    # -- versions and devices
    def cudaGetErrorString(self, err: Any) -> tuple[Any, bytes]:
        return cudaError_t.cudaSuccess, _TEXT.get(int(err), b"unknown error")

    def cudaDriverGetVersion(self) -> tuple[Any, int]:
        return cudaError_t.cudaSuccess, self.driver

    def cudaRuntimeGetVersion(self) -> tuple[Any, int]:
        return cudaError_t.cudaSuccess, self.runtime

    def cudaGetDeviceCount(self) -> tuple[Any, int | None]:
        self.calls.append("cudaGetDeviceCount()")
        status = self._status()
        return (status, None) if status else (status, self.devices)

    def cudaSetDevice(self, device: int) -> tuple[Any]:
        self.calls.append(f"cudaSetDevice({device})")
        status = self._status()
        if status:
            return (status,)
        if not 0 <= device < self.devices:
            return (cudaError_t.cudaErrorInvalidDevice,)
        self.current = device
        return (cudaError_t.cudaSuccess,)

    def cudaGetDeviceProperties(self, device: int) -> tuple[Any, Any]:
        status = self._status()
        if status or not 0 <= device < self.devices:
            return (status or cudaError_t.cudaErrorInvalidDevice), None
        return cudaError_t.cudaSuccess, SimpleNamespace(name=f"NVIDIA Fake GPU {device}".encode(), major=self.cc[0],
                                                        minor=self.cc[1], totalGlobalMem=1 << 30)

    # -- memory
    def cudaMalloc(self, nbytes: int) -> tuple[Any, int | None]:
        status = self._status()
        if status:
            return status, None
        ptr = self.next_ptr
        self.next_ptr += int(nbytes) + 0x100
        self.buffers[ptr] = bytearray(int(nbytes))
        self.calls.append(f"cudaMalloc({nbytes}) on {self.current}")
        return cudaError_t.cudaSuccess, ptr

    def cudaFree(self, ptr: int) -> tuple[Any]:
        del self.buffers[int(ptr)]
        return (cudaError_t.cudaSuccess,)

    def cudaMallocHost(self, nbytes: int) -> tuple[Any, int | None]:
        status = self._status()
        if status:
            return status, None
        block = ctypes.create_string_buffer(int(nbytes))
        ptr = ctypes.addressof(block)
        self.pinned[ptr] = block
        self.calls.append(f"cudaMallocHost({nbytes})")
        return cudaError_t.cudaSuccess, ptr

    def cudaFreeHost(self, ptr: int) -> tuple[Any]:
        self.pinned.pop(int(ptr))
        self.calls.append("cudaFreeHost")
        return (cudaError_t.cudaSuccess,)

    def is_pinned(self, array: np.ndarray) -> bool:
        """Does ``array`` live in memory this fake handed out with cudaMallocHost?"""
        address = array.ctypes.data
        return any(ptr <= address < ptr + ctypes.sizeof(block) for ptr, block in self.pinned.items())

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: Any) -> tuple[Any]:
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.buffers[int(dst)][:nbytes] = ctypes.string_at(int(src), nbytes)
            self.calls.append(f"H2D({nbytes}, pinned={self._pinned_address(int(src))})")
        else:
            ctypes.memmove(int(dst), bytes(self.buffers[int(src)][:nbytes]), nbytes)
            self.calls.append(f"D2H({nbytes}, pinned={self._pinned_address(int(dst))})")
        return (cudaError_t.cudaSuccess,)

    def _pinned_address(self, address: int) -> bool:
        return any(ptr <= address < ptr + ctypes.sizeof(block) for ptr, block in self.pinned.items())

    # -- streams and events
    def _handle(self, kind: str) -> Any:
        self.handles += 1
        value = 0xC000 + self.handles
        if _real is not None:
            return (_real.cudaStream_t if kind == "stream" else _real.cudaEvent_t)(value)
        return value

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[Any, Any]:
        self.calls.append("cudaStreamCreateWithFlags")
        return cudaError_t.cudaSuccess, self._handle("stream")

    def cudaStreamSynchronize(self, stream: Any) -> tuple[Any]:
        return (cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream: Any) -> tuple[Any]:
        return (cudaError_t.cudaSuccess,)

    def cudaEventCreate(self) -> tuple[Any, Any]:
        return cudaError_t.cudaSuccess, self._handle("event")

    def cudaEventRecord(self, event: Any, stream: Any) -> tuple[Any]:
        return (cudaError_t.cudaSuccess,)

    def cudaEventSynchronize(self, event: Any) -> tuple[Any]:
        return (cudaError_t.cudaSuccess,)

    def cudaEventElapsedTime(self, start: Any, end: Any) -> tuple[Any, float]:
        return cudaError_t.cudaSuccess, 1.0

    def cudaEventDestroy(self, event: Any) -> tuple[Any]:
        return (cudaError_t.cudaSuccess,)


class FakePycudaDriver:
    """``pycuda.driver`` for ``devices`` GPUs: ``init()`` raises ``Error`` without one, as cuInit does."""

    class Error(Exception):
        pass

    class MemoryError(Error):  # pycuda/_driver: cuMemAlloc's CUDA_ERROR_OUT_OF_MEMORY raises pycuda.driver.MemoryError
        pass

    memory_bytes = 16 << 30  # the fake GPU's memory: a larger mem_alloc is refused as the driver refuses it

    def __init__(self, devices: int = 1, cc: tuple[int, int] = (8, 7), calls: list[str] | None = None) -> None:
        self.devices, self.cc = devices, cc
        self.calls = calls if calls is not None else []
        self.initialised = False
        self.contexts: list[int] = []  # the context stack: device numbers
        self.buffers: dict[int, bytearray] = {}
        self.next_ptr = 0x9000_0000
        self.pinned: list[Any] = []
        driver = self

        class Device:
            def __init__(self, number: int) -> None:
                if not driver.initialised:
                    raise driver.Error("cuInit has not been called")
                if not 0 <= number < driver.devices:
                    raise driver.Error("cuDeviceGet failed: invalid device ordinal")
                self.number = number

            @staticmethod
            def count() -> int:
                if not driver.initialised:
                    raise driver.Error("cuInit has not been called")
                return driver.devices

            def make_context(self) -> Any:
                driver.calls.append(f"pycuda.Device({self.number}).make_context()")
                driver.contexts.append(self.number)
                return SimpleNamespace(pop=lambda: driver.contexts.pop())

            def name(self) -> str:
                return f"NVIDIA Fake GPU {self.number}"

            def compute_capability(self) -> tuple[int, int]:
                return driver.cc

            def total_memory(self) -> int:
                return 1 << 30

        class Stream:
            def __init__(self) -> None:
                driver._need_context("Stream")
                self.handle = 0xD000 + len(driver.calls)

            def synchronize(self) -> None:
                pass

        class Event:
            def record(self, stream: Any) -> None:
                pass

            def synchronize(self) -> None:
                pass

            def time_since(self, other: Any) -> float:
                return 1.0

        self.Device, self.Stream, self.Event = Device, Stream, Event

    def _need_context(self, what: str) -> None:
        if not self.contexts:  # the real driver: CUDA_ERROR_INVALID_CONTEXT
            raise self.Error(f"{what} failed: invalid device context")

    def init(self) -> None:
        self.calls.append("pycuda.init()")
        if not self.devices:
            raise self.Error("cuInit failed: no CUDA-capable device is detected")
        self.initialised = True

    def get_driver_version(self) -> int:
        return 12060

    def mem_alloc(self, nbytes: int) -> Any:
        self._need_context("mem_alloc")
        if int(nbytes) > self.memory_bytes:
            raise self.MemoryError("cuMemAlloc failed: out of memory")
        ptr = self.next_ptr
        self.next_ptr += int(nbytes) + 0x100
        self.buffers[ptr] = bytearray(int(nbytes))
        self.calls.append(f"pycuda.mem_alloc({nbytes}) on {self.contexts[-1]}")
        driver = self

        class Allocation:
            def __int__(self) -> int:
                return ptr

            def free(self) -> None:
                del driver.buffers[ptr]

        return Allocation()

    def pagelocked_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        self._need_context("pagelocked_empty")
        driver = self
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize, 1)

        class HostAllocation(bytearray):  # the real one is the array's .base and has free()
            freed = False

            def free(self) -> None:
                self.freed = True
                driver.calls.append("pycuda.HostAllocation.free()")

        block = HostAllocation(nbytes)
        self.pinned.append(block)
        self.calls.append(f"pycuda.pagelocked_empty({tuple(shape)})")
        return np.ndarray(tuple(shape), dtype=dtype, buffer=block)  # .base is the allocation, as in pycuda

    def memcpy_htod_async(self, dst: int, host: np.ndarray, stream: Any) -> None:
        data = np.ascontiguousarray(host).tobytes()
        self.buffers[int(dst)][: len(data)] = data

    def memcpy_dtoh_async(self, host: np.ndarray, src: int, stream: Any) -> None:
        host.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(self.buffers[int(src)][: host.nbytes]), np.uint8)
