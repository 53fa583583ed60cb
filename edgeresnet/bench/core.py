"""Benchmark artifacts: load through the runner, time each batch, check accuracy, build result records.

Why one place: the CLI, the demo and the benchmarks/ scripts all measure the same way. Inputs come from
the artifact's sidecar manifest (preprocessing, precision) so a benchmark never asks what the pipeline
already knows. Heavy libraries are imported only when a backend needs them.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnet.artifacts import read_manifest, sha256_file
from edgeresnet.bench import stats
from edgeresnet.bench.timing import TimingConfig, TorchCudaStep, host_step, inject_delay, measure
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
def find_in_manifest(manifest: dict[str, Any] | None, key: str, depth: int = 3) -> Any:
    """First value of ``key`` at the top of a manifest, else in its nested settings/extra dicts."""
    if not manifest:
        return None
    if key in manifest and manifest[key] not in (None, ""):
        return manifest[key]
    if depth <= 0:
        return None
    for value in manifest.values():
        if isinstance(value, dict) and value is not manifest.get("inputs") and value is not manifest.get("versions"):
            found = find_in_manifest(value, key, depth - 1)
            if found not in (None, ""):
                return found
    return None


def manifest_preprocess(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    pre = find_in_manifest(manifest, "preprocess")
    return pre if isinstance(pre, dict) else None


def artifact_precision(path: Path, manifest: dict[str, Any] | None) -> str:
    """Precision from the manifest; else from the file (a checkpoint is fp32; an ONNX is read)."""
    for key in ("precision_label", "precision"):
        value = find_in_manifest(manifest, key)
        if isinstance(value, str) and value:
            return value.lower()
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return "fp32"
    if suffix == ".onnx":
        return onnx_precision(path)
    return "unknown"


def onnx_precision(path: Path) -> str:
    """int8 when the graph carries Q/DQ or QLinear ops, fp16 when its input is float16, else fp32."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable graphs are the runner's to report
        return "unknown"
    ops = {node.op_type for node in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
        return "int8"
    if model.graph.input and model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
        return "fp16"
    return "fp32"


def model_size_bytes(path: Path, manifest: dict[str, Any] | None) -> int:
    size = manifest.get("size_bytes") if manifest else None
    return int(size) if isinstance(size, int) else path.stat().st_size


def _static_dims(shape: Sequence[Any] | None) -> tuple[int | None, int | None, int | None]:
    """(batch, height, width) of an NCHW input; None where a dimension is dynamic or unknown."""
    if not shape or len(shape) != 4:
        return None, None, None
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    return dims[0], dims[2], dims[3]


def input_image_size(runner: Any, manifest: dict[str, Any] | None, override: int | None, path: Path) -> int:
    """The H (= W) to feed: the model's static size; else --image-size; else the manifest's preprocessing."""
    try:
        shape = runner.input_shape
    except NotImplementedError:
        shape = None
    _, h, w = _static_dims(shape)
    pre = manifest_preprocess(manifest)
    manifest_size = int(pre["image_size"]) if pre and pre.get("image_size") else None
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
# runners
# ---------------------------------------------------------------------------------------------
def _backend_class(backend: str) -> Any:
    import importlib

    from edgeresnet.runners.base import BACKENDS

    module_name, class_name = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _supported_options(backend: str, wanted: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Keep the options this runner's ``load`` accepts; report the ones it does not."""
    try:
        signature = inspect.signature(_backend_class(backend).load)
    except (ImportError, AttributeError, ValueError, TypeError):
        return dict(wanted), []
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(wanted), []
    kept = {k: v for k, v in wanted.items() if k in params}
    return kept, [k for k in wanted if k not in params]


def open_runner(path: Path, settings: BenchSettings) -> tuple[Any, str, list[str]]:
    """(un-activated runner, backend name, warnings) for ``path``."""
    from edgeresnet.runners.base import BACKENDS, backend_for_path, load_runner

    backend = settings.backend or backend_for_path(path)
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend}: unknown backend; choose one of {', '.join(BACKENDS)}")
    wanted: dict[str, Any] = {}
    warnings = []
    if settings.threads is not None:
        if backend == "torch":  # intra-op threads are process-wide in torch
            import torch

            torch.set_num_threads(settings.threads)
        elif backend == "trt":
            warnings.append(f"--threads {settings.threads} has no effect on TensorRT; ignored")
        else:
            wanted["threads"] = settings.threads
    if backend in ("torch", "trt") and settings.device:
        wanted["device"] = settings.device
    if backend == "trt":
        wanted["cuda_backend"] = settings.cuda_backend
    elif settings.cuda_backend != "auto":
        warnings.append(f"--cuda-backend {settings.cuda_backend} applies to TensorRT engines only; ignored")
    options, unsupported = _supported_options(backend, wanted)
    for name in unsupported:
        warnings.append(f"--{name} is not supported by the {backend} runner; ignored")
    try:
        runner = load_runner(path, backend, **options)
    except UserError:
        raise
    except ImportError as exc:
        raise UserError(f"--backend {backend}: its library is not installed ({exc}); install it or choose another "
                        "backend") from exc
    return runner, backend, warnings


def _runner_device(runner: Any) -> str:
    try:
        return str(runner.device)
    except Exception:
        return "unknown"


def _torch_module(runner: Any) -> Any:
    for name in ("model", "module", "net"):
        module = getattr(runner, name, None)
        if module is not None and callable(module):
            return module
    raise UserError(f"{runner.path}: the torch runner does not expose its module; --no-transfers/--cuda-graph "
                    "need the torch backend's model")


@contextlib.contextmanager
def _timing_step(runner: Any, backend: str, images: np.ndarray, settings: BenchSettings) -> Iterator[tuple[Callable[[], Any], list[str]]]:
    """The step to time, plus warnings about how it was timed."""
    device = _runner_device(runner)
    on_cuda = device.startswith("cuda")
    wants_device_timing = settings.no_transfers or settings.cuda_graph
    custom = getattr(runner, "benchmark_step", None)  # optional runner hook: trt runners can time with events
    if backend == "torch" and on_cuda:
        import torch

        step = TorchCudaStep(_torch_module(runner), images, device, transfers=not settings.no_transfers,
                             cuda_graph=settings.cuda_graph)
        notes = [step.graph_error] if step.graph_error else []
        try:
            with torch.inference_mode():
                yield step, notes
        finally:
            step.close()
        return
    if callable(custom) and (on_cuda or device.startswith("dla") or wants_device_timing):
        step = custom(images, transfers=not settings.no_transfers, cuda_graph=settings.cuda_graph)
        try:
            yield step, []
        finally:
            if callable(getattr(step, "close", None)):
                step.close()
        return
    if wants_device_timing:
        flag = "--no-transfers" if settings.no_transfers else "--cuda-graph"
        if backend == "torch":
            raise UserError(f"{flag}: needs a CUDA device, but {runner.path.name} runs on {device}")
        raise UserError(f"{flag}: supported for the torch backend on CUDA (and trt runners with device timing); "
                        f"--backend {backend} times the host call only")
    yield host_step(runner.infer, images), []


def timing_images(batch: int, image_size: int, pool: np.ndarray | None, seed: int) -> np.ndarray:
    """A batch of real test images when --data is given (repeated if too few), else seeded noise."""
    if pool is not None and len(pool):
        reps = -(-batch // len(pool))
        return np.ascontiguousarray(np.concatenate([pool] * reps)[:batch], dtype=np.float32)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, image_size, image_size), dtype=np.float32)


