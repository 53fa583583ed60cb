"""The regression gate: pair benchmark results, decide latency and accuracy verdicts from raw samples.

Why this shape: a CI gate must catch real slowdowns without crying wolf on noisy machines, so the verdict
comes from the raw per-iteration samples, never from summary numbers, and needs two things at once:

* **statistical significance** at ``confidence``: the confidence interval of the relative change lies
  entirely above zero (a slowdown) or below it (an improvement);
* **practical size**: the estimated relative change of the chosen metric is larger than ``tolerance``.

Methods (chosen on recorded and simulated noise by ``benchmarks/gate_power.py``, see the README):

* ``median`` (default): Mann-Whitney U test on the log latencies, the Hodges-Lehmann estimate of their
  shift (relative change = exp(shift) - 1) and its distribution-free (Moses) interval from the U
  distribution; exact when there are no ties and few samples, normal approximation with tie correction
  otherwise. Rank based: stalls and spikes move nothing, bimodal "two speed" runs do not make it jump the
  way the ratio of medians does, and with no seed the same two files always give the same verdict.
* ``p90`` / ``p99``: a seeded moving-block bootstrap (blocks of about n / 20 samples) of the ratio of the
  two quantiles (trtexec's nearest-rank definition, as in the result files); percentile interval.

The samples of a run are not independent (machine speed drifts), so the interval speaks about these two
runs, not about a re-run; what protects against run-to-run shifts is the tolerance, and, on noisy machines,
measuring baseline and current interleaved or in alternating rounds (several ``--baseline``/``--current``
files are pooled). ``blocks`` > 0 cuts each run into contiguous blocks first (batch medians): wider,
drift-aware intervals, but it lost power on our recorded data without lowering false alarms, so it is off.

Pure: numpy and the standard library only.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from edgeresnet.bench.stats import percentile_index
from edgeresnet.errors import UserError

METRICS = ("median", "p90", "p99")
METHODS = ("auto", "rank", "bootstrap")
KEY_FIELDS = ("model", "target", "backend", "precision", "batch")

EXIT_PASS = 0
EXIT_REGRESSION = 1
EXIT_INPUT = 2

DEFAULT_METRIC = "median"
DEFAULT_TOLERANCE = 0.05  # relative; half the 10 % slowdown we must catch, so misses and false alarms balance
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MAX_ACCURACY_DROP = 0.5  # top-1 points
DEFAULT_BLOCKS = 0  # 0 = raw samples; N = N contiguous blocks per side (see the module docstring)
DEFAULT_RESAMPLES = 2000
BOOTSTRAP_BLOCKS = 20  # moving-block length of the p90/p99 bootstrap: about n / 20 samples
MAX_EXACT_PAIRS = 2500  # exact U distribution up to m * n pairs (e.g. 50 x 50 samples)
MAX_MATRIX_PAIRS = 1_000_000  # above this many pairwise differences, select order statistics by bisection
FEW_BLOCKS = 6  # below this per side a 95 % interval barely exists: warn
FEW_SAMPLES = 50  # below this a 10 % slowdown in 10 %-noisy samples is caught < 95 % of the time (gate_power.py)

# environment fields that make latencies incomparable: (label, how to read it)
ENV_FIELDS: tuple[tuple[str, str], ...] = (
    ("target", "target"),
    ("GPU", "gpu.name"),
    ("TensorRT", "tensorrt"),
    ("power mode", "power_mode"),
    ("CPU", "host.cpu"),
)
# versions that may legitimately change between baseline and current: reported, never refused
INFO_VERSIONS = ("onnxruntime", "torch", "cuda", "cudnn", "driver", "jetpack", "l4t", "edgeresnet", "python")


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateSettings:
    """Everything that decides a verdict; echoed in every report so a verdict can be reproduced."""

    metric: str = DEFAULT_METRIC
    tolerance: float = DEFAULT_TOLERANCE
    confidence: float = DEFAULT_CONFIDENCE
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    allow_env_change: bool = False
    allow_missing: bool = False
    method: str = "auto"
    blocks: int = DEFAULT_BLOCKS
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0

    def validate(self) -> GateSettings:
        if self.metric not in METRICS:
            raise UserError(f"--metric {self.metric}: choose one of {', '.join(METRICS)}")
        if self.method not in METHODS:
            raise UserError(f"--method {self.method}: choose one of {', '.join(METHODS)}")
        if not (0.0 <= self.tolerance < 1.0) or math.isnan(self.tolerance):
            raise UserError(f"--tolerance {self.tolerance:g}: must be a fraction in [0, 1), e.g. 5% or 0.05")
        if not (0.5 <= self.confidence < 1.0):
            raise UserError(f"--confidence {self.confidence:g}: must be in [0.5, 1), e.g. 0.95")
        if not (self.max_accuracy_drop >= 0.0) or math.isinf(self.max_accuracy_drop):
            raise UserError(f"--max-accuracy-drop {self.max_accuracy_drop:g}: must be >= 0 top-1 points")
        if self.blocks < 0:
            raise UserError(f"--blocks {self.blocks}: must be >= 0 (0 = raw samples)")
        if self.resamples < 200:
            raise UserError(f"--resamples {self.resamples}: use at least 200 bootstrap resamples")
        return self

    def resolved_method(self) -> str:
        if self.method == "auto":
            return "rank" if self.metric == "median" else "bootstrap"
        return self.method


def parse_fraction(text: str, option: str) -> float:
    """``5%`` or ``0.05`` -> 0.05; a bare number >= 1 is ambiguous and refused."""
    raw = str(text).strip()
    try:
        if raw.endswith("%"):
            return float(raw[:-1]) / 100.0
        value = float(raw)
    except ValueError:
        raise UserError(f"{option} {text}: not a number; write e.g. 5% or 0.05") from None
    if value >= 1.0:
        raise UserError(f"{option} {text}: ambiguous; write {value:g}% for percent or a fraction below 1")
    return value


# ----------------------------------------------------------------------------------------------
# statistics (pure)
# ----------------------------------------------------------------------------------------------


def metric_value(samples: Sequence[float] | np.ndarray, metric: str) -> float:
    """The metric with the result files' definitions: median (middle pair averaged), nearest-rank p90/p99."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    n = ordered.size
    if n == 0:
        raise ValueError("no samples")
    if metric == "median":
        return float(ordered[n // 2]) if n % 2 else float((ordered[n // 2 - 1] + ordered[n // 2]) / 2.0)
    return float(ordered[percentile_index(_PERCENT[metric], n)])


_PERCENT = {"p90": 90.0, "p99": 99.0}


def _rows_metric(rows: np.ndarray, metric: str) -> np.ndarray:
    """``metric_value`` of every row of a 2-D array (vectorised with partial sorts)."""
    n = rows.shape[1]
    if metric == "median":
        if n % 2:
            return np.partition(rows, n // 2, axis=1)[:, n // 2]
        part = np.partition(rows, (n // 2 - 1, n // 2), axis=1)
        return (part[:, n // 2 - 1] + part[:, n // 2]) / 2.0
    k = percentile_index(_PERCENT[metric], n)
    return np.partition(rows, k, axis=1)[:, k]


def rankdata(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) and the sizes of tied groups."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    n = values.size
    boundaries = np.flatnonzero(np.diff(ordered) != 0) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [n]))
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks, (ends - starts)


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
    out, acc = [], 0
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


def mann_whitney_hodges_lehmann(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> RankTest:
    """Two-sided Mann-Whitney test, Hodges-Lehmann shift and its distribution-free interval.

    Exact U distribution when there are no ties and m * n <= ``MAX_EXACT_PAIRS``; otherwise the normal
    approximation with tie correction and continuity correction (as scipy's ``mannwhitneyu``).
    Interval: sorted differences D_(C) .. D_(mn + 1 - C), C - 1 = the largest u with P(U <= u) <= alpha / 2.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    m, n = xa.size, ya.size
    if m == 0 or n == 0:
        raise ValueError("both samples need at least one value")
    alpha = 1.0 - confidence
    ranks, ties = rankdata(np.concatenate((xa, ya)))
    u = float(ranks[m:].sum() - n * (n + 1) / 2.0)
    mn = m * n
    has_ties = bool(np.any(ties > 1))
    exact = (not has_ties) and mn <= MAX_EXACT_PAIRS
    if exact:
        cdf = _u_cdf(m, n)
        k = int(round(u))
        lower_tail = cdf[k]
        upper_tail = 1.0 - (cdf[k - 1] if k >= 1 else 0.0)
        p = min(1.0, 2.0 * min(lower_tail, upper_tail))
        c_low = -1
        for value, prob in enumerate(cdf):
            if prob <= alpha / 2.0 + 1e-12:
                c_low = value
            else:
                break
        c = c_low + 1  # 0 when even U = 0 is not rare enough: no interval
    else:
        total = m + n
        tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties)) / (total * (total - 1)) if total > 1 else 0.0
        var = mn / 12.0 * ((total + 1) - tie_term)
        sd = math.sqrt(var) if var > 0 else 0.0
        if sd == 0.0:
            p = 1.0
            c = 0
        else:
            delta = u - mn / 2.0
            z = (abs(delta) - 0.5) / sd if abs(delta) >= 0.5 else 0.0
            p = min(1.0, 2.0 * (1.0 - NormalDist().cdf(z)))
            zc = NormalDist().inv_cdf(1.0 - alpha / 2.0)
            c = int(math.floor(mn / 2.0 - 0.5 - zc * sd)) + 1
    kth = _difference_selector(xa, ya)
    shift = kth(mn // 2 + 1) if mn % 2 else (kth(mn // 2) + kth(mn // 2 + 1)) / 2.0
    ci = (kth(c), kth(mn + 1 - c)) if c >= 1 else (-math.inf, math.inf)
    return RankTest(u=u, p_value=p, exact=exact, shift=float(shift), ci=(float(ci[0]), float(ci[1])))


def _difference_selector(x: np.ndarray, y: np.ndarray) -> Any:
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


def split_blocks(runs: Sequence[np.ndarray], length: int) -> list[np.ndarray]:
    """Cut each run, in time order, into contiguous blocks of about ``length`` samples (never across runs)."""
    out: list[np.ndarray] = []
    for run in runs:
        count = max(1, int(round(run.size / length)))
        out.extend(np.array_split(run, count))
    return out


def moving_block_resamples(runs: Sequence[np.ndarray], length: int, resamples: int, rng: np.random.Generator,
                           metric: str, chunk_values: int = 4_000_000) -> np.ndarray:
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


def bootstrap_ratio(base_runs: Sequence[np.ndarray], cur_runs: Sequence[np.ndarray], metric: str, length: int,
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


# ----------------------------------------------------------------------------------------------
# latency and accuracy verdicts
# ----------------------------------------------------------------------------------------------


@dataclass
class LatencyComparison:
    metric: str
    method: str
    baseline: float  # metric of the pooled baseline samples, ms
    current: float
    change: float  # estimated relative change of the metric (0.10 = 10 % slower)
    ci: tuple[float, float]  # interval of the relative change at ``confidence``
    p_value: float
    significant: bool
    verdict: str  # "regression" | "improvement" | "pass"
    reason: str
    n_baseline: int
    n_current: int
    blocks_baseline: int
    blocks_current: int
    block_length: int
    notes: list[str] = field(default_factory=list)


def compare_latency(base_runs: Sequence[Sequence[float]], cur_runs: Sequence[Sequence[float]],
                    settings: GateSettings) -> LatencyComparison:
    """Verdict on the raw samples of one key; each run (file) is a list of samples in time order."""
    base = [np.asarray(r, dtype=np.float64) for r in base_runs if len(r)]
    cur = [np.asarray(r, dtype=np.float64) for r in cur_runs if len(r)]
    if not base or not cur:
        raise ValueError("both sides need samples")
    n_base = sum(r.size for r in base)
    n_cur = sum(r.size for r in cur)
    method = settings.resolved_method()
    # rank test: raw samples unless blocks are asked for; bootstrap: always moving blocks (drift-aware tails)
    blocks = settings.blocks or (BOOTSTRAP_BLOCKS if method == "bootstrap" else 0)
    length = max(1, min(n_base, n_cur) // blocks) if blocks > 0 else 1
    pooled_base = np.concatenate(base)
    pooled_cur = np.concatenate(cur)
    m_base = metric_value(pooled_base, settings.metric)
    m_cur = metric_value(pooled_cur, settings.metric)
    notes: list[str] = []
    base_blocks = split_blocks(base, length) if length > 1 else base
    cur_blocks = split_blocks(cur, length) if length > 1 else cur
    if method == "rank":
        if length > 1:
            log_base = np.log([metric_value(b, settings.metric) for b in base_blocks])
            log_cur = np.log([metric_value(b, settings.metric) for b in cur_blocks])
            what = f"{settings.metric}s of {length}-sample blocks"
        else:
            log_base, log_cur = np.log(pooled_base), np.log(pooled_cur)
            what = "samples"
        test = mann_whitney_hodges_lehmann(log_base, log_cur, settings.confidence)
        change = math.expm1(test.shift)
        ci = (_expm1(test.ci[0]), _expm1(test.ci[1]))
        p_value = test.p_value
        label = (f"Mann-Whitney U ({'exact' if test.exact else 'normal approx.'}) + Hodges-Lehmann on log {what}")
    else:
        boot = bootstrap_ratio(base, cur, settings.metric, length, settings.confidence, settings.resamples,
                               settings.seed)
        change = boot.ratio - 1.0
        ci = (boot.ci[0] - 1.0, boot.ci[1] - 1.0)
        p_value = boot.p_value
        label = (f"{'moving-block ' if length > 1 else ''}bootstrap ({boot.resamples} resamples, seed {settings.seed}"
                 f"{f', {length}-sample blocks' if length > 1 else ''}) of the {settings.metric} ratio")
    slower = ci[0] > 0.0
    faster = ci[1] < 0.0
    significant = slower or faster
    tol = settings.tolerance
    pct = f"{change * 100:+.1f}% [{ci[0] * 100:+.1f}%, {ci[1] * 100:+.1f}%]"
    if slower and change > tol:
        verdict = "regression"
        reason = f"{settings.metric} slower by {pct}: significant and above the {tol:.1%} tolerance"
    elif faster and change < -tol:
        verdict = "improvement"
        reason = f"{settings.metric} faster by {pct}: significant and beyond the {tol:.1%} tolerance"
    elif significant:
        verdict, reason = "pass", f"{settings.metric} {pct}: significant but within the {tol:.1%} tolerance"
    elif abs(change) > tol:
        verdict, reason = "pass", (f"{settings.metric} {pct}: beyond the {tol:.1%} tolerance but not significant at "
                                   f"{settings.confidence:.0%} (noisy; more samples would decide)")
    else:
        verdict, reason = "pass", f"{settings.metric} {pct}: no significant change"
    notes.extend(stability_notes(base, "baseline", tol) + stability_notes(cur, "current", tol))
    half_width = (ci[1] - ci[0]) / 2.0
    if verdict == "pass" and not significant and half_width > tol:
        notes.append(f"inconclusive: the {settings.confidence:.0%} interval is +-{half_width:.1%} wide, more than the "
                     f"{tol:.1%} tolerance, so a real slowdown of that size could pass unnoticed; benchmark longer, "
                     "in alternating rounds, or on a quieter machine")
    if (length > 1 and min(len(base_blocks), len(cur_blocks)) < FEW_BLOCKS) or min(n_base, n_cur) < FEW_SAMPLES:
        notes.append(f"only {min(n_base, n_cur)} samples on one side (the gate asks for {FEW_SAMPLES}): a real "
                     "slowdown may be missed; benchmark longer (--duration) or raise --min-iterations")
    if settings.metric == "p99" and min(n_base, n_cur) < 1000:
        notes.append(f"p99 of {min(n_base, n_cur)} samples rests on {max(1, min(n_base, n_cur) // 100)} of them; "
                     "use >= 1000 samples for a p99 gate")
    elif settings.metric == "p90" and min(n_base, n_cur) < 100:
        notes.append(f"p90 of {min(n_base, n_cur)} samples rests on {max(1, min(n_base, n_cur) // 10)} of them; "
                     "use >= 100 samples for a p90 gate")
    return LatencyComparison(
        metric=settings.metric, method=label, baseline=m_base, current=m_cur, change=change, ci=ci,
        p_value=p_value, significant=significant, verdict=verdict, reason=reason, n_baseline=n_base,
        n_current=n_cur, blocks_baseline=len(base_blocks) if length > 1 else n_base,
        blocks_current=len(cur_blocks) if length > 1 else n_cur, block_length=length,
        notes=notes,
    )


def stability_notes(runs: Sequence[np.ndarray], side: str, tolerance: float) -> list[str]:
    """Signs that the machine, not the model, moved: repeat runs of one side disagree, or a run's speed
    changed between its halves, by more than the tolerance. The verdict stands; the reader is warned."""
    notes: list[str] = []
    medians = [metric_value(r, "median") for r in runs if r.size]
    if len(medians) >= 2:
        spread = max(medians) / min(medians) - 1.0
        if spread > tolerance:
            notes.append(f"the {side} runs disagree among themselves by {spread:.0%} (run medians "
                         f"{', '.join(f'{m:.4g}' for m in medians)} ms), more than the {tolerance:.1%} tolerance: "
                         "the machine is too noisy for this gate; interleave baseline and current, lock the clocks "
                         "or use a quieter runner")
    for index, run in enumerate(runs):
        if run.size >= 2 * FEW_SAMPLES:
            half = run.size // 2
            drift = metric_value(run[half:], "median") / metric_value(run[:half], "median") - 1.0
            if abs(drift) > tolerance:
                which = f" {index + 1}" if len(runs) > 1 else ""
                notes.append(f"the machine's speed changed during {side} run{which}: its second half is "
                             f"{drift:+.0%} against its first (median), more than the {tolerance:.1%} tolerance")
    return notes


def _expm1(value: float) -> float:
    return value if math.isinf(value) else math.expm1(value)


@dataclass
class AccuracyComparison:
    baseline_top1: float | None
    current_top1: float | None
    drop: float | None  # top-1 points lost (negative = gained)
    limit: float
    verdict: str  # "pass" | "regression" | "not measured" | "missing"
    reason: str
    n_baseline: int | None = None
    n_current: int | None = None


def compare_accuracy(base: Mapping[str, Any] | None, cur: Mapping[str, Any] | None,
                     max_drop: float) -> AccuracyComparison:
    """Top-1 (percent) may drop by at most ``max_drop`` points; a baseline accuracy the current lacks fails."""
    if base is None and cur is None:
        return AccuracyComparison(None, None, None, max_drop, "not measured", "no accuracy in either run")
    if base is None:
        return AccuracyComparison(None, float(cur["top1"]), None, max_drop, "not measured",
                                  "baseline has no accuracy; nothing to compare", None, cur.get("n"))
    if cur is None:
        return AccuracyComparison(float(base["top1"]), None, None, max_drop, "missing",
                                  "the baseline was evaluated but the current run has no accuracy; "
                                  "benchmark with accuracy evaluation", base.get("n"), None)
    b, c = float(base["top1"]), float(cur["top1"])
    drop = b - c
    if drop > max_drop + 1e-9:
        verdict, reason = "regression", f"top-1 {b:.2f}% -> {c:.2f}%: dropped {drop:.2f} points > {max_drop:g} allowed"
    else:
        verdict, reason = "pass", f"top-1 {b:.2f}% -> {c:.2f}% ({-drop:+.2f} points; {max_drop:g} allowed)"
    out = AccuracyComparison(b, c, drop, max_drop, verdict, reason, base.get("n"), cur.get("n"))
    if base.get("n") and cur.get("n") and base["n"] != cur["n"]:
        out.reason += f"; measured on different image counts ({base['n']} vs {cur['n']})"
    return out


# ----------------------------------------------------------------------------------------------
# reading results, pairing, environments
# ----------------------------------------------------------------------------------------------


def load_results(path: str | Path, option: str) -> dict[str, Any]:
    """Read and validate one benchmark result file; every problem is one UserError line (exit 2)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{option} {p}: file not found; check the path")
    if p.is_dir():
        raise UserError(f"{option} {p}: is a directory; pass a benchmark result JSON file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{option} {p}: not a text file; pass a result written by "
                        "`edgeresnet benchmark --json`") from None
    except OSError as exc:
        raise UserError(f"{option} {p}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{option} {p}: not valid JSON (line {exc.lineno}: {exc.msg}); "
                        "pass a result written by `edgeresnet benchmark --json`") from None
    validate_results(document, f"{option} {p}")
    return document


def validate_results(document: Any, source: str) -> None:
    """The bench helper's schema check when available, then the checks the gate itself depends on."""
    try:
        from edgeresnet.bench import schema as bench_schema
    except ImportError:  # pragma: no cover - bench ships with the package
        bench_schema = None
    if bench_schema is not None:
        bench_schema.check_version(document, source)
        try:
            errors = bench_schema.validation_errors(document)
        except ImportError:  # jsonschema not installed: the minimal checks below still run
            errors = []
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise UserError(f"{source}: does not match {bench_schema.SCHEMA_ID} at {errors[0]}{more}")
    _minimal_checks(document, source)


def _minimal_checks(document: Any, source: str) -> None:
    if not isinstance(document, dict) or not str(document.get("schema", "")).startswith("edgeresnet.benchmark/"):
        raise UserError(f"{source}: not an edgeresnet benchmark result; pass a file written by "
                        "`edgeresnet benchmark --json`")
    if not isinstance(document.get("environment"), dict):
        raise UserError(f"{source}: no \"environment\" object; re-run `edgeresnet benchmark`")
    results = document.get("results")
    if not isinstance(results, list):
        raise UserError(f"{source}: no \"results\" list; re-run `edgeresnet benchmark`")
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise UserError(f"{source}: results/{index} is not an object")
        missing = [k for k in KEY_FIELDS if k not in result]
        if missing:
            raise UserError(f"{source}: results/{index} lacks {', '.join(missing)}")
        latency = result.get("latency_ms")
        if not isinstance(latency, dict) or not isinstance(latency.get("samples"), list):
            raise UserError(f"{source}: results/{index} has no latency_ms.samples list")
        for value in latency["samples"]:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise UserError(f"{source}: results/{index} latency_ms.samples holds {value!r}; "
                                "latencies must be positive finite numbers")
        accuracy = result.get("accuracy")
        top1 = accuracy.get("top1") if isinstance(accuracy, dict) else None
        if accuracy is not None and (isinstance(top1, bool) or not isinstance(top1, (int, float))):
            raise UserError(f"{source}: results/{index} accuracy has no numeric top1")


def result_key(result: Mapping[str, Any]) -> tuple[str, str, str, str, int]:
    return (str(result["model"]), str(result["target"]), str(result["backend"]), str(result["precision"]),
            int(result["batch"]))


def key_label(key: Sequence[Any]) -> str:
    model, target, backend, precision, batch = key
    return f"{model} {target}/{backend}/{precision}/b{batch}"


@dataclass
class Side:
    """All results of one side (baseline or current), pooled by key over its files in the order given."""

    runs: dict[tuple, list[list[float]]] = field(default_factory=dict)
    accuracy: dict[tuple, dict[str, Any] | None] = field(default_factory=dict)
    warnings: dict[tuple, list[str]] = field(default_factory=dict)
    order: list[tuple] = field(default_factory=list)


def collect(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> Side:
    """Pool results by key; a key twice in one file is ambiguous (exit 2), across files it is a repeat run."""
    side = Side()
    for source, document in documents:
        seen: set[tuple] = set()
        for result in document["results"]:
            key = result_key(result)
            if key in seen:
                raise UserError(f"{source}: two results share the key {key_label(key)}; "
                                "give them distinct model names or split the file")
            seen.add(key)
            samples = [float(v) for v in result["latency_ms"]["samples"]]
            if not samples:
                raise UserError(f"{source}: {key_label(key)} has no raw latency samples (a trtexec summary "
                                "import?); the gate needs per-iteration samples: add --exportTimes to trtexec "
                                "or benchmark with `edgeresnet benchmark`")
            if key not in side.runs:
                side.order.append(key)
                side.runs[key] = []
                side.accuracy[key] = None
                side.warnings[key] = []
            side.runs[key].append(samples)
            side.accuracy[key] = _merge_accuracy(side.accuracy[key], result.get("accuracy"))
            side.warnings[key].extend(str(w) for w in result.get("warnings") or [])
    return side


def _merge_accuracy(old: dict[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Repeat runs of one artifact: top-1 weighted by image count."""
    if new is None:
        return old
    new_n = int(new.get("n") or 1)
    if old is None:
        return {"top1": float(new["top1"]), "n": new_n}
    total = old["n"] + new_n
    return {"top1": (old["top1"] * old["n"] + float(new["top1"]) * new_n) / total, "n": total}


def _env_value(environment: Mapping[str, Any], path: str) -> Any:
    value: Any = environment
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


@dataclass
class EnvComparison:
    differences: list[str]  # fields that make latencies incomparable
    info: list[str]  # version changes worth knowing, never refused
    allowed: bool

    @property
    def refused(self) -> bool:
        return bool(self.differences) and not self.allowed


def compare_environments(base_docs: Sequence[tuple[str, Mapping[str, Any]]],
                         cur_docs: Sequence[tuple[str, Mapping[str, Any]]], allow: bool) -> EnvComparison:
    """What differs between the first baseline file and every other file, in the fields that matter."""
    ref_name, ref_doc = base_docs[0]
    ref_env = ref_doc["environment"]
    differences: list[str] = []
    info: list[str] = []
    for name, doc in list(base_docs[1:]) + list(cur_docs):
        env = doc["environment"]
        for label, path in ENV_FIELDS:
            a, b = _env_value(ref_env, path), _env_value(env, path)
            if a != b:
                text = f"{label} {_show(a)} vs {_show(b)}"
                if len(base_docs) + len(cur_docs) > 2:
                    text += f" ({name})"
                if text not in differences:
                    differences.append(text)
        for lib in INFO_VERSIONS:
            a = _env_value(ref_env, f"versions.{lib}")
            b = _env_value(env, f"versions.{lib}")
            if a != b and a is not None and b is not None:
                text = f"{lib} {a} -> {b}"
                if text not in info:
                    info.append(text)
    return EnvComparison(differences=differences, info=info, allowed=allow)


def _show(value: Any) -> str:
    return "none" if value is None else repr(str(value))


# ----------------------------------------------------------------------------------------------
# the gate
# ----------------------------------------------------------------------------------------------


@dataclass
class KeyResult:
    key: tuple
    status: str  # "compared" | "missing" (baseline only) | "new" (current only)
    verdict: str  # "pass" | "improvement" | "regression" | "missing" | "new"
    latency: LatencyComparison | None = None
    accuracy: AccuracyComparison | None = None
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.verdict in ("regression", "missing")

    def key_dict(self) -> dict[str, Any]:
        return dict(zip(KEY_FIELDS, self.key))


@dataclass
class GateReport:
    settings: GateSettings
    baseline_files: list[str]
    current_files: list[str]
    rows: list[KeyResult]
    environment: EnvComparison

    @property
    def regressions(self) -> list[KeyResult]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def missing(self) -> list[KeyResult]:
        return [r for r in self.rows if r.status == "missing"]

    @property
    def new(self) -> list[KeyResult]:
        return [r for r in self.rows if r.status == "new"]

    @property
    def improvements(self) -> list[KeyResult]:
        return [r for r in self.rows if r.verdict == "improvement"]

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.rows)

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.failed else EXIT_PASS

    @property
    def verdict(self) -> str:
        return "fail" if self.failed else "pass"

    def summary(self) -> str:
        parts = [f"{len([r for r in self.rows if r.status == 'compared'])} compared"]
        for label, rows in (("regression", self.regressions), ("improvement", self.improvements)):
            if rows:
                parts.append(f"{len(rows)} {label}{'s' if len(rows) > 1 else ''}")
        if self.missing:
            parts.append(f"{len(self.missing)} missing")
        if self.new:
            parts.append(f"{len(self.new)} new")
        return f"{self.verdict.upper()}: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            item: dict[str, Any] = {"key": row.key_dict(), "status": row.status, "verdict": row.verdict,
                                    "reasons": row.reasons, "warnings": row.warnings}
            item["latency"] = _clean(asdict(row.latency)) if row.latency else None
            item["accuracy"] = asdict(row.accuracy) if row.accuracy else None
            rows.append(item)
        return {
            "schema": "edgeresnet.gate/1",
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "settings": asdict(self.settings) | {"method_resolved": self.settings.resolved_method()},
            "baseline": self.baseline_files,
            "current": self.current_files,
            "environment": {"differences": self.environment.differences, "allowed": self.environment.allowed,
                            "info": self.environment.info},
            "results": rows,
        }


def _clean(value: Any) -> Any:
    """JSON has no infinity: an interval that does not exist is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def run_gate(baseline: Sequence[tuple[str, Mapping[str, Any]]], current: Sequence[tuple[str, Mapping[str, Any]]],
             settings: GateSettings) -> GateReport:
    """Compare validated documents (``(name, document)`` per file, in order); UserError for input problems."""
    settings.validate()
    if not baseline or not current:
        raise UserError("give at least one --baseline and one --current result file")
    env = compare_environments(baseline, current, settings.allow_env_change)
    if env.refused:
        raise UserError("environments differ: " + "; ".join(env.differences)
                        + "; latencies are not comparable, re-benchmark on the same setup or pass --allow-env-change")
    base = collect(baseline)
    cur = collect(current)
    common = [k for k in base.order if k in cur.runs]
    if not common:
        raise UserError("no result in the current run matches the baseline by (model, target, backend, precision, "
                        f"batch): baseline has {', '.join(key_label(k) for k in base.order[:3]) or 'nothing'}, "
                        f"current has {', '.join(key_label(k) for k in cur.order[:3]) or 'nothing'}")
    rows: list[KeyResult] = []
    for key in base.order:
        if key not in cur.runs:
            reason = "in the baseline but not in the current run"
            if settings.allow_missing:
                reason += " (allowed by --allow-missing)"
            rows.append(KeyResult(key, "missing", "pass" if settings.allow_missing else "missing", reasons=[reason]))
            continue
        latency = compare_latency(base.runs[key], cur.runs[key], settings)
        accuracy = compare_accuracy(base.accuracy[key], cur.accuracy[key], settings.max_accuracy_drop)
        reasons = [latency.reason]
        if accuracy.baseline_top1 is not None or accuracy.current_top1 is not None:
            reasons.append(accuracy.reason)
        failed_accuracy = accuracy.verdict == "regression" or (
            accuracy.verdict == "missing" and not settings.allow_missing)
        if latency.verdict == "regression" or failed_accuracy:
            verdict = "regression"
        elif latency.verdict == "improvement":
            verdict = "improvement"
        else:
            verdict = "pass"
        warnings = list(dict.fromkeys(latency.notes + cur.warnings[key]))
        rows.append(KeyResult(key, "compared", verdict, latency, accuracy, reasons, warnings))
    for key in cur.order:
        if key not in base.runs:
            rows.append(KeyResult(key, "new", "new", reasons=["not in the baseline; promote it with "
                                                             "`edgeresnet baseline update`"]))
    return GateReport(settings=settings, baseline_files=[n for n, _ in baseline], current_files=[n for n, _ in current],
                      rows=rows, environment=env)


def gate_files(baseline: Iterable[str | Path], current: Iterable[str | Path], settings: GateSettings) -> GateReport:
    """Read, validate and compare result files (``--baseline`` / ``--current`` may each be repeated)."""
    base_docs = [(str(p), load_results(p, "--baseline")) for p in baseline]
    cur_docs = [(str(p), load_results(p, "--current")) for p in current]
    return run_gate(base_docs, cur_docs, settings)
