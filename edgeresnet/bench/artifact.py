"""Opening an artifact for the benchmark: settings, what the artifact is (manifest, precision, input size), its
runner, the images and data it is measured on, the probe before timing, and the target it runs on.

Inputs come from the artifact's sidecar manifest (preprocessing, precision) so a benchmark never asks what the
pipeline already knows. Heavy libraries are imported only when a backend needs them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnet.artifacts.manifests import Manifest, parse_manifest
from edgeresnet.bench.timing import TimingConfig
from edgeresnet.errors import UserError

if TYPE_CHECKING:
    from edgeresnet.runners.base import Runner

_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class BenchSettings:
    """Everything that decides how an artifact is measured (all CLI options except the files)."""

    backend: str | None = None
    batches: tuple[int, ...] = (1,)
    timing: TimingConfig = field(default_factory=TimingConfig)
    threads: int | None = None
    no_transfers: bool = False
    cuda_graph: bool = False
    target: str | None = None
    model_name: str | None = None
    precision: str | None = None
    image_size: int | None = None
    device: str | None = None  # torch: "cpu" or "cuda[:N]" (default: cuda when available); trt: "cuda[:N]" or N
    seed: int = 0
    cuda_backend: str = "auto"  # trt: the CUDA binding for memory, streams and the device probe

    def validate(self) -> BenchSettings:
        if not self.batches:
            raise UserError("--batch: give at least one batch size, e.g. --batch 1,8")
        for b in self.batches:
            if b < 1:
                raise UserError(f"--batch {b}: batch sizes must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads}: must be >= 1")
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"--image-size {self.image_size}: must be >= 1")
        from edgeresnet.trt.cuda_mem import check_backend_name

        check_backend_name(self.cuda_backend)
        if self.target is not None and not _TARGET_NAME.match(self.target):
            raise UserError(f"--target {self.target!r}: use letters, digits and . _ + - (e.g. orin-nano, host-cpu)")
        self.timing.validate()
        return self


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32); zero, negative, non-numbers and duplicates are one-line errors."""
    values = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise UserError(f"--batch {text}: {part!r} is not a whole number; use e.g. --batch 1,8,32") from None
        if value < 1:
            raise UserError(f"--batch {text}: batch size {value} is not allowed; batch sizes must be >= 1")
        if value in values:
            raise UserError(f"--batch {text}: batch size {value} is listed twice")
        values.append(value)
    if not values:
        raise UserError(f"--batch {text!r}: give at least one batch size, e.g. --batch 1,8")
    return tuple(values)


# ---------------------------------------------------------------------------------------------
# what the artifact is
# ---------------------------------------------------------------------------------------------
def _typed(manifest: Manifest | dict[str, Any] | None) -> Manifest | None:
    """The manifest as its typed class (benchmark callers and tests may still hand a plain dict)."""
    if isinstance(manifest, dict):
        return parse_manifest(manifest)
    return manifest


def manifest_preprocess(manifest: Manifest | dict[str, Any] | None) -> dict[str, Any] | None:
    """The preprocessing a checkpoint, ONNX model or engine manifest records, as written."""
    typed = _typed(manifest)
    return typed.preprocess_dict if typed is not None else None


def artifact_precision(path: Path, manifest: Manifest | dict[str, Any] | None) -> str:
    """Precision from the manifest; else from the file (a checkpoint is fp32; an ONNX is read)."""
    typed = _typed(manifest)
    if typed is not None and typed.precision:
        return typed.precision
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return "fp32"
    if suffix == ".onnx":
        return onnx_precision(path)
    return "unknown"


