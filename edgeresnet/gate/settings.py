"""What decides a verdict: the gate's settings, their defaults and the parsing of fractions like ``5%``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeresnet.errors import UserError
from edgeresnet.gate.stats import DEFAULT_RESAMPLES

METRICS = ("median", "p90", "p99")
METHODS = ("auto", "rank", "bootstrap")

DEFAULT_METRIC = "median"
DEFAULT_TOLERANCE = 0.05  # relative; half the 10 % slowdown we must catch, so misses and false alarms balance
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MAX_ACCURACY_DROP = 0.5  # top-1 points
DEFAULT_BLOCKS = 0  # 0 = raw samples; N = N contiguous blocks per side (see edgeresnet.gate's docstring)


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
