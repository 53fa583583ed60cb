"""The pycuda backend: the binding many Jetson images ship, with an explicit context on the chosen device."""

from __future__ import annotations

from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.trt.cuda_mem import INSTALL_HINT, GpuInfo, hidden_devices


def _import_pycuda_driver() -> Any:
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise UserError(f"--cuda-backend pycuda: pycuda is not installed; {INSTALL_HINT}") from exc
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
        hidden = hidden_devices()
        if hidden:
            return 0, hidden
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

