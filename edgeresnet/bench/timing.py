"""The measurement loop, trtexec style, with the clock and the work injected.

Why injected: the loop decides how many iterations count and when to stop; tests drive it with a fake
clock and get exact iteration counts. Semantics (trtexec ``inferenceLoop``, with the warm-up also
bounded by count):

* warm-up runs until BOTH ``warmup_ms`` of wall time and ``warmup_iterations`` iterations are done;
* timing then runs until BOTH ``min_iterations`` iterations and ``duration_s`` seconds are done
  (a ``max_iterations`` guard bounds memory for sub-microsecond steps);
* each timed iteration is bracketed by two clock reads (end-to-end host latency); a step may also
  return its own device-side timings (CUDA events: ``h2d``, ``gpu_compute``, ``d2h``, ``enqueue``, in ms),
  which are collected per iteration beside the host latency.

The CUDA step for the torch backend lives here too (events on a non-default stream, optional
device-resident inputs and CUDA-graph replay); torch is imported only when it is built.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeresnet.errors import UserError

Clock = Callable[[], int]  # nanoseconds, monotonic
Step = Callable[[], "Mapping[str, float] | None"]
Progress = Callable[[str, float], None]  # (phase "warmup"|"timing", fraction done 0..1)

PROGRESS_INTERVAL_NS = 100_000_000  # report progress at most every 0.1 s of clock time


@dataclass(frozen=True)
class TimingConfig:
    """How long to warm up and how long to measure; defaults are trtexec's (200 ms, 10 iterations, 3 s)."""

    warmup_ms: float = 200.0
    warmup_iterations: int = 5
    min_iterations: int = 10
    duration_s: float = 3.0
    max_iterations: int = 1_000_000

    def validate(self) -> TimingConfig:
        """Self, or a UserError naming the first option out of its range."""
        for broken, message in (
            (self.warmup_ms < 0, f"--warmup-ms {self.warmup_ms:g}: must be >= 0"),
            (self.warmup_iterations < 0, f"--warmup-iterations {self.warmup_iterations}: must be >= 0"),
            (self.min_iterations < 1, f"--min-iterations {self.min_iterations}: must be >= 1"),
            (self.duration_s < 0, f"--duration {self.duration_s:g}: must be >= 0 seconds"),
            (self.max_iterations < self.min_iterations,
             f"max iterations {self.max_iterations} is below --min-iterations {self.min_iterations}"),
        ):
            if broken:
                raise UserError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "warmup_ms": self.warmup_ms,
            "warmup_iterations": self.warmup_iterations,
            "min_iterations": self.min_iterations,
            "duration_s": self.duration_s,
            "max_iterations": self.max_iterations,
        }


@dataclass
class Timings:
    """Raw output of one measurement: per-iteration latencies in ms, plus step-reported components."""

    latency_ms: list[float]
    components: dict[str, list[float]] = field(default_factory=dict)
    warmup_iterations: int = 0
    warmup_ms: float = 0.0
    wall_s: float = 0.0  # first timed start to last timed end
    stopped_by_cap: bool = False

    @property
    def iterations(self) -> int:
        return len(self.latency_ms)


def measure(step: Step, config: TimingConfig, clock: Clock = time.perf_counter_ns, progress: Progress | None = None) -> Timings:
    """Warm up, then time ``step`` until both the iteration count and the duration are reached."""
    config.validate()
    warmup_ns = int(config.warmup_ms * 1e6)
    duration_ns = int(config.duration_s * 1e9)

    # -- warm-up: time AND count ---------------------------------------------------------------
    start = clock()
    now = start
    warm = 0
    next_report = start + PROGRESS_INTERVAL_NS
    while warm < config.warmup_iterations or now - start < warmup_ns:
        step()
        warm += 1
        now = clock()
        if progress is not None and now >= next_report:
            next_report = now + PROGRESS_INTERVAL_NS
            progress("warmup", _fraction(warm, config.warmup_iterations, now - start, warmup_ns))
    warmup_elapsed_ms = (now - start) / 1e6

    # -- timed iterations ---------------------------------------------------------------------
    latencies: list[int] = []
    append = latencies.append
    components: dict[str, list[float]] = {}
    min_iterations, max_iterations = config.min_iterations, config.max_iterations
    first = clock()
    t1 = first
    next_report = first + PROGRESS_INTERVAL_NS
    count = 0
    while count < min_iterations or t1 - first < duration_ns:
        if count >= max_iterations:
            break
        t0 = clock()
        extra = step()
        t1 = clock()
        append(t1 - t0)
        count += 1
        if extra is not None:
            for key, value in extra.items():
                components.setdefault(key, []).append(float(value))
        if progress is not None and t1 >= next_report:
            next_report = t1 + PROGRESS_INTERVAL_NS
            progress("timing", _fraction(count, min_iterations, t1 - first, duration_ns))
    if progress is not None:
        progress("timing", 1.0)
    return Timings(
        latency_ms=[ns / 1e6 for ns in latencies],
        components=components,
        warmup_iterations=warm,
        warmup_ms=warmup_elapsed_ms,
        wall_s=(t1 - first) / 1e9,
        stopped_by_cap=count >= max_iterations and (count < min_iterations or t1 - first < duration_ns),
    )


