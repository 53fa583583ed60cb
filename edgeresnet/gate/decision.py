"""Verdicts: from the statistics of one result key to ``Verdict`` values and the reasons behind them.

Why structured: a verdict and its reasons are data (the finding, the change, its interval, the tolerance);
the sentence a reader sees is rendered from them by ``text()``, apart from the maths, so the rules of the
gate read as rules and the wording can change without touching a number. The enums' values are the strings
the JSON report, the Markdown and the JUnit output have always carried.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from edgeresnet.gate.settings import GateSettings
from edgeresnet.gate.stats import FloatArray, bootstrap_ratio, mann_whitney_hodges_lehmann, metric_value, split_blocks

BOOTSTRAP_BLOCKS = 20  # moving-block length of the p90/p99 bootstrap: about n / 20 samples
FEW_BLOCKS = 6  # below this per side a 95 % interval barely exists: warn
FEW_SAMPLES = 50  # below this a 10 % slowdown in 10 %-noisy samples is caught < 95 % of the time (gate_power.py)
TAIL_SAMPLES = {"p90": 100, "p99": 1000}  # samples a percentile gate needs: 10 above p90, 10 above p99


class _Valued(str, Enum):
    """An enum whose members are their (user-visible) string values, in f-strings and JSON alike."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Verdict(_Valued):
    """Per result key (and per latency / accuracy comparison): the gate's verdict."""

    PASS = "pass"
    IMPROVEMENT = "improvement"
    REGRESSION = "regression"
    MISSING = "missing"  # a baseline result or accuracy the current run lacks
    NEW = "new"  # a current result without a baseline
    NOT_MEASURED = "not measured"  # accuracy only: nothing to compare


class Status(_Valued):
    """How a result key paired up between baseline and current."""

    COMPARED = "compared"
    MISSING = "missing"  # baseline only
    NEW = "new"  # current only


class Outcome(_Valued):
    """The whole gate: fail when any key regressed or went missing."""

    PASS = "pass"
    FAIL = "fail"


FAILING = (Verdict.REGRESSION, Verdict.MISSING)


