"""TensorRT engines under the runner contract.

``TrtRunner.load`` decides everything it can before TensorRT deserializes anything: the file must be a
plan (header), its manifest and header must match the running TensorRT, and its compute capability the
GPU; otherwise it refuses with the reason and the ``edgeresnet build`` line that makes a fitting engine.
Deserialization and device memory happen in ``activate`` (``EngineSession``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.artifacts import read_manifest
from edgeresnet.artifacts.manifests import EngineManifest, EngineSection
from edgeresnet.errors import UserError
from edgeresnet.runners.base import Runner


class TrtRunner(Runner):
    backend = "trt"

    def __init__(self, path: Path, manifest: dict[str, Any] | None, *, trt: Any, device_backend: Any,
                 gpu: Any = None, dla_core: int | None = None, notes: list[str] | None = None,
                 rebuild: str | None = None, device_index: int = 0) -> None:
        super().__init__(path, manifest)
        self.trt = trt
        self.device_backend = device_backend
        self.device_index = device_index
        self.gpu = gpu
        self.dla_core = dla_core
        self.notes = list(notes or [])
        self.rebuild = rebuild
        self.session: Any = None
        # the manifest's engine section, typed (runner.manifest stays the plain dict every runner exposes)
        typed = EngineManifest.from_dict(self.manifest, f"{path}.json") if self.manifest else None
        self.engine_section = typed.engine if typed is not None else EngineSection()

    @classmethod
    def load(cls, path: str | Path, *, device: Any = None, threads: int | None = None, cuda_backend: str = "auto",
             dla_core: int | None = None, trt_module: Any = None, device_backend: Any = None) -> TrtRunner:
        """Check the engine against this machine and return an un-activated runner, or raise UserError.

        ``device`` is ``cuda``, ``cuda:N`` or ``N`` (parsed once into an int); ``cuda_backend`` picks the CUDA
        binding (auto | cuda-python | pycuda), and the device probe goes through that binding. The device is
        made current (cudaSetDevice / a pycuda context on Device(N)) before TensorRT is even imported, so the
        engine deserializes on the GPU whose compute capability the check read. ``trt_module``/``device_backend``
        are injectable (tests); by default TensorRT (or TensorRT-RTX for an RTX engine) is imported. ``threads`` has
        no TensorRT meaning (a warning when set)."""
        from edgeresnet.trt import adapter
        from edgeresnet.trt.cuda_mem import check_backend_name, parse_device, select_backend
        from edgeresnet.trt.planfile import read_plan_header
        from edgeresnet.trt.runtime import check_engine_compat, engine_compat_notes, rebuild_command

        device_index = parse_device(device)
        check_backend_name(cuda_backend)
        engine_path = Path(path)
        if not engine_path.is_file():
            raise UserError(f"{engine_path}: engine file not found; build one with edgeresnet build")
        manifest = read_manifest(engine_path)
        header = read_plan_header(engine_path)
        rebuild = rebuild_command(manifest, engine_path)
        if not header.is_plan:
            raise UserError(f"{engine_path}: not a TensorRT engine ({header.reason}); "
                            "pass the .engine file written by edgeresnet build")
        typed = EngineManifest.from_dict(manifest, f"{engine_path}.json") if manifest is not None else None
        section = typed.engine if typed is not None else EngineSection()
        wants_rtx = section.builder == "tensorrt-rtx" or header.flavor == "tensorrt-rtx"

        reason = "no CUDA device"
        if device_backend is None:
            device_backend, reason = select_backend(cuda_backend, device_index)
        else:
            device_backend.use_device(device_index)
        trt = trt_module if trt_module is not None else adapter.load_trt("rtx" if wants_rtx else "tensorrt")
        gpu = device_backend.gpu_info(device_index) if device_backend is not None else None
        problems = check_engine_compat(
            typed, header, adapter.trt_version(trt),
            gpu.name if gpu else None, gpu.compute_capability if gpu else None,
            running_flavor=adapter.trt_flavor(trt),
        )
        if problems:
            raise UserError(f"{engine_path}: cannot run here: {'; '.join(problems)}; rebuild it: {rebuild}")
        if device_backend is None:
            raise UserError(f"{engine_path}: TensorRT engines need a CUDA GPU and none is usable here ({reason}); "
                            "run on the target machine or use the ort backend with the ONNX model")
        if dla_core is None and section.dla_core is not None:
            dla_core = section.dla_core
        runner = cls(engine_path, manifest, trt=trt, device_backend=device_backend, gpu=gpu, dla_core=dla_core,
                     notes=engine_compat_notes(typed, gpu.name if gpu else None), rebuild=rebuild,
                     device_index=device_index)
        if threads is not None:
            runner.warnings.append(f"--threads {threads} has no effect on TensorRT; ignored")
        return runner

    # -- lifecycle ----------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        from edgeresnet.trt.runtime import EngineSession

        self.session = EngineSession(
            self.trt, self.path.read_bytes(), self.device_backend, dla_core=self.dla_core,
            host_code_allowed=self.engine_section.version_compatible, source=str(self.path), rebuild=self.rebuild,
        ).open()

    def deactivate_impl(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    # -- inference ----------------------------------------------------------------------------------
    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        outputs = self.session.infer(images)
        logits = outputs.get("logits", next(iter(outputs.values())))
        return np.asarray(logits, dtype=np.float32)

    def benchmark_step(self, images: np.ndarray, *, transfers: bool = True, cuda_graph: bool = False) -> Any:
        """The benchmark loop's hook: a step timed with CUDA events on the engine's stream (``TimedStep``)."""
        self._require_active("benchmark_step")
        if cuda_graph:
            raise UserError("--cuda-graph: not available for the trt backend yet (trtexec --useCudaGraph does it on "
                            "the device); drop the flag")
        return self.session.timed_step(self.check_images(images), transfers=transfers)

    @property
    def batch_range(self) -> tuple[int, int] | None:
        """(min, max) from the deserialized engine (profile 0, or (N, N) for a static input); before activation
        from the manifest's input shape and profile; None when neither says."""
        if self.session is not None:
            return self.session.batch_limits()
        section = self.engine_section
        shape = section.input_shape
        if shape and shape[0] > 0:
            return (shape[0], shape[0])
        if section.profiles:
            return (section.profiles[0].min, section.profiles[0].max)
        return None

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        shape = self.engine_section.input_shape
        if shape:
            return tuple("batch" if d < 0 else d for d in shape)
        if self.session is not None:
            return tuple("batch" if d < 0 else d for d in self.session.input_shape())
        raise UserError(f"{self.path}: input shape unknown without a manifest; activate the runner first")

    @property
    def device(self) -> str:
        if self.dla_core is not None:
            return f"dla:{self.dla_core}"
        return f"cuda:{self.device_index}"

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({
            "tensorrt": getattr(self.trt, "__version__", None),
            "gpu": None if self.gpu is None else {"name": self.gpu.name, "compute_capability": self.gpu.cc_string},
            "cuda_backend": getattr(self.device_backend, "name", None),
            "precision": self.engine_section.precision_label,
            "notes": self.notes,
        })
        return info
