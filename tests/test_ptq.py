"""PTQ (edgeresnet calibrate): TensorRT-placed Q/DQ, the ONNX Runtime flavour, calibration maths and cache."""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import quant_fixtures as qf
from edgeresnet.compress import calibration as cal
from edgeresnet.compress import ort_cpu, ptq, qdq
from edgeresnet.compress.int8_flavours import choose_flavour
from edgeresnet.errors import UserError
from edgeresnet.export.onnx_meta import load_onnx_model
from edgeresnet.export.torch_compat import torchscript_kwargs  # dynamo=False only where torch names it


@pytest.fixture(scope="module")
def tiny() -> qf.TinyModel:
    return qf.tiny_model()


def _run(tiny: qf.TinyModel, out: Path, flavour: str, method: str = "max", images: int = 32, **options) -> ptq.PtqReport:
    calib = cal.calibration_from_data("digits", tiny.data.splits["train"], images)
    opts = ptq.PtqOptions(method=method, flavour=flavour, max_drop=options.pop("max_drop", 10.0),
                          bench_iterations=2, eval_images=options.pop("eval_images", 100), data_spec="digits", **options)
    return ptq.quantize_onnx(tiny.onnx, out, calib, tiny.data, opts)


# -- calibration maths (pure) -----------------------------------------------------------------------
def _entropy_reference(hist: np.ndarray, edges: np.ndarray, levels: int = 128, start: int = 128) -> float:
    """NVIDIA pytorch-quantization's ``_compute_amax_entropy`` loop (stride 1), for comparison."""
    bins = hist.astype(np.float64).copy()
    bins[0] = bins[1]
    divs = []
    for i in range(start, len(bins) + 1):
        space = np.linspace(0, i, num=levels + 1)
        digitized = np.digitize(range(i), space) - 1
        digitized[bins[:i] == 0] = -1
        counts = np.zeros(levels)
        for idx, d in enumerate(digitized):
            if d != -1:
                counts[d] += bins[idx]
        members = Counter(digitized)
        for key, val in members.items():
            if key != -1:
                counts[key] /= val
        q = np.array([counts[d] if d != -1 else 0.0 for d in digitized])
        q /= q.sum()
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        p /= p.sum()
        mask = p > 0
        with np.errstate(divide="ignore"):
            divs.append(np.sum(p[mask] * np.log(p[mask] / q[mask])))
    divs = np.array(divs)
    return float(edges[len(divs) - 1 - int(np.argmin(divs[::-1])) + start])


def test_entropy_threshold_matches_the_reference_search():
    rng = np.random.default_rng(0)
    for scale in (1.0, 3.0):
        x = np.abs(rng.standard_normal(20000) * scale) ** 1.5
        x[rng.random(x.size) < 0.2] = 0.0  # ReLU zeros
        hist, edges = np.histogram(x, bins=384, range=(0, x.max()))
        assert cal.entropy_amax(hist, edges) == pytest.approx(_entropy_reference(hist, edges))
        assert 0 < cal.entropy_amax(hist, edges) < x.max()


def test_streaming_stats_percentile_and_max():
    stats = cal.TensorStats()
    values = np.linspace(-2.0, 10.0, 100001, dtype=np.float32)
    for chunk in np.array_split(values, 7):
        stats.update_range(chunk)
    stats.start_histogram()
    for chunk in np.array_split(values, 7):
        stats.update_histogram(chunk)
    assert stats.absmax == pytest.approx(10.0)
    assert cal.compute_amax(stats, "max") == pytest.approx(10.0)
    assert cal.compute_amax(stats, "percentile", 50.0) == pytest.approx(np.percentile(np.abs(values), 50), rel=0.01)
    assert cal.ranges_from_stats({"t": stats}, {"t": 5.0})["t"] == (-2.0, 5.0)


