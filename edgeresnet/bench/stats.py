"""Latency statistics with trtexec's definitions, in plain Python.

Why pure: the numbers people quote come from here, so this module has no heavy imports, no hidden
state and golden tests. Definitions (TensorRT ``samples/common/sampleReporting.cpp``):

* percentile p of n sorted samples = ``sorted[max(n - 1 - int((1 - p/100) * n), 0)]`` (nearest rank, no
  interpolation), evaluated in float32 as trtexec does: with 100 samples trtexec's p99 is the maximum and
  its p90 is ``sorted[89]``, where float64 arithmetic would give ``sorted[98]`` and ``sorted[90]``;
* median = middle sample, or the mean of the two middle samples for even n;
* coefficient of variation = population std / mean, in percent.

The bootstrap confidence interval of the median is seeded, so one set of samples always gives one answer.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Mapping, Sequence
from typing import Any

PERCENTILES: tuple[float, ...] = (90.0, 95.0, 99.0)
CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000

# Warning thresholds. Host latency on a shared CPU is noisier than GPU compute measured with events.
HOST_CV_LIMIT = 10.0  # percent
GPU_CV_LIMIT = 2.5  # percent; trtexec warns above 1 % (10.3) / 2.5 % (later releases)
ENQUEUE_BOUND_RATIO = 0.8  # trtexec: median enqueue > 0.8 x median GPU compute
FEW_SAMPLES = 100  # below this, nearest-rank p99 is the maximum


def _f32(value: float) -> float:
    """Round to the nearest float32, the type trtexec computes percentile ranks in."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def percentile_index(percentile: float, n: int) -> int:
    """Index into the ascending samples that trtexec reports as ``percentile`` (float32 arithmetic)."""
    if n <= 0:
        raise ValueError("no samples")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile {percentile} is not in [0, 100]")
    p = _f32(percentile)
    fraction = _f32(p / 100.0)
    rest = _f32(1.0 - fraction)
    exclude = int(_f32(rest * _f32(float(n))))
    return max(n - 1 - exclude, 0)


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """trtexec's nearest-rank percentile of already sorted samples."""
    return float(sorted_samples[percentile_index(p, len(sorted_samples))])


def median(sorted_samples: Sequence[float]) -> float:
    n = len(sorted_samples)
    if n == 0:
        raise ValueError("no samples")
    m = n // 2
    if n % 2:
        return float(sorted_samples[m])
    return (float(sorted_samples[m - 1]) + float(sorted_samples[m])) / 2.0


def mean(samples: Sequence[float]) -> float:
    return math.fsum(samples) / len(samples)


def pstdev(samples: Sequence[float], mu: float | None = None) -> float:
    """Population standard deviation (divides by n), as trtexec's coefficient of variation does."""
    mu = mean(samples) if mu is None else mu
    return math.sqrt(math.fsum((x - mu) * (x - mu) for x in samples) / len(samples))


def coefficient_of_variation(std: float, mu: float) -> float:
    """std / mean in percent; infinite for a zero mean with spread, 0 for all-zero samples."""
    if mu == 0.0:
        return 0.0 if std == 0.0 else math.inf
    return std / mu * 100.0


def bootstrap_median_ci(
    samples: Sequence[float], level: float = CI_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float, int]:
    """Percentile-bootstrap interval of the median: (low, high, resamples).

    Each bootstrap resample's median is drawn directly from its exact distribution instead of by sorting
    n resampled values: resampling index ``floor(n*u)`` with u uniform is resampling with replacement, and
    the middle order statistic(s) of n uniforms are Beta distributed. Same distribution as the textbook
    bootstrap, O(resamples) instead of O(resamples * n), so 100k-sample runs cost nothing extra.
    """
    n = len(samples)
    if n == 0:
        raise ValueError("no samples")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level {level} is not in (0, 1)")
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    ordered = sorted(float(x) for x in samples)
    if ordered[0] == ordered[-1]:
        return ordered[0], ordered[0], resamples
    rng = random.Random(seed)
    m = n // 2
    last = n - 1
    medians = []
    for _ in range(resamples):
        if n % 2:  # median = order statistic m+1 of n uniforms ~ Beta(m+1, m+1)
            u = rng.betavariate(m + 1, m + 1)
            medians.append(ordered[min(int(u * n), last)])
        else:  # U(m) ~ Beta(m, m+1); U(m+1) = U(m) + (1 - U(m)) * Beta(1, m)
            a = rng.betavariate(m, m + 1)
            b = a + (1.0 - a) * rng.betavariate(1, m)
            medians.append((ordered[min(int(a * n), last)] + ordered[min(int(b * n), last)]) / 2.0)
    medians.sort()
    alpha = (1.0 - level) / 2.0
    lo_index = int(math.floor(alpha * resamples))
    hi_index = min(resamples - 1, max(lo_index, int(math.ceil((1.0 - alpha) * resamples)) - 1))
    return medians[lo_index], medians[hi_index], resamples


