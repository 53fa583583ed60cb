"""The search space of ``edgeresnet tune``: a YAML mapping of ``TrainRecipe`` fields to distributions.

::

    lr:            {type: loguniform, low: 0.001, high: 0.3}
    weight_decay:  {type: float, low: 0.0, high: 0.001}
    batch_size:    {type: int, low: 16, high: 64, step: 16}
    optimizer:     {type: categorical, choices: [sgd, adamw]}

Checked here, before any training, so a bad space is one line naming the parameter. ``grid`` runs every
combination in file order (a float range needs ``step`` or ``num`` points, a loguniform range ``num``
points); ``bayes`` asks Optuna for each value (``ParamSpec.suggest``).
"""

from __future__ import annotations

import itertools
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.errors import UserError

PARAM_TYPES = ("float", "int", "categorical", "loguniform")
_SPEC_KEYS = {"type", "low", "high", "choices", "step", "num", "log"}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter's distribution; frozen, so a space compares by value (a shared study's fingerprint)."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    step: float | None = None
    num: int | None = None
    log: bool = False

    @property
    def is_log(self) -> bool:
        return self.type == "loguniform" or self.log

    def grid(self) -> list[Any]:
        """The values a grid search tries, in order."""
        if self.type == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.type == "int":
            step = int(self.step or 1)
            if self.is_log and self.num:
                return sorted({int(round(v)) for v in np.geomspace(self.low, self.high, self.num)})
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.num:
            points = np.geomspace(self.low, self.high, self.num) if self.is_log else np.linspace(self.low, self.high, self.num)
            return [float(f"{v:.6g}") for v in points]
        count = int(math.floor((self.high - self.low) / float(self.step) + 1e-9)) + 1  # type: ignore[arg-type]
        return [float(f"{self.low + i * float(self.step):.6g}") for i in range(count)]  # type: ignore[arg-type]

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this parameter (TPE models the distribution; grid trials are enqueued)."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high),  # type: ignore[arg-type]
                                     step=1 if self.is_log else int(self.step or 1), log=self.is_log)
        return trial.suggest_float(self.name, float(self.low), float(self.high),  # type: ignore[arg-type]
                                   step=None if self.is_log else self.step, log=self.is_log)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update({"low": self.low, "high": self.high})
            for key in ("step", "num"):
                if getattr(self, key) is not None:
                    out[key] = getattr(self, key)
            if self.log:
                out["log"] = True
        return out


def _base_type(hint: Any) -> Any:
    args = typing.get_args(hint)
    return next((a for a in args if a is not type(None)), hint) if args else hint


