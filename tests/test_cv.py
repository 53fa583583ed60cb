"""k-fold cross-validation: the fold arithmetic (pure), a real run on digits, the CLI and its errors.

Real data throughout: the embedded digits at their native 8x8 pixels, ResNet18 with the small stem, one
optimizer step per fold (the numbers are not the point here; that the folds are right is).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import trim_splits
from edgeresnet.errors import UserError
from helpers_common import write_three_digit_classes

pytestmark = pytest.mark.usefixtures("torch_single_thread")


TINY = dict(image_size=8, small_stem=True, epochs=1, max_steps=1, batch_size=16, warmup_epochs=0, augment=False)


@pytest.fixture(scope="module")
def digits8():
    from edgeresnet.data import load_data

    return trim_splits(load_data("digits", 8, seed=0), {"train": 4, "val": 2, "test": 2})


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A real ImageFolder (3 classes x 8 PNGs of real digits) for the command line."""
    return write_three_digit_classes(tmp_path_factory.mktemp("digits_folder"))


# -- pure --------------------------------------------------------------------------------------------------


def test_folds_are_stratified_disjoint_and_cover_the_pool():
    from edgeresnet.experiments.cv import fold_indices, inner_split

    labels = [0] * 9 + [1] * 6 + [2] * 3
    folds = fold_indices(labels, 3, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(len(labels)))  # every image held out exactly once
    y = np.asarray(labels)
    for train, holdout in folds:
        assert not set(train) & set(holdout)
        assert sorted(y[holdout].tolist()).count(2) == 1  # 3 of class 2 over 3 folds: one each
        assert np.bincount(y[holdout], minlength=3).tolist() == [3, 2, 1]
        fit_part, select = inner_split(train, labels, 0.25, seed=1)
        assert sorted(np.concatenate([fit_part, select]).tolist()) == sorted(train.tolist())
        assert set(y[select]) == {0, 1, 2} and set(y[fit_part]) == {0, 1, 2}  # every class on both sides


def test_aggregate_is_mean_and_sample_std():
    from edgeresnet.experiments.cv import aggregate

    stats = aggregate([90.0, 92.0, 97.0])
    assert stats["mean"] == pytest.approx(93.0)
    assert stats["std"] == pytest.approx(np.std([90.0, 92.0, 97.0], ddof=1))
    assert aggregate([None, 1.0])["n"] == 1


@pytest.mark.parametrize("folds, message", [
    (1, "--folds 1: cross-validation needs at least 2 folds"),
    (4, "--folds 4: class 'c' has only 3 image(s) in train+val"),
])
def test_bad_fold_counts_are_one_line_errors(folds, message):
    from edgeresnet.experiments.cv import check_folds

    with pytest.raises(UserError) as err:
        check_folds([0] * 5 + [1] * 4 + [2] * 3, folds, ("a", "b", "c"))
    assert message in str(err.value) and "\n" not in str(err.value)


# -- a real run ---------------------------------------------------------------------------------------------


def test_cross_validate_trains_every_fold_and_leaves_test_alone(digits8, tmp_path):
    from edgeresnet.experiments.cv import cross_validate, write_report
    from edgeresnet.train.recipe import TrainRecipe

    recipe = TrainRecipe(**TINY)
    seen_epochs = []
    result = cross_validate(digits8, recipe, 2, inner_val=0.25,
                            on_epoch=lambda fold, record: seen_epochs.append((fold, record["epoch"])))
    assert [f.fold for f in result.folds] == [1, 2] and seen_epochs == [(1, 1), (2, 1)]
    pool = len(digits8.splits["train"]) + len(digits8.splits["val"])
    assert sum(f.sizes["holdout"] for f in result.folds) == pool
    for fold in result.folds:
        assert fold.sizes["fit"] + fold.sizes["select"] + fold.sizes["holdout"] == pool
        assert fold.metrics["n"] == fold.sizes["holdout"] and 0.0 <= fold.metrics["top1"] <= 100.0
        assert fold.checkpoint is None  # no out_dir: nothing but the report is kept
    top1 = [f.metrics["top1"] for f in result.folds]
    assert result.summary["top1"]["mean"] == pytest.approx(np.mean(top1))
    assert result.summary["top1"]["std"] == pytest.approx(np.std(top1, ddof=1))
    outputs = write_report(result, tmp_path)
    report = json.loads(Path(outputs["cv_json"]).read_text())
    assert report["k"] == 2 and len(report["folds"]) == 2
    assert json.loads(Path(outputs["cv_json"] + ".json").read_text())["kind"] == "cv-report"


# -- command line ---------------------------------------------------------------------------------------------


def test_cv_command_end_to_end(folder, tmp_path, capsys):
    from edgeresnet.cli.main import main

    out = tmp_path / "cv"
    with pytest.raises(SystemExit) as done:
        main(["cv", "--data", str(folder), "--folds", "2", "--image-size", "8", "--small-stem", "--epochs", "1",
              "--max-steps", "1", "--batch-size", "4", "--no-augment", "--out", str(out), "--no-progress",
              "--json", "-"])
    assert done.value.code in (0, None)
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "edgeresnet.experiments.cv/1" and report["k"] == 2
    assert set(report["summary"]["top1"]) >= {"mean", "std", "values"}
    assert (out / "cv.json").exists() and (out / "folds.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--folds", "1"], "--folds 1: cross-validation needs at least 2 folds"),
    (["--folds", "9"], "--folds 9: class 'd0' has only 7 image(s) in train+val"),
])
def test_cv_command_rejects_bad_folds(folder, tmp_path, capsys, args, message):
    from edgeresnet.cli.main import main

    with pytest.raises(SystemExit) as err:
        main(["cv", "--data", str(folder), "--image-size", "8", "--out", str(tmp_path / "cv"), "--no-progress", *args])
    assert err.value.code == 2
    stderr = capsys.readouterr().err
    assert message in stderr and stderr.count("\n") == 1
