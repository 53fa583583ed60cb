"""Statistics against hand-computed values and trtexec's float32 nearest-rank definition."""

from __future__ import annotations

import math

import pytest

from edgeresnet.bench import stats


def test_percentile_index_follows_trtexec_float32_arithmetic():
    # n = 100: p99 -> 0.99f = 0.99000001, 1 - 0.99f = 0.00999999, * 100 = 0.999999 -> int 0 -> index 99 (the max)
    assert stats.percentile_index(99, 100) == 99
    # p90 -> 1 - 0.9f = 0.100000024 -> * 100 = 10.0000024 -> 10 -> index 89 (float64 would give 9.999... -> 90)
    assert stats.percentile_index(90, 100) == 89
    # p95 -> 1 - 0.95f = 0.050000012 -> * 100 = 5.0000012 -> 5 -> index 94
    assert stats.percentile_index(95, 100) == 94
    # p50 -> 0.5 * 100 = 50 -> index 49
    assert stats.percentile_index(50, 100) == 49
    # edges: p0 clamps to the first sample, p100 is the last
    assert stats.percentile_index(0, 7) == 0
    assert stats.percentile_index(100, 7) == 6


def test_percentiles_of_ten_samples_by_hand():
    data = [float(x) for x in range(1, 11)]  # 1..10
    # n = 10: p90 -> (1 - 0.9f) * 10 = 1.00000024 -> exclude 1 -> sorted[8] = 9
    assert stats.percentile(data, 90) == 9.0
    # p95 -> 0.50000012 -> exclude 0 -> sorted[9] = 10; p99 likewise
    assert stats.percentile(data, 95) == 10.0
    assert stats.percentile(data, 99) == 10.0
    # p50 -> exclude 5 -> sorted[4] = 5 (nearest rank, not the 5.5 median)
    assert stats.percentile(data, 50) == 5.0
    assert stats.median(data) == 5.5
    assert stats.median([1.0, 2.0, 3.0]) == 2.0


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        stats.percentile_index(101, 10)
    with pytest.raises(ValueError):
        stats.percentile_index(-1, 10)
    with pytest.raises(ValueError):
        stats.percentile_index(50, 0)


def test_summarize_hand_computed_block():
    samples = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]  # mean 5, population std 2
    block = stats.summarize(samples, seed=3)
    assert block["samples"] == samples
    assert block["n"] == 8
    assert (block["min"], block["max"]) == (2.0, 9.0)
    assert block["mean"] == 5.0
    assert block["median"] == 4.5  # (4 + 5) / 2
    # n = 8: p90 -> (1 - 0.9f) * 8 = 0.8000002 -> exclude 0 -> the max
    assert (block["p90"], block["p95"], block["p99"]) == (9.0, 9.0, 9.0)
    assert block["std"] == 2.0
    assert block["cv"] == pytest.approx(40.0)
    lo, hi = block["median_ci"]
    assert lo <= block["median"] <= hi
    assert block["ci_level"] == 0.95
    assert stats.summarize(samples, seed=3)["median_ci"] == block["median_ci"]  # seeded: same answer


def test_summarize_rejects_empty_and_nan():
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.summarize([1.0, math.nan])


def test_bootstrap_interval_edges():
    assert stats.bootstrap_median_ci([5.0, 5.0, 5.0]) == (5.0, 5.0, stats.BOOTSTRAP_RESAMPLES)
    assert stats.bootstrap_median_ci([7.5]) == (7.5, 7.5, stats.BOOTSTRAP_RESAMPLES)
    with pytest.raises(ValueError):
        stats.bootstrap_median_ci([1.0, 2.0], level=1.0)
    # the interval narrows as samples grow, and covers the median
    wide = stats.bootstrap_median_ci([float(i % 17) for i in range(20)], seed=1)
    narrow = stats.bootstrap_median_ci([float(i % 17) for i in range(2000)], seed=1)
    assert narrow[1] - narrow[0] <= wide[1] - wide[0]
    assert wide[0] <= stats.median(sorted(float(i % 17) for i in range(20))) <= wide[1]


@pytest.mark.parametrize("n", [41, 40])  # odd and even n take different exact draws
def test_fast_bootstrap_matches_the_textbook_bootstrap(n):
    data = [float(i * i % 97) for i in range(n)]
    ordered = sorted(data)
    fast = stats.bootstrap_median_ci(data, resamples=4000, seed=5)[:2]
    slow = stats.bootstrap_median_ci_bruteforce(data, resamples=4000, seed=6)

    def rank(value: float) -> float:  # position of a bound among the sorted samples (half-ranks for pairs)
        below = sum(x < value for x in ordered)
        return below + 0.5 * sum(x == value for x in ordered)

    # two Monte Carlo estimates of the same 2.5 % / 97.5 % quantiles: within a couple of ranks of each other
    assert abs(rank(fast[0]) - rank(slow[0])) <= 2.5
    assert abs(rank(fast[1]) - rank(slow[1])) <= 2.5


def test_cv_edge_cases():
    assert stats.coefficient_of_variation(0.0, 0.0) == 0.0
    assert stats.coefficient_of_variation(1.0, 0.0) == math.inf
    assert stats.coefficient_of_variation(0.5, 2.0) == 25.0


def test_throughput_is_batch_times_queries_per_second():
    assert stats.throughput_ips(8, 100, 2.0) == 400.0
    assert stats.throughput_ips(1, 10, 0.0) == 0.0


def test_percentile_key():
    assert stats.percentile_key(90.0) == "p90"
    assert stats.percentile_key(99.9) == "p99.9"


def test_diagnose_warnings():
    steady = stats.summarize([1.0 + 0.001 * (i % 3) for i in range(200)])
    assert stats.diagnose(steady) == []
    noisy = stats.summarize([1.0, 3.0] * 100)
    assert any("unstable" in w for w in stats.diagnose(noisy))
    few = stats.summarize([1.0] * 12)
    assert any("only 12 timed iterations" in w for w in stats.diagnose(few))
    compute = {"median": 1.0, "cv": 0.5}
    enqueue = {"median": 0.9}
    h2d = {"median": 1.2}
    warnings = stats.diagnose(steady, gpu_compute=compute, enqueue=enqueue, h2d=h2d, d2h={"median": 0.01})
    assert any("enqueue-bound" in w and "--cuda-graph" in w for w in warnings)
    assert any("transfer-bound" in w and "host-to-device" in w and "--no-transfers" in w for w in warnings)
    assert not any("device-to-host" in w for w in warnings)
    unstable_gpu = stats.diagnose(steady, gpu_compute={"median": 1.0, "cv": 3.0})
    assert any("GPU compute time is unstable" in w for w in unstable_gpu)
