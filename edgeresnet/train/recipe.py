"""The training recipe: one flat dataclass, loadable from YAML, with command-line flags overriding the file.

Flat on purpose: every field is one flag (``label_smoothing`` <-> ``--label-smoothing``) and one YAML key, so
the three places a setting can come from (defaults, ``--config recipe.yaml``, flags) merge by name, and the
effective recipe saved beside a checkpoint can be fed back with ``--config`` to repeat the run.
Pure: imports no heavy library.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "exponential", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
MONITORS = ("val_acc", "val_loss")
DEVICES = ("auto", "cpu", "cuda")
# Fields that define the model and its data; a resumed run must not change them.
STRUCTURAL = ("data", "image_size", "split_seed", "arch", "small_stem", "stem_stride", "dropout")


@dataclass
class TrainRecipe:
    """Everything that decides a training run.

    The defaults are the demo's recipe: ResNet18 (standard stem) from scratch on digits at 32 px, SGD with
    Nesterov momentum, one warm-up epoch then cosine, label smoothing 0.1, 6 epochs of batch 32. Measured:
    99.3 % test top-1 (seeds 0 and 1) at about 25 s of one CPU core per epoch.
    """

    # data and model
    data: str = "digits"  # "digits" (embedded) or an ImageFolder directory
    image_size: int = 32
    split_seed: int = 0  # seed of the train/val/test split (apart from ``seed``: every command sees one test set)
    arch: str = "resnet18"
    small_stem: bool = False  # 3x3 stride-1 stem without max-pool (costs ~7x the compute at 32 px)
    stem_stride: int = 1  # of the small stem: 2 is a 3x3 stride-2 stem (about 2x the ImageNet stem's compute)
    dropout: float = 0.0  # before the classifier
    init: str | None = None  # weights to start from (checkpoint, torchvision or timm state dict)
    freeze_backbone: bool = False  # train only the classifier head (``fc``); backbone BN statistics frozen too
    backbone_lr_mult: float = 1.0  # learning rate of everything but ``fc`` = lr * this
    # optimisation
    epochs: int = 6
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # SGD momentum; RMSprop momentum; Adam/AdamW beta1
    nesterov: bool = True  # SGD only
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = False  # by default BN weights and biases get no weight decay
    l1: float = 0.0  # L1 penalty on conv/linear weights, added to the loss
    label_smoothing: float = 0.1
    schedule: str = "cosine"
    warmup_epochs: float = 1.0  # linear warm-up from ~0 to lr, per step
    step_size: float = 10.0  # "step": multiply the LR by gamma every step_size epochs
    gamma: float = 0.1  # "step" and "exponential" (per epoch) decay factor
    min_lr: float = 0.0  # "cosine": the LR it decays to
    accumulate: int = 1  # gradient accumulation: micro-batches per optimizer step
    precision: str = "fp32"  # fp32 | bf16 (autocast; CPU or CUDA) | fp16 (CUDA, with a gradient scaler)
    # augmentation: ``None`` keeps the data set's preset (digits: mild crops and rotation, no flips)
    augment: bool = True
    random_resized_crop: bool | None = None
    crop_scale_min: float | None = None
    hflip: bool | None = None
    rotation: float | None = None  # degrees
    color_jitter: float | None = None  # brightness/contrast/saturation strength
    random_erasing: float | None = None  # probability
    # run control
    monitor: str = "val_acc"  # what "best" means, and what early stopping watches
    early_stop: int = 0  # patience in epochs without improvement; 0 = off
    min_delta: float = 0.0  # smallest change of the monitored value that counts as improvement
    max_steps: int | None = None  # stop after this many optimizer steps in total (smoke runs, time budgets)
    seed: int = 0  # initialisation, shuffling and augmentation
    shuffle: bool = True  # reshuffle the training set every epoch (off: a fixed order, for exact comparisons)
    device: str = "auto"  # auto = CUDA when available
    workers: int = 0  # DataLoader worker processes
    sync_bn: bool = False  # SyncBatchNorm across processes in a multi-GPU (torchrun) run; CUDA only
    channels_last: bool = False  # NHWC weights and batches: oneDNN's faster convolution layout on CPUs
    compile: bool = False  # torch.compile the training forward/backward (a one-off compile of about a minute)

    def __post_init__(self) -> None:
        check_recipe(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_spec(self, num_classes: int) -> Any:
        """The ``ModelSpec`` this recipe trains: the one place a recipe becomes a model description."""
        from edgeresnet.models import ModelSpec

        return ModelSpec(self.arch, num_classes, self.small_stem, self.dropout, self.stem_stride)

    def replace(self, **changes: Any) -> TrainRecipe:
        return dataclasses.replace(self, **changes)


# The recipe for 28 px IDX data (Fashion-MNIST, MNIST, KMNIST): ResNet18 within 40 minutes of 2 CPU cores.
# benchmarks/recipes/fashion_mnist_resnet18.yaml says why each value (and tests/test_config.py keeps the two equal).
IDX_RECIPE: dict[str, Any] = {"image_size": 28, "small_stem": True, "stem_stride": 2, "channels_last": True,
                              "compile": True, "epochs": 6, "batch_size": 128, "optimizer": "sgd", "lr": 0.1,
                              "momentum": 0.9, "nesterov": True, "weight_decay": 0.0005, "warmup_epochs": 0.5,
                              "schedule": "cosine", "label_smoothing": 0.1}


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(TrainRecipe))


def flag(name: str) -> str:
    """The command-line flag of a recipe field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def check_recipe(recipe: TrainRecipe, origin: dict[str, str] | None = None) -> None:
    """Raise a one-line UserError for the first value that makes no sense, naming where it came from."""
    origin = origin or {}

    def where(name: str) -> str:
        return origin.get(name) or flag(name)

    def fail(name: str, why: str) -> None:
        raise UserError(f"{where(name)} {getattr(recipe, name)!r}: {why}")

    for name in ("epochs", "batch_size", "image_size", "accumulate"):
        value = getattr(recipe, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(name, "must be a positive integer")
    if recipe.max_steps is not None and (isinstance(recipe.max_steps, bool) or not isinstance(recipe.max_steps, int)
                                         or recipe.max_steps < 1):
        fail("max_steps", "must be a positive integer (or left out)")
    for name in ("early_stop", "workers", "seed", "split_seed"):
        value = getattr(recipe, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail(name, "must be a non-negative integer")
    for name in ("lr", "backbone_lr_mult", "step_size"):
        value = getattr(recipe, name)
        if not _is_number(value) or not value > 0 or not math.isfinite(value):
            fail(name, "must be a positive number")
    for name in ("weight_decay", "l1", "warmup_epochs", "min_lr", "min_delta", "momentum"):
        value = getattr(recipe, name)
        if not _is_number(value) or value < 0 or not math.isfinite(value):
            fail(name, "must be a non-negative number")
    for name in ("dropout", "label_smoothing"):
        value = getattr(recipe, name)
        if not _is_number(value) or not 0 <= value < 1:
            fail(name, "must be in [0, 1)")
    if not _is_number(recipe.gamma) or not 0 < recipe.gamma <= 1:
        fail("gamma", "must be in (0, 1]")
    if recipe.momentum >= 1:
        fail("momentum", "must be below 1")
    if recipe.min_lr > recipe.lr:
        fail("min_lr", f"must not exceed --lr {recipe.lr}")
    for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("precision", PRECISIONS),
                          ("monitor", MONITORS), ("device", DEVICES)):
        if getattr(recipe, name) not in choices:
            fail(name, f"choose one of {', '.join(choices)}")
    if recipe.stem_stride not in (1, 2):
        fail("stem_stride", "must be 1 or 2")
    if recipe.stem_stride != 1 and not recipe.small_stem:
        fail("stem_stride", "applies to the small stem; add --small-stem")
    if recipe.arch not in ("resnet18", "resnet50"):
        fail("arch", "choose one of resnet18, resnet50")
    if not isinstance(recipe.data, str) or not recipe.data:
        fail("data", "pass 'digits', 'fashion-mnist', an ImageFolder directory or a directory of IDX files")
    if recipe.crop_scale_min is not None and not 0 < recipe.crop_scale_min <= 1:
        fail("crop_scale_min", "must be in (0, 1]")
    if recipe.rotation is not None and not 0 <= recipe.rotation <= 180:
        fail("rotation", "must be between 0 and 180 degrees")
    if recipe.color_jitter is not None and not 0 <= recipe.color_jitter <= 1:
        fail("color_jitter", "must be in [0, 1]")
    if recipe.random_erasing is not None and not 0 <= recipe.random_erasing <= 1:
        fail("random_erasing", "must be a probability in [0, 1]")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- YAML ------------------------------------------------------------------------------------------


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainRecipe)


