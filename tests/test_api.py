"""The Python API (``edgeresnet`` / ``edgeresnet.api``): lazy names, and one short example per stage on tiny data.

Each example calls the same stage function its CLI command calls, so what is checked here is what a user's
script gets: typed settings in, a typed result out, ``UserError`` for input a user can fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "tensorrt", "tensorrt_rtx")


def test_import_and_name_lookup_stay_light():
    """``import edgeresnet`` and looking up stages and settings import no heavy library (a fresh interpreter)."""
    code = ("import sys, edgeresnet, edgeresnet.api\n"
            "from edgeresnet import build, BuildSettings, calibrate, CalibrateSettings, regress, promote_baseline\n"
            f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_every_api_name_resolves_and_the_package_forwards_them():
    import edgeresnet
    from edgeresnet import api

    for name in api.NAMES:
        value = getattr(api, name)
        assert callable(value), name
        if name not in ("train", "evaluate", "export", "report"):
            assert getattr(edgeresnet, name) is value, name
    from edgeresnet.trt.build import build as build_stage

    assert edgeresnet.build is build_stage and api.build is build_stage
    assert api.export is edgeresnet.export.checkpoint.export_checkpoint  # the name is the sub-package there
    with pytest.raises(AttributeError):
        edgeresnet.no_such_stage  # noqa: B018
    with pytest.raises(AttributeError):
        api.no_such_stage  # noqa: B018


def _onnx(tmp_path: Path) -> Path:
    from trt_onnx_helpers import digits_preprocess, make_classifier_onnx

    return make_classifier_onnx(tmp_path / "m.onnx", preprocess=digits_preprocess())


def test_build_plans_and_writes_trtexec_like_the_cli(tmp_path, capsys):
    from edgeresnet import BuildSettings, build
    from edgeresnet.cli.main import main
    from edgeresnet.trt.build import BuildResult

    onnx = _onnx(tmp_path)
    result = build(BuildSettings(onnx=onnx, target="agx-orin", precision="fp16", out=tmp_path / "api",
                                 dry_run=True, emit_trtexec=True))
    assert isinstance(result, BuildResult) and not result.built and result.engine is None
    assert result.trtexec["command"].startswith("trtexec ") and Path(result.trtexec["script"]).is_file()
    assert capsys.readouterr().out == ""  # no console given: the stage prints nothing
    with pytest.raises(SystemExit) as done:
        main(["build", str(onnx), "--target", "agx-orin", "--precision", "fp16", "--out", str(tmp_path / "cli"),
              "--dry-run", "--emit-trtexec", "--json", "-"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    cli = json.loads(printed[printed.index("{"):])
    assert cli.keys() == result.to_dict().keys() and cli["plan"] == result.to_dict()["plan"]
    # keywords instead of a BuildSettings
    again = build(onnx=onnx, target="agx-orin", precision="fp16", out=tmp_path / "kw", dry_run=True)
    assert again.plan == result.plan and again.trtexec is None


def test_build_refuses_bad_input_before_writing(tmp_path):
    from edgeresnet import UserError, build

    with pytest.raises(UserError, match="--builder"):
        build(onnx=_onnx(tmp_path), target="agx-orin", out=tmp_path / "never", builder="nope", dry_run=True)
    with pytest.raises(UserError, match="no engine"):
        build(onnx=tmp_path / "m.onnx", target="host-cpu", out=tmp_path / "never", dry_run=True)
    assert not (tmp_path / "never").exists()
    with pytest.raises(TypeError):
        build(object(), onnx="x")  # a settings object and keywords: one or the other


@pytest.fixture(scope="module")
def tiny():
    import quant_fixtures as qf

    return qf.tiny_model()


def test_calibrate_returns_the_gated_report(tiny, tmp_path):
    from edgeresnet import CalibrateSettings, calibrate

    out = tmp_path / "int8.onnx"
    result = calibrate(CalibrateSettings(model=tiny.onnx, out=out, images=48, method="percentile", data="digits",
                                         max_drop=10, eval_images=64, bench_iters=0))
    assert result.passed and result.report.written and out.is_file() and result.flavour == "trt"
    assert len(result.calibration) == 48 and result.to_dict()["accuracy"]["val"]["n"] == 64


def test_verify_checkpoint_against_its_onnx(tiny):
    from edgeresnet import UserError, verify

    result = verify(tiny.checkpoint, tiny.onnx, data="digits", parity_images=8, max_batch=2)
    assert result.passed and result.images >= 8 and result.to_dict()["schema"] == "edgeresnet.export.parity/1"
    assert result.runners["a"]["backend"] == "torch" and result.runners["b"]["backend"] == "ort"
    with pytest.raises(UserError, match="--max-batch"):
        verify(tiny.checkpoint, tiny.onnx, max_batch=0)


def test_qat_without_fine_tuning(tiny, tmp_path):
    from edgeresnet import qat

    report = qat(model=tiny.checkpoint, out=tmp_path / "qat.onnx", epochs=0, calib_images=48, max_drop=10,
                 eval_images=64, bench_iters=0)
    assert report.written and report.structure["quantize_linear"] > 0


def test_import_weights_of_a_torchvision_state_dict(tmp_path):
    import torch
    import torchvision

    from edgeresnet import ImportSettings, UserError, import_weights
    from edgeresnet.artifacts import read_manifest

    weights = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    result = import_weights(ImportSettings(weights=weights, arch="resnet18", num_classes=10, out=tmp_path / "m.pt",
                                           image_size=64))
    assert result.checkpoint.is_file() and result.preprocess["image_size"] == 64
    assert result.parameters == sum(p.numel() for p in torchvision.models.resnet18(num_classes=10).parameters())
    assert read_manifest(result.checkpoint, required=True)["kind"] == "checkpoint"
    with pytest.raises(UserError, match="--class-names"):
        import_weights(weights=weights, arch="resnet18", num_classes=10, out=tmp_path / "never.pt", class_names="a,b")
    assert not (tmp_path / "never.pt").exists()


def test_train_export_evaluate(tmp_path, torch_single_thread):
    from edgeresnet import api

    recipe = api.TrainRecipe(image_size=32, small_stem=True, epochs=1, max_steps=2, batch_size=16, warmup_epochs=0)
    run = api.train(recipe, tmp_path / "train", progress=False)
    checkpoint = run.result.checkpoint
    exported = api.export(checkpoint, tmp_path / "m.onnx", data="digits", parity_images=8)
    assert exported.path.is_file() and exported.opset >= 13
    metrics = api.evaluate(exported.path, "digits", "test", limit=32)
    assert metrics["n"] == 32 and 0 <= metrics["top1"] <= 100


def test_regress_and_promote_baseline(tmp_path_factory, tmp_path):
    from bench_fixtures import ort_results
    from edgeresnet import GateSettings, promote_baseline, regress
    from edgeresnet.artifacts import sha256_file

    results = ort_results(tmp_path_factory)
    report = regress([results], [results], GateSettings().validate())
    assert report.exit_code == 0 and not report.failed
    promoted = promote_baseline(results, tmp_path / "baselines")
    assert promoted.baseline.read_bytes() == results.read_bytes() and promoted.sha256 == sha256_file(results)
    assert promoted.replaced_sha256 is None and promoted.manifest.is_file()
    assert promote_baseline(results, tmp_path / "baselines").replaced_sha256 == promoted.sha256


def test_evaluate_ensemble_of_two_checkpoints(tiny_checkpoint, torch_single_thread):
    from edgeresnet import EnsembleSettings, UserError, evaluate_ensemble

    report = evaluate_ensemble(EnsembleSettings(models=[tiny_checkpoint, tiny_checkpoint], limit=16))
    assert report.ensemble["n"] == 16 and len(report.members) == 2
    assert any("same file" in note for note in report.notes)
    with pytest.raises(UserError, match="--split"):
        evaluate_ensemble(models=[tiny_checkpoint, tiny_checkpoint], split="nope")