def _num(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def parse_space(data: Any, where: str = "--space") -> dict[str, ParamSpec]:
    """Validate a search-space mapping; every problem is one line naming the parameter."""
    from edgeresnet.train.recipe import TrainRecipe, did_you_mean, field_names

    if not isinstance(data, dict) or not data:
        raise UserError(f"{where}: expected a mapping of recipe fields to distributions, e.g. "
                        "'lr: {type: loguniform, low: 0.001, high: 0.3}'")
    known = field_names()
    hints = typing.get_type_hints(TrainRecipe)
    space: dict[str, ParamSpec] = {}
    for raw_name, raw in data.items():
        name = str(raw_name).replace("-", "_")
        if name not in known:
            raise UserError(f"{where}: unknown parameter {raw_name!r}{did_you_mean(name, known)}; parameters are TrainRecipe fields, "
                            "see 'edgeresnet train --help'")
        at = f"{where}: {raw_name}"
        if not isinstance(raw, dict):
            raise UserError(f"{at}: expected a mapping such as {{type: float, low: 0.0, high: 0.1}}, got {raw!r}")
        extra = set(map(str, raw)) - _SPEC_KEYS
        if extra:
            raise UserError(f"{at}: unknown key(s) {', '.join(sorted(extra))}; use type, low, high, choices, step, num, log")
        kind = raw.get("type")
        if kind not in PARAM_TYPES:
            raise UserError(f"{at}: type {kind!r} is not known; use one of {', '.join(PARAM_TYPES)}")
        base = _base_type(hints[name])
        if kind == "categorical":
            choices = raw.get("choices")
            if not isinstance(choices, list) or not choices:
                raise UserError(f"{at}: categorical needs a non-empty list of choices, e.g. choices: [sgd, adamw]")
            if any(c is not None and not isinstance(c, (bool, int, float, str)) for c in choices):
                raise UserError(f"{at}: choices must be plain values (numbers, strings, true/false, null)")
            if len(set(map(repr, choices))) != len(choices):
                raise UserError(f"{at}: choices repeat a value; list each once")
            spec = ParamSpec(name, kind, choices=tuple(choices))
        else:
            if "choices" in raw:
                raise UserError(f"{at}: 'choices' belongs to type categorical; a {kind} range takes low and high")
            if base not in (int, float):
                raise UserError(f"{at}: {name} is a {base.__name__} field; use type categorical with choices")
            if kind in ("float", "loguniform") and base is int:
                raise UserError(f"{at}: {name} takes whole numbers; use type int")
            if "low" not in raw or "high" not in raw:
                raise UserError(f"{at}: a {kind} range needs low and high")
            low, high = _num(raw["low"], at, "low"), _num(raw["high"], at, "high")
            if not low < high:
                raise UserError(f"{at}: low ({low:g}) must be below high ({high:g})")
            log = bool(raw.get("log", False))
            if (kind == "loguniform" or log) and low <= 0:
                raise UserError(f"{at}: a log range needs low > 0 (got {low:g})")
            step = raw.get("step")
            if step is not None:
                step = _num(step, at, "step")
                if step <= 0 or step > high - low:
                    raise UserError(f"{at}: step {step:g} must be positive and at most high - low")
                if kind == "loguniform" or log:
                    raise UserError(f"{at}: step does not combine with a log range; use num for grid points")
            num = raw.get("num")
            if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 2):
                raise UserError(f"{at}: num must be a whole number >= 2 (grid points)")
            if kind == "int":
                if not (low.is_integer() and high.is_integer()) or (step is not None and not float(step).is_integer()):
                    raise UserError(f"{at}: an int range needs whole-number low, high and step")
                spec = ParamSpec(name, kind, int(low), int(high), step=int(step) if step else None, num=num, log=log)
            else:
                spec = ParamSpec(name, kind, low, high, step=step, num=num, log=log)
        space[name] = spec
    return space


def load_space(path: str | Path) -> dict[str, ParamSpec]:
    from edgeresnet.train.recipe import read_yaml_file

    return parse_space(read_yaml_file(path, "--space", "search-space"), f"--space {Path(path)}")


def grid_points(space: dict[str, ParamSpec], where: str = "--space") -> list[dict[str, Any]]:
    """Every combination, first parameter slowest; float ranges without step/num cannot be gridded."""
    for spec in space.values():
        if spec.type in ("float", "loguniform") and spec.step is None and spec.num is None:
            raise UserError(f"{where}: {spec.name}: --method grid needs grid points for a {spec.type} range; "
                            "add 'num: N' (or 'step' for a linear range), or use --method bayes")
    names = list(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(space[n].grid() for n in names))]


def check_space_against(space: dict[str, ParamSpec], base: Any, where: str = "--space") -> None:
    """Every end point of every range must make a valid recipe on its own (a typo like lr high: 50 fails here)."""
    from edgeresnet.train.recipe import merge_recipe

    for spec in space.values():
        values = list(spec.choices) if spec.type == "categorical" else [spec.low, spec.high]
        for value in values:
            try:
                merge_recipe(flags={spec.name: value}, base=base)
            except UserError as exc:
                raise UserError(f"{where}: {spec.name} = {value!r} is not a valid recipe value ({exc})") from None

