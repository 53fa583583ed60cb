"""``edgeresnet targets`` and ``edgeresnet build`` through the real CLI entry point, without TensorRT;
plus one real engine build with the CPU-only TensorRT-RTX builder where its wheels are installed."""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path

import pytest

from edgeresnet.cli.main import main
from edgeresnet.export.torch_compat import torchscript_kwargs  # dynamo=False only where torch names it
from trt_onnx_helpers import digits_preprocess, make_classifier_onnx


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(scope="module")
def torch_onnx(tmp_path_factory) -> Path:
    """A tiny conv net exported by torch (legacy exporter, opset 17, dynamic batch)."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
        torch.onnx.export(Tiny().eval(), torch.randn(1, 3, 32, 32), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=17, **torchscript_kwargs(),
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.fixture()
def calib_cache(tmp_path) -> Path:
    path = tmp_path / "calib.cache"
    path.write_text("TRT-100300-EntropyCalibration2\ninput: 3c010a14\nlogits: 3d8f5c29\n")
    return path


def test_done_criterion_int8_dla_emit_trtexec_without_tensorrt(torch_onnx, calib_cache, tmp_path, capsys):
    out = tmp_path / "bundle"
    code, stdout, err = run(["build", str(torch_onnx), "--target", "agx-orin", "--precision", "int8", "--dla", "0",
                             "--calib-cache", str(calib_cache), "--emit-trtexec", "--dry-run", "--out", str(out)], capsys)
    assert code == 0, err
    flat = " ".join(stdout.split())  # rich wraps long lines at the terminal width
    assert "build plan model.onnx (opset 17) -> agx-orin" in flat and "TensorRT 10.3.0: int8" in flat
    assert "INT8 by calibration), DLA core 0" in flat
    for op in ("create_network", "parse_onnx", "set_flag", "dla", "calibrator", "profiling_verbosity", "build"):
        assert op in stdout
    line = next(text for text in stdout.splitlines() if text.startswith("trtexec --"))
    assert shlex.split(line) == [
        "trtexec", "--onnx=model.onnx", "--saveEngine=model.engine", "--int8", "--calib=calib.cache",
        "--useDLACore=0", "--minShapes=input:1x3x32x32", "--optShapes=input:1x3x32x32",
        "--maxShapes=input:1x3x32x32", "--profilingVerbosity=detailed", "--exportLayerInfo=model.layers.json",
        "--skipInference",
    ]
    # a self-contained bundle for the board: model, cache, command, executable script
    assert (out / "model.onnx").read_bytes() == torch_onnx.read_bytes()
    assert (out / "calib.cache").exists()
    assert (out / "model.trtexec.txt").read_text().strip() == line
    planned = json.loads((out / "model.buildplan.json").read_text())
    assert planned["engine"]["dla_core"] == 0 and planned["engine"]["int8_mode"] == "implicit"
    assert planned["engine"]["calibration_cache"] == "calib.cache" and planned["trtexec"] == line
    script = out / "build_model.sh"
    assert script.stat().st_mode & 0o111 and script.read_text().startswith("#!/bin/sh\n")
    assert "/usr/src/tensorrt/bin/trtexec" in script.read_text()
    assert not (out / "model.engine").exists()


def test_qdq_model_builds_int8_without_calibration(tmp_path, capsys):
    onnx = make_classifier_onnx(tmp_path / "q.onnx", qdq=True, batch=1)
    code, stdout, err = run(["build", str(onnx), "--target", "agx-orin", "--precision", "int8", "--dla", "1",
                             "--gpu-fallback", "--emit-trtexec", "--dry-run", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert "INT8 from Q/DQ scales" in " ".join(stdout.split())
    line = next(text for text in stdout.splitlines() if text.startswith("trtexec --"))
    assert "--int8 --useDLACore=1 --allowGPUFallback" in line and "--calib" not in line and "Shapes" not in line


def test_json_plan_on_stdout(torch_onnx, tmp_path, capsys):
    code, stdout, err = run(["build", str(torch_onnx), "--target", "jetson-nano", "--precision", "fp16",
                             "--trt-version", "8.2", "--dry-run", "--out", str(tmp_path / "o"), "--json", "-"], capsys)
    # opset 17 is too new for TensorRT 8.2 (Nano): refused, one line, nothing on stdout
    assert code == 2 and stdout == ""
    assert err.strip() == (f"error: {torch_onnx}: opset 17 is newer than TensorRT 8.2.1's ONNX parser takes (<= 13); "
                           "re-export with edgeresnet export --opset 13")
    onnx13 = make_classifier_onnx(tmp_path / "m13.onnx", opset=13)
    code, stdout, err = run(["build", str(onnx13), "--target", "jetson-nano", "--precision", "fp16", "--batch", "1:2:4",
                             "--workspace", "256", "--dry-run", "--emit-trtexec", "--out", str(tmp_path / "o"),
                             "--json", "-"], capsys)
    assert code == 0, err
    data = json.loads(stdout)  # stdout is pure JSON; the table went to stderr
    assert data["plan"]["tensorrt"] == "TensorRT 8.2.1" and data["plan"]["flags"] == ["FP16"]
    assert "--explicitBatch" in data["trtexec"]["argv"] and "--workspace=256" in data["trtexec"]["argv"]
    assert "--buildOnly" in data["trtexec"]["argv"] and "build plan" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "agx-orn"], "--target agx-orn: unknown target (did you mean 'agx-orin'?)"),
        (["--target", "agx-orin", "--precision", "int8"], "--precision int8 needs calibration"),
        (["--target", "agx-orin", "--precision", "fp16", "--dla", "0", "--batch", "1:4:8"],
         "DLA needs a static shape (min = opt = max)"),
        (["--target", "agx-orin", "--precision", "fp16", "--dla", "2"], "has 2 DLA cores (0, 1); pick one of them"),
        (["--target", "orin-nano", "--precision", "fp16", "--dla", "0"], "has no DLA cores"),
        (["--target", "agx-orin", "--gpu-fallback"], "--gpu-fallback only applies to DLA builds"),
        (["--target", "host-cpu"], "--target host-cpu: runs the ONNX with ONNX Runtime on the CPU"),
        (["--target", "agx-orin", "--batch", "4:2:1"], "--batch '4:2:1': need MIN <= OPT <= MAX"),
        (["--target", "agx-orin", "--precision", "fp64"], "--precision 'fp64': choose one of fp32, fp16, int8, best"),
        (["--target", "agx-orin", "--trt-version", "10.13"], "--trt-version 10.13: agx-orin runs TensorRT 10.3.0"),
        (["--target", "agx-orin", "--precision", "int8", "--calib-cache", "missing.cache"],
         "--calib-cache missing.cache: file not found"),
        (["--target", "desktop-ampere", "--precision", "fp16"], "builds strongly typed networks"),
    ],
)
def test_hostile_inputs_one_line_exit_2(tmp_path, capsys, args, message):
    onnx = make_classifier_onnx(tmp_path / "m.onnx", opset=13)
    code, stdout, err = run(["build", str(onnx), *args, "--dry-run", "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_int8_on_nano(tmp_path, capsys, calib_cache):
    onnx = make_classifier_onnx(tmp_path / "m.onnx", opset=13)
    code, _, err = run(["build", str(onnx), "--target", "jetson-nano", "--precision", "int8", "--calib-cache",
                        str(calib_cache), "--dry-run", "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert err.strip() == ("error: --precision int8: NVIDIA Tegra X1 (Maxwell) (SM 5.3) has no INT8 support; "
                           "use --precision fp16")


def test_onnx_that_is_not_a_model(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_text("definitely not protobuf\n")
    code, _, err = run(["build", str(bad), "--target", "agx-orin", "--dry-run", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.strip().startswith(f"error: {bad}: not an ONNX model")
    code, _, err = run(["build", str(tmp_path / "none.onnx"), "--target", "agx-orin", "--dry-run", "--out",
                        str(tmp_path / "o")], capsys)
    assert code == 2 and "ONNX file not found" in err


def test_out_is_a_file(tmp_path, capsys):
    onnx = make_classifier_onnx(tmp_path / "m.onnx")
    (tmp_path / "file").write_text("x")
    code, _, err = run(["build", str(onnx), "--target", "agx-orin", "--dry-run", "--out", str(tmp_path / "file")], capsys)
    assert code == 2 and "exists and is not a directory" in err


def test_building_without_tensorrt_says_how_to_plan(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    onnx = make_classifier_onnx(tmp_path / "m.onnx")
    code, _, err = run(["build", str(onnx), "--target", "agx-orin", "--builder", "tensorrt", "--out",
                        str(tmp_path / "o")], capsys)
    assert code == 2 and "TensorRT is not usable here" in err and "--dry-run or --emit-trtexec" in err
    assert len(err.strip().splitlines()) == 1


def test_deploy_configs_need_and_use_the_contract(tmp_path, capsys):
    bare = make_classifier_onnx(tmp_path / "bare.onnx")
    code, _, err = run(["build", str(bare), "--target", "agx-orin", "--dry-run", "--deploy-configs", "--out",
                        str(tmp_path / "o1")], capsys)
    assert code == 2 and "no preprocessing contract" in err
    assert not (tmp_path / "o1" / "bare.nvinfer.txt").exists()
    onnx = make_classifier_onnx(tmp_path / "m.onnx", preprocess=digits_preprocess())
    code, stdout, err = run(["build", str(onnx), "--target", "agx-orin", "--precision", "fp16", "--batch", "1:4:8",
                             "--dry-run", "--deploy-configs", "--out", str(tmp_path / "o2")], capsys)
    assert code == 0, err
    out = tmp_path / "o2"
    assert "network-mode=2" in (out / "m.nvinfer.txt").read_text()
    assert "max_batch_size: 8" in (out / "triton" / "m" / "config.pbtxt").read_text()
    assert (out / "labels.txt").read_text().splitlines() == [str(i) for i in range(10)]


def test_targets_list_and_show(capsys):
    code, stdout, _ = run(["targets", "list", "--json", "-"], capsys)
    assert code == 0
    names = [t["name"] for t in json.loads(stdout)]
    assert "agx-orin" in names and "host-cpu" in names and len(names) == 12
    code, stdout, _ = run(["targets", "show", "agx-orin"], capsys)
    assert code == 0 and "MAXN" in stdout and "0.633 ms" in stdout and "mlcommo" in stdout
    code, stdout, _ = run(["targets", "show", "jetson-nano", "--json", "-"], capsys)
    data = json.loads(stdout)
    assert data["int8"] is False and data["install_path"] == "trtexec"
    code, _, err = run(["targets", "show", "xavier"], capsys)
    assert code == 2 and "unknown target" in err


def _rtx_available() -> bool:
    from edgeresnet.trt.rtx import import_rtx

    try:
        return import_rtx() is not None
    except Exception:
        return False


@pytest.mark.rtx
@pytest.mark.skipif(not _rtx_available(), reason="needs the CPU-only TensorRT-RTX builder wheels")
def test_real_build_with_tensorrt_rtx(tmp_path, capsys):
    from edgeresnet.trt.engine_manifest import read_engine_manifest
    from edgeresnet.trt.planfile import read_plan_header

    onnx = make_classifier_onnx(tmp_path / "m.onnx", preprocess=digits_preprocess())
    out = tmp_path / "engines"
    code, stdout, err = run(["build", str(onnx), "--target", "desktop-ampere", "--builder", "rtx", "--batch", "1:2:4",
                             "--deploy-configs", "--out", str(out), "--json", str(tmp_path / "build.json")], capsys)
    assert code == 0, err
    engine = out / "m.engine"
    assert engine.stat().st_size > 1000 and "built" in stdout
    header = read_plan_header(engine)
    assert header.is_plan and header.flavor == "tensorrt-rtx"
    manifest = read_engine_manifest(engine)
    section = manifest["engine"]
    assert section["builder"] == "tensorrt-rtx" and section["strongly_typed"] is True
    assert section["profiles"][0]["max"] == [4, 3, 32, 32] and section["target"] == "desktop-ampere"
    assert manifest["inputs"]["onnx"]["sha256"] and manifest["preprocess"]["image_size"] == 32
    assert manifest["rebuild_command"].startswith("edgeresnet build")
    result = json.loads((tmp_path / "build.json").read_text())
    assert result["built"] is True and result["files"]["engine"] == str(engine)
    assert (out / "triton" / "m" / "config.pbtxt").exists()


# -- files given to build are checked for what their option says -------------------------------------


def test_calib_cache_that_is_not_a_cache_is_refused(tmp_path, capsys):
    from conftest import assert_one_line_error

    onnx = make_classifier_onnx(tmp_path / "m.onnx", opset=13)
    bogus = tmp_path / "calib.cache"
    bogus.write_text("hello\n")
    code, _, err = run(["build", str(onnx), "--target", "agx-orin", "--precision", "int8", "--calib-cache", str(bogus),
                        "--dry-run", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, f"--calib-cache {bogus}: first line is 'hello', not a TRT-<version>-<Calibrator>")
    bogus.write_bytes(b"ftrt" + bytes(100))
    code, _, err = run(["build", str(onnx), "--target", "agx-orin", "--precision", "int8", "--calib-cache", str(bogus),
                        "--dry-run", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, f"--calib-cache {bogus}: binary file, not a TensorRT calibration cache")


def test_timing_cache_that_is_not_a_timing_cache_is_refused(tmp_path, capsys, calib_cache):
    from conftest import assert_one_line_error

    onnx = make_classifier_onnx(tmp_path / "m.onnx", opset=13)
    code, _, err = run(["build", str(onnx), "--target", "agx-orin", "--precision", "fp16", "--timing-cache",
                        str(calib_cache), "--dry-run", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, f"--timing-cache {calib_cache}: is an INT8 calibration cache",
                          "not a TensorRT timing cache")


def test_desktop_trt11_has_no_calibrators(tmp_path, capsys, calib_cache):
    """Desktop targets plan for the newest TensorRT (11.x), which removed IInt8Calibrator: point to Q/DQ."""
    from conftest import assert_one_line_error

    onnx = make_classifier_onnx(tmp_path / "m.onnx", opset=13)
    code, _, err = run(["build", str(onnx), "--target", "desktop-ampere", "--precision", "int8", "--calib-cache",
                        str(calib_cache), "--dry-run", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "removed implicit INT8 calibration", "edgeresnet calibrate")


# -- the build command over the recording fake (real TensorRT cannot be installed here) -------------------


@pytest.fixture()
def fake_gpu_build(monkeypatch):
    """``edgeresnet build`` with FakeTrt as the installed TensorRT and an SM 8.6 GPU reported present."""
    from edgeresnet.trt import adapter, engine_manifest
    from fake_trt import FakeEngineSpec, FakeTrt

    trt = FakeTrt("10.3", engine=FakeEngineSpec())
    real_env = engine_manifest.collect_environment

    def environment(trt_module=None, target=None):
        env = real_env(None, target)
        env["tensorrt"] = trt.__version__
        env["gpu"] = {"name": "NVIDIA RTX A6000", "compute_capability": "8.6"}
        return env

    monkeypatch.setattr(adapter, "load_trt", lambda builder="auto": trt)
    monkeypatch.setattr(engine_manifest, "collect_environment", environment)
    return trt


def test_build_keeps_the_engine_when_the_timing_cache_is_rejected(tmp_path, capsys, fake_gpu_build, wide_terminal):
    """A timing cache from another TensorRT: set_timing_cache returns False, get_timing_cache is None.
    The engine is built and written, the cache is a warning and stays as it was; the version-compatible
    engine's layer report deserializes with engine_host_code_allowed."""
    from fake_trt import fake_timing_cache

    onnx = make_classifier_onnx(tmp_path / "m.onnx", opset=13)
    timing = tmp_path / "timing.cache"
    timing.write_bytes(fake_timing_cache("10.13.3.9", b"from another machine"))
    out = tmp_path / "o"
    code, stdout, err = run(["build", str(onnx), "--target", "desktop-ampere", "--precision", "fp32",
                             "--typing", "weak", "--version-compatible", "--timing-cache", str(timing),
                             "--out", str(out)], capsys)
    assert code == 0, err
    flat = " ".join(stdout.split())
    assert (out / "m.engine").read_bytes() == b"ftrt-fake-plan"
    assert f"warning: --timing-cache {timing}: TensorRT 10.3.0 rejected it" in flat
    assert timing.read_bytes() == fake_timing_cache("10.13.3.9", b"from another machine")
    assert "no layer report" not in flat
    assert (out / "m.layers.json").is_file()
    assert "Runtime.engine_host_code_allowed = True" in fake_gpu_build.calls


