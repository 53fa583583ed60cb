"""Is the accuracy difference of two models on the same test images real? McNemar's test on per-image outcomes.

Two models scored on the same images are paired data: their top-1 values are correlated, so comparing two
separate intervals (or a two-sample test) is wrong. Only the discordant images carry information: b images
the reference gets right and the candidate wrong, c the other way round. Under "same accuracy" each
discordant image goes either way with probability 1/2, so min(b, c) ~ Binomial(b + c, 1/2).

- exact conditional p (McNemar 1947, Psychometrika 12:153-157, in its exact binomial form):
  p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2); ``scipy.stats.binomtest`` two-sided with
  p = 0.5 (its two-sided p sums the outcomes no more likely than the observed one, which for the symmetric
  p = 0.5 is that doubled tail). Significance at 5 % is decided on this p: it never exceeds its nominal level.
- mid-p: the exact p less P(X = min(b, c)); Fagerland, Lydersen & Laake, "The McNemar test for binary
  matched-pairs data: mid-p and asymptotic are better than exact conditional", BMC Medical Research
  Methodology 13:91 (2013), https://doi.org/10.1186/1471-2288-13-91. Reported alongside (less conservative).
- the 95 % interval of the difference: Newcombe's method 10 (hybrid score: Wilson intervals of the two
  marginal accuracies combined with their correlation phi), Newcombe, "Improved confidence intervals for the
  difference between binomial proportions based on paired data", Statistics in Medicine 17:2635-2650 (1998).
  It stays inside [-1, 1] and is not degenerate at b + c = 0, unlike the Wald interval.
b + c = 0 (both models right and wrong on exactly the same images): p = 1, not significant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeresnet.evaluate.intervals import DEFAULT_CONFIDENCE, wilson_interval, z_value

ALPHA = 0.05
TEST = "mcnemar-exact"
INTERVAL_METHOD = "newcombe-10"


def correct_mask(logits: npt.ArrayLike, labels: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Per-image top-1 outcome (True: argmax is the label), the input of every paired comparison."""
    scores = np.asarray(logits)
    truth = np.asarray(labels).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != truth.shape[0]:
        raise ValueError(f"logits {scores.shape} and labels {truth.shape} do not pair up as (N, K) and (N,)")
    mask: npt.NDArray[np.bool_] = np.argmax(scores, axis=1) == truth
    return mask


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact conditional McNemar p for b and c discordant images; 1.0 when b + c = 0."""
    from scipy.stats import binomtest

    b, c = _count(b, "b"), _count(c, "c")
    if b + c == 0:
        return 1.0
    return min(1.0, float(binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue))


def mcnemar_mid_p(b: int, c: int) -> float:
    """Mid-p: 2 * P(X <= k) - P(X = k), k = min(b, c), X ~ Binomial(b + c, 1/2); 1.0 when b + c = 0."""
    from scipy.stats import binom

    b, c = _count(b, "b"), _count(c, "c")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, float(2.0 * binom.cdf(k, n, 0.5) - binom.pmf(k, n, 0.5)))


def newcombe_interval(a: int, b: int, c: int, d: int,
                      confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Newcombe's method 10 interval of p1 - p2 = (b - c) / n, as fractions.

    a: both right, b: only the first right, c: only the second right, d: both wrong. The correlation phi
    carries Newcombe's correction: (ad - bc - n/2) when ad - bc > n/2, 0 for 0 <= ad - bc <= n/2, ad - bc when
    negative, over sqrt of the four marginal products (0 when one marginal is empty).
    """
    a, b, c, d = (_count(v, name) for v, name in ((a, "a"), (b, "b"), (c, "c"), (d, "d")))
    n = a + b + c + d
    if n < 1:
        raise ValueError("a paired comparison needs at least one image")
    z_value(confidence)  # validates the level
    p1, p2 = (a + b) / n, (a + c) / n
    first, second = wilson_interval(a + b, n, confidence), wilson_interval(a + c, n, confidence)
    marginals = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if marginals > 0:
        cross = a * d - b * c
        numerator = cross - n / 2.0 if cross > n / 2.0 else (0.0 if cross >= 0 else float(cross))
        phi = numerator / math.sqrt(marginals)
    estimate = p1 - p2
    dl1, du1 = p1 - first.lower, first.upper - p1
    dl2, du2 = p2 - second.lower, second.upper - p2
    delta = math.sqrt(max(0.0, dl1 ** 2 - 2.0 * phi * dl1 * du2 + du2 ** 2))
    epsilon = math.sqrt(max(0.0, du1 ** 2 - 2.0 * phi * du1 * dl2 + dl2 ** 2))
    return max(-1.0, estimate - delta), min(1.0, estimate + epsilon)


