"""ONNX Runtime runner: CPU, plus the CUDA execution provider when the installed onnxruntime has it.

``load`` parses the file (a corrupt file is a one-line UserError naming it) and reads the preprocessing
contract from ``metadata_props``; ``activate`` creates the session. A static-batch model still takes
any number of images: they are run in chunks of its batch size, the last one padded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.artifacts import read_manifest
from edgeresnet.data.presets import Preprocess
from edgeresnet.errors import UserError
from edgeresnet.runners.base import Runner

_PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                     "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider"}


def resolve_providers(providers: list[str] | tuple[str, ...] | str | None, available: list[str]) -> list[str]:
    """Pure: the providers to ask for. Default: CUDA first when present, CPU always as the fallback."""
    if providers is None:
        chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
        return chosen + ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p.strip()]
    chosen = []
    for name in providers:
        full = _PROVIDER_ALIASES.get(name.strip().lower(), name.strip())
        if full not in available:
            raise UserError(f"--providers {name}: this onnxruntime offers {', '.join(available)}; "
                            "install onnxruntime-gpu for CUDA")
        chosen.append(full)
    return chosen


class OrtRunner(Runner):
    """One ONNX model in one InferenceSession."""

    backend = "ort"

    def __init__(self, path: Path, manifest: dict[str, Any] | None, input_name: str,
                 input_shape: tuple[int | str, ...], output_names: list[str], preprocess: Preprocess | None,
                 profile: Any, metadata: dict[str, str], opset: int, providers: list[str] | tuple[str, ...] | str | None,
                 threads: int | None) -> None:
        super().__init__(path, manifest)
        self.input_name = input_name
        self._input_shape = input_shape
        self.output_names = output_names
        self.preprocess = preprocess
        self.batch_profile = profile
        self.metadata = metadata
        self.opset = opset
        self._providers_requested = providers
        self.threads = threads
        self.session: Any = None

    @classmethod
    def load(cls, path: str | Path, providers: list[str] | tuple[str, ...] | str | None = None,
             threads: int | None = None, **_: Any) -> OrtRunner:
        from edgeresnet.onnx_meta import load_onnx_model, metadata_of, preprocess_from_props, profile_from_props

        path = Path(path)
        if threads is not None and threads < 1:
            raise UserError(f"--threads {threads}: must be at least 1")
        model = load_onnx_model(path)
        initializers = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in initializers]
        if len(inputs) != 1:
            raise UserError(f"{path}: expected one image input, the model has {len(inputs)}; not an image classifier")
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in inputs[0].type.tensor_type.shape.dim)
        props = metadata_of(model)
        manifest = read_manifest(path)
        preprocess = preprocess_from_props(props, path)
        profile = profile_from_props(props, path)
        if manifest:
            from edgeresnet.onnx_meta import BatchProfile

            if preprocess is None and isinstance(manifest.get("preprocess"), dict):
                preprocess = Preprocess.from_dict(manifest["preprocess"])
            if profile is None and isinstance(manifest.get("batch_profile"), dict):
                profile = BatchProfile.from_dict(manifest["batch_profile"])
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        return cls(path, manifest, inputs[0].name, dims, [o.name for o in model.graph.output], preprocess, profile,
                   props, opset, providers, threads)

    # -- lifecycle -------------------------------------------------------------------------------
    def activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        providers = resolve_providers(self._providers_requested, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise UserError(f"{self.path}: onnxruntime cannot load this model ({first[:160]}); re-export it") from exc

    def deactivate(self) -> None:
        self.session = None

    # -- inference -------------------------------------------------------------------------------
    @property
    def static_batch(self) -> int | None:
        first = self._input_shape[0] if self._input_shape else None
        return first if isinstance(first, int) and first > 0 else None

    @property
    def batch_range(self) -> tuple[int, int] | None:
        """(min, max) batch: a static model takes exactly its batch; a profile bounds a dynamic one."""
        if self.static_batch is not None:
            return (self.static_batch, self.static_batch)
        if self.batch_profile is not None:
            return (self.batch_profile.min, self.batch_profile.max)
        return None

    def infer(self, images: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise RuntimeError("OrtRunner.infer called outside 'with runner:'")
        images = np.ascontiguousarray(images, dtype=np.float32)
        self._check_shape(images)
        batch = self.static_batch
        if batch is None or images.shape[0] == batch:
            return self._run(images)
        outputs = []
        for start in range(0, images.shape[0], batch):
            chunk = images[start:start + batch]
            n = chunk.shape[0]
            if n < batch:  # pad the last chunk by repeating its last image
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
            outputs.append(self._run(chunk)[:n])
        return np.concatenate(outputs)

    def _run(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([self.output_names[0]], {self.input_name: images})[0], dtype=np.float32)

    def _check_shape(self, images: np.ndarray) -> None:
        expected = self._input_shape[1:]
        got = images.shape[1:]
        if images.ndim != len(self._input_shape) or any(isinstance(e, int) and e > 0 and e != g
                                                         for e, g in zip(expected, got)):
            raise UserError(f"{self.path}: model takes images of shape {self._input_shape}, got {images.shape}; "
                            "check --image-size")

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        return self._input_shape

    @property
    def device(self) -> str:
        if self.session is not None and self.session.get_providers()[0] == "CUDAExecutionProvider":
            return "cuda"
        return "cpu"

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({"input": self.input_name, "input_shape": list(self._input_shape), "opset": self.opset})
        if self.session is not None:
            info["providers"] = self.session.get_providers()
        return info
