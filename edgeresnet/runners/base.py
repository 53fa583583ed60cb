"""The runner contract and the dispatch from a file to the backend that runs it."""

from __future__ import annotations

import abc
import importlib
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edgeresnet.errors import UserError

# backend name -> "module:class" implementing Runner.load(path, **options)
BACKENDS: dict[str, str] = {
    "torch": "edgeresnet.runners.torch_runner:TorchRunner",
    "ort": "edgeresnet.runners.ort_runner:OrtRunner",
    "trt": "edgeresnet.runners.trt_runner:TrtRunner",
}

_SUFFIX_BACKEND = {".pt": "torch", ".pth": "torch", ".onnx": "ort", ".engine": "trt", ".plan": "trt", ".trt": "trt"}


class Runner(abc.ABC):
    """Runs one model artifact. Use as a context manager; ``infer`` only inside it."""

    backend: str = "?"

    def __init__(self, path: Path, manifest: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest or {}
        self.active = False

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Runner:
        self.activate()
        self.active = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.active = False
        self.deactivate()

    def activate(self) -> None:
        """Allocate sessions, contexts, device memory."""

    def deactivate(self) -> None:
        """Release what ``activate`` allocated."""

    # -- inference -------------------------------------------------------------------------------
    @abc.abstractmethod
    def infer(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed NCHW float32 images -> float32 logits of shape (N, num_classes)."""

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
    """Loader: pick the backend (explicit or from the suffix) and build its un-activated runner."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: model file not found; check the path")
    name = backend or backend_for_path(path)
    if name not in BACKENDS:
        raise UserError(f"--backend {name}: unknown backend; choose one of {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name].split(":")
    runner_cls = getattr(importlib.import_module(module_name), class_name)
    return runner_cls.load(path, **options)
