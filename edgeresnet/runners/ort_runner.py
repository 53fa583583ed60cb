"""ONNX Runtime runner: CPU, plus the CUDA execution provider when the installed onnxruntime has it.

``load`` parses the file (a corrupt file is a one-line UserError naming it) and reads the preprocessing
contract from ``metadata_props``; ``activate`` creates the session. A static-batch model still takes
any number of images: the base class runs them in chunks of its batch size, the last one padded.

``open_session`` is the package's only ``onnxruntime.InferenceSession``: the runner opens its file through it,
and the INT8 tools open in-memory graphs (calibration with every activation as an output, Q/DQ emulation)
through it, since those need a raw session rather than the one-input/one-logits runner contract.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.artifacts import read_manifest
from edgeresnet.artifacts.manifests import OnnxManifest
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


def open_session(model: Any, *, providers: list[str] | None = None, threads: int | None = None, quiet: bool = False,
                 emulate: bool = False, name: str | Path | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for a path or a ModelProto (CPU unless ``providers`` says otherwise).

    ``emulate=True`` keeps Q/DQ pairs unfused (session config ``session.disable_quant_qdq``, onnxruntime
    onnxruntime_session_options_config_keys.h), so a Q/DQ graph runs as written. A model ONNX Runtime refuses
    is a one-line UserError, naming ``name`` when given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4 if quiet else 3
    if emulate:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types (Fail, InvalidGraph, ...)
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        if name is not None:
            raise UserError(f"{name}: onnxruntime cannot load this model ({first[:160]}); re-export it") from exc
        raise UserError(f"ONNX Runtime cannot load the model: {first[:200]}") from exc


@dataclass(frozen=True)
class OnnxSignature:
    """What ``OrtRunner.load`` read from the graph: its one image input, its outputs, opset and metadata."""

    input_name: str
    input_shape: tuple[int | str, ...]  # a string stands for a dynamic dimension
    output_names: tuple[str, ...]
    opset: int
    metadata: dict[str, str]
    batch_profile: Any = None  # from metadata_props, else the sidecar manifest
    input_dtype: Any = np.float32  # float16 for ``export --precision fp16 --io-fp16`` models

    @classmethod
    def read(cls, model: Any, path: Path) -> OnnxSignature:
        """The signature of a loaded ModelProto (``path`` names it in errors)."""
        from edgeresnet.export.onnx_meta import metadata_of, profile_from_props

        initializers = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in initializers]
        if len(inputs) != 1:
            raise UserError(f"{path}: expected one image input, the model has {len(inputs)}; not an image classifier")
        tensor = inputs[0].type.tensor_type
        props = metadata_of(model)
        return cls(
            input_name=inputs[0].name,
            input_shape=tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim),
            output_names=tuple(o.name for o in model.graph.output),
            opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
            metadata=props,
            batch_profile=profile_from_props(props, path),
            input_dtype=np.float16 if tensor.elem_type == 10 else np.float32,  # onnx.TensorProto.FLOAT16 == 10
        )


class OrtRunner(Runner):
    """One ONNX model in one InferenceSession."""

    backend = "ort"

    def __init__(self, path: Path, manifest: dict[str, Any] | None, signature: OnnxSignature,
                 preprocess: Preprocess | None, providers: list[str] | tuple[str, ...] | str | None,
                 threads: int | None) -> None:
        super().__init__(path, manifest, preprocess)
        self.signature = signature
        self.providers_requested = providers
        self.threads = threads
        self.session: Any = None

    @classmethod
    def load(cls, path: str | Path, *, device: Any = None, threads: int | None = None, cuda_backend: str = "auto",
             providers: list[str] | tuple[str, ...] | str | None = None) -> OrtRunner:
        """``providers`` picks the execution providers; ``device`` is not used (the providers decide where it
        runs), ``cuda_backend`` is TensorRT's only (a warning when set)."""
        from edgeresnet.export.onnx_meta import load_onnx_model, preprocess_from_props

        path = Path(path)
        cls.check_threads(threads)
        signature = OnnxSignature.read(load_onnx_model(path), path)
        preprocess = preprocess_from_props(signature.metadata, path)
        manifest = read_manifest(path)
        if manifest:
            typed = OnnxManifest.from_dict(manifest, f"{path}.json")
            preprocess = preprocess if preprocess is not None else typed.preprocess
            if signature.batch_profile is None:
                signature = replace(signature, batch_profile=typed.batch_profile)
        runner = cls(path, manifest, signature, preprocess, providers, threads)
        runner.ignore_cuda_backend(cuda_backend)
        return runner

    # -- lifecycle -------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        import onnxruntime as ort

        providers = resolve_providers(self.providers_requested, ort.get_available_providers())
        self.session = open_session(self.path, providers=providers, threads=self.threads, name=self.path)

    def deactivate_impl(self) -> None:
        self.session = None

    # -- inference -------------------------------------------------------------------------------
    @property
    def static_batch(self) -> int | None:
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) and first > 0 else None

    @property
    def batch_range(self) -> tuple[int, int] | None:
        """(min, max) batch: a static model takes exactly its batch; a profile bounds a dynamic one."""
        if self.static_batch is not None:
            return (self.static_batch, self.static_batch)
        profile = self.signature.batch_profile
        if profile is not None:
            return (profile.min, profile.max)
        return None

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        signature = self.signature
        feed = images if signature.input_dtype is np.float32 else images.astype(signature.input_dtype)
        return self.session.run([signature.output_names[0]], {signature.input_name: feed})[0]

    def check_images(self, images: Any) -> np.ndarray:
        """The shared checks, then the model's static C/H/W."""
        images = super().check_images(images)
        shape = self.input_shape
        if images.ndim != len(shape) or any(isinstance(e, int) and e > 0 and e != g
                                            for e, g in zip(shape[1:], images.shape[1:])):
            raise UserError(f"{self.path}: model takes images of shape {shape}, got {images.shape}; "
                            "check --image-size")
        return images

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        return self.signature.input_shape

    @property
    def device(self) -> str:
        if self.session is not None and self.session.get_providers()[0] == "CUDAExecutionProvider":
            return "cuda"
        return "cpu"

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({"input": self.signature.input_name, "input_shape": list(self.input_shape),
                     "opset": self.signature.opset})
        if self.session is not None:
            info["providers"] = self.session.get_providers()
        return info
