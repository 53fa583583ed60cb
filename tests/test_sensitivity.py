"""The accuracy gate: per-layer sensitivity, keeping the most sensitive layers in float, failing clearly."""

from __future__ import annotations

import numpy as np
import pytest

import quant_fixtures as qf
from edgeresnet.compress import calibration as cal
from edgeresnet.compress import ptq, qdq
from edgeresnet.compress.sensitivity import check_max_drop, run_gate, sensitivity_sweep
from edgeresnet.errors import UserError
from edgeresnet.export.onnx_meta import load_onnx_model

LABELS = np.arange(100) % 10
FP32 = np.eye(10, dtype=np.float32)[LABELS] * 5.0


def _evaluate_factory(harm: dict[str, float]):
    """Logits where quantizing unit u flips the first ``harm[u]`` fraction of predictions."""
    calls = []

    def evaluate(float_units: frozenset) -> np.ndarray:
        calls.append(float_units)
        logits = FP32.copy()
        for unit, fraction in harm.items():
            if unit not in float_units:
                n = int(round(fraction * len(LABELS)))
                logits[:n] = np.roll(logits[:n], 1, axis=1)
                logits[n:] += 0.01 * fraction  # a little noise that never flips a prediction
        return logits

    return evaluate, calls


def test_gate_passes_without_a_sweep_when_the_drop_is_small():
    evaluate, calls = _evaluate_factory({"a": 0.0, "b": 0.0})
    result = run_gate(["a", "b"], evaluate, FP32, LABELS, max_drop=1.0)
    assert result.passed and result.kept_float == [] and result.sensitivity == [] and calls == [frozenset()]


def test_gate_keeps_the_most_sensitive_layers_until_the_budget_holds():
    evaluate, _ = _evaluate_factory({"conv_a": 0.0, "conv_b": 0.20, "add_c": 0.05, "fc": 0.005})
    result = run_gate(["conv_a", "conv_b", "add_c", "fc"], evaluate, FP32, LABELS, max_drop=1.0, max_keep=2)
    assert result.sensitivity[0]["unit"] == "conv_b" and result.sensitivity[1]["unit"] == "add_c"
    assert result.passed and result.kept_float == ["conv_b", "add_c"]
    assert result.fp32_top1 == 100.0 and result.all_int8_top1 == 80.0 and result.int8_top1 == 100.0
    assert [s["kept_float"] for s in result.steps] == [["conv_b"], ["conv_b", "add_c"]]


def test_gate_fails_clearly_when_nothing_fits():
    evaluate, _ = _evaluate_factory({"a": 0.3, "b": 0.3, "c": 0.3, "d": 0.3})
    result = run_gate(["a", "b", "c", "d"], evaluate, FP32, LABELS, max_drop=1.0, max_keep=2)
    assert not result.passed and len(result.steps) == 2
    assert "no INT8 model within --max-drop 1" in result.message and "--max-keep" in result.message


def test_sweep_ranks_by_logit_divergence():
    rows = sensitivity_sweep(["x", "y", "z"], lambda keep: FP32 + (0.5 if "y" not in keep else 0.0) *
                             np.roll(FP32, 1, axis=1) / 5.0, FP32, LABELS)
    assert rows[0]["unit"] == "y" and rows[0]["kl"] > rows[1]["kl"]


@pytest.mark.parametrize("value", [-1.0, float("nan"), 101.0])
def test_max_drop_must_be_a_sensible_number(value):
    with pytest.raises(UserError, match="--max-drop"):
        check_max_drop(value)


def test_real_outlier_layer_is_found_and_kept_in_float(tmp_path):
    """An ONNX whose conv3 input has one 1000x channel: per-tensor INT8 crushes it unless conv3 stays float."""
    path, data = qf.tiny_residual_onnx(outlier=True)
    calib = cal.calibration_from_data("digits", data.splits["train"], 64)
    options = ptq.PtqOptions(method="max", flavour="trt", max_drop=1.0, bench_iterations=0, data_spec="digits")
    report = ptq.quantize_onnx(path, tmp_path / "int8.onnx", calib, data, options)
    gate = report.gate
    assert gate.fp32_top1 >= 95.0  # a decisive model: the budget is not decided by a few borderline images
    assert gate.fp32_top1 - gate.all_int8_top1 > 5.0  # the outlier really hurts
    conv3 = next(n.name for n in load_onnx_model(path, weights=True).graph.node
                 if n.op_type == "Conv" and "conv3" in n.name)
    assert gate.sensitivity[0]["unit"] == conv3
    assert gate.passed and gate.kept_float == [conv3]
    assert report.accuracy["val"]["drop"] <= 1.0
    assert report.accuracy["val"]["top1_agreement"] >= 99.0  # within budget by a margin, not by cancelling flips
    info = qdq.describe_qdq(load_onnx_model(tmp_path / "int8.onnx", weights=True))
    kept = [w for w in info["weighted"] if w["node"] == conv3][0]
    assert not kept["input_quantized"] and not kept["weight_quantized"]
    assert sum(w["input_quantized"] for w in info["weighted"]) == len(info["weighted"]) - 1