def test_build_with_missing_calibration_data_is_one_line(tmp_path, capsys, fake_gpu_build):
    from conftest import assert_one_line_error

    onnx = make_classifier_onnx(tmp_path / "m.onnx", opset=13)
    out = tmp_path / "o"
    code, _, err = run(["build", str(onnx), "--target", "desktop-ampere", "--trt-version", "10.3", "--precision",
                        "int8", "--typing", "weak", "--calib-data", str(tmp_path / "calib"), "--out", str(out)], capsys)
    assert_one_line_error(code, err, f"--calib-data {tmp_path / 'calib'}: no such folder")
    assert not (out / "m.engine").exists()
    assert not [c for c in fake_gpu_build.calls if c.startswith("trt.Builder")]


def test_layer_report_of_a_version_compatible_build(tmp_path, capsys, fake_gpu_build, wide_terminal):
    """The fake, like TensorRT, refuses a version-compatible plan unless engine_host_code_allowed is set."""
    onnx = make_classifier_onnx(tmp_path / "m.onnx", opset=13)
    out = tmp_path / "o"
    code, stdout, err = run(["build", str(onnx), "--target", "desktop-ampere", "--precision", "fp32",
                             "--typing", "weak", "--version-compatible", "--out", str(out)], capsys)
    assert code == 0, err
    assert "no layer report" not in " ".join(stdout.split())
    assert json.loads((out / "m.layers.json").read_text())["Layers"][0]["LayerType"] == "Reduce"


def test_trtexec_bundle_cache_header_names_the_device_tensorrt(torch_onnx, tmp_path, capsys, wide_terminal):
    """agx-orin runs TensorRT 10.3: a cache with an 8.6 header would be skipped by trtexec on the board."""
    cache = tmp_path / "old.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\ninput: 3c010a14\nlogits: 3d8f5c29\n")
    out = tmp_path / "bundle"
    code, stdout, err = run(["build", str(torch_onnx), "--target", "agx-orin", "--precision", "int8", "--calib-cache",
                             str(cache), "--emit-trtexec", "--dry-run", "--out", str(out)], capsys)
    assert code == 0, err
    assert (out / "old.cache").read_text() == "TRT-100300-EntropyCalibration2\ninput: 3c010a14\nlogits: 3d8f5c29\n"
    assert cache.read_text().startswith("TRT-8601-")  # the user's file is left alone
    assert "header TRT-8601-EntropyCalibration2 rewritten as TRT-100300-EntropyCalibration2" in " ".join(stdout.split())
