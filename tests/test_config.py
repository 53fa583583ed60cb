"""The training recipe: validation, YAML loading, flag-over-file merging, schedules and parameter groups."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from edgeresnet.errors import UserError
from edgeresnet.train.recipe import (
    TrainRecipe,
    field_names,
    flag,
    merge_recipe,
    read_recipe_file,
    recipe_from_dict,
    recipe_to_yaml,
)
from edgeresnet.train.schedule import lr_factor


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_defaults_are_valid_and_flat():
    recipe = TrainRecipe()
    assert recipe.arch == "resnet18" and recipe.data == "digits"
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in recipe.to_dict().values())
    assert flag("batch_size") == "--batch-size"


@pytest.mark.parametrize("field,value,fragment", [
    ("epochs", 0, "--epochs 0: must be a positive integer"),
    ("epochs", -3, "--epochs -3"),
    ("batch_size", 0, "--batch-size 0"),
    ("image_size", -32, "--image-size -32"),
    ("lr", 0.0, "--lr 0.0: must be a positive number"),
    ("lr", -0.1, "--lr -0.1"),
    ("accumulate", 0, "--accumulate 0"),
    ("max_steps", 0, "--max-steps 0"),
    ("dropout", 1.0, "--dropout 1.0: must be in [0, 1)"),
    ("label_smoothing", -0.1, "--label-smoothing"),
    ("weight_decay", -1e-4, "--weight-decay"),
    ("optimizer", "lamb", "choose one of sgd, adam, adamw, rmsprop"),
    ("schedule", "poly", "choose one of cosine, step, exponential, constant"),
    ("precision", "int8", "--precision 'int8'"),
    ("momentum", 1.0, "must be below 1"),
    ("gamma", 0.0, "--gamma 0.0"),
    ("min_lr", 1.0, "must not exceed --lr"),
])
def test_bad_values_are_one_line_errors_naming_the_flag(field, value, fragment):
    with pytest.raises(UserError) as exc:
        TrainRecipe(**{field: value})
    assert fragment in one_line(exc)


def _read_error(tmp_path: Path, text: str, name: str = "r.yaml") -> tuple[str, Path]:
    """The one-line error of reading ``text`` as a recipe file, and that file's path."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError) as exc:
        read_recipe_file(path)
    return one_line(exc), path


def test_yaml_unknown_key_names_key_and_file(tmp_path):
    message, path = _read_error(tmp_path, "epochs: 3\nlearning_rate: 0.1\n", "recipe.yaml")
    assert "'learning_rate'" in message and str(path) in message


def test_yaml_typo_suggests_the_key(tmp_path):
    assert "did you mean 'label_smoothing'" in _read_error(tmp_path, "label_smothing: 0.1\n")[0]


@pytest.mark.parametrize("text,fragment", [
    ("epochs: ten\n", "epochs: 'ten' is not an integer"),
    ("epochs: [1, 2\n", "not valid YAML at line"),
    ("- epochs\n- 3\n", "expected a mapping"),
    ("nesterov: 3\n", "nesterov: 3 is not true or false"),
    ("lr:\n", "lr needs a value"),
])
def test_yaml_bad_values(tmp_path, text, fragment):
    assert fragment in _read_error(tmp_path, text)[0]


def test_yaml_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_recipe_file(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="is a directory"):
        read_recipe_file(tmp_path)


def test_merge_order_defaults_file_flags(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("epochs: 7\nbatch-size: 16\noptimizer: adamw\nlr: 1   # an int is fine for a float\nrotation: 5\n")
    values = read_recipe_file(path)
    recipe = merge_recipe(values, {"epochs": 2}, config_path=path)
    assert recipe.epochs == 2  # flag beats file
    assert recipe.batch_size == 16 and recipe.optimizer == "adamw"  # file beats default
    assert recipe.lr == 1.0 and isinstance(recipe.lr, float)
    assert recipe.rotation == 5.0
    assert recipe.weight_decay == TrainRecipe().weight_decay  # untouched default


def test_file_value_errors_name_the_file_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("epochs: 0\n")
    with pytest.raises(UserError) as exc:
        merge_recipe(read_recipe_file(path), {}, config_path=path)
    assert f"--config {path}: epochs 0" in one_line(exc)
    # the same value given as a flag names the flag
    with pytest.raises(UserError, match="^--epochs 0"):
        merge_recipe(read_recipe_file(path), {"epochs": 0}, config_path=path)


def test_effective_recipe_yaml_round_trips(tmp_path):
    recipe = TrainRecipe(epochs=3, optimizer="rmsprop", hflip=False, crop_scale_min=0.5, init=None, max_steps=9)
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe_to_yaml(recipe, "effective"))
    again = merge_recipe(read_recipe_file(path), config_path=path)
    assert again == recipe
    assert recipe_from_dict({**recipe.to_dict(), "a_future_key": 1}) == recipe
    assert set(read_recipe_file(path)) == set(field_names())


