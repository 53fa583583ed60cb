"""The measurement loop with an injected clock: exact iteration counts, warm-up by time and count."""

from __future__ import annotations

import pytest

from edgeresnet.bench.timing import TimingConfig, Timings, host_step, measure
from edgeresnet.errors import UserError

MS = 1_000_000  # ns


class FakeClock:
    """Time moves only when the fake work runs; every read is counted."""

    def __init__(self) -> None:
        self.now = 0
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.now


class Work:
    """A step that costs ``costs[i]`` ns on the fake clock (the last cost repeats)."""

    def __init__(self, clock: FakeClock, costs: list[int], extra: dict | None = None) -> None:
        self.clock, self.costs, self.extra, self.calls = clock, costs, extra, 0

    def __call__(self):
        self.clock.now += self.costs[min(self.calls, len(self.costs) - 1)]
        self.calls += 1
        return self.extra


def run(config: TimingConfig, costs: list[int], extra: dict | None = None, progress=None) -> tuple[Timings, Work, FakeClock]:
    clock = FakeClock()
    work = Work(clock, costs, extra)
    return measure(work, config, clock=clock, progress=progress), work, clock


def test_duration_bound_run_has_exact_count():
    # 10 ms steps, 100 ms duration, at least 5 iterations: the duration decides -> 10 iterations
    timings, work, _ = run(TimingConfig(warmup_ms=0, warmup_iterations=0, min_iterations=5, duration_s=0.1), [10 * MS])
    assert timings.iterations == 10
    assert work.calls == 10
    assert timings.latency_ms == [10.0] * 10
    assert timings.wall_s == pytest.approx(0.1)
    assert timings.warmup_iterations == 0


def test_iteration_bound_run_has_exact_count():
    # 100 ms duration would need 10; at least 25 iterations are asked for -> 25
    timings, _, _ = run(TimingConfig(warmup_ms=0, warmup_iterations=0, min_iterations=25, duration_s=0.1), [10 * MS])
    assert timings.iterations == 25
    assert timings.wall_s == pytest.approx(0.25)


def test_zero_duration_runs_exactly_min_iterations():
    timings, _, _ = run(TimingConfig(warmup_ms=0, warmup_iterations=0, min_iterations=7, duration_s=0), [3 * MS])
    assert timings.iterations == 7


def test_warmup_is_bounded_by_time_and_count():
    # time decides: 200 ms of 10 ms steps = 20 warm-up iterations (count asks only 5)
    timings, work, _ = run(TimingConfig(warmup_ms=200, warmup_iterations=5, min_iterations=3, duration_s=0), [10 * MS])
    assert timings.warmup_iterations == 20
    assert timings.warmup_ms == pytest.approx(200.0)
    assert work.calls == 23
    # count decides: 5 iterations of 100 ms even though 200 ms passed after 2
    timings, work, _ = run(TimingConfig(warmup_ms=200, warmup_iterations=5, min_iterations=3, duration_s=0), [100 * MS])
    assert timings.warmup_iterations == 5
    assert work.calls == 8


def test_warmup_iterations_never_timed():
    # a slow first call (lazy init) falls in the warm-up, not in the samples
    costs = [500 * MS] + [10 * MS]
    timings, _, _ = run(TimingConfig(warmup_ms=0, warmup_iterations=1, min_iterations=4, duration_s=0), costs)
    assert timings.latency_ms == [10.0, 10.0, 10.0, 10.0]


def test_no_warmup_at_all():
    timings, work, _ = run(TimingConfig(warmup_ms=0, warmup_iterations=0, min_iterations=2, duration_s=0), [1 * MS])
    assert timings.warmup_iterations == 0
    assert work.calls == 2


def test_samples_are_per_iteration_costs_and_two_clock_reads_each():
    costs = [1 * MS, 2 * MS, 3 * MS, 4 * MS]
    timings, _, clock = run(TimingConfig(warmup_ms=0, warmup_iterations=0, min_iterations=4, duration_s=0), costs)
    assert timings.latency_ms == [1.0, 2.0, 3.0, 4.0]
    # 1 read to start the warm-up, 1 to start timing, then exactly 2 per timed iteration
    assert clock.reads == 2 + 2 * 4


def test_step_components_are_collected_per_iteration():
    extra = {"gpu_compute": 0.5, "h2d": 0.1}
    timings, _, _ = run(TimingConfig(warmup_ms=0, warmup_iterations=2, min_iterations=3, duration_s=0), [MS], extra)
    assert timings.components == {"gpu_compute": [0.5] * 3, "h2d": [0.1] * 3}  # warm-up values left out


def test_memory_guard_stops_and_says_so():
    config = TimingConfig(warmup_ms=0, warmup_iterations=0, min_iterations=2, duration_s=10.0, max_iterations=50)
    timings, _, _ = run(config, [1 * MS])
    assert timings.iterations == 50
    assert timings.stopped_by_cap


def test_progress_reports_reach_completion():
    seen: list[tuple[str, float]] = []
    run(TimingConfig(warmup_ms=300, warmup_iterations=0, min_iterations=2, duration_s=1.0), [50 * MS],
        progress=lambda phase, fraction: seen.append((phase, fraction)))
    phases = [p for p, _ in seen]
    assert "warmup" in phases and phases[-1] == "timing"
    timing_fractions = [f for p, f in seen if p == "timing"]
    assert timing_fractions == sorted(timing_fractions)
    assert timing_fractions[-1] == 1.0


@pytest.mark.parametrize("config, message", [
    (TimingConfig(duration_s=-1), "--duration"),
    (TimingConfig(min_iterations=0), "--min-iterations"),
    (TimingConfig(warmup_ms=-5), "--warmup-ms"),
    (TimingConfig(warmup_iterations=-1), "--warmup-iterations"),
])
def test_invalid_configs_are_user_errors(config, message):
    with pytest.raises(UserError, match=message):
        measure(lambda: None, config)


def test_host_step_with_the_real_clock():
    calls = []
    step = host_step(calls.append, "images")
    timings = measure(step, TimingConfig(warmup_ms=0, warmup_iterations=1, min_iterations=5, duration_s=0))
    assert timings.iterations == 5 and len(calls) == 6 and calls[0] == "images"
    assert all(t >= 0 for t in timings.latency_ms)


def test_inject_delay_hook_slows_every_iteration_and_says_so():
    import time as _time

    from edgeresnet.bench.timing import inject_delay
    from edgeresnet.errors import UserError

    step, notes = inject_delay(lambda: None, environ={"EDGERESNET_INJECT_DELAY_MS": "2"})
    t0 = _time.perf_counter()
    step()
    assert _time.perf_counter() - t0 >= 0.002
    assert notes and "EDGERESNET_INJECT_DELAY_MS" in notes[0]
    same, none = inject_delay(print, environ={})
    assert same is print and none == []
    for bad in ("abc", "-1"):
        with pytest.raises(UserError, match="EDGERESNET_INJECT_DELAY_MS"):
            inject_delay(lambda: None, environ={"EDGERESNET_INJECT_DELAY_MS": bad})
