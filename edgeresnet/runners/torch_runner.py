"""PyTorch eager runner for our checkpoints (CUDA when present): the reference every export is checked against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.artifacts import read_manifest
from edgeresnet.data.presets import Preprocess
from edgeresnet.errors import UserError
from edgeresnet.runners.base import Runner


def pick_device(device: str | None) -> str:
    """``None`` = CUDA when available, else CPU; an explicit CUDA request without a GPU is an error."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is available to PyTorch here; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UserError(f"--device {device}: unknown device; use cpu or cuda[:N]")
    return device


class TorchRunner(Runner):
    """An eval-mode model in memory; ``infer`` runs under ``torch.inference_mode``."""

    backend = "torch"

    def __init__(self, path: Path, manifest: dict[str, Any] | None, model: Any, preprocess: Preprocess | None,
                 spec: Any = None, device: str = "cpu") -> None:
        super().__init__(path, manifest)
        self.model = model
        self.preprocess = preprocess
        self.spec = spec
        self._device = device

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, threads: int | None = None, **_: Any) -> TorchRunner:
        """Load one of our checkpoints (a foreign file is a one-line UserError from ``load_checkpoint``).

        ``threads`` sets torch's CPU thread count (process-wide: torch has no per-model setting).
        """
        from edgeresnet.models import load_checkpoint, model_from_checkpoint

        path = Path(path)
        if threads is not None:
            if threads < 1:
                raise UserError(f"--threads {threads}: must be at least 1")
            import torch

            torch.set_num_threads(threads)
        checkpoint = load_checkpoint(path)
        model, spec = model_from_checkpoint(checkpoint, path)
        return cls(path, read_manifest(path), model, Preprocess.from_dict(checkpoint["preprocess"]), spec,
                   pick_device(device))

    @classmethod
    def from_model(cls, model: Any, preprocess: Preprocess | None, name: str = "model.pt", spec: Any = None,
                   device: str | None = None) -> TorchRunner:
        """Wrap a model already in memory (the export path compares against it before anything is saved)."""
        return cls(Path(name), {}, model.eval(), preprocess, spec, pick_device(device))

    def activate(self) -> None:
        self.model.to(self._device).eval()

    def deactivate(self) -> None:
        if self._device != "cpu":
            import torch

            self.model.to("cpu")
            torch.cuda.empty_cache()

    def infer(self, images: np.ndarray) -> np.ndarray:
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self._device)
        with torch.inference_mode():
            logits = self.model(batch)
        return logits.float().cpu().numpy()

    @property
    def batch_range(self) -> tuple[int, int] | None:
        """None: an eager model takes any batch size."""
        return None

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        size = self.preprocess.image_size if self.preprocess else "H"
        return ("batch", 3, size, size if self.preprocess else "W")

    @property
    def device(self) -> str:
        return self._device

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.spec is not None:
            info["model"] = self.spec.to_dict()
        return info
