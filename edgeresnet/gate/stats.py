"""The gate's statistics: rank test, Hodges-Lehmann shift and interval, moving-block bootstrap.

Why separate: these are the numbers a verdict rests on, so they stay pure (numpy and scipy, no file I/O,
no prose) and are tested against hand-computed values, scipy and brute force.

* Mann-Whitney U on two samples: U and its two-sided p-value come from ``scipy.stats.mannwhitneyu``
  (``method="exact"`` without ties and few pairs, else ``"asymptotic"`` with tie and continuity
  correction). The Hodges-Lehmann shift (median of all differences y - x) and its distribution-free
  (Moses) interval need the U null distribution's quantiles, which ``mannwhitneyu`` does not return (its
  result is ``statistic`` and ``pvalue``: docs.scipy.org/doc/scipy/reference/generated/scipy.stats.mannwhitneyu.html),
  so the exact counts come from the q-binomial recurrence here and the normal form from the same variance.
* ``p90`` / ``p99``: a seeded moving-block bootstrap of the ratio of the two quantiles (trtexec's
  nearest-rank definition, as in the result files); percentile interval.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from edgeresnet.bench.stats import percentile_index

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_RESAMPLES = 2000
MAX_EXACT_PAIRS = 2500  # exact U distribution up to m * n pairs (e.g. 50 x 50 samples)
MAX_MATRIX_PAIRS = 1_000_000  # above this many pairwise differences, select order statistics by bisection

_PERCENT = {"p90": 90.0, "p99": 99.0}


def metric_value(samples: Sequence[float] | FloatArray, metric: str) -> float:
    """The metric with the result files' definitions: median (middle pair averaged), nearest-rank p90/p99."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    n = ordered.size
    if n == 0:
        raise ValueError("no samples")
    if metric == "median":
        return float(ordered[n // 2]) if n % 2 else float((ordered[n // 2 - 1] + ordered[n // 2]) / 2.0)
    return float(ordered[percentile_index(_PERCENT[metric], n)])


def _rows_metric(rows: FloatArray, metric: str) -> FloatArray:
    """``metric_value`` of every row of a 2-D array (vectorised with partial sorts)."""
    n = rows.shape[1]
    if metric == "median":
        if n % 2:
            return np.partition(rows, n // 2, axis=1)[:, n // 2]
        part = np.partition(rows, (n // 2 - 1, n // 2), axis=1)
        return (part[:, n // 2 - 1] + part[:, n // 2]) / 2.0
    k = percentile_index(_PERCENT[metric], n)
    return np.partition(rows, k, axis=1)[:, k]


def rankdata(values: Sequence[float] | FloatArray) -> tuple[FloatArray, IntArray]:
    """Average ranks (1-based, ``scipy.stats.rankdata``) and the sizes of the tied groups."""
    from scipy import stats as scipy_stats  # here, not at the top: scipy.stats takes a second or more to import

    array = np.asarray(values, dtype=np.float64)
    ranks = np.asarray(scipy_stats.rankdata(array, method="average"), dtype=np.float64)
    _, ties = np.unique(array, return_counts=True)
    return ranks, ties.astype(np.int64)


@functools.lru_cache(maxsize=64)
def u_distribution(m: int, n: int) -> tuple[int, ...]:
    """Exact null counts of U for sample sizes m, n (no ties): coefficients of the q-binomial C(m+n, m)_q.

    The counts sum to C(m+n, m); ``counts[u] / C(m+n, m)`` is P(U = u).
    """
    if m < 0 or n < 0:
        raise ValueError("negative sample size")
    poly = [1]
    for i in range(1, m + 1):
        grown = poly + [0] * (n + i)
        for k, c in enumerate(poly):  # times (1 - q^(n+i))
            grown[k + n + i] -= c
        for k in range(i, len(grown)):  # divided by (1 - q^i), exact
            grown[k] += grown[k - i]
        poly = grown[: i * n + 1]
    return tuple(poly)


def _u_cdf(m: int, n: int) -> list[float]:
    counts = u_distribution(m, n)
    total = math.comb(m + n, m)
    out: list[float] = []
    acc = 0
    for c in counts:
        acc += c
        out.append(acc / total)
    return out


@dataclass(frozen=True)
class RankTest:
    """Mann-Whitney U of ``y`` against ``x`` (U counts pairs with y > x, ties half) and the HL shift of y - x."""

    u: float
    p_value: float
    exact: bool
    shift: float  # Hodges-Lehmann: median of all y_j - x_i
    ci: tuple[float, float]  # Moses interval at the requested confidence; +-inf when it does not exist


def mann_whitney_hodges_lehmann(x: Sequence[float] | FloatArray, y: Sequence[float] | FloatArray,
                                confidence: float = 0.95) -> RankTest:
    """Two-sided Mann-Whitney test, Hodges-Lehmann shift and its distribution-free interval.

    Exact U distribution when there are no ties and m * n <= ``MAX_EXACT_PAIRS``; otherwise the normal
    approximation with tie correction and continuity correction.
    Interval: sorted differences D_(C) .. D_(mn + 1 - C), C - 1 = the largest u with P(U <= u) <= alpha / 2.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    m, n = xa.size, ya.size
    if m == 0 or n == 0:
        raise ValueError("both samples need at least one value")
    from scipy import stats as scipy_stats  # imported when a test runs (``baseline update`` never pays for it)

    alpha = 1.0 - confidence
    _, ties = rankdata(np.concatenate((xa, ya)))
    mn = m * n
    exact = not bool(np.any(ties > 1)) and mn <= MAX_EXACT_PAIRS
    total = m + n
    tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties)) / (total * (total - 1)) if total > 1 else 0.0
    sd = math.sqrt(max(0.0, mn / 12.0 * ((total + 1) - tie_term)))
    if exact or sd > 0.0:
        # scipy.stats.mannwhitneyu(x, y) returns U of its first argument: pairs with x > y, ties half
        # (docs.scipy.org/doc/scipy/reference/generated/scipy.stats.mannwhitneyu.html)
        result = scipy_stats.mannwhitneyu(ya, xa, alternative="two-sided", use_continuity=True,
                                          method="exact" if exact else "asymptotic")
        u, p = float(result.statistic), min(1.0, float(result.pvalue))
    else:  # every value tied: U = mn / 2 and no evidence either way (scipy would divide by a zero variance)
        u, p = mn / 2.0, 1.0
    if exact:
        cdf = _u_cdf(m, n)
        c_low = -1
        for value, prob in enumerate(cdf):
            if prob <= alpha / 2.0 + 1e-12:
                c_low = value
            else:
                break
        c = c_low + 1  # 0 when even U = 0 is not rare enough: no interval
    elif sd == 0.0:
        c = 0
    else:
        zc = NormalDist().inv_cdf(1.0 - alpha / 2.0)
        c = int(math.floor(mn / 2.0 - 0.5 - zc * sd)) + 1
    kth = _difference_selector(xa, ya)
    shift = kth(mn // 2 + 1) if mn % 2 else (kth(mn // 2) + kth(mn // 2 + 1)) / 2.0
    ci = (kth(c), kth(mn + 1 - c)) if c >= 1 else (-math.inf, math.inf)
    return RankTest(u=u, p_value=p, exact=exact, shift=float(shift), ci=(float(ci[0]), float(ci[1])))


def _difference_selector(x: FloatArray, y: FloatArray) -> Callable[[int], float]:
    """``kth(k)``: the k-th smallest (1-based) of the m * n differences y_j - x_i.

    Small inputs sort all differences; large ones (thousands of samples per side) find the value by bisection
    on counts, O((m + n) log) per step, so 10,000 x 10,000 samples need no 800 MB matrix.
    """
    m, n = x.size, y.size
    if m * n <= MAX_MATRIX_PAIRS:
        diffs = np.sort((y[None, :] - x[:, None]).ravel())
        return lambda k: float(diffs[k - 1])
    xs = np.sort(x)
    ys = np.sort(y)

    def count_le(d: float) -> int:  # pairs with y - x <= d, i.e. x >= y - d
        return int(m * n - np.searchsorted(xs, ys - d, side="left").sum())

    def kth(k: int) -> float:
        lo = float(ys[0] - xs[-1]) - 1.0  # count_le(lo) = 0 < k
        hi = float(ys[-1] - xs[0])  # count_le(hi) = m * n >= k
        for _ in range(200):
            mid = (lo + hi) / 2.0
            if not lo < mid < hi:
                break
            if count_le(mid) >= k:
                hi = mid
            else:
                lo = mid
        # the answer is the smallest difference above lo: for each y, y minus the largest x below y - lo
        index = np.searchsorted(xs, ys - lo, side="left") - 1
        valid = index >= 0
        return float(np.min(ys[valid] - xs[index[valid]]))

    return kth


def split_blocks(runs: Sequence[FloatArray], length: int) -> list[FloatArray]:
    """Cut each run, in time order, into contiguous blocks of about ``length`` samples (never across runs)."""
    out: list[FloatArray] = []
    for run in runs:
        count = max(1, int(round(run.size / length)))
        out.extend(np.array_split(run, count))
    return out


def moving_block_resamples(runs: Sequence[FloatArray], length: int, resamples: int, rng: np.random.Generator,
                           metric: str, chunk_values: int = 4_000_000) -> FloatArray:
    """``metric`` of ``resamples`` moving-block bootstrap resamples of the pooled runs.

    Each resample glues blocks of ``length`` consecutive samples (starting anywhere inside one run) until it
    has as many samples as the original, so short-range dependence survives the resampling.
    """
    pooled = np.concatenate(runs)
    total = pooled.size
    starts_list = []
    offset = 0
    for run in runs:
        usable = run.size - length + 1
        if usable >= 1:
            starts_list.append(offset + np.arange(usable))
        offset += run.size
    if not starts_list:  # every run shorter than a block: resample single samples
        length = 1
        starts_list = [np.arange(total)]
    starts = np.concatenate(starts_list)
    per = int(math.ceil(total / length))
    steps = np.arange(length)
    rows = max(1, min(resamples, chunk_values // max(1, per * length)))
    out = np.empty(resamples, dtype=np.float64)
    done = 0
    while done < resamples:
        take = min(rows, resamples - done)
        chosen = starts[rng.integers(0, starts.size, size=(take, per))]
        index = (chosen[:, :, None] + steps[None, None, :]).reshape(take, per * length)[:, :total]
        out[done:done + take] = _rows_metric(pooled[index], metric)
        done += take
    return out


@dataclass(frozen=True)
class BootstrapRatio:
    ratio: float
    ci: tuple[float, float]
    p_value: float  # two-sided achieved significance of "ratio = 1"
    resamples: int


def bootstrap_ratio(base_runs: Sequence[FloatArray], cur_runs: Sequence[FloatArray], metric: str, length: int,
                    confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> BootstrapRatio:
    """Percentile interval of metric(current) / metric(baseline) by independent moving-block bootstraps."""
    rng = np.random.default_rng(seed)
    b = moving_block_resamples(base_runs, length, resamples, rng, metric)
    c = moving_block_resamples(cur_runs, length, resamples, rng, metric)
    ratios = c / b
    alpha = 1.0 - confidence
    lo, hi = np.quantile(ratios, [alpha / 2.0, 1.0 - alpha / 2.0])
    observed = metric_value(np.concatenate(cur_runs), metric) / metric_value(np.concatenate(base_runs), metric)
    below = (np.count_nonzero(ratios <= 1.0) + 1) / (resamples + 1)
    above = (np.count_nonzero(ratios >= 1.0) + 1) / (resamples + 1)
    return BootstrapRatio(ratio=observed, ci=(float(lo), float(hi)), p_value=min(1.0, 2.0 * min(below, above)),
                          resamples=resamples)
