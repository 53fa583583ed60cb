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
    """``None``/``auto`` = CUDA when available, else CPU, through training's resolver (one rule for both)."""
    from edgeresnet.train.device import resolve_device

    return str(resolve_device(device))


class _InferenceModeStep:
    """A timed step that keeps ``torch.inference_mode`` entered from creation to ``close()``, as the timed loop
    runs: each step then avoids the per-call cost of entering the mode."""

    def __init__(self, step: Any, mode: Any) -> None:
        self.step = step
        self.mode = mode
        self.notes = [step.graph_error] if step.graph_error else []

    def __call__(self) -> Any:
        return self.step()

    def close(self) -> None:
        try:
            self.step.close()
        finally:
            self.mode.__exit__(None, None, None)


class TorchRunner(Runner):
    """An eval-mode model in memory; ``infer`` runs under ``torch.inference_mode``."""

    backend = "torch"

    def __init__(self, path: Path, manifest: dict[str, Any] | None, model: Any, preprocess: Preprocess | None,
                 spec: Any = None, device: str = "cpu") -> None:
        super().__init__(path, manifest, preprocess)
        self.model = model
        self.spec = spec
        self._device = device

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, threads: int | None = None,
             cuda_backend: str = "auto") -> TorchRunner:
        """Load one of our checkpoints (a foreign file is a one-line UserError from ``load_checkpoint``).

        ``threads`` sets torch's CPU thread count (process-wide: torch has no per-model setting);
        ``cuda_backend`` is TensorRT's only (a warning when set).
        """
        from edgeresnet.models import load_checkpoint, model_from_checkpoint

        path = Path(path)
        cls.check_threads(threads)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        checkpoint = load_checkpoint(path)
        model, spec = model_from_checkpoint(checkpoint, path)
        runner = cls(path, read_manifest(path), model, Preprocess.from_dict(checkpoint["preprocess"]), spec,
                     pick_device(device))
        runner.ignore_cuda_backend(cuda_backend)
        return runner

    @classmethod
    def from_model(cls, model: Any, preprocess: Preprocess | None, name: str = "model.pt", spec: Any = None,
                   device: str | None = None) -> TorchRunner:
        """Wrap a model already in memory (the export path compares against it before anything is saved)."""
        return cls(Path(name), {}, model.eval(), preprocess, spec, pick_device(device))

    def activate_impl(self) -> None:
        self.model.to(self._device).eval()

    def deactivate_impl(self) -> None:
        if self._device != "cpu":
            import torch

            self.model.to("cpu")
            torch.cuda.empty_cache()

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        import torch

        batch = torch.from_numpy(images).to(self._device)
        with torch.inference_mode():
            logits = self.model(batch)
        return logits.float().cpu().numpy()

    def benchmark_step(self, images: np.ndarray, *, transfers: bool = True, cuda_graph: bool = False) -> Any:
        """On CUDA: ``TorchCudaStep`` (CUDA events on a side stream, optional device-resident input and CUDA-graph
        replay) under ``torch.inference_mode`` until ``close()``; on the CPU the base class's host step."""
        if not self._device.startswith("cuda"):
            if not transfers or cuda_graph:
                flag = "--no-transfers" if not transfers else "--cuda-graph"
                raise UserError(f"{flag}: needs a CUDA device, but {self.path.name} runs on {self._device}")
            return super().benchmark_step(images)
        self._require_active("benchmark_step")
        import torch

        from edgeresnet.bench.timing import TorchCudaStep

        mode = torch.inference_mode()
        mode.__enter__()
        try:
            step = TorchCudaStep(self.model, self.check_images(images), self._device, transfers=transfers,
                                 cuda_graph=cuda_graph)
        except BaseException:
            mode.__exit__(None, None, None)
            raise
        return _InferenceModeStep(step, mode)

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
