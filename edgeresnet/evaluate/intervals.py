"""Confidence intervals for a top-1 accuracy: a proportion of correctly classified test images.

The Wilson score interval is used rather than Clopper-Pearson's exact one. Brown, Cai & DasGupta,
"Interval Estimation for a Binomial Proportion", Statistical Science 16(2):101-133 (2001), recommend Wilson
for every n: its coverage stays close to the nominal 95 %, while Clopper-Pearson is conservative (wider than
needed, coverage above 95 %) and the Wald interval p +- z*sqrt(p(1-p)/n) collapses to [p, p] at 0 and n
correct. Wilson's interval is closed form, stays inside [0, 1] and needs no special case at 0 or n.

Pure (numpy-free, stdlib only): the normal quantile comes from ``statistics.NormalDist``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

DEFAULT_CONFIDENCE = 0.95
METHOD = "wilson"


def z_value(confidence: float = DEFAULT_CONFIDENCE) -> float:
    """The two-sided standard normal quantile, 1.959964 for 95 %."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence}: must be strictly between 0 and 1")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


@dataclass(frozen=True)
class Interval:
    """A proportion with its interval, all as fractions in [0, 1]."""

    estimate: float
    lower: float
    upper: float
    successes: int
    n: int
    confidence: float = DEFAULT_CONFIDENCE
    method: str = METHOD

    def percent(self, digits: int = 3) -> list[float]:
        """[lower, upper] in percent, the unit every top-1 in the package is reported in."""
        return [round(100.0 * self.lower, digits), round(100.0 * self.upper, digits)]


def wilson_interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Wilson score interval for ``successes`` out of ``n``.

    Wilson, "Probable inference, the law of succession, and statistical inference", JASA 22:209-212 (1927):
    centre (x + z^2/2) / (n + z^2), half-width z / (n + z^2) * sqrt(x (n - x) / n + z^2 / 4).
    """
    if isinstance(successes, bool) or isinstance(n, bool):
        raise TypeError("successes and n are counts, not booleans")
    successes, n = int(successes), int(n)
    if n < 1:
        raise ValueError(f"n = {n}: an interval needs at least one image")
    if not 0 <= successes <= n:
        raise ValueError(f"successes = {successes}: must be between 0 and n = {n}")
    z = z_value(confidence)
    z2 = z * z
    denominator = n + z2
    centre = (successes + z2 / 2.0) / denominator
    half = z / denominator * math.sqrt(successes * (n - successes) / n + z2 / 4.0)
    # at 0 or n correct the bound equals the estimate exactly in real arithmetic; clamp the rounding
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(successes / n, lower, upper, successes, n, confidence)


def accuracy_interval(top1_percent: float, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """The interval of a top-1 reported in percent over ``n`` images (a benchmark result keeps only those two).

    The count of correct images is recovered as round(top1 * n / 100). A top-1 outside [0, 100] or farther
    from k/n than rounding to 3 decimals (the package's JSON rounding: at most 5e-6 * n images) explains is
    an error, not a silently shifted interval.
    """
    if n < 1:
        raise ValueError(f"n = {n}: an interval needs at least one image")
    exact = float(top1_percent) * n / 100.0
    successes = int(round(exact))
    if not 0.0 <= float(top1_percent) <= 100.0 or abs(exact - successes) > 1e-6 + 5e-6 * n:
        raise ValueError(f"top-1 {top1_percent} % is not a count of correct images out of {n}")
    return wilson_interval(successes, n, confidence)


def format_accuracy(top1_percent: float | None, interval: list[float] | tuple[float, float] | None = None,
                    digits: int = 1) -> str:
    """'94.1 % [93.6, 94.6]' (interval in percent), '94.1 %' without one, '-' without a value."""
    if top1_percent is None:
        return "-"
    text = f"{top1_percent:.{digits}f} %"
    if interval is not None and len(interval) == 2:
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text