def _coerce(name: str, value: Any, hint: Any, where: str) -> Any:
    """Check one YAML value against the field's type (ints are accepted where floats are wanted)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if optional:
            return None
        raise UserError(f"{where}: {name} needs a value; remove the key to keep the default")
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if _is_number(value):
            return float(value)
    elif base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(base, str(base))
    raise UserError(f"{where}: {name}: {value!r} is not {kind}; fix the value")


def read_yaml_file(path: str | Path, option: str, what: str) -> Any:
    """The parsed YAML of a file a user names with ``option``; a missing file, a directory or bad syntax is a
    one-line error naming the option, the file and (for syntax) the line."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise UserError(f"{option} {p}: file not found; check the path")
    if p.is_dir():
        raise UserError(f"{option} {p}: is a directory, expected a YAML {what} file")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{option} {p}: not valid YAML{at}; fix the syntax") from exc


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The recipe keys in a YAML file (``batch-size`` and ``batch_size`` both work); unknown keys are errors."""
    p = Path(path)
    data = read_yaml_file(p, "--config", "recipe")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {p}: expected a mapping of recipe keys (e.g. 'epochs: 10'), "
                        f"got {type(data).__name__}")
    known = field_names()
    hints = _field_types()
    values: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            raise UserError(f"--config {p}: unknown key {raw_key!r}{did_you_mean(key, known)}; see 'edgeresnet train --help' for the keys")
        values[key] = _coerce(key, value, hints[key], f"--config {p}")
    return values


def did_you_mean(key: str, known: tuple[str, ...]) -> str:
    """`` (did you mean 'batch_size'?)`` for a near miss of a known name, else an empty string."""
    import difflib

    matches = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def merge_recipe(file_values: dict[str, Any] | None = None, flags: dict[str, Any] | None = None,
                 base: TrainRecipe | None = None, config_path: str | Path | None = None) -> TrainRecipe:
    """defaults (or ``base``) < file < flags; errors name the flag or the file key that holds the bad value."""
    values = dataclasses.asdict(base) if base is not None else {}
    origin: dict[str, str] = {}
    for key, value in (file_values or {}).items():
        values[key] = value
        origin[key] = f"--config {config_path}: {key}" if config_path else key
    for key, value in (flags or {}).items():
        if key not in field_names():
            raise UserError(f"{flag(key)}: not a recipe option")
        values[key] = value
        origin.pop(key, None)
    recipe = TrainRecipe.__new__(TrainRecipe)
    defaults = TrainRecipe.__dataclass_fields__
    for name, spec in defaults.items():
        default = spec.default if spec.default is not dataclasses.MISSING else None
        setattr(recipe, name, values.get(name, default))
    check_recipe(recipe, origin)
    return recipe


def recipe_to_yaml(recipe: TrainRecipe, header: str | None = None) -> str:
    """The effective recipe as YAML, in field order, loadable again with ``--config``."""
    import yaml

    body = yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=False)
    return (f"# {header}\n" if header else "") + body


def recipe_from_dict(data: dict[str, Any]) -> TrainRecipe:
    """A recipe stored in a checkpoint; keys this version does not know are ignored (newer files)."""
    known = set(field_names())
    return merge_recipe({k: v for k, v in data.items() if k in known})
