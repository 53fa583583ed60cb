"""The timed run: open the artifacts through their runners, time each batch size with ``timing.measure`` on the
step the runner's ``benchmark_step`` gives, and build the result records.

Why one place: the CLI, the demo and the benchmarks/ scripts all measure the same way. What an artifact is and
how it is opened lives in ``bench.artifact``; run directories and the report in ``bench.rundir``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnet.artifacts import Manifest, read_any_manifest, sha256_file
from edgeresnet.bench import stats
from edgeresnet.bench.artifact import (
    BenchSettings,
    artifact_precision,
    default_target,
    evaluate_accuracy,
    guess_target,
    input_image_size,
    load_data_cached,
    model_size_bytes,
    open_runner,
    probe,
    runner_device,
    timing_images,
    with_model_preprocessing,
)
from edgeresnet.bench.timing import TimingConfig, inject_delay, measure
from edgeresnet.errors import UserError

if TYPE_CHECKING:
    from edgeresnet.runners.base import Runner

__all__ = ["BenchSettings", "balanced_orders", "benchmark_artifact", "benchmark_interleaved", "guess_target",
           "pool_timings", "round_timing", "run_benchmark"]


@contextlib.contextmanager
def _timing_step(runner: Runner, images: np.ndarray, settings: BenchSettings) -> Iterator[tuple[Callable[[], Any], list[str]]]:
    """The runner's timed step for ``images`` and its notes (e.g. a failed CUDA-graph capture), closed after."""
    step = runner.benchmark_step(images, transfers=not settings.no_transfers, cuda_graph=settings.cuda_graph)
    try:
        yield step, list(getattr(step, "notes", ()))
    finally:
        close = getattr(step, "close", None)
        if close is not None:
            close()


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
    manifest: Manifest | None
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
    manifest = read_any_manifest(path)
    runner, backend, warnings = open_runner(path, settings)
    stack.enter_context(runner)
    device = runner_device(runner)
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
        if skipped is not None and not runner.allows_batch(batch):
            skipped.append(f"{path.name}: batch {batch} is outside the batch range it was made for; skipped")
            continue
        images = timing_images(batch, image_size, test_images, settings.seed)
        logits = probe(runner, images, path, batch)
        if data is not None and logits.shape[1] < data.num_classes:
            raise UserError(f"--data {data.name}: has {data.num_classes} classes but {path} outputs "
                            f"{logits.shape[1]}; benchmark with the data set the model was trained on")
        if data is not None and accuracy and opened.accuracy is None:
            chunk = max([b for b in settings.batches if runner.allows_batch(b)] or [batch])
            opened.accuracy = evaluate_accuracy(runner, test_images, test_labels, chunk)
        step, notes = stack.enter_context(_timing_step(runner, images, settings))
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
                   manifest: Manifest | None, warnings: list[str]) -> dict[str, Any]:
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