def test_trt_cache_format_round_trips():
    table = cal.CalibrationTable("entropy", 99.99, "a" * 64, "b" * 64, 500, {"input": 1.83, "x/y:0": 0.0},
                                 {"input": (-0.8, 1.83), "x/y:0": (0.0, 0.0)})
    text = cal.trt_cache_text(table, (10, 3, 0))
    assert text.splitlines()[0] == "TRT-100300-EntropyCalibration2"
    assert text.splitlines()[1] == f"input: {struct.pack('>f', np.float32(1.83 / 127)).hex()}"
    header, scales = cal.parse_trt_cache(text)
    assert scales["input"] == pytest.approx(1.83 / 127, rel=1e-6)
    assert scales["x/y:0"] > 0  # an all-zero tensor still gets a usable scale
    assert cal.trt_version_code((8, 6, 1)) == 8601


# -- TensorRT flavour -------------------------------------------------------------------------------
def test_trt_flavour_places_qdq_the_tensorrt_way(tiny, tmp_path):
    out = tmp_path / "int8.onnx"
    report = _run(tiny, out, "trt", method="entropy", images=48)
    assert report.written and out.exists()
    model = load_onnx_model(out, weights=True)
    info = qdq.describe_qdq(model)
    assert len(info["weighted"]) == 21  # 20 convs + fc of ResNet-18
    for layer in info["weighted"]:
        assert layer["input_quantized"] and layer["weight_quantized"], layer
        assert layer["weight_axis"] == 0 and layer["weight_dtype"] == 3  # per-output-channel int8
        assert layer["bias_float"], layer  # TensorRT parsers reject int32 bias DequantizeLinear
    assert info["int32_tensors"] == [] and info["symmetric"] and info["zero_point_dtypes"] == ["int8"]
    assert len(info["adds"]) == 8
    for add in info["adds"]:  # exactly the residual (identity/downsample) input, so TensorRT fuses conv + add
        assert add["inputs_quantized"] == [False, True], add
    # one Q/DQ pair per quantized activation, one DQ per weight
    assert info["quantize_linear"] == report.structure["activations_quantized"]
    assert info["dequantize_linear"] == info["quantize_linear"] + 21
    # ONNX Runtime ran the artifact: accuracy close to FP32 on held-out digits
    for split in ("val", "test"):
        acc = report.accuracy[split]
        assert acc["top1_agreement"] >= 90.0 and abs(acc["drop"]) <= 4.0, acc
    manifest = json.loads(Path(str(out) + ".json").read_text())
    quant = manifest["quantization"]
    assert manifest["inputs"]["source"]["sha256"] == quant["source_sha256"]
    assert quant["flavour"] == "trt" and quant["method"] == "entropy" and quant["kept_in_float"] == []
    assert len(quant["calibration"]["list_sha256"]) == 64 and quant["calibration"]["count"] == 48
    assert set(quant["accuracy"]["test"]) >= {"fp32_top1", "int8_top1", "drop"}
    cache = Path(report.cache["path"])
    header, scales = cal.parse_trt_cache(cache.read_text())
    assert header.endswith("EntropyCalibration2") and "input" in scales


def test_cache_is_reused_only_for_the_same_model_and_images(tiny, tmp_path):
    first = _run(tiny, tmp_path / "a.onnx", "trt")
    again = _run(tiny, tmp_path / "b.onnx", "trt")
    assert (first.cache["hit"], again.cache["hit"]) == (False, True)
    a, b = (load_onnx_model(tmp_path / n, weights=True) for n in ("a.onnx", "b.onnx"))
    assert [i.raw_data for i in a.graph.initializer] == [i.raw_data for i in b.graph.initializer]
    cache, key = Path(first.cache["path"]), dict(first.cache["key"])
    assert cal.load_cached_table(cache, key) is not None
    other_images = cal.calibration_from_data("digits", tiny.data.splits["train"], 33)
    for changed in ({"list_sha256": other_images.sha256}, {"source_sha256": "0" * 64}, {"method": "entropy"}):
        assert cal.load_cached_table(cache, {**key, **changed}) is None


