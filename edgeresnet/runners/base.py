"""The runner contract and the dispatch from a file to the backend that runs it.

The shape is Polygraphy's ``BaseRunner`` (NVIDIA/TensorRT tools/Polygraphy/polygraphy/backend/base/runner.py):
the base class owns ``activate``/``infer``/``deactivate`` and the is-active guard, and a backend implements only
``activate_impl``/``infer_impl``/``deactivate_impl``. Inputs are checked once here, for every backend.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnet.errors import UserError

if TYPE_CHECKING:
    from edgeresnet.data.presets import Preprocess

# backend name -> "module:class" implementing Runner.load(path, **options)
BACKENDS: dict[str, str] = {
    "torch": "edgeresnet.runners.torch_runner:TorchRunner",
    "ort": "edgeresnet.runners.ort_runner:OrtRunner",
    "trt": "edgeresnet.runners.trt_runner:TrtRunner",
}

_SUFFIX_BACKEND = {".pt": "torch", ".pth": "torch", ".onnx": "ort", ".engine": "trt", ".plan": "trt", ".trt": "trt"}

TimedStep = Callable[[], "Mapping[str, float] | None"]


class Runner(abc.ABC):
    """Runs one model artifact. Use as a context manager; ``infer`` only inside it.

    ``load(path, *, device=None, threads=None, cuda_backend="auto", ...)`` is the same for every backend; an
    option a backend cannot honour is not an error but a line in ``warnings`` (the benchmark prints them).
    """

    backend: str = "?"

    def __init__(self, path: Path, manifest: dict[str, Any] | None = None, preprocess: Preprocess | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest or {}
        self.preprocess = preprocess  # the model's own preprocessing contract, when its file carries one
        self.active = False  # the is-active guard: read by activate/infer/deactivate/benchmark_step
        self.warnings: list[str] = []  # options ``load`` accepted but this backend ignores

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, device: Any = None, threads: int | None = None, cuda_backend: str = "auto",
             **options: Any) -> Runner:
        """Read and check the artifact; nothing is allocated until ``activate``. Every file backend implements
        this signature (``load_runner`` passes the same options to each); a runner built around a model already
        in memory has no file to load."""
        raise NotImplementedError(f"{cls.__name__} wraps a model in memory and loads no file")

    @staticmethod
    def check_threads(threads: int | None) -> None:
        """``--threads`` is a CPU thread count: at least 1 where a backend uses it."""
        if threads is not None and threads < 1:
            raise UserError(f"--threads {threads}: must be at least 1")

    def ignore_cuda_backend(self, cuda_backend: str) -> None:
        """``--cuda-backend`` picks the CUDA binding of TensorRT engines; any other backend warns and goes on."""
        if cuda_backend != "auto":
            self.warnings.append(f"--cuda-backend {cuda_backend} applies to TensorRT engines only; ignored")

    # -- lifecycle (Polygraphy: activate/deactivate own the guard, *_impl do the work) -------------
    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.deactivate()

    def activate(self) -> None:
        """Allocate sessions, contexts, device memory. Already active: a no-op, as in Polygraphy's BaseRunner."""
        if self.active:
            return
        self.activate_impl()
        self.active = True

    def deactivate(self) -> None:
        """Release what ``activate`` allocated. Not active: a no-op, as in Polygraphy's BaseRunner."""
        if not self.active:
            return
        self.active = False
        self.deactivate_impl()

    def activate_impl(self) -> None:  # noqa: B027 - an optional hook: backends with nothing to open keep it
        """Backend part of ``activate``."""

    def deactivate_impl(self) -> None:  # noqa: B027 - an optional hook, like activate_impl
        """Backend part of ``deactivate``."""

    # -- inference -------------------------------------------------------------------------------
    def infer(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed NCHW float32 images -> float32 logits of shape (N, num_classes).

        A static-batch model (``batch_range`` (B, B)) takes any number of images: they run in chunks of B, the
        last one padded by repeating its last image."""
        self._require_active("infer")
        images = self.check_images(images)
        batch = self.static_batch
        if batch is None or images.shape[0] == batch:
            return self._logits(images)
        outputs = []
        for start in range(0, images.shape[0], batch):
            chunk = images[start:start + batch]
            n = chunk.shape[0]
            if n < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
            outputs.append(self._logits(chunk)[:n])
        return np.concatenate(outputs)

    @abc.abstractmethod
    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        """Backend part of ``infer``: checked, contiguous float32 NCHW images of a batch the model takes."""

    def _logits(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.infer_impl(images), dtype=np.float32)

    def check_images(self, images: Any) -> np.ndarray:
        """The input checks every backend shares: real-valued NCHW with at least one image, a batch inside
        ``batch_range`` (any count for a static batch, which ``infer`` chunks); returned as contiguous float32."""
        array = np.asarray(images)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise UserError(f"{self.path}: takes float32 images, got an array of {array.dtype}; "
                            "pass preprocessed images")
        if array.ndim != 4 or array.shape[0] < 1:
            raise UserError(f"{self.path}: takes NCHW images (batch, 3, H, W), got shape {array.shape}; "
                            "pass a batch of preprocessed images")
        limits = self.batch_range
        if limits is not None and limits[0] != limits[1] and not limits[0] <= array.shape[0] <= limits[1]:
            raise UserError(f"{self.path}: takes batches of {limits[0]}..{limits[1]} images, got {array.shape[0]}; "
                            "split the images or rebuild the model for a larger batch")
        return np.ascontiguousarray(array, dtype=np.float32)

    def benchmark_step(self, images: np.ndarray, *, transfers: bool = True, cuda_graph: bool = False) -> TimedStep:
        """The step the benchmark times: a callable returning None or device-side timings in ms (``h2d``,
        ``gpu_compute``, ``d2h``, ``enqueue``); it may have a ``close()``. Default: one host ``infer`` call per
        step; device-timed options need a backend that overrides this."""
        self._require_active("benchmark_step")
        if not transfers or cuda_graph:
            flag = "--no-transfers" if not transfers else "--cuda-graph"
            raise UserError(f"{flag}: supported for the torch backend on CUDA (and trt runners with device timing); "
                            f"--backend {self.backend} times the host call only")
        checked = self.check_images(images)

        def step() -> None:
            self.infer(checked)

        return step

    def _require_active(self, what: str) -> None:
        if not self.active:
            raise RuntimeError(f"{type(self).__name__}.{what} called outside 'with runner:' (activate it first)")

    # -- batch sizes -----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def batch_range(self) -> tuple[int, int] | None:
        """(min, max) batch one ``infer`` call accepts, None for any: the one contract evaluate and benchmark
        use to size chunks and to skip batch sizes a model was not made for."""

    @property
    def static_batch(self) -> int | None:
        """The only batch the model takes (min == max), else None: callers pad the last chunk up to it."""
        limits = self.batch_range
        return limits[0] if limits is not None and limits[0] == limits[1] else None

    def allows_batch(self, batch: int) -> bool:
        """Whether ``batch`` is inside ``batch_range`` (None = any batch)."""
        limits = self.batch_range
        return limits is None or limits[0] <= batch <= limits[1]

    # -- description -----------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int | str, ...]:
        """The model's input shape; a string stands for a dynamic dimension."""
        raise NotImplementedError

    @property
    def device(self) -> str:
        return "cpu"

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "path": str(self.path), "device": self.device}


def backend_for_path(path: str | Path) -> str:
    """The default backend from the file type: checkpoint -> torch, ONNX -> ort, engine -> trt."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_BACKEND:
        known = ", ".join(sorted(_SUFFIX_BACKEND))
        raise UserError(f"{path}: unknown model file type {suffix or '(none)'}; expected one of {known} or pass --backend")
    return _SUFFIX_BACKEND[suffix]


def load_runner(path: str | Path, backend: str | None = None, **options: Any) -> Runner:
    """Loader: pick the backend (explicit or from the suffix) and build its un-activated runner.

    A backend whose library is missing is a one-line UserError naming it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: model file not found; check the path")
    name = backend or backend_for_path(path)
    if name not in BACKENDS:
        raise UserError(f"--backend {name}: unknown backend; choose one of {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name].split(":")
    try:
        runner_cls = getattr(importlib.import_module(module_name), class_name)
        return runner_cls.load(path, **options)
    except ImportError as exc:
        raise UserError(f"--backend {name}: its library is not installed ({exc}); install it or choose another "
                        "backend") from exc
