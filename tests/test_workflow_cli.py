"""``edgeresnet train / import / evaluate / demo`` through the real CLI entry point, hostile inputs included.

Training runs use a tiny ImageFolder made of real digits images (3 classes, 16 px) so whole epochs take a
couple of optimizer steps; the demo runs with ``--fast``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from edgeresnet.train.recipe import field_names, flag

pytestmark = pytest.mark.usefixtures("torch_single_thread", "wide_terminal")
SMALL_TRAIN = ["--image-size", "16", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    """Real digits (classes 0-2, 8 images each) saved as PNG files in ImageFolder layout."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digit_folder")
    bunch = load_digits()
    for label in range(3):
        folder = root / f"digit{label}"
        folder.mkdir()
        images = bunch.images[bunch.target == label][:8]
        for i, image in enumerate(images):
            Image.fromarray((image * 255 / 16).astype(np.uint8)).convert("RGB").save(folder / f"{i}.png")
    return root


class RunsCode:
    """Pickles to os.system(...): a checkpoint that would run a command when loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- train ------------------------------------------------------------------------------------------


def test_train_config_flags_json_and_resume(capsys, tmp_path, digit_folder):
    config = tmp_path / "recipe.yaml"
    config.write_text("epochs: 5\noptimizer: adamw\nlr: 0.002\nmax-steps: 2\nwarmup_epochs: 0\n")
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "--data", digit_folder, "--config", config, "--epochs", "2",
                                "--out", out, "--json", "-", *SMALL_TRAIN)
    assert code == 0, err
    summary = json.loads(stdout)  # --json - keeps stdout pure JSON (tables went to stderr)
    assert summary["stopped"] == "max_steps" and summary["steps"] == 2 and summary["epochs_run"] == 1
    assert summary["recipe"]["epochs"] == 2 and summary["recipe"]["optimizer"] == "adamw"  # flag over file
    assert "best val top-1" in err
    saved = (out / "recipe.yaml").read_text()
    assert "epochs: 2" in saved and "optimizer: adamw" in saved
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1

    # a second run into the same directory must be asked for
    code, _, err = run_cli(capsys, "train", "--data", digit_folder, "--out", out, *SMALL_TRAIN)
    assert_one_line_error(code, err, "already holds a training run", "--resume")

    # resume: continues at epoch 2 with the saved recipe and finishes
    code, stdout, err = run_cli(capsys, "train", "--out", out, "--resume", "--json", "-", "--no-progress")
    assert code == 0, err
    resumed = json.loads(stdout)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2] and resumed["stopped"] == "completed"
    assert resumed["recipe"]["optimizer"] == "adamw" and resumed["recipe"]["max_steps"] is None

    # the checkpoint evaluates through the CLI, data set found in its manifest
    code, stdout, err = run_cli(capsys, "evaluate", out / "best.pt", "--json", "-", "--split", "val")
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["data"] == str(digit_folder) and metrics["class_names"] == ["digit0", "digit1", "digit2"]
    assert Path(metrics["outputs"]["confusion_png"]).exists()


def test_corrupt_image_is_skipped_and_named(capsys, tmp_path, digit_folder):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(digit_folder, data)
    (data / "digit1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    code, stdout, err = run_cli(capsys, "train", "--data", data, "--epochs", "1", "--max-steps", "1",
                                "--out", tmp_path / "run", *SMALL_TRAIN)
    assert code == 0, err
    assert "skipped 1 corrupt or non-image file(s): digit1/broken.png" in stdout
    assert "(1 corrupt files skipped)" in stdout


def test_train_from_init_with_frozen_backbone(capsys, tmp_path, digit_folder, tiny_checkpoint):
    from edgeresnet.artifacts import read_manifest
    from edgeresnet.models import load_checkpoint

    out = tmp_path / "finetune"
    code, stdout, err = run_cli(capsys, "train", "--data", digit_folder, "--init", tiny_checkpoint, "--small-stem",
                                "--freeze-backbone", "--epochs", "1", "--out", out, "--json", "-", *SMALL_TRAIN)
    assert code == 0, err
    summary = json.loads(stdout)
    assert any("head re-initialised" in note and "10 classes" in note for note in summary["notes"])
    tuned, source = load_checkpoint(out / "best.pt")["state_dict"], load_checkpoint(tiny_checkpoint)["state_dict"]
    assert torch.equal(tuned["layer2.0.conv1.weight"], source["layer2.0.conv1.weight"])  # frozen backbone
    assert tuned["fc.weight"].shape == (3, 512)
    assert read_manifest(out / "best.pt")["inputs"]["init"]["path"] == str(tiny_checkpoint)
    # the same weights into the standard stem: a one-line error naming the fix
    code, _, err = run_cli(capsys, "train", "--data", digit_folder, "--init", tiny_checkpoint, "--out",
                           tmp_path / "wrong", *SMALL_TRAIN)
    assert_one_line_error(code, err, "stem conv1", "--small-stem")


@pytest.mark.parametrize("args,fragments", [
    (["--epochs", "0"], ["--epochs 0", "positive integer"]),
    (["--epochs", "-2"], ["--epochs -2"]),
    (["--batch-size", "0"], ["--batch-size 0"]),
    (["--batch-size", "-8"], ["--batch-size -8"]),
    (["--lr", "0"], ["--lr 0.0", "positive number"]),
    (["--lr", "-0.1"], ["--lr -0.1"]),
    (["--image-size", "0"], ["--image-size 0"]),
    (["--image-size", "-32"], ["--image-size -32"]),
    (["--optimizer", "lbfgs"], ["--optimizer 'lbfgs'", "sgd, adam, adamw, rmsprop"]),
    (["--precision", "fp16", "--device", "cpu"], ["--precision fp16", "CUDA"]),
    (["--arch", "resnet34"], ["--arch 'resnet34'"]),
])
def test_train_rejects_bad_numbers_in_one_line(capsys, tmp_path, args, fragments):
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "run", "--no-progress", *args)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "run" / "best.pt").exists()


def test_train_hostile_data_and_config(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "nope", "--out", tmp_path / "r1")
    assert_one_line_error(code, err, "nope", "directory not found")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "empty", "--out", tmp_path / "r2")
    assert_one_line_error(code, err, "empty", "directory is empty")
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: 2\nbatchsize: 16\n")
    code, _, err = run_cli(capsys, "train", "--config", config, "--out", tmp_path / "r3")
    assert_one_line_error(code, err, "unknown key 'batchsize'", str(config), "did you mean 'batch_size'")
    config.write_text("epochs: -1\n")
    code, _, err = run_cli(capsys, "train", "--config", config, "--out", tmp_path / "r3")
    assert_one_line_error(code, err, f"--config {config}: epochs -1")
    code, _, err = run_cli(capsys, "train", "--resume", "--out", tmp_path / "r4")
    assert_one_line_error(code, err, "--resume", "no last.pt")
    code, _, err = run_cli(capsys, "train", "--init", tmp_path / "missing.pth", "--out", tmp_path / "r5")
    assert_one_line_error(code, err, "missing.pth", "not found")
    a_file = tmp_path / "taken"
    a_file.write_text("not a directory")
    code, _, err = run_cli(capsys, "train", "--out", a_file)
    assert_one_line_error(code, err, "--out", "is a file")


def test_help_documents_every_option(capsys):
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    for name in field_names():
        assert flag(name) in out, flag(name)
    for option in ("--config", "--out", "--resume", "--overwrite", "--json"):
        assert option in out
    for command, options in (("import", ("--arch", "--num-classes", "--out", "--small-stem", "--class-names",
                                         "--json")),
                             ("evaluate", ("--data", "--split", "--batch-size", "--limit", "--backend", "--json")),
                             ("demo", ("--out", "--fast", "--epochs", "--json"))):
        code, out, _ = run_cli(capsys, command, "--help")
        assert code == 0
        for option in options:
            assert option in out, (command, option)


# -- import ---------------------------------------------------------------------------------------


def test_import_reinitialises_the_head_and_writes_a_checkpoint(capsys, tmp_path):
    from edgeresnet.artifacts import read_manifest
    from edgeresnet.models import ModelSpec, build_model, load_checkpoint, model_from_checkpoint

    source = build_model(ModelSpec("resnet18", 1000))
    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save({"model." + k: v for k, v in source.state_dict().items()}, weights)  # a wrapped (Lightning-style) file
    out = tmp_path / "imported.pt"
    code, stdout, err = run_cli(capsys, "import", weights, "--arch", "resnet18", "--num-classes", "3", "--out", out,
                                "--class-names", "cat,dog,bird", "--json", "-")
    assert code == 0, err
    report = json.loads(stdout)
    assert "head re-initialised" in report["notes"][0] and "1000 classes" in report["notes"][0]
    assert "note: classifier head re-initialised" in err
    model, spec = model_from_checkpoint(load_checkpoint(out))
    assert spec.num_classes == 3 and model.fc.out_features == 3
    assert torch.equal(model.state_dict()["layer3.0.conv1.weight"], source.state_dict()["layer3.0.conv1.weight"])
    manifest = read_manifest(out, required=True)
    assert manifest["command"] == "import" and manifest["preprocess"]["class_names"] == ["cat", "dog", "bird"]
    assert manifest["inputs"]["weights"]["path"] == str(weights)


def test_import_refuses_malicious_pickle_and_never_runs_it(capsys, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": RunsCode(marker)}, evil)
    code, _, err = run_cli(capsys, "import", evil, "--arch", "resnet18", "--num-classes", "10",
                           "--out", tmp_path / "m.pt")
    assert_one_line_error(code, err, "evil.pth", "refused")
    assert not marker.exists()
    assert not (tmp_path / "m.pt").exists()
    # the same file as MODEL of evaluate or --init of train
    evil_checkpoint = tmp_path / "evil.pt"
    evil_checkpoint.write_bytes(evil.read_bytes())
    code, _, err = run_cli(capsys, "evaluate", evil_checkpoint)
    assert_one_line_error(code, err, "refused")
    code, _, err = run_cli(capsys, "train", "--init", evil, "--out", tmp_path / "run", "--no-progress")
    assert_one_line_error(code, err, "refused")
    assert not marker.exists()


def test_import_truncated_and_wrong_arch(capsys, tmp_path):
    from edgeresnet.models import ModelSpec, build_model

    weights = tmp_path / "r18.pth"
    torch.save(build_model(ModelSpec("resnet18", 10)).state_dict(), weights)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, _, err = run_cli(capsys, "import", truncated, "--arch", "resnet18", "--num-classes", "10",
                           "--out", tmp_path / "a.pt")
    assert_one_line_error(code, err, "truncated.pth", "truncated or not a PyTorch file")
    code, _, err = run_cli(capsys, "import", weights, "--arch", "resnet50", "--num-classes", "10",
                           "--out", tmp_path / "b.pt")
    assert_one_line_error(code, err, "r18.pth", "resnet50", "--arch")
    code, _, err = run_cli(capsys, "import", tmp_path / "none.pth", "--arch", "resnet18", "--num-classes", "10",
                           "--out", tmp_path / "c.pt")
    assert_one_line_error(code, err, "none.pth", "not found")
    code, _, err = run_cli(capsys, "import", weights, "--arch", "resnet18", "--num-classes", "0",
                           "--out", tmp_path / "d.pt")
    assert_one_line_error(code, err, "--num-classes 0")
    code, _, err = run_cli(capsys, "import", weights, "--arch", "resnet18", "--num-classes", "10", "--image-size", "-1",
                           "--out", tmp_path / "e.pt")
    assert_one_line_error(code, err, "--image-size -1")
    code, _, err = run_cli(capsys, "import", weights, "--arch", "resnet18", "--num-classes", "3",
                           "--class-names", "a,b", "--out", tmp_path / "f.pt")
    assert_one_line_error(code, err, "--class-names", "2 name(s)")
    assert not list(tmp_path.glob("[a-f].pt"))


# -- evaluate ---------------------------------------------------------------------------------------


def test_evaluate_checkpoint_json_and_png(capsys, tmp_path, tiny_checkpoint):
    code, stdout, err = run_cli(capsys, "evaluate", tiny_checkpoint, "--data", "digits", "--limit", "24",
                                "--out", tmp_path, "--json", "-")
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["n"] == 24 and metrics["split"] == "test" and len(metrics["per_class"]) == 10
    assert set(metrics) >= {"top1", "top5", "macro", "weighted", "confusion_matrix", "outputs"}
    assert (tmp_path / "best-pt-test-confusion.png").exists()
    assert "confusion matrix" in err and "per class" in err
    json_file = tmp_path / "m.json"
    code, stdout, _ = run_cli(capsys, "evaluate", tiny_checkpoint, "--limit", "8", "--no-plot", "--out", tmp_path,
                              "--json", json_file)
    assert code == 0 and json.loads(json_file.read_text())["n"] == 8 and "top-1" in stdout


def test_evaluate_hostile_models(capsys, tmp_path, tiny_checkpoint):
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "missing.pt")
    assert_one_line_error(code, err, "missing.pt", "not found")
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    code, _, err = run_cli(capsys, "evaluate", truncated)
    assert_one_line_error(code, err, "cut.pt", "truncated")
    code, _, err = run_cli(capsys, "evaluate", tiny_checkpoint, "--batch-size", "0")
    assert_one_line_error(code, err, "--batch-size 0")
    code, _, err = run_cli(capsys, "evaluate", tiny_checkpoint, "--data", tmp_path / "nowhere")
    assert_one_line_error(code, err, "nowhere", "not found")
    text = tmp_path / "model.txt"
    text.write_text("hello")
    code, _, err = run_cli(capsys, "evaluate", text)
    assert_one_line_error(code, err, "model.txt", "unknown model file type")


# -- demo -------------------------------------------------------------------------------------------


def test_demo_train_and_evaluate_stages_fast(tmp_path):
    """The first two stages through ``run_demo`` (the CLI test below runs every stage)."""
    import io

    from rich.console import Console

    from edgeresnet.demo import STAGES, run_demo

    out = tmp_path / "runs" / "demo"  # parents are created, like the default runs/demo on a fresh clone
    text = io.StringIO()
    stages = [s for s in STAGES if s.name in ("train", "evaluate")]
    report = run_demo(out, fast=True, progress=False, console=Console(file=text, width=200), stages=stages)
    assert [s["name"] for s in report["stages"]] == ["train", "evaluate"]
    training, evaluation = report["stages"][0]["numbers"], report["stages"][1]["numbers"]
    assert training["steps"] == 2 and Path(training["checkpoint"]).exists()
    assert evaluation["n"] == 64 and 0 <= evaluation["top1"] <= 100 and evaluation["target_top1"] == 95.0
    assert (out / "evaluate" / "best-pt-test-confusion.png").exists()
    printed = text.getvalue()
    assert "demo summary" in printed and f"all outputs are in {out}" in printed and "train/best.pt" in printed


def test_demo_compression_headlines_carry_the_measured_accuracy():
    from edgeresnet.demo import int8_headline, prune_headline

    prune = {"macs": {"kept": 0.4999}, "params": {"kept": 0.484}, "accuracy": {"before": 99.628, "after": 99.257}}
    assert prune_headline(prune) == ("pruned to 50.0 % of the MACs, 48.4 % of the params: test top-1 99.26 % vs "
                                     "99.63 % unpruned (-0.37 pt)")
    ptq = {"accuracy": {"test": {"fp32_top1": 99.628, "int8_top1": 98.884}}}
    qat = {"accuracy": {"test": {"fp32_top1": 99.628, "int8_top1": 99.628}}}
    assert int8_headline({"PTQ": ptq, "QAT": qat, "missing": {}}) == (
        "INT8 test top-1 vs FP32 99.63 %: PTQ 98.88 % (-0.74 pt), QAT 99.63 % (+0.00 pt); each passed the "
        "--max-drop gate")


@pytest.mark.slow  # every stage of the pipeline (prune, INT8, engines, benchmarks): minutes on 2 cores
def test_demo_fast_runs_every_stage(capsys, tmp_path):
    out = tmp_path / "demo"
    code, stdout, err = run_cli(capsys, "demo", "--fast", "--out", out, "--no-progress", "--json", "-")
    assert code == 0, err
    report = json.loads(stdout)
    from edgeresnet.demo import STAGES

    assert [s["name"] for s in report["stages"]] == [s.name for s in STAGES]
    assert (out / "train" / "best.pt").exists() and (out / "evaluate" / "best-pt-test-confusion.png").exists()
    assert "demo summary" in err and f"all outputs are in {out}" in err
    stages = {s["name"]: s for s in report["stages"]}
    assert "test top-1" in stages["prune"]["headline"] and "INT8 test top-1 vs FP32" in stages["quantize"]["headline"]