def evaluate_accuracy(runner: Any, images: np.ndarray, labels: np.ndarray, batch: int) -> dict[str, Any]:
    """Top-1 / top-5 (percent) of the runner on the data, in chunks of ``batch`` (the last one padded)."""
    correct1 = correct5 = 0
    num_classes = None
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - real, *chunk.shape[1:]), dtype=chunk.dtype)])
        logits = np.asarray(runner.infer(np.ascontiguousarray(chunk)))[:real]
        num_classes = logits.shape[1]
        k = min(5, num_classes)
        top = np.argsort(-logits, axis=1)[:, :k]
        truth = labels[start:start + real]
        correct1 += int((top[:, 0] == truth).sum())
        correct5 += int((top == truth[:, None]).any(axis=1).sum())
    n = len(images)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "n": n, "num_classes": num_classes}


def _batch_allowed(runner: Runner, batch: int) -> bool:
    """Whether ``batch`` is inside the runner's ``batch_range`` (the Runner contract; None = any batch)."""
    limits = runner.batch_range
    return limits is None or limits[0] <= batch <= limits[1]


def _probe(runner: Runner, images: np.ndarray, path: Path, batch: int) -> np.ndarray:
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
# one artifact
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


@dataclass
class _Slot:
    """One batch size of an opened artifact, ready to time: its step stays valid until the artifact closes."""

    batch: int
    step: Callable[[], Any]
    notes: list[str]
    label: str


