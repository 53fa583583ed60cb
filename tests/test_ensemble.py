"""Ensembles: the combination rules, the one-line refusals, and a real export -> ONNX Runtime evaluation.

Members are real checkpoints: ResNet18 (small stem) trained for one step on digits at their native 8x8
pixels by the real training loop, with different seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import trim_splits
from edgeresnet.errors import UserError

pytestmark = pytest.mark.usefixtures("torch_single_thread")


class _Fixed(torch.nn.Module):
    """A member whose logits are given: the combination rules are checked on known numbers."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: x.shape[0]]


A = [[10.0, 0.0, 0.0], [0.0, 2.0, 0.1]]
B = [[0.0, 1.0, 0.0], [0.0, 2.5, 0.0]]
C = [[0.0, 0.9, 0.0], [3.0, 0.0, 0.0]]


def _probs(logits):
    return torch.softmax(torch.tensor(logits), dim=1)


def test_average_and_weighted_are_log_of_mean_probabilities():
    from edgeresnet.experiments.ensemble import EnsembleModule

    x = torch.zeros(2, 3, 8, 8)
    out = EnsembleModule([_Fixed(A), _Fixed(B)], "average")(x)
    assert torch.allclose(out.exp(), (_probs(A) + _probs(B)) / 2, atol=1e-6)
    out = EnsembleModule([_Fixed(A), _Fixed(B)], "weighted", [3.0, 1.0])(x)
    assert torch.allclose(out.exp(), 0.75 * _probs(A) + 0.25 * _probs(B), atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-6)


def test_vote_is_the_majority_of_top1_with_probability_tie_break():
    from edgeresnet.experiments.ensemble import EnsembleModule

    x = torch.zeros(2, 3, 8, 8)
    out = EnsembleModule([_Fixed(A), _Fixed(B), _Fixed(C)], "vote")(x)
    # image 0: votes 0,1,1 -> class 1 although A is very sure of 0 (averaging would say 0)
    # image 1: votes 1,1,0 -> class 1
    assert out.argmax(1).tolist() == [1, 1]
    assert EnsembleModule([_Fixed(A), _Fixed(B), _Fixed(C)], "average")(x).argmax(1).tolist()[0] == 0
    # two members that disagree: one vote each, the averaged probability decides
    tie = EnsembleModule([_Fixed(A), _Fixed(B)], "vote")(x)
    assert tie.argmax(1)[0].item() == int(((_probs(A) + _probs(B)) / 2)[0].argmax())
    assert torch.isfinite(tie).all() and torch.allclose(tie.exp().sum(1), torch.ones(2), atol=1e-6)


@pytest.mark.parametrize("text, method, message", [
    ("1,2", "average", "--weights: --method average weighs every model equally"),
    ("1,2,3", "weighted", "--weights: 3 weight(s) for 2 models"),
    ("1,-2", "weighted", "every weight must be a positive number"),
    ("a,b", "vote", "--weights a,b: expected comma-separated numbers"),
    ("1,1", "median", "--method median: choose one of average, weighted, vote"),
])
def test_bad_weights_are_one_line_errors(text, method, message):
    from edgeresnet.experiments.ensemble import parse_weights

    with pytest.raises(UserError) as err:
        parse_weights(text, 2, method)
    assert message in str(err.value)


def test_members_must_share_classes_and_preprocessing():
    from edgeresnet.data.presets import preset_for
    from edgeresnet.experiments.ensemble import check_members

    ten = preset_for("digits", 8, tuple("0123456789")).to_dict()
    photo = preset_for("folder", 8, tuple("0123456789")).to_dict()
    with pytest.raises(UserError, match=r"b\.pt has 5 classes but a\.pt has 10"):
        check_members(["a.pt", "b.pt"], [10, 5], [ten, ten])
    with pytest.raises(UserError, match=r"b\.pt and a\.pt differ in preprocessing \(resize, mean, std\)"):
        check_members(["a.pt", "b.pt"], [10, 10], [ten, photo])
    with pytest.raises(UserError, match="needs at least 2"):
        check_members(["a.pt"], [10], [ten])


