"""Real exports of ResNet-18/50, both exporter paths, static and dynamic batch, each proven by parity
against PyTorch on real digits images. Small inputs keep them fast; the full matrix and 224 are slow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from edgeresnet.artifacts import sha256_file
from edgeresnet.cli.main import main
from edgeresnet.export.onnx_meta import KEY_BATCH_PROFILE, KEY_CLASS_NAMES, KEY_PREPROCESS
from helpers_common import write_untrained_checkpoint


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, torch_single_thread):
    root = tmp_path_factory.mktemp("export")
    return {"root": root, "r18": write_untrained_checkpoint(root / "r18.pt"),
            "r18_small": write_untrained_checkpoint(root / "r18_small.pt", small_stem=True, size=24),
            "r50": write_untrained_checkpoint(root / "r50.pt", arch="resnet50")}


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _check_onnx(path, batch_dim, opset, size=32):
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == opset
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [batch_dim, 3, size, size]
    assert [d.dim_value or d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim] == [batch_dim, 10]
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # eval mode: BN folded away
    return {p.key: p.value for p in model.metadata_props}


def test_static_batch_opset13_torchscript_with_contract_and_manifest(ckpts):
    from edgeresnet.export import export_checkpoint

    out = ckpts["root"] / "r18_static13.onnx"
    result = export_checkpoint(ckpts["r18"], out, target="jetson-nano", batch=1, parity_images=8)
    assert (result.exporter, result.opset, result.dynamic) == ("torchscript", 13, False)
    assert "target jetson-nano" in result.manifest["settings"]["opset_reason"]
    props = _check_onnx(out, 1, 13)
    preprocess = json.loads(props[KEY_PREPROCESS])
    assert preprocess["image_size"] == 32 and preprocess["channel_order"] == "RGB" and len(preprocess["mean"]) == 3
    assert json.loads(props[KEY_CLASS_NAMES]) == [str(i) for i in range(10)]
    assert json.loads(props[KEY_BATCH_PROFILE]) == {"min": 1, "opt": 1, "max": 1, "dynamic": False}
    manifest = json.loads((out.parent / (out.name + ".json")).read_text())
    assert manifest["sha256"] == sha256_file(out) and manifest["file"] == out.name
    assert manifest["inputs"]["checkpoint"]["sha256"] == sha256_file(ckpts["r18"])
    assert manifest["opset"] == 13 and manifest["exporter"] == "torchscript" and manifest["ir_version"] == 7
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert manifest["preprocess"] == preprocess and manifest["settings"]["data"] == "digits"
    parity = manifest["parity"]
    assert parity["passed"] and [c["batch"] for c in parity["cases"]] == [1] and parity["max_abs"] < 1e-3
    if _dynamo_is_the_default():  # only then does torch warn on the TorchScript path (torch >= 2.9)
        assert any("legacy TorchScript" in w for w in manifest["warnings"])
    assert _leftovers(out.parent) == []


def test_dynamic_batch_opset17_simplified_through_the_cli(ckpts, tmp_path, capsys):
    out, report = tmp_path / "r18_dyn17.onnx", tmp_path / "export.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(ckpts["r18"]), "--out", str(out), "--opset", "17", "--dynamic-batch", "1:4:8",
              "--image-size", "28", "--simplify", "--parity-images", "8", "--json", str(report)])
    assert exit_info.value.code == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["schema"] == "edgeresnet.export/1" and data["exporter"] == "torchscript" and data["opset"] == 17
    assert data["batch_profile"] == {"min": 1, "opt": 4, "max": 8, "dynamic": True}
    assert [c["batch"] for c in data["parity"]["cases"]] == [1, 8] and data["parity"]["passed"]
    assert data["simplified"]["nodes_after"] < data["simplified"]["nodes_before"]
    props = _check_onnx(out, "batch", 17, size=28)
    assert json.loads(props[KEY_PREPROCESS])["image_size"] == 28
    printed = capsys.readouterr().out
    assert "parity" in printed and "1:4:8" in printed
    from edgeresnet.runners.ort_runner import OrtRunner

    with OrtRunner.load(out) as runner:  # any batch inside the profile runs
        assert runner.infer(np.zeros((3, 3, 28, 28), np.float32)).shape == (3, 10)
    assert runner.batch_range == (1, 8)


def _dynamo_is_the_default() -> bool:
    import inspect

    import torch

    dynamo = inspect.signature(torch.onnx.export).parameters.get("dynamo")
    return dynamo is not None and dynamo.default is True


def _dynamo_available() -> bool:
    from edgeresnet.export.torch_compat import dynamo_available

    return dynamo_available()


@pytest.mark.skipif(not _dynamo_available(), reason="torch < 2.6: its torch.onnx.export has no dynamo path we use")
def test_dynamo_exporter_default_opset_dynamic_batch(ckpts, tmp_path):
    from edgeresnet.export import export_checkpoint
    from edgeresnet.export.opset import DYNAMO_DEFAULT_OPSET

    out = tmp_path / "r18_dynamo.onnx"
    result = export_checkpoint(ckpts["r18_small"], out, batch=(1, 2, 4), parity_images=6)
    assert result.exporter == "dynamo" and result.opset == DYNAMO_DEFAULT_OPSET >= 18
    _check_onnx(out, "batch", result.opset, size=24)
    assert result.parity.passed and [c.batch for c in result.parity.cases] == [1, 4]
    assert result.manifest["settings"]["opset"] is None  # the exporter's own default, recorded as produced
    assert result.manifest["opset"] == result.opset


def test_resnet50_through_the_demo_stage(ckpts, tmp_path):
    from edgeresnet.export import export_stage

    summary = export_stage(ckpts["r50"], tmp_path, dynamic_batch=(1, 2, 4), opset=13, parity_images=4)
    out = tmp_path / "r50.onnx"
    assert summary["path"] == str(out) and summary["manifest"] == str(out) + ".json"
    assert summary["parity"]["passed"] and summary["parity"]["max_abs"] < 1e-3 and summary["opset"] == 13
    assert json.loads((tmp_path / "r50.onnx.json").read_text())["model"]["arch"] == "resnet50"
    _check_onnx(out, "batch", 13)


def test_parity_failure_writes_nothing_and_keeps_the_old_file(ckpts, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous good export")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(ckpts["r18"]), "--out", str(out), "--opset", "13", "--atol", "0", "--rtol", "0",
              "--parity-images", "4"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1
    assert err.startswith("error: parity failed for") and "nothing was written" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert out.read_bytes() == b"previous good export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


ARCHS = ["resnet18", "resnet50"]
BATCHES = [1, (1, 2, 4)]
OPSETS = [13, 17, None]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch", BATCHES, ids=["static", "dynamic"])
@pytest.mark.parametrize("opset", OPSETS, ids=["opset13", "opset17", "default"])
def test_full_matrix(ckpts, tmp_path, arch, batch, opset):
    from edgeresnet.export import export_checkpoint

    source = ckpts["r18"] if arch == "resnet18" else ckpts["r50"]
    result = export_checkpoint(source, tmp_path / "m.onnx", opset=opset, batch=batch, parity_images=4)
    assert result.parity.passed
    assert result.exporter == ("dynamo" if opset is None else "torchscript")
    _check_onnx(tmp_path / "m.onnx", "batch" if isinstance(batch, tuple) else 1, result.opset)


@pytest.mark.slow
def test_resnet50_at_224(tmp_path):
    from edgeresnet.export import export_checkpoint

    source = write_untrained_checkpoint(tmp_path / "r50_224.pt", arch="resnet50", size=224)
    result = export_checkpoint(source, tmp_path / "r50_224.onnx", opset=17, batch=(1, 2, 4), simplify=True,
                               parity_images=4)
    assert result.parity.passed and result.parity.max_abs < 1e-3
    _check_onnx(tmp_path / "r50_224.onnx", "batch", 17, size=224)


# -- FP16 export ------------------------------------------------------------------------------------------------


def _elem_types(path):
    import onnx

    model = onnx.load(str(path))
    inits = {onnx.TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer}
    io = (model.graph.input[0].type.tensor_type.elem_type, model.graph.output[0].type.tensor_type.elem_type)
    return model, inits, io


def test_fp16_export_keeps_float32_io_and_passes_fp16_parity(ckpts, tmp_path, capsys):
    import onnx

    out, fp32, report = tmp_path / "r18_fp16.onnx", tmp_path / "r18_fp32.onnx", tmp_path / "export.json"
    common = ["--opset", "17", "--dynamic-batch", "1:4:8", "--parity-images", "8"]
    assert main_exit(["export", str(ckpts["r18"]), "--out", str(fp32), *common], capsys) == 0
    assert main_exit(["export", str(ckpts["r18"]), "--out", str(out), "--precision", "fp16", *common,
                      "--json", str(report)], capsys) == 0
    model, inits, io = _elem_types(out)
    assert inits == {"FLOAT16"} and io == (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT)
    assert (model.graph.node[0].op_type, model.graph.node[-1].op_type) == ("Cast", "Cast")
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded before the conversion
    assert {p.key: p.value for p in model.metadata_props}["edgeresnet.precision"] == "fp16"
    assert 0.45 < out.stat().st_size / fp32.stat().st_size < 0.55  # half the bytes per weight
    data = json.loads(report.read_text())
    assert data["precision"] == "fp16" and data["io_dtype"] == "float32"
    parity = data["parity"]
    assert parity["passed"] and parity["tolerance"] == {"atol": 1e-2, "rtol": 1e-2, "min_agreement": 0.99}
    assert [c["batch"] for c in parity["cases"]] == [1, 8] and parity["top1_agreement"] == 1.0
    assert 1e-5 < parity["max_rel"] < 1e-2  # really FP16: not bit-equal to FP32, well inside the tolerance
    manifest = json.loads((tmp_path / "r18_fp16.onnx.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["settings"]["precision"] == "fp16"
    assert manifest["input"]["dtype"] == "float32" and manifest["fp16"]["initializers"] == len(model.graph.initializer)
    from edgeresnet.runners.ort_runner import OrtRunner

    images = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    with OrtRunner.load(fp32) as a, OrtRunner.load(out) as b:
        ref, half = a.infer(images), b.infer(images)
    assert half.dtype == np.float32 and 0 < np.abs(ref - half).max() < 1e-2 * np.abs(ref).max() + 1e-2


def test_fp16_export_with_fp16_io_runs_in_onnx_runtime(ckpts, tmp_path):
    import onnx

    from edgeresnet.export import export_checkpoint
    from edgeresnet.runners.ort_runner import OrtRunner

    out = tmp_path / "io16.onnx"
    result = export_checkpoint(ckpts["r18"], out, opset=13, batch=2, parity_images=4, precision="fp16", io_fp16=True)
    assert result.parity.passed and result.io_dtype == "float16"
    model, inits, io = _elem_types(out)
    assert inits == {"FLOAT16"} and io == (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT16)
    assert not any(n.op_type == "Cast" for n in model.graph.node)
    assert result.manifest["input"]["dtype"] == result.manifest["output"]["dtype"] == "float16"
    with OrtRunner.load(out) as runner:  # float32 images in, float32 logits out: the runner converts
        assert runner.infer(np.zeros((2, 3, 32, 32), np.float32)).dtype == np.float32


def test_fp16_parity_failure_writes_nothing(ckpts, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code = main_exit(["export", str(ckpts["r18"]), "--out", str(out), "--opset", "13", "--precision", "fp16",
                      "--atol", "0", "--rtol", "0", "--parity-images", "4"], capsys)
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: parity failed for") and len(err.splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, fragment", [
    (["--io-fp16"], "--io-fp16: float16 inputs and outputs need --precision fp16"),
    (["--precision", "int8"], "--precision 'int8': choose fp32 or fp16"),
])
def test_fp16_options_are_checked(ckpts, tmp_path, capsys, args, fragment):
    code, _, err = run_cli(capsys, "export", ckpts["r18"], "--out", tmp_path / "m.onnx", *args)
    assert_one_line_error(code, err, fragment)
    assert list(tmp_path.iterdir()) == []


def main_exit(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    if exit_info.value.code not in (0, None):
        return int(exit_info.value.code)
    return 0
