"""ONNX Runtime runner: CPU, plus the CUDA execution provider when the installed onnxruntime has it.

``load`` parses the file (a corrupt file is a one-line UserError naming it) and reads the preprocessing
contract from ``metadata_props``; ``activate`` creates the session. A static-batch model still takes
any number of images: the base class runs them in chunks of its batch size, the last one padded.

``open_session`` is the package's only ``onnxruntime.InferenceSession``: the runner opens its file through it,
and the INT8 tools open in-memory graphs (calibration with every activation as an output, Q/DQ emulation)
through it, since those need a raw session rather than the one-input/one-logits runner contract.
"""

from __future__ import annotations

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
    def load(cls, path: str | Path, *, device: Any = None, threads: int | None = None, cuda_backend: str = "auto",
             providers: list[str] | tuple[str, ...] | str | None = None) -> OrtRunner:
        """``providers`` picks the execution providers; ``device`` is not used (the providers decide where it
        runs), ``cuda_backend`` is TensorRT's only (a warning when set)."""
        from edgeresnet.export.onnx_meta import load_onnx_model, metadata_of, preprocess_from_props, profile_from_props

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
            typed = OnnxManifest.from_dict(manifest, f"{path}.json")
            if preprocess is None:
                preprocess = typed.preprocess
            if profile is None:
                profile = typed.batch_profile
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        runner = cls(path, manifest, inputs[0].name, dims, [o.name for o in model.graph.output], preprocess, profile,
                     props, opset, providers, threads)
        if cuda_backend != "auto":
            runner.warnings.append(f"--cuda-backend {cuda_backend} applies to TensorRT engines only; ignored")
        # ``export --precision fp16 --io-fp16`` models take float16 (onnx.TensorProto.FLOAT16 == 10)
        runner.input_dtype = np.float16 if inputs[0].type.tensor_type.elem_type == 10 else np.float32
        return runner

    # -- lifecycle -------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        import onnxruntime as ort

        providers = resolve_providers(self._providers_requested, ort.get_available_providers())
        self.session = open_session(self.path, providers=providers, threads=self.threads, name=self.path)

    def deactivate_impl(self) -> None:
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

    input_dtype: Any = np.float32

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        feed = images if self.input_dtype is np.float32 else images.astype(self.input_dtype)
        return self.session.run([self.output_names[0]], {self.input_name: feed})[0]

    def check_images(self, images: Any) -> np.ndarray:
        """The shared checks, then the model's static C/H/W."""
        images = super().check_images(images)
        expected = self._input_shape[1:]
        got = images.shape[1:]
        if images.ndim != len(self._input_shape) or any(isinstance(e, int) and e > 0 and e != g
                                                         for e, g in zip(expected, got)):
            raise UserError(f"{self.path}: model takes images of shape {self._input_shape}, got {images.shape}; "
                            "check --image-size")
        return images

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
