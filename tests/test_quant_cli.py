"""``edgeresnet calibrate`` and ``edgeresnet qat`` end to end, and their one-line refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import quant_fixtures as qf
from edgeresnet.cli.main import main


@pytest.fixture(scope="module")
def tiny() -> qf.TinyModel:
    return qf.tiny_model()


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def _refused(args: list[str], capsys, *needles: str, code: int = 2) -> str:
    rc, _out, err = _cli(args, capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert rc == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


QUICK = ["--eval-images", "60", "--bench-iters", "2"]


def test_calibrate_writes_int8_onnx_manifest_cache_and_json(tiny, tmp_path, capsys):
    out, report = tmp_path / "int8.onnx", tmp_path / "report.json"
    rc, stdout, _ = _cli(["calibrate", tiny.onnx, "--out", out, "--images", "48", "--method", "percentile",
                          "--data", "digits", "--max-drop", "10", "--json", report, *QUICK], capsys)
    assert rc == 0 and "FP32 top-1" in stdout and "flavour: trt" in stdout
    data = json.loads(report.read_text())
    assert data["written"] and data["flavour"] == "trt" and data["method"] == "percentile"
    manifest = json.loads(Path(str(out) + ".json").read_text())
    assert manifest["kind"] == "onnx-int8" and manifest["precision"] == "int8"
    assert manifest["quantization"]["calibration"]["count"] == 48
    assert Path(data["cache"]["path"]).exists() and Path(data["cache"]["path"] + ".json").exists()
    # the same again with the cache: calibration is skipped; an already-quantized model is refused
    rc, stdout, _ = _cli(["calibrate", tiny.onnx, "--out", tmp_path / "again.onnx", "--images", "48", "--method",
                          "percentile", "--data", "digits", "--max-drop", "10", *QUICK], capsys)
    assert rc == 0 and "reused" in stdout
    _refused(["calibrate", out, "--out", tmp_path / "twice.onnx", "--data", "digits"], capsys, "already quantized")
    assert not (tmp_path / "twice.onnx").exists()


def test_calibrate_with_a_list_file(tiny, tmp_path, capsys):
    listing = tmp_path / "calib.txt"
    listing.write_text("# two digits references and a comment\ndigits:train:0\n\ndigits:train:1  # second\n")
    out = tmp_path / "int8.onnx"
    rc, stdout, err = _cli(["calibrate", tiny.onnx, "--out", out, "--calib-list", listing, "--method", "max",
                            "--flavour", "ort", "--max-drop", "50", *QUICK], capsys)
    assert rc == 0 and "fewer than the recommended 500" in err
    assert "flavour: ort" in stdout
    manifest = json.loads(Path(str(out) + ".json").read_text())
    assert manifest["inputs"]["calibration_list"]["path"] == str(listing)
    assert manifest["settings"]["flavour"] == "ort"


def test_qat_end_to_end_without_fine_tuning(tiny, tmp_path, capsys):
    out, report = tmp_path / "qat.onnx", tmp_path / "qat.json"
    rc, stdout, _ = _cli(["qat", tiny.checkpoint, "--out", out, "--epochs", "0", "--calib-images", "48",
                          "--max-drop", "10", "--json", report, *QUICK], capsys)
    assert rc == 0 and "Q/DQ:" in stdout
    data = json.loads(report.read_text())
    assert data["structure"]["residual_adds_quantized"] == 8 and data["structure"]["symmetric"]
    manifest = json.loads(Path(str(out) + ".json").read_text())
    assert manifest["quantization"]["qat"] and manifest["inputs"]["checkpoint"]["path"] == str(tiny.checkpoint)
    assert manifest["settings"]["data"] == "digits"  # read from the checkpoint, not asked again


# -- hostile inputs: one line, exit 2, nothing written ---------------------------------------------
def test_bad_method_flavour_and_options(tiny, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    _refused(["calibrate", tiny.onnx, "--out", out, "--method", "kl"], capsys, "--method kl", "entropy, max")
    _refused(["calibrate", tiny.onnx, "--out", out, "--flavour", "tensorrt"], capsys, "--flavour tensorrt")
    _refused(["calibrate", tiny.onnx, "--out", out, "--images", "5", "--calib-list", tmp_path], capsys,
             "--images and --calib-list")
    _refused(["calibrate", tiny.onnx, "--out", out, "--max-drop", "-1"], capsys, "--max-drop")
    _refused(["qat", tiny.checkpoint, "--out", out, "--method", "mse"], capsys, "--method mse")
    _refused(["qat", tiny.checkpoint, "--out", out, "--opset", "11"], capsys, "--opset 11")
    _refused(["calibrate", tiny.onnx, "--out", out, "--target", "jetson-nano", "--data", "digits"], capsys,
             "--target jetson-nano", "no INT8")
    assert not out.exists()


def test_empty_calibration_folder_and_bad_list(tiny, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "x.onnx"
    _refused(["calibrate", tiny.onnx, "--out", out, "--calib-list", empty, "--data", "digits"], capsys,
             "folder has no images")
    listing = tmp_path / "missing.txt"
    listing.write_text("images/does_not_exist.png\n")
    _refused(["calibrate", tiny.onnx, "--out", out, "--calib-list", listing, "--data", "digits"], capsys,
             "missing.txt:1", "not found")
    blank = tmp_path / "blank.txt"
    blank.write_text("# nothing\n\n")
    _refused(["calibrate", tiny.onnx, "--out", out, "--calib-list", blank, "--data", "digits"], capsys, "names no images")
    assert not out.exists() and not list(tmp_path.glob("*.calib"))


def test_wrong_model_files(tiny, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    _refused(["calibrate", tmp_path / "nope.onnx", "--out", out], capsys, "not found")
    _refused(["calibrate", tiny.checkpoint, "--out", out, "--data", "digits"], capsys, "tiny.pt")
    _refused(["qat", tiny.onnx, "--out", out], capsys, "qat fine-tunes a checkpoint")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    _refused(["calibrate", garbage, "--out", out], capsys, "garbage.onnx")
    assert not out.exists()


def test_already_quantized_checkpoint_is_refused(tiny, tmp_path, capsys):
    import torch

    from edgeresnet.compress import qat
    from edgeresnet.models import make_checkpoint

    ckpt = tmp_path / "fake_quant.pt"
    torch.save(make_checkpoint(qat.quantize_model(tiny.model), tiny.spec, tiny.data.preprocess.to_dict(),
                               data="digits"), ckpt)
    _refused(["qat", ckpt, "--out", tmp_path / "x.onnx"], capsys, "already quantized")


def test_gate_failure_exits_non_zero_and_writes_nothing(tmp_path, capsys):
    path, _data = qf.tiny_residual_onnx(outlier=True)
    out, report = tmp_path / "int8.onnx", tmp_path / "gate.json"
    line = _refused(["calibrate", path, "--out", out, "--data", "digits", "--images", "32", "--method", "max",
                     "--max-keep", "0", "--json", report, *QUICK], capsys, "no INT8 model within --max-drop 1",
                    code=3)
    assert "--max-keep" in line
    assert not out.exists()
    data = json.loads(report.read_text())
    assert data["written"] is False and data["gate"]["passed"] is False
