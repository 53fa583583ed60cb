"""QAT: fake-quant surgery on torchvision ResNets, calibration, fine-tuning through train.fit, Q/DQ export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

import quant_fixtures as qf
from edgeresnet.compress import fake_quant, qat, qdq
from edgeresnet.compress.ort_cpu import ort_session, run_logits


@pytest.fixture(scope="module")
def tiny() -> qf.TinyModel:
    return qf.tiny_model()


@pytest.fixture(scope="module")
def calibrated(tiny):
    """The tiny ResNet-18 fake-quantized and calibrated (percentile) on 64 training images."""
    q = fake_quant.quantize_model(tiny.model)
    images = tiny.data.arrays("train", limit=64)[0]
    amax = qat.calibrate_model(q, lambda: iter([images[:32], images[32:]]), "percentile")
    return q, amax


def test_surgery_quantizes_every_weighted_layer_and_residual_and_folds_bn_exactly(tiny):
    import copy

    q = fake_quant.quantize_model(tiny.model)
    assert all(isinstance(m, (fake_quant.QuantConv2d, fake_quant.QuantLinear)) for m in q.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)))
    units = fake_quant.units(q)
    assert len(units) == 21 + 8 and "layer2.0.residual_quantizer" in units and "fc" in units
    assert not isinstance(tiny.model.conv1, fake_quant.QuantConv2d)  # the original is left untouched
    x = torch.from_numpy(tiny.data.arrays("val", limit=8)[0])
    fake_quant.set_float_units(q, units)  # every quantizer off: folding BN (as the export does) keeps the function
    for quantizer in fake_quant.quantizers(q).values():
        quantizer.enabled = False
    folded = copy.deepcopy(q)
    assert fake_quant.fold_batchnorms(folded) == 20
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), tiny.model(x), rtol=1e-4, atol=1e-4)


def test_weight_quantization_commutes_with_bn_scale():
    """Q(w * s) == s * Q(w) per output channel: fake-quant before folding equals fake-quant after it."""
    w = torch.randn(8, 4, 3, 3)
    s = torch.rand(8) * 3 - 1.5  # includes negative BN gammas
    before = fake_quant.fake_quantize_weight(w, None) * s.reshape(-1, 1, 1, 1)
    after = fake_quant.fake_quantize_weight(w * s.reshape(-1, 1, 1, 1), None)
    torch.testing.assert_close(before, after, rtol=1e-5, atol=1e-6)


def test_calibration_sets_ranges_and_keeps_the_input_unclipped(calibrated, tiny):
    q, amax = calibrated
    images = tiny.data.arrays("train", limit=64)[0]
    assert amax["conv1.input_quantizer"] == pytest.approx(float(np.abs(images).max()), rel=1e-6)
    assert all(v > 0 for v in amax.values())
    assert q.conv1.input_quantizer.scale.item() == pytest.approx(amax["conv1.input_quantizer"] / 127, rel=1e-6)


def test_export_is_tensorrt_placed_qdq_that_onnx_runtime_runs(calibrated, tiny, tmp_path):
    q, _ = calibrated
    path = tmp_path / "qat.onnx"
    model = qat.export_qdq_onnx(q, tiny.data.preprocess, path, opset=13)
    assert qdq.opset_of(model) == 13
    info = qdq.describe_qdq(model)
    assert len(info["weighted"]) == 21
    for layer in info["weighted"]:
        assert layer["input_quantized"] and layer["weight_quantized"] and layer["bias_float"], layer
        assert layer["weight_axis"] == 0 and layer["weight_dtype"] == 3  # folded to int8 initializers
    assert [a["inputs_quantized"] for a in info["adds"]] == [[False, True]] * 8
    assert info["symmetric"] and info["int32_tensors"] == []
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    x, _ = tiny.data.arrays("val", limit=64)
    # ONNX Runtime executing the Q/DQ graph as written reproduces the fake-quant model (TensorRT's numerics)
    onnx_logits = run_logits(ort_session(path, emulate=True), x)
    torch_logits = qat.torch_logits(q, x)
    assert np.mean(onnx_logits.argmax(1) == torch_logits.argmax(1)) >= 0.97
    assert np.abs(onnx_logits - torch_logits).max() < 0.1 * np.abs(torch_logits).max()
    # and its default (fused int8 kernel) path runs it too
    assert run_logits(ort_session(path), x).shape == (64, 10)


def test_kept_float_layers_export_without_qdq(calibrated, tiny, tmp_path):
    q, _ = calibrated
    fake_quant.set_float_units(q, ["conv1", "layer1.0.residual_quantizer"])
    try:
        model = qat.export_qdq_onnx(q, tiny.data.preprocess, tmp_path / "mixed.onnx")
    finally:
        fake_quant.set_float_units(q, [])
    info = qdq.describe_qdq(model)
    first = info["weighted"][0]
    assert not first["input_quantized"] and not first["weight_quantized"]
    assert info["adds"][0]["inputs_quantized"] == [False, False]
    assert all(w["input_quantized"] for w in info["weighted"][1:])


def test_fine_tune_runs_through_the_training_loop(tiny):
    q = fake_quant.quantize_model(tiny.model)
    images = tiny.data.arrays("train", limit=32)[0]
    qat.calibrate_model(q, lambda: iter([images]), "max")
    scale_before = q.layer1[0].conv2.input_quantizer.scale.clone()
    weight_before = q.layer1[0].conv2.weight.detach().clone()
    small = dataclasses.replace(tiny.data, splits={"train": tiny.data.splits["train"][:32],
                                                   "val": tiny.data.splits["val"][:32],
                                                   "test": tiny.data.splits["test"][:8]})
    options = qat.QatOptions(epochs=1, lr=1e-3, batch_size=16, max_steps=2, progress=False)
    tuned, info = qat.fine_tune(q, small, "digits", options)
    assert info["recipe"]["lr"] == 1e-3 and info["recipe"]["max_steps"] == 2
    assert torch.equal(tuned.layer1[0].conv2.input_quantizer.scale, scale_before)  # ranges stay fixed
    assert not torch.equal(tuned.layer1[0].conv2.weight.detach(), weight_before)


def test_qat_state_is_recognised(tiny):
    assert fake_quant.is_qat_state(fake_quant.quantize_model(tiny.model).state_dict())
    assert not fake_quant.is_qat_state(tiny.model.state_dict())


@pytest.mark.rtx
def test_qat_onnx_builds_in_tensorrt_rtx(calibrated, tiny, tmp_path):
    from edgeresnet.trt.rtx import import_rtx

    if import_rtx() is None:
        pytest.skip("TensorRT-RTX wheels not installed (pip install 'edgeresnet[rtx]')")
    q, _ = calibrated
    path = tmp_path / "qat.onnx"
    qat.export_qdq_onnx(q, tiny.data.preprocess, path)
    built = qf.rtx_build(path)
    assert built["int8_mode"] == "explicit" and built["size"] > 0