# -- real checkpoints ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    from edgeresnet.data import load_data
    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.train import fit, seed_everything
    from edgeresnet.train.recipe import TrainRecipe
    from edgeresnet.train.state import save_checkpoint

    splits = trim_splits(load_data("digits", 8, seed=0), {"train": 4, "val": 2, "test": 2})
    spec = ModelSpec("resnet18", 10, small_stem=True)
    paths = []
    for seed in (0, 1):
        recipe = TrainRecipe(image_size=8, small_stem=True, epochs=1, max_steps=1, batch_size=16, warmup_epochs=0,
                             augment=False, seed=seed)
        seed_everything(seed)
        result = fit(build_model(spec), splits, recipe, None, progress=False, spec=spec)
        path = tmp_path_factory.mktemp(f"member{seed}") / "best.pt"
        save_checkpoint(path, result.model, spec, splits.preprocess.to_dict(), recipe=recipe.to_dict(), epoch=1,
                        metrics={"val_acc": result.best_val_acc}, role="best")
        paths.append(path)
    return paths


def _run(args, capsys):
    from edgeresnet.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(args)
    captured = capsys.readouterr()
    return done.value.code or 0, captured.out, captured.err


def test_ensemble_exports_one_onnx_graph_and_evaluates_it(members, tmp_path, capsys):
    import onnx

    from edgeresnet.artifacts import read_manifest, sha256_file
    from edgeresnet.experiments.ensemble import build_ensemble, load_members
    from edgeresnet.runners import load_runner

    out = tmp_path / "ensemble.onnx"
    code, stdout, _ = _run(["ensemble", *map(str, members), "--method", "weighted", "--weights", "2,1", "--out", str(out),
                            "--opset", "17", "--dynamic-batch", "1:4:8", "--limit", "20", "--parity-images", "8",
                            "--no-progress", "--json", "-"], capsys)
    assert code == 0
    report = json.loads(stdout)
    assert report["ensemble"]["backend"] == "ort" and report["ensemble"]["n"] == 20
    assert report["weights"] == pytest.approx([2 / 3, 1 / 3])
    assert report["export"]["parity"]["passed"] is True
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    manifest = read_manifest(out)
    assert [m["sha256"] for m in manifest["ensemble"]["members"]] == [sha256_file(p) for p in members]
    assert {v["sha256"] for v in manifest["inputs"].values()} == {sha256_file(p) for p in members}
    assert manifest["ensemble"]["method"] == "weighted"
    # the file computes what the module computes, through the ordinary runner dispatch
    module = build_ensemble(load_members(members), "weighted", [2 / 3, 1 / 3])
    images = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with load_runner(out) as runner:
        got = runner.infer(images)
    with torch.inference_mode():
        want = module(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_ensemble_refuses_members_with_other_classes(members, tmp_path, capsys):
    from edgeresnet.models import ModelSpec, load_checkpoint, make_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(members[0])
    model, spec = model_from_checkpoint(ckpt)
    model.fc = torch.nn.Linear(model.fc.in_features, 5)
    five = dict(ckpt["preprocess"], class_names=list("01234"))
    other = tmp_path / "five.pt"
    torch.save(make_checkpoint(model, ModelSpec(spec.arch, 5, spec.small_stem), five), other)
    code, _, err = _run(["ensemble", str(members[0]), str(other), "--no-progress"], capsys)
    assert code == 2
    assert f"error: ensemble: {other} has 5 classes but {members[0]} has 10" in err and err.count("\n") == 1


def test_ensemble_refuses_members_with_other_preprocessing(members, tmp_path, capsys):
    from edgeresnet.models import load_checkpoint

    ckpt = load_checkpoint(members[1])
    ckpt["preprocess"] = dict(ckpt["preprocess"], mean=[0.5, 0.5, 0.5], image_size=16, resize=16)
    other = tmp_path / "other-input.pt"
    torch.save(ckpt, other)
    code, _, err = _run(["ensemble", str(members[0]), str(other), "--no-progress"], capsys)
    assert code == 2
    assert f"error: ensemble: {other} and {members[0]} differ in preprocessing (image_size, resize, mean)" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("extra, message", [
    ([], "ensemble: 1 model(s) given; an ensemble needs at least 2"),
    (["--weights", "1,2,3"], "--weights: 3 weight(s) for 1 models"),
])
def test_ensemble_command_bad_input(members, capsys, extra, message):
    code, _, err = _run(["ensemble", str(members[0]), "--method", "vote", *extra, "--no-progress"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