def _sched(**kw):
    base = dict(epochs=10, lr=0.1, warmup_epochs=0.0)
    return TrainRecipe(**{**base, **kw})


def test_linear_warmup_then_cosine_to_min_lr():
    recipe = _sched(schedule="cosine", warmup_epochs=2, min_lr=0.001)
    spe = 5
    warm = [lr_factor(s, spe, recipe) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr_factor(10, spe, recipe) == pytest.approx(1.0)
    assert lr_factor(49, spe, recipe) * recipe.lr == pytest.approx(0.001, abs=2e-4)
    values = [lr_factor(s, spe, recipe) for s in range(10, 50)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone decay after warm-up


def test_step_and_exponential_and_constant():
    spe = 4
    step = _sched(schedule="step", step_size=3, gamma=0.1)
    assert lr_factor(0, spe, step) == 1.0
    assert lr_factor(3 * spe - 1, spe, step) == 1.0
    assert lr_factor(3 * spe, spe, step) == pytest.approx(0.1)
    assert lr_factor(6 * spe, spe, step) == pytest.approx(0.01)
    expo = _sched(schedule="exponential", gamma=0.5)
    assert lr_factor(2 * spe, spe, expo) == pytest.approx(0.25)
    assert lr_factor(spe // 2, spe, expo) == pytest.approx(math.sqrt(0.5))
    assert lr_factor(17, spe, _sched(schedule="constant")) == 1.0


def test_param_groups_exclude_bn_and_bias_from_decay_and_scale_backbone_lr():
    import torch

    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.train.optim import freeze_backbone, make_optimizer, param_groups

    model = build_model(ModelSpec("resnet18", 10))
    recipe = TrainRecipe(weight_decay=1e-4, backbone_lr_mult=0.1, lr=0.2)
    groups = {g["group"]: g for g in param_groups(model, recipe)}
    assert set(groups) == {"backbone/decay", "backbone/no_decay", "head/decay", "head/no_decay"}
    assert groups["backbone/no_decay"]["weight_decay"] == 0.0 and groups["head/no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim <= 1 for p in groups["backbone/no_decay"]["params"])
    assert all(p.ndim > 1 for p in groups["backbone/decay"]["params"])
    assert groups["backbone/decay"]["lr"] == pytest.approx(0.02) and groups["head/decay"]["lr"] == pytest.approx(0.2)
    n_params = sum(1 for _ in model.parameters())
    assert sum(len(g["params"]) for g in groups.values()) == n_params
    everything = param_groups(model, dataclasses.replace(recipe, decay_norm_and_bias=True))
    assert all(g["weight_decay"] == 1e-4 for g in everything)
    for name in ("sgd", "adam", "adamw", "rmsprop"):
        opt = make_optimizer(model, dataclasses.replace(recipe, optimizer=name))
        assert isinstance(opt, torch.optim.Optimizer)
    frozen = freeze_backbone(model)
    assert frozen == n_params - 2
    assert {g["group"] for g in param_groups(model, recipe)} == {"head/decay", "head/no_decay"}


def test_the_idx_recipe_is_the_benchmark_recipe_and_the_demo_uses_it():
    """One recipe for 28 px IDX data: the package's IDX_RECIPE, the benchmark's YAML and `demo --data` agree."""
    from pathlib import Path

    from edgeresnet.demo import demo_recipe
    from edgeresnet.train.recipe import IDX_RECIPE, TrainRecipe, read_recipe_file

    values = read_recipe_file(Path(__file__).resolve().parents[1] / "benchmarks/recipes/fashion_mnist_resnet18.yaml")
    assert values.pop("data") == "fashion-mnist" and values == IDX_RECIPE
    assert demo_recipe(False, None, "fashion-mnist") == TrainRecipe(**IDX_RECIPE, data="fashion-mnist")
    assert demo_recipe(False) == TrainRecipe()  # digits: the training defaults, as before
    quick = demo_recipe(True, None, "/data/mnist")
    assert quick.max_steps == 2 and not quick.compile and quick.stem_stride == 2 and quick.data == "/data/mnist"
