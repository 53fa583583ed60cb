"""The accuracy gate of every quantizing command, and the per-layer sensitivity sweep behind it.

The gate measures top-1 of the INT8 artifact against FP32 on held-out data. When the drop exceeds the
budget it quantizes one unit (weighted layer or residual add) at a time to rank the units by how much
they alone disturb the logits, then keeps the most sensitive ones in float, one more at a time, until the
budget holds or ``max_keep`` is reached (then the gate fails: the user learns which layers were tried).

Pure logic: the caller supplies ``evaluate(float_units) -> logits`` for its artifact kind (ONNX Runtime on a
Q/DQ model for PTQ, the fake-quant torch model for QAT), so the same algorithm serves both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeresnet.errors import UserError
from edgeresnet.evaluate import top1
from edgeresnet.evaluate.paired import PairedComparison, compare_logits

Evaluate = Callable[[frozenset], np.ndarray]
Progress = Callable[[str, int, int], None]  # (stage, done, total): every compress stage's progress callback

DEFAULT_MAX_DROP = 1.0
GATE_FAILED_EXIT = 3  # distinct from 2 (bad input): the inputs were fine, the accuracy budget was not met


def check_max_drop(value: float) -> float:
    if not math.isfinite(value) or value < 0 or value > 100:
        raise UserError(f"--max-drop {value}: must be a number of top-1 points between 0 and 100")
    return float(value)


def logit_distance(logits: np.ndarray, reference: np.ndarray) -> float:
    """KL divergence of softmax(logits) from softmax(reference), averaged: finer than top-1 on small sets."""
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lp, lq = log_softmax(reference.astype(np.float64)), log_softmax(logits.astype(np.float64))
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))


@dataclass
class GateResult:
    fp32_top1: float
    int8_top1: float  # of the final artifact (after any layers were kept in float)
    all_int8_top1: float  # with every unit quantized
    max_drop: float
    passed: bool
    kept_float: list[str] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)  # per unit, most sensitive first
    steps: list[dict[str, Any]] = field(default_factory=list)  # greedy steps tried
    message: str = ""
    # McNemar's test of the final artifact against FP32 on the gated images (evaluate.paired.PairedComparison)
    paired: dict[str, Any] | None = None

    @property
    def drop(self) -> float:
        return self.fp32_top1 - self.int8_top1

    def to_dict(self) -> dict[str, Any]:
        return {"fp32_top1": round(self.fp32_top1, 3), "int8_top1": round(self.int8_top1, 3),
                "all_int8_top1": round(self.all_int8_top1, 3), "drop": round(self.drop, 3),
                "max_drop": self.max_drop, "passed": self.passed, "kept_float": self.kept_float,
                "sensitivity": self.sensitivity, "steps": self.steps, "message": self.message,
                "paired": self.paired}


def run_gate(units: Sequence[str], evaluate: Evaluate, fp32_logits: np.ndarray, labels: np.ndarray,
             max_drop: float = DEFAULT_MAX_DROP, max_keep: int | None = None, confirm: Evaluate | None = None,
             progress: Progress | None = None) -> GateResult:
    """Gate an INT8 model; on failure, keep the most sensitive units in float until the budget holds.

    ``evaluate`` ranks (may be a fast proxy); ``confirm`` measures each candidate on the real artifact
    (defaults to ``evaluate``). ``max_keep`` defaults to a quarter of the units, at least one.
    """
    check_max_drop(max_drop)
    confirm = confirm or evaluate
    fp32 = top1(fp32_logits, labels)
    full_logits = confirm(frozenset())
    full = top1(full_logits, labels)
    if fp32 - full <= max_drop + 1e-9:
        paired = compare_logits(fp32_logits, full_logits, labels)
        return GateResult(fp32, full, full, max_drop, True,
                          message=f"INT8 top-1 {full:.2f} % vs FP32 {fp32:.2f} %: drop {fp32 - full:.2f} pt within "
                                  f"{max_drop:g}; {_significance(paired)}", paired=paired.to_dict())
    units = list(units)
    if max_keep is None:
        max_keep = max(1, math.ceil(len(units) / 4))
    ranking = sensitivity_sweep(units, evaluate, fp32_logits, labels, progress)
    order = [r["unit"] for r in ranking]
    steps: list[dict[str, Any]] = []
    compared = {(): compare_logits(fp32_logits, full_logits, labels)}  # per kept set, from its per-image outcomes
    for k in range(1, min(max_keep, len(order)) + 1):
        kept = order[:k]
        kept_logits = confirm(frozenset(kept))
        acc = top1(kept_logits, labels)
        compared[tuple(kept)] = paired = compare_logits(fp32_logits, kept_logits, labels)
        steps.append({"kept_float": list(kept), "top1": round(acc, 3), "drop": round(fp32 - acc, 3),
                      "p_value": paired.p_value, "significant": paired.significant})
        if progress:
            progress("keep", k, min(max_keep, len(order)))
        if fp32 - acc <= max_drop + 1e-9:
            return GateResult(fp32, acc, full, max_drop, True, list(kept), ranking, steps,
                              f"kept {k} layer(s) in float ({', '.join(kept)}): drop {fp32 - acc:.2f} pt within "
                              f"{max_drop:g}; {_significance(paired)}", paired.to_dict())
    best = max(steps, key=lambda s: s["top1"]) if steps else {"top1": full, "kept_float": []}
    best_paired = compared[tuple(best["kept_float"])]
    return GateResult(fp32, best["top1"], full, max_drop, False, list(best["kept_float"]), ranking, steps,
                      f"no INT8 model within --max-drop {max_drop:g}: all-INT8 drop {fp32 - full:.2f} pt; keeping up "
                      f"to {min(max_keep, len(order))} most sensitive layer(s) in float still loses "
                      f"{fp32 - best['top1']:.2f} pt ({_significance(best_paired)}; raise --max-drop or --max-keep, "
                      "calibrate with more images or another --method, or use qat)", best_paired.to_dict())


def _significance(paired: PairedComparison) -> str:
    """'McNemar exact p = 0.42 vs FP32 on 300 images: significant at 5 %: no' for a gate message."""
    return (f"McNemar exact p = {paired.p_value:.3g} vs FP32 on {paired.n} images "
            f"(b={paired.only_reference}, c={paired.only_candidate}): significant at {paired.alpha * 100:g} %: "
            f"{'yes' if paired.significant else 'no'}")


def sensitivity_sweep(units: Sequence[str], evaluate: Evaluate, fp32_logits: np.ndarray, labels: np.ndarray,
                      progress: Progress | None = None) -> list[dict[str, Any]]:
    """Quantize one unit at a time (all others float); most disturbing first.

    Ranked by the KL divergence of the logits from FP32 (smooth, so it separates layers even when a few
    hundred held-out images show no top-1 change), top-1 breaking ties.
    """
    rows = []
    everything = frozenset(units)
    for i, unit in enumerate(units):
        logits = evaluate(everything - {unit})
        rows.append({"unit": unit, "top1": round(top1(logits, labels), 3),
                     "kl": logit_distance(logits, fp32_logits)})
        if progress:
            progress("sweep", i + 1, len(units))
    rows.sort(key=lambda r: (-r["kl"], r["top1"]))
    for r in rows:
        r["kl"] = round(r["kl"], 6)
    return rows
