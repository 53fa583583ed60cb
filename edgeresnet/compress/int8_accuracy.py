"""How an INT8 artifact is judged: FP32 and INT8 top-1 on the held-out splits with McNemar's paired test, the
report every INT8 stage returns, and the error a failed accuracy gate ends the command with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgeresnet.compress.ort_cpu import measure_latency, ort_session, run_logits
from edgeresnet.compress.sensitivity import GATE_FAILED_EXIT, GateResult
from edgeresnet.errors import UserError
from edgeresnet.evaluate import top1
from edgeresnet.evaluate.intervals import wilson_interval
from edgeresnet.evaluate.paired import compare_logits


def eval_splits(data: Any, limit: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The held-out images: val decides the gate, test is reported beside it."""
    return {split: data.arrays(split, limit) for split in ("val", "test")}


def measure_accuracy(int8: Any, fp32_logits: dict[str, np.ndarray], held_out: dict[str, tuple[np.ndarray, np.ndarray]],
                     batch: int | None, emulate: bool) -> dict[str, Any]:
    """Top-1 of FP32 and INT8 on each held-out split (``int8``: an ONNX Runtime session or a model path)."""
    session = int8 if hasattr(int8, "run") else ort_session(int8, emulate=emulate)
    accuracy: dict[str, Any] = {
        "split_gated": "val",
        "measured_on": "the written INT8 ONNX in ONNX Runtime CPU, " + (
            "Q/DQ executed as written (TensorRT's INT8 numerics)" if emulate else "default (fused int8) kernels")}
    for split, (x, y) in held_out.items():
        int8_logits = run_logits(session, x, batch)
        f, q = top1(fp32_logits[split], y), top1(int8_logits, y)
        # FP32 and INT8 on the same images: McNemar's test on their per-image outcomes says if the drop is real
        paired = compare_logits(fp32_logits[split], int8_logits, y)
        accuracy[split] = {"fp32_top1": round(f, 3), "int8_top1": round(q, 3), "drop": round(f - q, 3), "n": len(y),
                           "fp32_top1_ci95": wilson_interval(paired.both_correct + paired.only_reference,
                                                             paired.n).percent(),
                           "int8_top1_ci95": wilson_interval(paired.both_correct + paired.only_candidate,
                                                             paired.n).percent(),
                           "drop_ci95": paired.to_dict()["drop_ci95"], "p_value": paired.p_value,
                           "significant": paired.significant, "paired": paired.to_dict(),
                           "top1_agreement": round(float(np.mean(np.argmax(int8_logits, 1) ==
                                                                 np.argmax(fp32_logits[split], 1)) * 100), 3)}
    return accuracy


def fused_kernels_top1(session: Any, held_out: dict[str, tuple[np.ndarray, np.ndarray]], batch: int | None) -> float:
    """Test top-1 with ONNX Runtime's fused int8 CPU kernels, reported beside the emulated (TensorRT) numerics."""
    x, y = held_out["test"]
    return round(top1(run_logits(session, x, batch), y), 3)


def int8_speedup(fp32: Any, int8: Any, shape: tuple[int, ...], iterations: int) -> dict[str, Any]:
    """Both sessions' latency, interleaved, and the INT8 speed-up over FP32 (empty with 0 iterations)."""
    latency: dict[str, Any] = dict(measure_latency({"fp32": fp32, "int8": int8}, shape, iterations))
    if latency:
        latency["speedup"] = round(latency["fp32"]["median_ms"] / latency["int8"]["median_ms"], 3)
    return latency


@dataclass
class Int8Report:
    """What every INT8 stage returns: the gate's verdict and what was measured on the artifact it judged.

    ``JSON_KEYS`` orders the keys of ``to_dict`` (each stage's report lists them in its own order).
    """

    JSON_KEYS: ClassVar[tuple[str, ...]]
    out: Path
    gate: GateResult
    accuracy: dict[str, Any]
    latency: dict[str, Any]
    calibration: dict[str, Any]
    structure: dict[str, Any]
    warnings: list[str] = field(default_factory=list, kw_only=True)
    written: bool = field(default=False, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {key: self.json_value(key) for key in self.JSON_KEYS}

    def json_value(self, key: str) -> Any:
        if key == "out":
            return str(self.out)
        if key == "gate":
            return self.gate.to_dict()
        return getattr(self, key)


def gate_failure(report: Int8Report) -> UserError:
    """The error a command raises, after printing its report, when the gate failed (exit code 3)."""
    return UserError(report.gate.message, exit_code=GATE_FAILED_EXIT)