@dataclass
class _Opened:
    """An artifact opened for measuring: what its result records need, and one slot per batch size."""

    path: Path
    model: str
    sha: str
    target: str
    backend: str
    precision: str
    device: str
    manifest: dict[str, Any] | None
    warnings: list[str]
    accuracy: dict[str, Any] | None
    slots: list[_Slot] = field(default_factory=list)

    def record(self, slot: _Slot, timings: Any, settings: BenchSettings, environment: dict[str, Any] | None,
               rounds: int = 1) -> dict[str, Any]:
        result = _result_record(
            model=self.model, path=self.path, sha=self.sha, target=self.target, backend=self.backend,
            precision=self.precision, batch=slot.batch, device=self.device, timings=timings, settings=settings,
            accuracy=self.accuracy, manifest=self.manifest,
            warnings=self.warnings + slot.notes + (environment or {}).get("warnings", []))
        result["timing"]["rounds"] = rounds
        return result


def _open_artifact(stack: contextlib.ExitStack, path: str | Path, settings: BenchSettings, *, data: Any | None,
                   accuracy: bool, environment: dict[str, Any] | None, skipped: list[str] | None) -> _Opened:
    """Open ``path``'s runner on ``stack``, probe every batch size, measure accuracy; nothing is timed yet."""
    settings.validate()
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: model file not found; check the path")
    manifest = read_manifest(path)
    runner, backend, warnings = open_runner(path, settings)
    stack.enter_context(runner)
    device = _runner_device(runner)
    image_size = input_image_size(runner, manifest, settings.image_size, path)
    test_images = test_labels = None
    if isinstance(data, str):
        data = load_data_cached(data, image_size, settings.seed)
    if data is not None:
        data = with_model_preprocessing(data, manifest, path)
        data_size = data.preprocess.image_size
        if data_size != image_size:
            raise UserError(f"--data {data.name}: prepared at {data_size}x{data_size} but {path} takes "
                            f"{image_size}x{image_size} inputs; load the data at the model's input size")
        test_images, test_labels = data.arrays("test")
    opened = _Opened(path=path, model=settings.model_name or path.stem, sha=sha256_file(path),
                     target=settings.target or default_target(device, environment), backend=backend,
                     precision=settings.precision or artifact_precision(path, manifest), device=device,
                     manifest=manifest, warnings=warnings, accuracy=None)
    for batch in settings.batches:
        if skipped is not None and not _batch_allowed(runner, batch):
            skipped.append(f"{path.name}: batch {batch} is outside the batch range it was made for; skipped")
            continue
        images = timing_images(batch, image_size, test_images, settings.seed)
        logits = _probe(runner, images, path, batch)
        if data is not None and logits.shape[1] < data.num_classes:
            raise UserError(f"--data {data.name}: has {data.num_classes} classes but {path} outputs "
                            f"{logits.shape[1]}; benchmark with the data set the model was trained on")
        if data is not None and accuracy and opened.accuracy is None:
            chunk = max([b for b in settings.batches if _batch_allowed(runner, b)] or [batch])
            opened.accuracy = evaluate_accuracy(runner, test_images, test_labels, chunk)
        step, notes = stack.enter_context(_timing_step(runner, backend, images, settings))
        step, injected = inject_delay(step, artifact=path)
        opened.slots.append(_Slot(batch, step, list(notes) + injected, f"{opened.model} [{backend}] batch {batch}"))
    return opened


def _reporter(progress: Callable[[str, int, float], None] | None, label: str, batch: int) -> Any:
    if progress is None:
        return None

    def report(phase: str, fraction: float) -> None:
        progress(f"{label} {phase}", batch, fraction)

    return report


def benchmark_artifact(path: str | Path, settings: BenchSettings, **options: Any) -> list[dict[str, Any]]:
    """Result records (one per batch size) for one artifact: ``benchmark_interleaved`` with one model and one
    round (``options``: ``data`` as a spec string, a DataSplits or None; ``accuracy``; ``environment``;
    ``progress(label, batch, fraction)``; ``skipped``, a list that collects the batch sizes the artifact cannot
    take instead of failing the run)."""
    return benchmark_interleaved([path], [settings], 1, **options)