def onnx_precision(path: Path) -> str:
    """int8 when the graph carries Q/DQ or QLinear ops, fp16 when its input is float16, else fp32."""
    import onnx

    from edgeresnet.export.onnx_meta import load_onnx_model

    try:
        model = load_onnx_model(path)
    except UserError:  # unreadable graphs are the runner's to report
        return "unknown"
    ops = {node.op_type for node in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
        return "int8"
    if model.graph.input and model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
        return "fp16"
    return "fp32"


def model_size_bytes(path: Path, manifest: Manifest | dict[str, Any] | None) -> int:
    typed = _typed(manifest)
    size = typed.size_bytes if typed is not None else None
    return size if size is not None else path.stat().st_size


def _static_dims(shape: Sequence[Any] | None) -> tuple[int | None, int | None, int | None]:
    """(batch, height, width) of an NCHW input; None where a dimension is dynamic or unknown."""
    if not shape or len(shape) != 4:
        return None, None, None
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    return dims[0], dims[2], dims[3]


def input_image_size(runner: Any, manifest: Manifest | dict[str, Any] | None, override: int | None,
                     path: Path) -> int:
    """The H (= W) to feed: the model's static size; else --image-size; else the manifest's preprocessing."""
    try:
        shape = runner.input_shape
    except NotImplementedError:
        shape = None
    _, h, w = _static_dims(shape)
    typed = _typed(manifest)
    manifest_size = typed.image_size if typed is not None else None
    if h is not None and w is not None and h != w:
        raise UserError(f"{path}: non-square input {h}x{w} is not supported by edgeresnet benchmark")
    if h is not None:
        if override is not None and override != h:
            raise UserError(f"--image-size {override}: {path} takes {h}x{h} inputs; drop --image-size or pass {h}")
        if manifest_size is not None and manifest_size != h:
            raise UserError(f"{path}: its manifest preprocesses to {manifest_size}x{manifest_size} but the model takes "
                            f"{h}x{h} inputs; re-export the model or fix {path.name}.json")
        return h
    if override is not None:
        return override
    if manifest_size is not None:
        return manifest_size
    raise UserError(f"{path}: the input size is dynamic and no manifest says it; pass --image-size N")


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------
def open_runner(path: Path, settings: BenchSettings) -> tuple[Runner, str, list[str]]:
    """(un-activated runner, backend name, warnings) for ``path``: every backend's ``load`` takes the same
    options, and says in ``runner.warnings`` which of them it ignores."""
    from edgeresnet.runners.base import backend_for_path, load_runner

    backend = settings.backend or backend_for_path(path)
    runner = load_runner(path, backend, device=settings.device, threads=settings.threads,
                         cuda_backend=settings.cuda_backend)
    return runner, backend, list(runner.warnings)


def runner_device(runner: Runner) -> str:
    try:
        return str(runner.device)
    except Exception:  # a backend's device property may need an active session
        return "unknown"


def timing_images(batch: int, image_size: int, pool: np.ndarray | None, seed: int) -> np.ndarray:
    """A batch of real test images when --data is given (repeated if too few), else seeded noise."""
    if pool is not None and len(pool):
        reps = -(-batch // len(pool))
        return np.ascontiguousarray(np.concatenate([pool] * reps)[:batch], dtype=np.float32)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, image_size, image_size), dtype=np.float32)


def evaluate_accuracy(runner: Runner, images: np.ndarray, labels: np.ndarray, batch: int) -> dict[str, Any]:
    """Top-1 / top-5 (percent) of the runner on the data, in chunks of ``batch`` (the last one padded), computed
    by ``evaluate.evaluate_logits`` like every other accuracy in the package."""
    from edgeresnet.evaluate import evaluate_logits, runner_logits

    metrics = evaluate_logits(runner_logits(runner, images, batch), labels)
    return {"top1": metrics["top1"], "top5": metrics["top5"], "n": metrics["n"], "num_classes": metrics["num_classes"]}


