"""``edgeresnet export`` / ``verify`` on hostile input (one-line errors, nothing half-written) and
``verify`` between real artifacts."""

from __future__ import annotations

import json
import os

import pytest

from edgeresnet.cli.main import main
from helpers_common import write_untrained_checkpoint


@pytest.fixture(scope="module")
def art(tmp_path_factory, torch_single_thread):
    """Two checkpoints with different weights, one with another input size, and a dynamic ONNX of the first."""
    import torch

    from edgeresnet.export import export_checkpoint

    root = tmp_path_factory.mktemp("cli")
    a = write_untrained_checkpoint(root / "a.pt", seed=0)
    b = write_untrained_checkpoint(root / "b.pt", seed=1)
    big = write_untrained_checkpoint(root / "big.pt", size=40)
    export_checkpoint(a, root / "a.onnx", opset=13, batch=(1, 2, 4), parity_images=4)
    plain = root / "plain.pt"
    torch.save(torch.load(a, weights_only=True)["state_dict"], plain)
    return {"root": root, "a": a, "b": b, "big": big, "onnx": root / "a.onnx", "plain": plain}


def _run(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err.strip()


def _one_line_error(err, *needles):
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("args, needles", [
    (["--opset", "7"], ["--opset 7: unsupported opset"]),
    (["--opset", "30"], ["--opset 30: unsupported opset"]),
    (["--dynamic-batch", "8:4:2"], ["--dynamic-batch 8:4:2: need 1 <= MIN <= OPT <= MAX"]),
    (["--dynamic-batch", "1:x:4"], ["--dynamic-batch 1:x:4: expected MIN:OPT:MAX"]),
    (["--batch", "2", "--dynamic-batch", "1:2:4"], ["give one of them"]),
    (["--batch", "0"], ["--batch 0"]),
    (["--exporter", "dynamo", "--opset", "17"], ["dynamo exporter produces opset 18 or newer"]),
    (["--target", "no-such-board"], ["--target no-such-board: unknown target"]),
    (["--atol", "-1"], ["--atol -1"]),
])
def test_bad_export_options(art, tmp_path, capsys, args, needles):
    out = tmp_path / "m.onnx"
    code, _, err = _run(capsys, "export", art["a"], "--out", out, *args)
    assert code == 2
    _one_line_error(err, *needles)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_that_is_not_ours(art, tmp_path, capsys):
    code, _, err = _run(capsys, "export", art["plain"], "--out", tmp_path / "m.onnx")
    assert code == 2
    _one_line_error(err, str(art["plain"]), "not an edgeresnet checkpoint", "edgeresnet import")
    assert list(tmp_path.iterdir()) == []


def test_missing_input_and_missing_output_directory(art, tmp_path, capsys):
    code, _, err = _run(capsys, "export", tmp_path / "nope.pt", "--out", tmp_path / "m.onnx")
    assert code == 2
    _one_line_error(err, "nope.pt", "not found")
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a directory would have to be")
    code, _, err = _run(capsys, "export", art["a"], "--out", blocker / "such" / "dir" / "m.onnx")
    assert code == 2
    _one_line_error(err, "is a file, not a directory")
    assert list(tmp_path.iterdir()) == [blocker]
    blocker.unlink()
    code, _, err = _run(capsys, "export", art["a"], "--out", tmp_path / "model.pt")
    assert code == 2
    _one_line_error(err, "name the file *.onnx")
    (tmp_path / "taken.onnx").mkdir()
    code, _, err = _run(capsys, "export", art["a"], "--out", tmp_path / "taken.onnx")
    assert code == 2
    _one_line_error(err, "is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories; the check cannot fail here")
def test_read_only_output_directory(art, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = _run(capsys, "export", art["a"], "--out", locked / "m.onnx")
    finally:
        locked.chmod(0o755)
    assert code == 2
    _one_line_error(err, "not writable")
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage that is not an ONNX protobuf" * 50])
def test_verify_refuses_a_corrupt_onnx(art, tmp_path, capsys, content):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(content)
    code, _, err = _run(capsys, "verify", art["a"], bad)
    assert code == 2
    _one_line_error(err, str(bad))


def test_verify_checkpoint_against_its_onnx(art, capsys):
    code, out, err = _run(capsys, "verify", art["a"], art["onnx"], "--parity-images", "6", "--json", "-")
    assert code == 0, err
    data = json.loads(out)  # stdout is only the JSON; the table went to stderr
    assert data["schema"] == "edgeresnet.export.parity/1" and data["passed"] and data["data"] == "digits"
    assert [c["batch"] for c in data["cases"]] == [1, 4] and data["max_abs"] < 1e-3
    assert data["runners"]["a"]["backend"] == "torch" and data["runners"]["b"]["backend"] == "ort"
    assert data["a"] == f"torch:{art['a']}" and data["b"] == f"ort:{art['onnx']}"
    assert "verify" in err and "parity passed" in err


def test_verify_reports_a_real_mismatch_with_exit_1(art, tmp_path, capsys):
    report = tmp_path / "parity.json"
    code, out, err = _run(capsys, "verify", art["onnx"], art["b"], "--parity-images", "4", "--json", report)
    assert code == 1
    assert "FAIL" in out
    _one_line_error(err, "parity failed", "at batch")
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["top1_agreement"] <= 1.0


def test_verify_refuses_artifacts_with_different_inputs(art, capsys):
    code, _, err = _run(capsys, "verify", art["big"], art["onnx"])
    assert code == 2
    _one_line_error(err, "expect different inputs", "image_size: 40 vs 32")