def round_timing(timing: TimingConfig, rounds: int, first: bool) -> TimingConfig:
    """One round's share of the timing budget: 1/rounds of the duration and of the minimum iterations; the
    full warm-up in the first round, a 1/rounds share later (the other artifacts ran in between)."""
    share = replace(timing, duration_s=timing.duration_s / rounds, min_iterations=max(1, -(-timing.min_iterations
                                                                                          // rounds)))
    if first:
        return share
    return replace(share, warmup_ms=timing.warmup_ms / rounds,
                   warmup_iterations=max(1, -(-timing.warmup_iterations // rounds)))


def pool_timings(parts: Sequence[Any]) -> Any:
    """The rounds of one slot as one measurement: samples in time order, warm-up and wall time summed."""
    from edgeresnet.bench.timing import Timings

    components: dict[str, list[float]] = {}
    for part in parts:
        for key, values in part.components.items():
            components.setdefault(key, []).extend(values)
    return Timings(latency_ms=[x for part in parts for x in part.latency_ms], components=components,
                   warmup_iterations=sum(p.warmup_iterations for p in parts),
                   warmup_ms=sum(p.warmup_ms for p in parts), wall_s=sum(p.wall_s for p in parts),
                   stopped_by_cap=any(p.stopped_by_cap for p in parts))


def balanced_orders(n: int) -> list[list[int]]:
    """A Williams design: orders of ``n`` items in which every item takes every position and follows every other
    item equally often (``n`` orders for even ``n``, ``2n`` for odd ``n``). Two items give A B, B A (ABBA)."""
    if n < 1:
        return [[]]
    first, low, high = [0], 1, n - 1
    while len(first) < n:  # 0, 1, n-1, 2, n-2, ...
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rows = [[(x + shift) % n for x in first] for shift in range(n)]
    return rows if n % 2 == 0 or n == 1 else rows + [row[::-1] for row in rows]


def benchmark_interleaved(
    models: Sequence[str | Path],
    settings: Sequence[BenchSettings],
    rounds: int,
    *,
    data: Any | None = None,
    accuracy: bool = True,
    environment: dict[str, Any] | None = None,
    progress: Callable[[str, int, float], None] | None = None,
    skipped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """All ``models`` open at once and timed in turn, ``rounds`` times, in the orders of ``balanced_orders`` (two
    models: A B, B A, A B, ...) so no model always runs first, last or next to the same neighbour; each slot's
    samples pooled in time order. A load change on a shared
    machine then hits every model alike instead of whichever ran last, which is what makes a baseline/current
    comparison on a noisy CI runner trustworthy (``benchmarks/gate_power.py``: 0 % A/A false alarms for
    interleaved ABBA recordings vs 20.8 % for separate back-to-back processes)."""
    with contextlib.ExitStack() as stack:
        opened = [_open_artifact(stack, model, own, data=data, accuracy=accuracy, environment=environment,
                                 skipped=skipped) for model, own in zip(models, settings, strict=True)]
        slots = [(art, own, slot) for art, own in zip(opened, settings) for slot in art.slots]
        parts: list[list[Any]] = [[] for _ in slots]
        orders = balanced_orders(len(slots))
        for r in range(rounds):
            for i in orders[r % len(orders)]:
                _art, own, slot = slots[i]
                label = f"{slot.label} round {r + 1}/{rounds}"
                parts[i].append(measure(slot.step, round_timing(own.timing, rounds, first=r == 0),
                                        progress=_reporter(progress, label, slot.batch)))
        return [art.record(slot, pool_timings(parts[i]), own, environment, rounds)
                for i, (art, own, slot) in enumerate(slots)]


def _result_record(*, model: str, path: Path, sha: str, target: str, backend: str, precision: str, batch: int,
                   device: str, timings: Any, settings: BenchSettings, accuracy: dict[str, Any] | None,
                   manifest: dict[str, Any] | None, warnings: list[str]) -> dict[str, Any]:
    latency = stats.summarize(timings.latency_ms, seed=settings.seed)
    comps = {name: (stats.summarize(values, seed=settings.seed) if len(values) == timings.iterations else None)
             for name, values in timings.components.items()}
    notes = list(warnings)
    if timings.stopped_by_cap:
        notes.append(f"stopped at {timings.iterations} iterations (memory guard) before --duration was reached")
    notes += stats.diagnose(latency, gpu_compute=comps.get("gpu_compute"), h2d=comps.get("h2d"),
                            d2h=comps.get("d2h"), enqueue=comps.get("enqueue"))
    acc = {k: accuracy[k] for k in ("top1", "top5", "n")} if accuracy else None
    return {
        "model": model,
        "artifact": str(path),
        "artifact_sha256": sha,
        "target": target,
        "backend": backend,
        "precision": precision,
        "batch": batch,
        "latency_ms": latency,
        "throughput_ips": stats.throughput_ips(batch, timings.iterations, timings.wall_s),
        "iterations": timings.iterations,
        "duration_s": timings.wall_s,
        "gpu_compute_ms": comps.get("gpu_compute"),
        "h2d_ms": comps.get("h2d"),
        "d2h_ms": comps.get("d2h"),
        "enqueue_ms": comps.get("enqueue"),
        "accuracy": acc,
        "warnings": list(dict.fromkeys(notes)),
        "latency_kind": "host_end_to_end",
        "device": device,
        "timing": {**settings.timing.to_dict(), "warmup_done": timings.warmup_iterations,
                   "warmup_elapsed_ms": timings.warmup_ms, "no_transfers": settings.no_transfers,
                   "cuda_graph": settings.cuda_graph, "threads": settings.threads},
        "model_bytes": model_size_bytes(path, manifest),
    }


_DATA_CACHE: dict[tuple[str, int, int], Any] = {}


def load_data_cached(spec: str, image_size: int, seed: int = 0) -> Any:
    """--data loaded once per (spec, size, seed) for all artifacts of a run."""
    from edgeresnet.data import load_data

    key = (spec, image_size, seed)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # keep one data set in memory
        _DATA_CACHE[key] = load_data(spec, image_size, seed=seed)
    return _DATA_CACHE[key]


def with_model_preprocessing(data: Any, manifest: dict[str, Any] | None, path: Path) -> Any:
    """Use the preprocessing the model was trained with (from its manifest), and check the classes agree."""
    from edgeresnet.data import Preprocess

    pre = manifest_preprocess(manifest)
    if not pre:
        return data
    model_pre = Preprocess.from_dict(pre)
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


# ---------------------------------------------------------------------------------------------
# many artifacts
# ---------------------------------------------------------------------------------------------
MODEL_SUFFIXES = (".pt", ".pth", ".onnx", ".engine", ".plan", ".trt")
NOT_MODELS = ("calibration-cache", "benchmark-results", "report")


def run_benchmark(
    models: Sequence[str | Path],
    settings: BenchSettings,
    *,
    data: str | Any | None = None,
    accuracy: bool = True,
    environment: dict[str, Any] | None = None,
    progress: Callable[[str, int, float], None] | None = None,
    skipped: list[str] | None = None,
    names: Sequence[str] | None = None,
    rounds: int = 1,
) -> dict[str, Any]:
    """A complete, schema-valid results document for ``models`` (see ``benchmark_artifact`` for ``skipped``).

    ``names`` gives each model its result name (default: --model-name, else the file stem). ``rounds`` > 1
    times the models interleaved (``benchmark_interleaved``) instead of one after the other."""
    from edgeresnet.bench.environment import capture_environment
    from edgeresnet.bench.schema import make_document, validate

    settings.validate()
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise UserError(f"--rounds {rounds}: must be a positive number of rounds")
    env = environment if environment is not None else capture_environment(settings.target or "host-cpu")
    own = [replace(settings, model_name=names[i]) if names is not None else settings for i in range(len(models))]
    results: list[dict[str, Any]] = []
    if rounds > 1:
        results = benchmark_interleaved(models, own, rounds, data=data, accuracy=accuracy, environment=env,
                                        progress=progress, skipped=skipped)
    else:
        for model, model_settings in zip(models, own):
            results.extend(benchmark_artifact(model, model_settings, data=data, accuracy=accuracy, environment=env,
                                              progress=progress, skipped=skipped))
    if not results:
        raise UserError("benchmark: nothing was measured (every batch size was outside the artifacts' batch ranges)")
    if results and not settings.target:
        env["target"] = results[0]["target"]
    return validate(make_document(env, results), "benchmark results")


def find_artifacts(run_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Model files under ``run_dir`` that carry a sidecar manifest (what the pipeline made), plus notes on
    the ones left out (no manifest, TensorRT engines without TensorRT)."""
    root = Path(run_dir)
    found, notes = [], []
    trt_available = _module_available("tensorrt")
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in MODEL_SUFFIXES:
            continue
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        manifest = read_manifest(path)
        if manifest is None:
            notes.append(f"{path.relative_to(root)}: no manifest, not made by the pipeline; skipped")
            continue
        if str(manifest.get("kind", "")) in NOT_MODELS:
            continue
        if path.name == "last.pt" and (path.parent / "best.pt").exists():
            notes.append(f"{path.relative_to(root)}: training resume state; best.pt beside it is benchmarked")
            continue
        if path.suffix.lower() in (".engine", ".plan", ".trt") and not trt_available:
            notes.append(f"{path.relative_to(root)}: TensorRT is not installed here; skipped")
            continue
        found.append(path)
    return found, notes


def _module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def benchmark_run_dir(
    run_dir: str | Path,
    *,
    artifacts: Sequence[str | Path] | None = None,
    data: str | None = "digits",
    batches: Sequence[int] = (1, 8),
    duration_s: float = 1.0,
    warmup_ms: float = 100.0,
    warmup_iterations: int = 5,
    min_iterations: int = 10,
    target: str | None = None,
    out: str | Path | None = None,
    report: str | Path | None = "report.html",
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark every artifact the pipeline made in ``run_dir`` and write the results and the HTML report.

    Writes ``<run_dir>/benchmark/results.json`` (+ manifest) unless ``out`` names another file, and
    ``<run_dir>/report.html`` unless ``report`` is None or another path. Returns {"results": Path,
    "report": Path | None, "document": dict, "skipped": [notes]}.
    """
    from edgeresnet.bench.schema import write_results

    root = Path(run_dir)
    if not root.is_dir():
        raise UserError(f"{root}: run directory not found; pass the directory the pipeline wrote into")
    if artifacts is None:
        paths, notes = find_artifacts(root)
    else:
        paths, notes = [Path(a) for a in artifacts], []
    if not paths:
        raise UserError(f"{root}: no model artifacts with manifests found (.pt, .onnx, .engine); run the pipeline first")
    settings = BenchSettings(batches=tuple(batches), target=target,
                             timing=TimingConfig(warmup_ms=warmup_ms, warmup_iterations=warmup_iterations,
                                                 min_iterations=min_iterations, duration_s=duration_s))
    callback, finish = _console_progress() if progress else (None, lambda: None)
    try:
        names = [_artifact_name(p, root) for p in paths]
        document = run_benchmark(paths, settings, data=data, accuracy=data is not None, progress=callback,
                                 skipped=notes, names=names)
    finally:
        finish()
    results_path = Path(out) if out else root / "benchmark" / "results.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    write_results(results_path, document, option="--out", inputs={f"artifact{i}": p for i, p in enumerate(paths)},
                  command="benchmark")
    report_path = None
    if report is not None:
        from edgeresnet.report.html import write_report

        report_path = Path(report) if Path(report).is_absolute() or Path(report).parent != Path(".") else root / report
        write_report(root, report_path)
    return {"results": results_path, "report": report_path, "document": document, "skipped": notes}


def _artifact_name(path: Path, root: Path) -> str:
    """``<run>/train/best.pt`` -> ``train/best``: stable across runs with the same layout (the gate pairs on it)."""
    try:
        relative = Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return Path(path).stem
    return str(relative.with_suffix("")).replace("\\", "/")


def _console_progress() -> tuple[Callable[[str, int, float], None], Callable[[], None]]:
    """A rich progress bar fed by benchmark_artifact's callback."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), transient=True)
    bar.start()
    tasks: dict[str, Any] = {}

    def update(label: str, batch: int, fraction: float) -> None:
        key = label.rsplit(" ", 1)[0]
        if key not in tasks:
            tasks[key] = bar.add_task(key, total=1.0)
        bar.update(tasks[key], completed=fraction, description=label)

    return update, bar.stop