class Rendered:
    """Structured statement whose sentence is ``text()`` (also its ``str``)."""

    def text(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.text()


def _pct_interval(change: float, ci: tuple[float, float]) -> str:
    return f"{change * 100:+.1f}% [{ci[0] * 100:+.1f}%, {ci[1] * 100:+.1f}%]"


class Finding(_Valued):
    SLOWER = "slower"  # significant and above the tolerance
    FASTER = "faster"  # significant and beyond the tolerance
    WITHIN_TOLERANCE = "within tolerance"  # significant but small
    NOT_SIGNIFICANT = "not significant"  # large but noisy
    NO_CHANGE = "no change"


@dataclass(frozen=True)
class LatencyReason(Rendered):
    finding: Finding
    metric: str
    change: float
    ci: tuple[float, float]
    tolerance: float
    confidence: float

    def text(self) -> str:
        pct, tol = _pct_interval(self.change, self.ci), self.tolerance
        if self.finding is Finding.SLOWER:
            return f"{self.metric} slower by {pct}: significant and above the {tol:.1%} tolerance"
        if self.finding is Finding.FASTER:
            return f"{self.metric} faster by {pct}: significant and beyond the {tol:.1%} tolerance"
        if self.finding is Finding.WITHIN_TOLERANCE:
            return f"{self.metric} {pct}: significant but within the {tol:.1%} tolerance"
        if self.finding is Finding.NOT_SIGNIFICANT:
            return (f"{self.metric} {pct}: beyond the {tol:.1%} tolerance but not significant at "
                    f"{self.confidence:.0%} (noisy; more samples would decide)")
        return f"{self.metric} {pct}: no significant change"


def decide_latency(change: float, ci: tuple[float, float], metric: str, tolerance: float,
                   confidence: float) -> tuple[Verdict, LatencyReason]:
    """A regression needs both: the interval lies above zero (significant) and the change exceeds the tolerance."""
    slower, faster = ci[0] > 0.0, ci[1] < 0.0
    if slower and change > tolerance:
        verdict, finding = Verdict.REGRESSION, Finding.SLOWER
    elif faster and change < -tolerance:
        verdict, finding = Verdict.IMPROVEMENT, Finding.FASTER
    elif slower or faster:
        verdict, finding = Verdict.PASS, Finding.WITHIN_TOLERANCE
    elif abs(change) > tolerance:
        verdict, finding = Verdict.PASS, Finding.NOT_SIGNIFICANT
    else:
        verdict, finding = Verdict.PASS, Finding.NO_CHANGE
    return verdict, LatencyReason(finding, metric, change, ci, tolerance, confidence)


@dataclass(frozen=True)
class Method(Rendered):
    """Which test produced the interval, with what it was run on."""

    rank: bool  # Mann-Whitney + Hodges-Lehmann; else the (moving-block) bootstrap
    metric: str
    block_length: int
    exact: bool = False
    resamples: int = 0
    seed: int = 0

    def text(self) -> str:
        blocked = self.block_length > 1
        if self.rank:
            what = f"{self.metric}s of {self.block_length}-sample blocks" if blocked else "samples"
            return f"Mann-Whitney U ({'exact' if self.exact else 'normal approx.'}) + Hodges-Lehmann on log {what}"
        return (f"{'moving-block ' if blocked else ''}bootstrap ({self.resamples} resamples, seed {self.seed}"
                f"{f', {self.block_length}-sample blocks' if blocked else ''}) of the {self.metric} ratio")


# -- notes: what the reader must know beside the verdict (the verdict stands) --------------------------


class _Worded(Rendered):
    """A note whose sentence is its class's entry in ``NOTE_WORDING``, formatted with the note itself."""

    def text(self) -> str:
        return NOTE_WORDING[type(self)].format(self=self)


@dataclass(frozen=True)
class RunsDisagree(_Worded):
    side: str
    spread: float
    medians: tuple[float, ...]
    tolerance: float

    @property
    def run_medians(self) -> str:
        return ", ".join(f"{m:.4g}" for m in self.medians)


@dataclass(frozen=True)
class SpeedDrift(_Worded):
    side: str
    run: int | None  # 1-based, when the side has several runs
    drift: float
    tolerance: float

    @property
    def which(self) -> str:
        return f"run {self.run}" if self.run is not None else "run"


@dataclass(frozen=True)
class Inconclusive(_Worded):
    confidence: float
    half_width: float
    tolerance: float


@dataclass(frozen=True)
class FewSamples(_Worded):
    samples: int
    wanted: int = FEW_SAMPLES


@dataclass(frozen=True)
class ThinTail(_Worded):
    metric: str
    samples: int
    wanted: int

    @property
    def above(self) -> int:
        """How many samples lie above the percentile."""
        return max(1, self.samples * (100 - int(self.metric[1:])) // 100)


# What each note tells the reader, in one place.
NOTE_WORDING: dict[type[Rendered], str] = {
    RunsDisagree: ("the {self.side} runs disagree among themselves by {self.spread:.0%} (run medians "
                   "{self.run_medians} ms), more than the {self.tolerance:.1%} tolerance: the machine is too noisy "
                   "for this gate; interleave baseline and current, lock the clocks or use a quieter runner"),
    SpeedDrift: ("the machine's speed changed during {self.side} {self.which}: its second half is "
                 "{self.drift:+.0%} against its first (median), more than the {self.tolerance:.1%} tolerance"),
    Inconclusive: ("inconclusive: the {self.confidence:.0%} interval is +-{self.half_width:.1%} wide, more than the "
                   "{self.tolerance:.1%} tolerance, so a real slowdown of that size could pass unnoticed; benchmark "
                   "longer, in alternating rounds, or on a quieter machine"),
    FewSamples: ("only {self.samples} samples on one side (the gate asks for {self.wanted}): a real "
                 "slowdown may be missed; benchmark longer (--duration) or raise --min-iterations"),
    ThinTail: ("{self.metric} of {self.samples} samples rests on {self.above} of them; "
               "use >= {self.wanted} samples for a {self.metric} gate"),
}

Note = RunsDisagree | SpeedDrift | Inconclusive | FewSamples | ThinTail


def stability_notes(runs: Sequence[FloatArray], side: str, tolerance: float) -> list[Note]:
    """Signs that the machine, not the model, moved: repeat runs of one side disagree, or a run's speed
    changed between its halves, by more than the tolerance. The verdict stands; the reader is warned."""
    notes: list[Note] = []
    medians = [metric_value(r, "median") for r in runs if r.size]
    if len(medians) >= 2:
        spread = max(medians) / min(medians) - 1.0
        if spread > tolerance:
            notes.append(RunsDisagree(side, spread, tuple(medians), tolerance))
    for index, run in enumerate(runs):
        if run.size >= 2 * FEW_SAMPLES:
            half = run.size // 2
            drift = metric_value(run[half:], "median") / metric_value(run[:half], "median") - 1.0
            if abs(drift) > tolerance:
                notes.append(SpeedDrift(side, index + 1 if len(runs) > 1 else None, drift, tolerance))
    return notes


class _Explained:
    """A comparison whose ``why`` (a structured reason) is also given as a sentence, ``reason``."""

    why: Rendered

    @property
    def reason(self) -> str:
        return self.why.text()


# -- latency --------------------------------------------------------------------------------------------


@dataclass
class LatencyComparison(_Explained):
    metric: str
    test: Method
    baseline: float  # metric of the pooled baseline samples, ms
    current: float
    change: float  # estimated relative change of the metric (0.10 = 10 % slower)
    ci: tuple[float, float]  # interval of the relative change at ``confidence``
    p_value: float
    significant: bool
    verdict: Verdict  # REGRESSION | IMPROVEMENT | PASS
    why: LatencyReason
    n_baseline: int
    n_current: int
    blocks_baseline: int
    blocks_current: int
    block_length: int
    findings: list[Note] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.test.text()

    @property
    def notes(self) -> list[str]:
        return [n.text() for n in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """The report's JSON form (keys and order as always; infinite bounds are cleaned by the report)."""
        return {"metric": self.metric, "method": self.method, "baseline": self.baseline, "current": self.current,
                "change": self.change, "ci": list(self.ci), "p_value": self.p_value, "significant": self.significant,
                "verdict": self.verdict.value, "reason": self.reason, "n_baseline": self.n_baseline,
                "n_current": self.n_current, "blocks_baseline": self.blocks_baseline,
                "blocks_current": self.blocks_current, "block_length": self.block_length, "notes": self.notes}


def _expm1(value: float) -> float:
    return value if math.isinf(value) else math.expm1(value)


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
    base_blocks = split_blocks(base, length) if length > 1 else base
    cur_blocks = split_blocks(cur, length) if length > 1 else cur
    if method == "rank":
        if length > 1:
            log_base = np.log([metric_value(b, settings.metric) for b in base_blocks])
            log_cur = np.log([metric_value(b, settings.metric) for b in cur_blocks])
        else:
            log_base, log_cur = np.log(pooled_base), np.log(pooled_cur)
        test = mann_whitney_hodges_lehmann(log_base, log_cur, settings.confidence)
        change = math.expm1(test.shift)
        ci = (_expm1(test.ci[0]), _expm1(test.ci[1]))
        p_value = test.p_value
        label = Method(rank=True, metric=settings.metric, block_length=length, exact=test.exact)
    else:
        boot = bootstrap_ratio(base, cur, settings.metric, length, settings.confidence, settings.resamples,
                               settings.seed)
        change = boot.ratio - 1.0
        ci = (boot.ci[0] - 1.0, boot.ci[1] - 1.0)
        p_value = boot.p_value
        label = Method(rank=False, metric=settings.metric, block_length=length, resamples=boot.resamples,
                       seed=settings.seed)
    significant = ci[0] > 0.0 or ci[1] < 0.0
    tol = settings.tolerance
    verdict, why = decide_latency(change, ci, settings.metric, tol, settings.confidence)
    notes = stability_notes(base, "baseline", tol) + stability_notes(cur, "current", tol)
    half_width = (ci[1] - ci[0]) / 2.0
    if verdict is Verdict.PASS and not significant and half_width > tol:
        notes.append(Inconclusive(settings.confidence, half_width, tol))
    fewest = min(n_base, n_cur)
    if (length > 1 and min(len(base_blocks), len(cur_blocks)) < FEW_BLOCKS) or fewest < FEW_SAMPLES:
        notes.append(FewSamples(fewest))
    wanted = TAIL_SAMPLES.get(settings.metric)
    if wanted is not None and fewest < wanted:
        notes.append(ThinTail(settings.metric, fewest, wanted))
    return LatencyComparison(
        metric=settings.metric, test=label, baseline=metric_value(pooled_base, settings.metric),
        current=metric_value(pooled_cur, settings.metric), change=change, ci=ci, p_value=p_value,
        significant=significant, verdict=verdict, why=why, n_baseline=n_base, n_current=n_cur,
        blocks_baseline=len(base_blocks) if length > 1 else n_base,
        blocks_current=len(cur_blocks) if length > 1 else n_cur, block_length=length, findings=notes,
    )


# -- accuracy -------------------------------------------------------------------------------------------


class AccuracyFinding(_Valued):
    NEITHER = "neither measured"
    NO_BASELINE = "no baseline accuracy"
    CURRENT_LACKS = "current lacks accuracy"
    DROPPED = "dropped"
    KEPT = "kept"


@dataclass(frozen=True)
class AccuracyReason(Rendered):
    finding: AccuracyFinding
    baseline_top1: float | None = None
    current_top1: float | None = None
    drop: float | None = None
    limit: float = 0.0
    n_baseline: Any = None  # image counts as the result files give them
    n_current: Any = None

    def text(self) -> str:
        if self.finding is AccuracyFinding.NEITHER:
            return "no accuracy in either run"
        if self.finding is AccuracyFinding.NO_BASELINE:
            return "baseline has no accuracy; nothing to compare"
        if self.finding is AccuracyFinding.CURRENT_LACKS:
            return ("the baseline was evaluated but the current run has no accuracy; "
                    "benchmark with accuracy evaluation")
        b, c, drop = self.baseline_top1 or 0.0, self.current_top1 or 0.0, self.drop or 0.0
        if self.finding is AccuracyFinding.DROPPED:
            text = f"top-1 {b:.2f}% -> {c:.2f}%: dropped {drop:.2f} points > {self.limit:g} allowed"
        else:
            text = f"top-1 {b:.2f}% -> {c:.2f}% ({-drop:+.2f} points; {self.limit:g} allowed)"
        if self.n_baseline and self.n_current and self.n_baseline != self.n_current:
            text += f"; measured on different image counts ({self.n_baseline} vs {self.n_current})"
        return text


@dataclass
class AccuracyComparison(_Explained):
    baseline_top1: float | None
    current_top1: float | None
    drop: float | None  # top-1 points lost (negative = gained)
    limit: float
    verdict: Verdict  # PASS | REGRESSION | NOT_MEASURED | MISSING
    why: AccuracyReason
    n_baseline: int | None = None
    n_current: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_top1": self.baseline_top1, "current_top1": self.current_top1, "drop": self.drop,
                "limit": self.limit, "verdict": self.verdict.value, "reason": self.reason,
                "n_baseline": self.n_baseline, "n_current": self.n_current}


def compare_accuracy(base: Mapping[str, Any] | None, cur: Mapping[str, Any] | None,
                     max_drop: float) -> AccuracyComparison:
    """Top-1 (percent) may drop by at most ``max_drop`` points; a baseline accuracy the current lacks fails."""
    if base is None and cur is None:
        return AccuracyComparison(None, None, None, max_drop, Verdict.NOT_MEASURED,
                                  AccuracyReason(AccuracyFinding.NEITHER, limit=max_drop))
    if base is None:
        assert cur is not None
        return AccuracyComparison(None, float(cur["top1"]), None, max_drop, Verdict.NOT_MEASURED,
                                  AccuracyReason(AccuracyFinding.NO_BASELINE, limit=max_drop), None, cur.get("n"))
    if cur is None:
        return AccuracyComparison(float(base["top1"]), None, None, max_drop, Verdict.MISSING,
                                  AccuracyReason(AccuracyFinding.CURRENT_LACKS, limit=max_drop), base.get("n"), None)
    b, c = float(base["top1"]), float(cur["top1"])
    drop = b - c
    dropped = drop > max_drop + 1e-9
    why = AccuracyReason(AccuracyFinding.DROPPED if dropped else AccuracyFinding.KEPT, b, c, drop, max_drop,
                         base.get("n"), cur.get("n"))
    return AccuracyComparison(b, c, drop, max_drop, Verdict.REGRESSION if dropped else Verdict.PASS, why,
                              base.get("n"), cur.get("n"))


# -- one key --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairingReason(Rendered):
    status: Status  # MISSING or NEW
    allowed: bool = False  # a missing result accepted by --allow-missing

    def text(self) -> str:
        if self.status is Status.NEW:
            return "not in the baseline; promote it with `edgeresnet baseline update`"
        return "in the baseline but not in the current run" + (" (allowed by --allow-missing)" if self.allowed else "")


Reason = LatencyReason | AccuracyReason | PairingReason


def key_verdict(latency: LatencyComparison, accuracy: AccuracyComparison, allow_missing: bool) -> Verdict:
    """A key regresses on latency or accuracy (a missing accuracy counts unless allowed); else it may improve."""
    failed_accuracy = accuracy.verdict is Verdict.REGRESSION or (
        accuracy.verdict is Verdict.MISSING and not allow_missing)
    if latency.verdict is Verdict.REGRESSION or failed_accuracy:
        return Verdict.REGRESSION
    if latency.verdict is Verdict.IMPROVEMENT:
        return Verdict.IMPROVEMENT
    return Verdict.PASS


def missing_verdict(allow_missing: bool) -> tuple[Verdict, PairingReason]:
    return (Verdict.PASS if allow_missing else Verdict.MISSING), PairingReason(Status.MISSING, allow_missing)