# -- ONNX Runtime flavour ---------------------------------------------------------------------------
def _ort_takes_a_calibration_cache() -> bool:
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


@pytest.mark.skipif(not _ort_takes_a_calibration_cache(),
                    reason="onnxruntime < 1.27.0: quantize_static has no calibration_cache_path (--flavour ort refused)")
@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_ort_flavour_uses_uint8_activations_and_int8_channel_weights(tiny, tmp_path, fmt):
    from onnx import TensorProto, numpy_helper

    out = tmp_path / f"{fmt}.onnx"
    report = _run(tiny, out, "ort", ort_format=fmt)
    model = load_onnx_model(out, weights=True)
    inits = qdq.initializers(model)
    ops = Counter(n.op_type for n in model.graph.node)
    if fmt == "qdq":
        act_zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert act_zero_points and all(z.data_type == TensorProto.UINT8 for z in act_zero_points)
        assert any(numpy_helper.to_array(z) != 0 for z in act_zero_points)  # asymmetric
        weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                     and inits[n.input[0]].data_type == TensorProto.INT8 and len(inits[n.input[0]].dims) == 4]
        assert len(weight_dq) == 20
        assert all(len(inits[n.input[1]].dims) == 1 for n in weight_dq)  # per-channel scales
    else:
        assert ops["QLinearConv"] >= 19
    assert report.accuracy["test"]["top1_agreement"] >= 90.0
    assert json.loads(Path(str(out) + ".json").read_text())["settings"]["ort_format"] == fmt


# -- graph passes -----------------------------------------------------------------------------------
def test_batchnorm_folding_keeps_the_function(tmp_path):
    import onnx
    import torch
    import torch.nn as nn

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 2)
    path = tmp_path / "bn.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), str(path), **torchscript_kwargs(), opset_version=17,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      input_names=["input"], output_names=["out"])
    model = onnx.load(str(path))
    assert any(n.op_type == "BatchNormalization" for n in model.graph.node)
    folded, count = qdq.fold_batchnorm(qdq.name_nodes(onnx.load(str(path))))
    assert count == 1 and not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    a = ort_cpu.ort_session(model).run(None, {"input": x})[0]
    b = ort_cpu.ort_session(folded).run(None, {"input": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_dynamic_batch_copy_matches_the_static_export(tiny):
    model = load_onnx_model(tiny.onnx, weights=True)
    assert ort_cpu.input_info(model)[1] == 1
    dynamic = ort_cpu.with_dynamic_batch(model)
    assert dynamic is not None
    x = tiny.data.arrays("val", limit=3)[0]
    together = ort_cpu.run_logits(ort_cpu.ort_session(dynamic), x)
    apart = ort_cpu.run_logits(ort_cpu.ort_session(model), x, batch=1)
    np.testing.assert_allclose(together, apart, rtol=1e-4, atol=1e-5)


def test_flavour_follows_the_target():
    assert choose_flavour(None, "host-cpu")[0] == "ort"
    flavour, why, version = choose_flavour(None, "agx-orin")
    assert flavour == "trt" and version == (10, 3, 0)
    assert choose_flavour("ort", "agx-orin")[0] == "ort"
    with pytest.raises(UserError, match="--flavour"):
        choose_flavour("tensorrt", None)


# -- the TensorRT-family builder --------------------------------------------------------------------
@pytest.mark.rtx
def test_trt_flavour_builds_in_tensorrt_rtx(tiny, tmp_path):
    from edgeresnet.trt.rtx import import_rtx

    if import_rtx() is None:
        pytest.skip("TensorRT-RTX wheels not installed (pip install 'edgeresnet[rtx]')")
    out = tmp_path / "int8.onnx"
    _run(tiny, out, "trt", images=32)
    built, fp32 = qf.rtx_build(out), qf.rtx_build(tiny.onnx)
    assert built["int8_mode"] == "explicit" and built["size"] > 0
    assert built["size"] < fp32["size"]  # the INT8 weights are used: a clearly smaller engine
