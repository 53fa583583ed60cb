"""Hyper-parameter search: the space file (pure checks), grid order, a real pruned search, the CLI.

Trials are real ``fit`` runs of ResNet18 (small stem) on digits at their native 8x8 pixels, a couple of
optimizer steps each. Pruning is shown deterministically: the grid runs in file order, the first two
trials train normally and the third has a learning rate too small to move, so at epoch 1 it is below the
median of the earlier trials and Optuna's MedianPruner stops it (measured: 20.0 and 16.7 % for the first
two at epoch 1, 10.0 % for the third).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import trim_splits
from edgeresnet.errors import UserError

# Only the head trains (BN statistics stay fixed): a few steps then move validation accuracy off chance.
BASE = dict(image_size=8, small_stem=True, epochs=2, batch_size=8, warmup_epochs=0, augment=False, schedule="constant",
            freeze_backbone=True)


pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def digits8():
    from edgeresnet.data import load_data

    return trim_splits(load_data("digits", 8, seed=0), {"train": 6, "val": 3, "test": 1})


# -- the space file ----------------------------------------------------------------------------------------


def test_space_parses_and_grids_in_file_order():
    from edgeresnet.experiments.tune_space import grid_points, parse_space

    space = parse_space({"lr": {"type": "loguniform", "low": 0.001, "high": 0.1, "num": 3},
                         "batch-size": {"type": "int", "low": 16, "high": 32, "step": 16},
                         "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]}})
    assert list(space) == ["lr", "batch_size", "optimizer"]
    assert space["lr"].grid() == pytest.approx([0.001, 0.01, 0.1])
    points = grid_points(space)
    assert len(points) == 12
    assert points[0] == {"lr": pytest.approx(0.001), "batch_size": 16, "optimizer": "sgd"}
    assert points[1]["optimizer"] == "adamw" and points[-1]["lr"] == pytest.approx(0.1)


@pytest.mark.parametrize("space, message", [
    ({"learning_rate": {"type": "float", "low": 0.1, "high": 0.2}},
     "unknown parameter 'learning_rate'; parameters are TrainRecipe fields"),
    ({"lrr": {"type": "float", "low": 0.1, "high": 0.2}}, "(did you mean 'lr'?)"),
    ({"lr": {"type": "normal", "low": 0.1, "high": 0.2}}, "type 'normal' is not known"),
    ({"lr": {"type": "float", "low": 0.2, "high": 0.1}}, "low (0.2) must be below high (0.1)"),
    ({"lr": {"type": "loguniform", "low": 0.0, "high": 0.1}}, "a log range needs low > 0"),
    ({"epochs": {"type": "float", "low": 1, "high": 3}}, "epochs takes whole numbers; use type int"),
    ({"optimizer": {"type": "float", "low": 1, "high": 3}}, "optimizer is a str field; use type categorical"),
    ({"optimizer": {"type": "categorical", "choices": []}}, "categorical needs a non-empty list of choices"),
    ({"lr": {"type": "float", "low": 0.1, "high": 0.2, "mean": 1}}, "unknown key(s) mean"),
    ([1, 2], "expected a mapping of recipe fields to distributions"),
])
def test_bad_spaces_are_one_line_errors(space, message):
    from edgeresnet.experiments.tune_space import parse_space

    with pytest.raises(UserError) as err:
        parse_space(space, "--space s.yaml")
    assert message in str(err.value) and str(err.value).startswith("--space s.yaml")


def test_space_values_must_make_valid_recipes_and_grids_need_points():
    from edgeresnet.experiments.tune_space import check_space_against, grid_points, parse_space
    from edgeresnet.train.recipe import TrainRecipe

    space = parse_space({"optimizer": {"type": "categorical", "choices": ["sgd", "lion"]}})
    with pytest.raises(UserError, match=r"optimizer = 'lion' is not a valid recipe value .*choose one of sgd"):
        check_space_against(space, TrainRecipe())
    with pytest.raises(UserError, match="--method grid needs grid points for a float range; add 'num: N'"):
        grid_points(parse_space({"lr": {"type": "float", "low": 0.1, "high": 0.2}}))


# -- real searches --------------------------------------------------------------------------------------------


def test_grid_search_prunes_a_hopeless_trial_and_writes_a_trainable_recipe(digits8, tmp_path):
    from edgeresnet.experiments.tune import tune, write_outputs
    from edgeresnet.experiments.tune_space import parse_space
    from edgeresnet.train.recipe import TrainRecipe, merge_recipe, read_recipe_file

    base = TrainRecipe(**BASE)
    space = parse_space({"lr": {"type": "categorical", "choices": [0.2, 0.1, 1e-9]}})
    epochs_seen: list[tuple[int, int]] = []
    result = tune(base, space, method="grid", prune=True, prune_startup=2, prune_warmup=0,
                  load_splits=lambda recipe: digits8, on_epoch=lambda n, r: epochs_seen.append((n, r["epoch"])))
    states = [t.state for t in result.trials]
    assert [t.params["lr"] for t in result.trials] == [0.2, 0.1, 1e-9]  # file order
    assert states[:2] == ["complete", "complete"]
    assert states[2] == "pruned" and result.trials[2].pruned_at == 1  # stopped after its first epoch
    assert (2, 2) not in epochs_seen and (0, 2) in epochs_seen
    assert result.best is not None and result.best.number in (0, 1)
    outputs = write_outputs(result, tmp_path)
    values = read_recipe_file(outputs["best_recipe"])  # what 'edgeresnet train --config' reads
    recipe = merge_recipe(values, config_path=outputs["best_recipe"])
    assert recipe.lr == result.best.params["lr"] and recipe.image_size == 8 and recipe.small_stem
    report = json.loads(Path(outputs["tune_json"]).read_text())
    assert report["counts"] == {"complete": 2, "pruned": 1, "failed": 0}


def test_bayes_search_samples_inside_the_space(digits8):
    from edgeresnet.experiments.tune import tune
    from edgeresnet.experiments.tune_space import parse_space
    from edgeresnet.train.recipe import TrainRecipe

    space = parse_space({"lr": {"type": "loguniform", "low": 0.01, "high": 0.1},
                         "weight_decay": {"type": "float", "low": 0.0, "high": 0.001}})
    result = tune(TrainRecipe(**{**BASE, "epochs": 1, "max_steps": 1}), space, method="bayes", trials=3, prune=False,
                  sampler_seed=3, load_splits=lambda recipe: digits8)
    assert len(result.trials) == 3 and all(t.state == "complete" for t in result.trials)
    for t in result.trials:
        assert 0.01 <= t.params["lr"] <= 0.1 and 0.0 <= t.params["weight_decay"] <= 0.001
    assert len({t.params["lr"] for t in result.trials}) == 3


# -- command line -----------------------------------------------------------------------------------------------


def _run(args, capsys):
    from edgeresnet.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(args)
    captured = capsys.readouterr()
    return done.value.code or 0, captured.out, captured.err


def test_tune_command_end_to_end(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: categorical, choices: [0.05, 0.1]}\n")
    out = tmp_path / "tune"
    code, stdout, _ = _run(["tune", "--space", str(space), "--method", "grid", "--image-size", "8", "--small-stem",
                            "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--no-augment", "--out", str(out),
                            "--no-progress", "--json", "-"], capsys)
    assert code == 0
    report = json.loads(stdout)
    assert report["method"] == "grid" and len(report["trials"]) == 2
    assert (out / "best-recipe.yaml").exists() and (out / "best-recipe.yaml.json").exists()
    assert (out / "trials.csv").read_text().splitlines()[0].startswith("trial,state,lr,best_val_acc")


@pytest.mark.parametrize("space_text, extra, message", [
    ("lr: {type: float, low: 0.01, high: 0.1}\n", ["--trials", "0"], "--trials 0: must be at least 1"),
    ("momentun: {type: float, low: 0.5, high: 0.9}\n", [], "unknown parameter 'momentun' (did you mean 'momentum'?)"),
    ("lr: {type: float, low: 0.01, high: 0.1}\n", ["--method", "random"], "--method random: choose grid or bayes"),
    ("lr: [0.01\n", [], "not valid YAML at line"),
])
def test_tune_command_bad_input(tmp_path, capsys, space_text, extra, message):
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    code, _, err = _run(["tune", "--space", str(space), "--out", str(tmp_path / "t"), "--no-progress", *extra], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