def probe(runner: Runner, images: np.ndarray, path: Path, batch: int) -> np.ndarray:
    """One inference before timing, so a batch the engine cannot take fails in one line, not mid-loop."""
    limits = runner.batch_range
    if limits is not None and limits[0] == limits[1] and batch != limits[0]:
        raise UserError(f"--batch {batch}: {path} has a fixed batch of {limits[0]}; benchmark it with --batch "
                        f"{limits[0]} or re-export with a dynamic batch")
    if limits is not None and not limits[0] <= batch <= limits[1]:
        raise UserError(f"--batch {batch}: {path} was exported/built for batch {limits[0]}..{limits[1]}; "
                        "pick batch sizes in that range or re-export it")
    try:
        out = np.asarray(runner.infer(images))
    except UserError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{path}: inference at batch {batch} failed ({type(exc).__name__}: {first}); "
                        "check the batch range the model was exported/built for") from exc
    if out.ndim != 2 or out.shape[0] != batch:
        raise UserError(f"{path}: expected logits of shape ({batch}, classes), got {tuple(out.shape)}")
    return out


# ---------------------------------------------------------------------------------------------
# where it runs
# ---------------------------------------------------------------------------------------------
# (words that must all appear in the board/GPU name, target name), most specific first
_TARGET_RULES = (
    (("agx", "orin"), "agx-orin"), (("orin", "nx"), "orin-nx"), (("orin", "nano"), "orin-nano"),
    (("agx", "xavier"), "agx-xavier"), (("xavier", "nx"), "xavier-nx"), (("tx2",), "jetson-tx2"),
    (("nano",), "jetson-nano"), (("tegra", "x1"), "jetson-nano"),
    (("h100",), "desktop-h100"), (("t4",), "desktop-t4"), (("l4",), "desktop-ada"), (("l40",), "desktop-ada"),
    (("rtx", "40"), "desktop-ada"), (("a100",), "desktop-ampere"), (("a10",), "desktop-ampere"), (("a10g",), "desktop-ampere"),
    (("rtx", "30"), "desktop-ampere"),
)


def guess_target(name: str | None) -> str | None:
    """The targets/*.yaml name for a board or GPU name (None when nothing fits)."""
    if not name:
        return None
    joined = name.lower()
    words = set(re.findall(r"[a-z0-9]+", joined)) | set(re.findall(r"[a-z]+|\d+", joined))
    for needed, target in _TARGET_RULES:
        if all(w in words or (w.isdigit() and re.search(r"\b" + w + r"\d\d\b", joined)) for w in needed):
            return target
    return None


def default_target(device: str, environment: dict[str, Any] | None) -> str:
    """host-cpu for CPU runs; on a GPU, the known target matching the Jetson board or GPU name."""
    if not device.startswith("cuda"):
        return "host-cpu"
    environment = environment or {}
    board = (environment.get("jetson") or {}).get("board")
    gpu = (environment.get("gpu") or {}).get("name")
    guess = guess_target(board) or guess_target(gpu)
    if guess:
        return guess
    name = board or gpu
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") if name else "host-gpu"


_DATA_CACHE: dict[tuple[str, int, int], Any] = {}


def load_data_cached(spec: str, image_size: int, seed: int = 0) -> Any:
    """--data loaded once per (spec, size, seed) for all artifacts of a run."""
    from edgeresnet.data import load_data

    key = (spec, image_size, seed)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # keep one data set in memory
        _DATA_CACHE[key] = load_data(spec, image_size, seed=seed)
    return _DATA_CACHE[key]


def with_model_preprocessing(data: Any, manifest: Manifest | dict[str, Any] | None, path: Path) -> Any:
    """Use the preprocessing the model was trained with (from its manifest), and check the classes agree."""
    typed = _typed(manifest)
    model_pre = typed.preprocess if typed is not None else None
    if model_pre is None:
        return data
    names = tuple(model_pre.class_names)
    if names and len(names) != data.num_classes:
        raise UserError(f"--data {data.name}: has {data.num_classes} classes but {path} was trained on {len(names)}; "
                        "benchmark accuracy with the data set the model was trained on")
    if names and tuple(names) != tuple(data.class_names):
        raise UserError(f"--data {data.name}: class names differ from those {path} was trained on "
                        f"({', '.join(names[:4])}...); use the same data set")
    if model_pre.image_size != data.preprocess.image_size:
        return data  # the size check in benchmark_artifact names the problem
    return replace(data, preprocess=replace(model_pre, class_names=tuple(data.class_names)))