def _fraction(done: int, needed: int, elapsed_ns: int, needed_ns: int) -> float:
    """Progress toward a goal that needs both a count and a time: the slower of the two."""
    by_count = 1.0 if needed <= 0 else min(1.0, done / needed)
    by_time = 1.0 if needed_ns <= 0 else min(1.0, elapsed_ns / needed_ns)
    return min(by_count, by_time)


def host_step(infer: Callable[[Any], Any], images: Any) -> Step:
    """One synchronous inference per call; the host clock around it is the end-to-end latency."""

    def step() -> None:
        infer(images)

    return step


class TorchCudaStep:
    """One inference of a torch module on CUDA, timed with events on a non-default stream.

    Per iteration: H2D copy of the (pinned) input, the forward pass (or a CUDA-graph replay), D2H copy
    of the logits, stream synchronize. Events around each part give ``h2d``, ``gpu_compute`` and
    ``d2h`` in ms; ``enqueue`` is the host time spent launching the forward pass. With
    ``transfers=False`` the input stays on the device and the output is not copied back.
    """

    def __init__(self, module: Any, images: Any, device: str = "cuda", *, transfers: bool = True,
                 cuda_graph: bool = False) -> None:
        import torch

        self.torch = torch
        self.module = module
        self.transfers = transfers
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device)
        self.previous_stream = torch.cuda.current_stream(self.device)
        host = torch.from_numpy(images)
        self.host_in = host.pin_memory() if transfers else host
        self.dev_in = torch.empty(host.shape, dtype=host.dtype, device=self.device)
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        self.graph = None
        self.graph_error: str | None = None
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            self.dev_in.copy_(host.to(self.device))
            out = module(self.dev_in)
            for _ in range(2):  # side-stream warm-up, required before graph capture
                out = module(self.dev_in)
        self.stream.synchronize()
        self.host_out = torch.empty(out.shape, dtype=out.dtype, pin_memory=transfers)
        self.static_out = out
        if cuda_graph:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode(), torch.cuda.graph(graph, stream=self.stream):
                    self.static_out = module(self.dev_in)
                self.graph = graph
            except Exception as exc:  # capture can fail for some modules: fall back, as trtexec does
                self.graph_error = f"CUDA graph capture failed ({type(exc).__name__}); timed without graphs"
        torch.cuda.set_stream(self.stream)

    def close(self) -> None:
        self.torch.cuda.set_stream(self.previous_stream)

    def __call__(self) -> dict[str, float]:
        e0, e1, e2, e3 = self.events
        stream = self.stream
        if self.transfers:
            e0.record(stream)
            self.dev_in.copy_(self.host_in, non_blocking=True)
        e1.record(stream)
        t = time.perf_counter_ns()
        if self.graph is not None:
            self.graph.replay()
            out = self.static_out
        else:
            out = self.module(self.dev_in)
        enqueue_ms = (time.perf_counter_ns() - t) / 1e6
        e2.record(stream)
        if self.transfers:
            self.host_out.copy_(out, non_blocking=True)
            e3.record(stream)
        stream.synchronize()
        if self.transfers:
            return {"h2d": e0.elapsed_time(e1), "gpu_compute": e1.elapsed_time(e2), "d2h": e2.elapsed_time(e3),
                    "enqueue": enqueue_ms}
        return {"gpu_compute": e1.elapsed_time(e2), "enqueue": enqueue_ms}


INJECT_DELAY_ENV = "EDGERESNET_INJECT_DELAY_MS"
INJECT_DELAY_ONLY_ENV = "EDGERESNET_INJECT_DELAY_ONLY"


def inject_delay(step: Step, environ: Mapping[str, str] = os.environ,
                 artifact: str | os.PathLike | None = None) -> tuple[Step, list[str]]:
    """Test hook for the regression gate's self-test: sleep EDGERESNET_INJECT_DELAY_MS after every call.

    With EDGERESNET_INJECT_DELAY_ONLY=NAME only an artifact whose file name is NAME is slowed (interleaved
    runs measure several artifacts in one process)."""
    raw = environ.get(INJECT_DELAY_ENV, "").strip()
    if not raw:
        return step, []
    only = environ.get(INJECT_DELAY_ONLY_ENV, "").strip()
    if only and (artifact is None or os.path.basename(os.fspath(artifact)) != only):
        return step, []
    try:
        delay_ms = float(raw)
    except ValueError:
        raise UserError(f"{INJECT_DELAY_ENV}={raw!r}: not a number of milliseconds; unset it or give e.g. 5") from None
    if not math.isfinite(delay_ms) or delay_ms < 0:
        raise UserError(f"{INJECT_DELAY_ENV}={raw!r}: must be a finite number of milliseconds >= 0")
    if delay_ms == 0:
        return step, []
    seconds = delay_ms / 1000.0

    def delayed() -> Mapping[str, float] | None:
        extra = step()
        time.sleep(seconds)
        return extra

    return delayed, [f"{INJECT_DELAY_ENV}={delay_ms:g}: every timed iteration was slowed by {delay_ms:g} ms on "
                     "purpose (regression-gate self-test); these are not real latencies"]