@dataclass(frozen=True)
class PairedComparison:
    """Reference vs candidate on the same n images; ``drop`` is reference minus candidate, in top-1 points."""

    n: int
    both_correct: int  # a
    only_reference: int  # b: the reference right, the candidate wrong
    only_candidate: int  # c: the candidate right, the reference wrong
    both_wrong: int  # d
    p_value: float  # exact conditional McNemar
    p_mid: float
    drop_ci95: tuple[float, float]  # percent points, Newcombe method 10
    alpha: float = ALPHA

    @property
    def reference_top1(self) -> float:
        return 100.0 * (self.both_correct + self.only_reference) / self.n

    @property
    def candidate_top1(self) -> float:
        return 100.0 * (self.both_correct + self.only_candidate) / self.n

    @property
    def drop(self) -> float:
        return 100.0 * (self.only_reference - self.only_candidate) / self.n

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def summary(self) -> str:
        """One line: 'drop 0.40 pt [-0.12, 0.93], McNemar exact p = 0.42 (b=7, c=3): significant at 5 %: no'."""
        lo, hi = self.drop_ci95
        return (f"drop {self.drop:.2f} pt [{lo:.2f}, {hi:.2f}], McNemar exact p = {self.p_value:.3g} "
                f"(b={self.only_reference}, c={self.only_candidate}): significant at {self.alpha * 100:g} %: "
                f"{'yes' if self.significant else 'no'}")

    def to_dict(self) -> dict[str, Any]:
        return {"test": TEST, "n": self.n, "both_correct": self.both_correct,
                "only_reference_correct": self.only_reference, "only_candidate_correct": self.only_candidate,
                "both_wrong": self.both_wrong, "drop": round(self.drop, 3),
                "drop_ci95": [round(self.drop_ci95[0], 3), round(self.drop_ci95[1], 3)],
                "interval_method": INTERVAL_METHOD, "p_value": self.p_value, "p_mid": self.p_mid,
                "alpha": self.alpha, "significant": self.significant, "summary": self.summary()}


def compare_outcomes(reference: npt.ArrayLike, candidate: npt.ArrayLike, alpha: float = ALPHA,
                     confidence: float = DEFAULT_CONFIDENCE) -> PairedComparison:
    """McNemar's test and Newcombe's interval from the per-image outcomes of two models on the same images."""
    ref = np.asarray(reference).reshape(-1)
    cand = np.asarray(candidate).reshape(-1)
    if ref.shape != cand.shape:
        raise ValueError(f"per-image outcomes of {ref.shape[0]} and {cand.shape[0]} images: a paired test needs "
                         "both models scored on the same images")
    if ref.size == 0:
        raise ValueError("a paired comparison needs at least one image")
    if ref.dtype != np.bool_ or cand.dtype != np.bool_:
        raise TypeError("per-image outcomes are booleans (True: top-1 correct); got "
                        f"{ref.dtype} and {cand.dtype}")
    a = int(np.count_nonzero(ref & cand))
    b = int(np.count_nonzero(ref & ~cand))
    c = int(np.count_nonzero(~ref & cand))
    d = int(ref.size) - a - b - c
    lo, hi = newcombe_interval(a, b, c, d, confidence)
    return PairedComparison(int(ref.size), a, b, c, d, mcnemar_exact_p(b, c), mcnemar_mid_p(b, c),
                            (100.0 * lo, 100.0 * hi), alpha)


def compare_logits(reference_logits: npt.ArrayLike, candidate_logits: npt.ArrayLike, labels: npt.ArrayLike,
                   alpha: float = ALPHA) -> PairedComparison:
    return compare_outcomes(correct_mask(reference_logits, labels), correct_mask(candidate_logits, labels), alpha)


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} = {value}: must be a non-negative count")
    return int(value)
