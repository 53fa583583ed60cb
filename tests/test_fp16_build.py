"""``build --precision fp16`` of an FP32 ONNX on strongly typed builders (TensorRT 11, TensorRT-RTX): the FP16 ONNX
is made by edgeresnet.export.fp16, proven by ONNX Runtime parity against the FP32 file and then planned with.
These run without TensorRT (plans for TensorRT 11.4 targets); the real RTX engine is in tests/test_trt_rtx_build.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from trt_onnx_helpers import digits_preprocess, make_classifier_onnx


def _elem_types(path):
    import onnx

    model = onnx.load(str(path))
    return ({onnx.TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer},
            model.graph.input[0].type.tensor_type.elem_type, model.graph.output[0].type.tensor_type.elem_type)


@pytest.fixture()
def fp32_onnx(tmp_path):
    return make_classifier_onnx(tmp_path / "m.onnx", opset=17, preprocess=digits_preprocess())


def test_dry_run_plans_the_fp16_conversion_and_writes_nothing(fp32_onnx, tmp_path, capsys, wide_terminal):
    out = tmp_path / "plan"
    code, stdout, err = run_cli(capsys, "build", fp32_onnx, "--target", "desktop-ampere", "--precision", "fp16",
                                "--batch", "1:4:8", "--dry-run", "--out", out, "--json", tmp_path / "r.json")
    assert code == 0, err
    flat = " ".join(stdout.split())
    assert "m.onnx is FP32 and TensorRT 11.4" in flat and "builds strongly typed networks" in flat
    assert "a build converts it to FP16 as" in flat and "(--dry-run: not written)" in flat
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["plan"]["precision_label"] == "fp16" and result["plan"]["strongly_typed"] is True
    assert result["fp16_conversion"]["written"] is False
    assert sorted(p.name for p in out.iterdir()) == []


def test_emit_trtexec_bundles_the_checked_fp16_onnx(fp32_onnx, tmp_path, capsys, wide_terminal):
    import onnx

    out = tmp_path / "bundle"
    code, stdout, err = run_cli(capsys, "build", fp32_onnx, "--target", "desktop-ada", "--precision", "fp16",
                                "--batch", "1:4:8", "--emit-trtexec", "--dry-run", "--out", out,
                                "--json", tmp_path / "r.json")
    assert code == 0, err
    assert {"m.fp16.onnx", "m.fp16.onnx.json"} <= {p.name for p in out.iterdir()}
    assert "m.onnx" not in {p.name for p in out.iterdir()}  # the script builds the FP16 file, not the FP32 one
    inits, in_type, out_type = _elem_types(out / "m.fp16.onnx")
    assert inits == {"FLOAT16"} and (in_type, out_type) == (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT)
    result = json.loads((tmp_path / "r.json").read_text())
    assert "--onnx=m.fp16.onnx" in result["trtexec"]["argv"]
    assert result["plan"]["precision_label"] == "fp16" and result["rebuild_command"].count("m.fp16.onnx") == 1
    manifest = json.loads((out / "m.fp16.onnx.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["inputs"]["onnx"]["path"] == str(fp32_onnx)
    parity = manifest["parity"]
    assert parity["passed"] and [c["batch"] for c in parity["cases"]] == [1, 8] and parity["top1_agreement"] == 1.0
    assert 0 < parity["max_abs"] and parity["tolerance"]["rtol"] == 1e-2
    flat = " ".join(stdout.split())
    assert "converted to FP16 as m.fp16.onnx (float32 I/O); parity vs the FP32 ONNX in ONNX Runtime on 32 digits" in flat


def test_a_conversion_that_fails_parity_writes_nothing(tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    source = make_classifier_onnx(tmp_path / "tie.onnx", opset=17, preprocess=digits_preprocess())
    model = onnx.load(str(source))
    # class k's weights are 2048 * (1 + k * 1e-5): float16's spacing at 2048 is 2 (IEEE 754 binary16), so every row
    # rounds to 2048 and FP16 ties all classes (argmax 0) where FP32 picks class 9 for any positive feature
    weights = (2048.0 * (1 + 1e-5 * np.arange(10)))[:, None] * np.ones((10, 4))
    for init in model.graph.initializer:
        if init.name == "fc.weight":
            init.CopyFrom(numpy_helper.from_array(weights.astype(np.float32), "fc.weight"))
    onnx.save(model, str(source))
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "build", source, "--target", "desktop-ampere", "--precision", "fp16",
                           "--emit-trtexec", "--dry-run", "--out", out)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "the FP16 conversion of" in lines[0] and "fails parity against it" in lines[0]
    assert "top-1 agreement" in lines[0] and "nothing was written" in lines[0]
    assert not any(p.name.startswith("tie.fp16") for p in out.iterdir())


def test_no_contract_no_conversion(tmp_path, capsys):
    onnx_path = make_classifier_onnx(tmp_path / "bare.onnx", opset=17)
    code, _, err = run_cli(capsys, "build", onnx_path, "--target", "desktop-ampere", "--precision", "fp16",
                           "--dry-run", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "builds strongly typed networks", "no preprocessing contract",
                          "edgeresnet export --precision fp16")


def test_weakly_typed_release_keeps_the_fp16_flag(fp32_onnx, tmp_path, capsys):
    code, _, err = run_cli(capsys, "build", fp32_onnx, "--target", "agx-orin", "--precision", "fp16", "--dry-run",
                           "--out", tmp_path / "o", "--json", tmp_path / "r.json")
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["fp16_conversion"] is None and result["plan"]["flags"] == ["FP16"]


def test_pure_decision():
    from dataclasses import replace

    from edgeresnet.export.fp16 import needs_fp16_conversion
    from edgeresnet.trt.features import TrtFeatures
    from edgeresnet.trt.plan import BuildSpec, DeviceCaps

    spec = BuildSpec(onnx="m.onnx", precision="fp16", input_shape=(None, 3, 32, 32))
    gpu = DeviceCaps("L4", (8, 9))
    trt11, trt10 = TrtFeatures.for_version((11, 4, 0)), TrtFeatures.for_version((10, 13, 3))
    assert needs_fp16_conversion(spec, trt11, gpu) and needs_fp16_conversion(spec, TrtFeatures.for_rtx("1.7.1"), gpu)
    assert not needs_fp16_conversion(spec, trt10, gpu)
    assert needs_fp16_conversion(replace(spec, typing="strong"), trt10, gpu)
    assert not needs_fp16_conversion(replace(spec, onnx_has_fp16=True), trt11, gpu)
    assert not needs_fp16_conversion(replace(spec, onnx_has_qdq=True, precision="int8"), trt11, gpu)
    assert not needs_fp16_conversion(replace(spec, precision="fp32"), trt11, gpu)
    assert needs_fp16_conversion(replace(spec, precision="best"), trt11, gpu)
    assert not needs_fp16_conversion(replace(spec, precision="best", calib_data="digits"), trt11, gpu)
    assert not needs_fp16_conversion(spec, trt11, DeviceCaps("old", (6, 1), fp16=False))


# -- the FP16 pass itself, on graphs our exporter does not make ------------------------------------------------


def _graph(nodes, inits, opset=17):
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 2, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [13, 17])
def test_unfolded_batchnorm_and_constants_convert_and_run(opset):
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from edgeresnet.export.fp16 import convert_to_fp16

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=4).astype(np.float32), name) for name in ("s", "b", "m")]
    inits.append(numpy_helper.from_array(rng.uniform(0.5, 2, size=4).astype(np.float32), "v"))
    nodes = [helper.make_node("BatchNormalization", ["input", "s", "b", "m", "v"], ["bn"], epsilon=1e-5),
             helper.make_node("Constant", [], ["half"], value_float=0.5),
             helper.make_node("Mul", ["bn", "half"], ["logits"])]
    model = _graph(nodes, inits, opset)
    half, stats = convert_to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    onnx.shape_inference.infer_shapes(half, check_type=True, strict_mode=True)
    assert stats.initializers == 4 and stats.constants == 1
    x = rng.normal(size=(1, 4, 2, 2)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    out = ort.InferenceSession(half.SerializeToString()).run(None, {"input": x})[0]
    assert out.dtype == np.float32 and np.abs(ref - out).max() < 1e-2 * np.abs(ref).max()


def test_weights_beyond_float16_range_are_refused():
    from onnx import helper, numpy_helper

    from edgeresnet.errors import UserError
    from edgeresnet.export.fp16 import convert_to_fp16

    big = numpy_helper.from_array(np.full((1, 4, 2, 2), 1e5, np.float32), "big")
    model = _graph([helper.make_node("Add", ["input", "big"], ["logits"])], [big])
    with pytest.raises(UserError, match=r"initializer big holds 1e\+05, beyond float16's range \(\+-65504\)"):
        convert_to_fp16(model)


def test_subgraphs_are_refused():
    from onnx import TensorProto, helper

    from edgeresnet.errors import UserError
    from edgeresnet.export.fp16 import convert_to_fp16

    branch = helper.make_graph([helper.make_node("Identity", ["input"], ["y"])], "b", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])])
    cond = helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True]))
    model = _graph([cond, helper.make_node("If", ["c"], ["logits"], name="branchy", then_branch=branch,
                                           else_branch=branch)], [])
    with pytest.raises(UserError, match=r"node branchy \(If\) holds a subgraph"):
        convert_to_fp16(model)
