"""The torch and onnxruntime runners on real files: loading, contracts, batching, hostile files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeresnet.errors import UserError
from edgeresnet.runners.ort_runner import resolve_providers


def _checkpoint(path, arch="resnet18", size=32, seed=0, small_stem=False):
    import torch

    from edgeresnet.data.presets import preset_for
    from edgeresnet.models import ModelSpec, build_model, make_checkpoint

    torch.manual_seed(seed)
    spec = ModelSpec(arch, 10, small_stem=small_stem)
    model = build_model(spec).eval()
    preprocess = preset_for("digits", size, tuple(str(i) for i in range(10)))
    torch.save(make_checkpoint(model, spec, preprocess.to_dict()), path)
    return model, preprocess


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint and its static batch-2 ONNX (TorchScript path, no parity: the runners are under test)."""
    import torch

    from edgeresnet.export import export_onnx
    from edgeresnet.export.parity import load_parity_images

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runners")
    model, preprocess = _checkpoint(root / "model.pt")
    export_onnx(model, preprocess, root / "static2.onnx", opset=13, batch=2, source=root / "model.pt")
    yield {"root": root, "pt": root / "model.pt", "onnx": root / "static2.onnx", "preprocess": preprocess,
           "images": load_parity_images("digits", preprocess, 5)}
    torch.set_num_threads(threads)


def test_torch_runner_loads_our_checkpoint_in_eval_mode(files):
    from edgeresnet.runners import load_runner

    runner = load_runner(files["pt"])
    assert runner.backend == "torch" and runner.device == "cpu" and not runner.model.training
    assert runner.preprocess == files["preprocess"] and runner.input_shape == ("batch", 3, 32, 32)
    with runner:
        logits = runner.infer(files["images"])
    assert logits.shape == (5, 10) and logits.dtype == np.float32
    assert runner.describe()["model"]["arch"] == "resnet18"


def test_ort_runner_reads_the_contract_and_chunks_a_static_batch(files):
    from edgeresnet.runners import load_runner
    from edgeresnet.runners.ort_runner import OrtRunner

    runner = load_runner(files["onnx"])
    assert isinstance(runner, OrtRunner) and runner.preprocess == files["preprocess"]
    assert runner.input_shape == (2, 3, 32, 32) and runner.batch_range == (2, 2) and runner.signature.opset == 13
    assert runner.signature.batch_profile.to_dict() == {"min": 2, "opt": 2, "max": 2, "dynamic": False}
    images = files["images"]
    with runner, load_runner(files["pt"]) as reference:
        assert runner.device == "cpu" and "CPUExecutionProvider" in runner.describe()["providers"]
        five = runner.infer(images)  # 5 images through a batch-2 model: 2 + 2 + padded 1
        expected = reference.infer(images)
        with pytest.raises(UserError, match=r"model takes images of shape \(2, 3, 32, 32\)"):
            runner.infer(np.zeros((2, 3, 40, 40), np.float32))
    assert five.shape == (5, 10)
    np.testing.assert_allclose(five, expected, atol=1e-4, rtol=1e-4)


def test_ort_runner_threads_option(files):
    from edgeresnet.runners.ort_runner import OrtRunner

    with OrtRunner.load(files["onnx"], threads=1) as runner:
        assert runner.infer(files["images"][:2]).shape == (2, 10)
    with pytest.raises(UserError, match="--threads 0"):
        OrtRunner.load(files["onnx"], threads=0)


@pytest.mark.parametrize("content", [b"", b"this is not a protobuf \x00\xff" * 40])
def test_corrupt_onnx_is_a_one_line_error_naming_the_file(tmp_path, content):
    from edgeresnet.runners import load_runner

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_runner(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_truncated_onnx_is_refused(files, tmp_path):
    from edgeresnet.runners import load_runner

    cut = tmp_path / "cut.onnx"
    cut.write_bytes(files["onnx"].read_bytes()[:100_000])
    with pytest.raises(UserError, match=rf"{cut}: not an ONNX model"):
        load_runner(cut)


def test_plain_state_dict_is_not_our_checkpoint(tmp_path):
    import torch

    from edgeresnet.runners.torch_runner import TorchRunner

    plain = tmp_path / "plain.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, plain)
    with pytest.raises(UserError, match="not an edgeresnet checkpoint.*edgeresnet import"):
        TorchRunner.load(plain)


def test_provider_resolution():
    assert resolve_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert resolve_providers(None, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(UserError, match="--providers cuda: this onnxruntime offers CPUExecutionProvider"):
        resolve_providers(["cuda"], ["CPUExecutionProvider"])


def test_preprocess_of_checkpoint_onnx_and_engine_via_its_manifest(files, tmp_path):
    from edgeresnet.export.onnx_meta import batch_profile_of, preprocess_of

    assert preprocess_of(files["pt"]) == files["preprocess"]
    assert preprocess_of(files["onnx"]) == files["preprocess"]
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine bytes")
    (tmp_path / "model.engine.json").write_text(json.dumps(
        {"kind": "engine", "inputs": {"onnx": {"path": str(files["onnx"]), "sha256": "x"}}}))
    assert preprocess_of(engine) == files["preprocess"]
    assert batch_profile_of(files["onnx"]).max == 2
    orphan = tmp_path / "orphan.engine"
    orphan.write_bytes(b"x")
    assert preprocess_of(orphan, required=False) is None
    with pytest.raises(UserError, match="no preprocessing contract found"):
        preprocess_of(orphan)
    with pytest.raises(UserError, match="unknown model file type .txt"):
        preprocess_of(tmp_path / "x.txt")


def test_foreign_onnx_without_metadata_runs_but_has_no_contract(files, tmp_path):
    import onnx

    from edgeresnet.export.onnx_meta import preprocess_of
    from edgeresnet.runners.ort_runner import OrtRunner

    model = onnx.load(str(files["onnx"]))
    del model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(model, str(foreign))
    runner = OrtRunner.load(foreign)
    assert runner.preprocess is None and runner.batch_range == (2, 2)
    assert preprocess_of(foreign, required=False) is None
    with runner:
        assert runner.infer(files["images"][:2]).shape == (2, 10)