def bootstrap_median_ci_bruteforce(samples: Sequence[float], level: float = CI_LEVEL, resamples: int = 500,
                                   seed: int = 0) -> tuple[float, float]:
    """The textbook bootstrap (resample n values, take their median); kept to test the fast one against."""
    rng = random.Random(seed)
    values = list(samples)
    n = len(values)
    medians = sorted(median(sorted(values[rng.randrange(n)] for _ in range(n))) for _ in range(resamples))
    alpha = (1.0 - level) / 2.0
    return medians[int(math.floor(alpha * resamples))], medians[int(math.ceil((1.0 - alpha) * resamples)) - 1]


def summarize(
    samples_ms: Sequence[float],
    *,
    percentiles: Sequence[float] = PERCENTILES,
    ci_level: float = CI_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``latency_ms`` block of a result: the samples and every statistic we report about them."""
    values = [float(x) for x in samples_ms]
    if not values:
        raise ValueError("no samples to summarize")
    if any(math.isnan(x) or math.isinf(x) for x in values):
        raise ValueError("samples contain NaN or infinity")
    ordered = sorted(values)
    mu = mean(values)
    std = pstdev(values, mu)
    lo, hi, used = bootstrap_median_ci(values, ci_level, resamples, seed)
    block: dict[str, Any] = {
        "samples": values,
        "n": len(values),
        "min": ordered[0],
        "max": ordered[-1],
        "mean": mu,
        "median": median(ordered),
    }
    for p in percentiles:
        block[percentile_key(p)] = percentile(ordered, p)
    block.update(
        {
            "std": std,
            "cv": coefficient_of_variation(std, mu),
            "median_ci": [lo, hi],
            "ci_level": ci_level,
            "ci_method": "bootstrap-percentile (exact order-statistic resampling)",
            "ci_resamples": used,
            "ci_seed": seed,
        }
    )
    return block


def percentile_key(p: float) -> str:
    """90 -> "p90", 99.9 -> "p99.9"."""
    return f"p{p:g}"


def throughput_ips(batch: int, iterations: int, duration_s: float) -> float:
    """Images per second: batch x queries per second of wall time (trtexec's Throughput is queries/s)."""
    if duration_s <= 0:
        return 0.0
    return batch * iterations / duration_s


def diagnose(
    latency: Mapping[str, Any],
    *,
    gpu_compute: Mapping[str, Any] | None = None,
    h2d: Mapping[str, Any] | None = None,
    d2h: Mapping[str, Any] | None = None,
    enqueue: Mapping[str, Any] | None = None,
    host_cv_limit: float = HOST_CV_LIMIT,
    gpu_cv_limit: float = GPU_CV_LIMIT,
) -> list[str]:
    """Warnings a reader of the numbers must see, each naming what to do about it."""
    warnings: list[str] = []
    n = latency.get("n") or len(latency.get("samples") or [])
    if n and n < FEW_SAMPLES:
        warnings.append(
            f"only {n} timed iterations: the nearest-rank p99 is the maximum; raise --duration or --min-iterations"
        )
    cv = latency.get("cv")
    if cv is not None and cv > host_cv_limit:
        warnings.append(
            f"latency is unstable (CV {cv:.1f}% > {host_cv_limit:g}%): close other programs, lock clocks "
            "(jetson_clocks / nvidia-smi -lgc) or pin threads with --threads, and lengthen --duration"
        )
    if gpu_compute:
        gcv = gpu_compute.get("cv")
        if gcv is not None and gcv > gpu_cv_limit:
            warnings.append(
                f"GPU compute time is unstable (CV {gcv:.1f}% > {gpu_cv_limit:g}%): lock the GPU clock "
                "(nvidia-smi -lgc, or sudo jetson_clocks on Jetson)"
            )
        compute_median = gpu_compute.get("median")
        if enqueue and compute_median is not None and enqueue.get("median") is not None:
            if enqueue["median"] > ENQUEUE_BOUND_RATIO * compute_median:
                warnings.append(
                    f"enqueue-bound: median enqueue {enqueue['median']:.4g} ms > {ENQUEUE_BOUND_RATIO:g} x median "
                    f"GPU compute {compute_median:.4g} ms; the GPU waits for the host, try --cuda-graph"
                )
        for name, block in (("host-to-device", h2d), ("device-to-host", d2h)):
            if block and compute_median is not None and block.get("median") is not None:
                if block["median"] >= compute_median:
                    warnings.append(
                        f"transfer-bound: median {name} copy {block['median']:.4g} ms >= median GPU compute "
                        f"{compute_median:.4g} ms; add --no-transfers to see device-resident latency"
                    )
    return warnings
