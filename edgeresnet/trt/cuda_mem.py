"""Device memory, streams and events behind one small interface, and the one resolver that picks a backend.

TensorRT needs device pointers and a CUDA stream; where they come from is not its business. The
default backend is cuda-python (``cuda_python_backend``), pycuda (``pycuda_backend``) the alternative many
Jetson images ship. Neither binding is imported until a backend is actually created, so importing this
module costs nothing.

The device probe goes through the backend that will run the engine (``select_backend``): a machine with
pycuda alone is asked through pycuda, never told "no GPU" because cuda-python is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from edgeresnet.errors import UserError

BACKENDS = ("cuda-python", "pycuda")

INSTALL_HINT = ("install cuda-python for your CUDA major (pip install 'edgeresnet[trt-cu12]' on JetPack 6 / "
                "CUDA 12, 'edgeresnet[trt-cu13]' with an r580+ driver) or pycuda (JetPack images often have it)")


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



def hidden_devices() -> str | None:
    """Why no GPU is visible whatever the binding says (``CUDA_VISIBLE_DEVICES=-1``), else None."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("-1",):
        return "CUDA_VISIBLE_DEVICES=-1 hides every GPU"
    return None


def select_backend(name: str = "auto", device: int = 0) -> tuple[DeviceBackend | None, str]:
    """The backend that sees ``device``, probed through itself, with the device made current
    (``use_device``) before anything TensorRT exists; else ``(None, why)``.

    ``auto`` tries cuda-python, then pycuda: a pycuda-only JetPack image, or cuda-python 13 on a CUDA 12 driver
    beside a working pycuda, still runs; the first binding's reason is kept when neither sees a device."""
    from edgeresnet.trt.cuda_python_backend import CudaPythonBackend  # the backends import this interface
    from edgeresnet.trt.pycuda_backend import PycudaBackend

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
        return None, f"no CUDA Python binding found; {INSTALL_HINT}"
    return None, "; ".join(r for r in reasons if not r.endswith(": not installed"))


def require_backend(name: str = "auto", device: int = 0) -> DeviceBackend:
    """``select_backend`` or a one-line error: for the builder's calibrator, whose device buffers must live in the
    context made current before the builder exists (pycuda pushes its own context; TensorRT's Python samples
    create it first, ``import pycuda.autoinit``)."""
    backend, why = select_backend(name, device)
    if backend is None:
        raise UserError(f"INT8 calibration needs a CUDA GPU: {why}")
    return backend


def gpu_available() -> bool:
    """True when a CUDA device can be used from this process (cuda-python, else pycuda); never raises, never
    touches TensorRT and makes no context."""
    from edgeresnet.trt.cuda_python_backend import probe_gpu
    from edgeresnet.trt.pycuda_backend import PycudaBackend

    if probe_gpu()[0] > 0:
        return True
    try:
        return PycudaBackend().device_count()[0] > 0
    except UserError:
        return False
