"""Hyper-parameter search over the training recipe: grid, or Bayesian (Optuna's TPE), with median pruning.

The search space is a YAML mapping of ``TrainRecipe`` fields to distributions::

    lr:            {type: loguniform, low: 0.001, high: 0.3}
    weight_decay:  {type: float, low: 0.0, high: 0.001}
    batch_size:    {type: int, low: 16, high: 64, step: 16}
    optimizer:     {type: categorical, choices: [sgd, adamw]}

``grid`` runs every combination in file order (a float range needs ``step`` or ``num`` points, a
loguniform range ``num`` points); ``bayes`` samples ``--trials`` recipes with TPE. Every trial is a full
``fit`` on the same data with the same seed, so only the recipe differs; its per-epoch validation top-1 is
reported to Optuna's ``MedianPruner``, which stops trials that are below the median of earlier trials at
the same epoch. The objective is the best validation top-1 (percent) of the trial; the test split is
never looked at. The best recipe is written as YAML that ``edgeresnet train --config`` accepts.

A Bayesian search can be shared: ``storage`` (``sqlite:///study.db`` on one machine, ``postgresql://...`` for
many) and ``study_name`` put the study in Optuna's relational storage, so several processes work one study,
a crashed worker's trial is retried (heartbeats), and a later run resumes it. The study keeps the search's
fingerprint (space, method, base recipe) and refuses workers of another search.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.errors import UserError

PARAM_TYPES = ("float", "int", "categorical", "loguniform")
METHODS = ("grid", "bayes")
_SPEC_KEYS = {"type", "low", "high", "choices", "step", "num", "log"}


# -- the search space (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
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


# -- trials -------------------------------------------------------------------------------------------------


@dataclass
class TrialRecord:
    number: int
    state: str  # complete | pruned | failed
    params: dict[str, Any]
    value: float | None  # best validation top-1 (percent)
    best_epoch: int | None = None
    epochs_run: int = 0
    pruned_at: int | None = None
    seconds: float = 0.0
    error: str | None = None
    curve: list[float] = field(default_factory=list)  # validation top-1 per epoch

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.number, "state": self.state, "params": self.params, "best_val_acc": self.value,
                "best_epoch": self.best_epoch, "epochs_run": self.epochs_run, "pruned_at_epoch": self.pruned_at,
                "seconds": round(self.seconds, 2), "error": self.error, "val_acc_curve": self.curve}


@dataclass
class TuneResult:
    method: str
    space: dict[str, ParamSpec]
    trials: list[TrialRecord]
    base_recipe: dict[str, Any]
    best_recipe: Any | None  # TrainRecipe
    prune: bool
    sampler_seed: int
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    study: dict[str, Any] | None = None  # the shared study (--storage/--study): name, storage, fingerprint, ...
    best_number: int | None = None  # a shared study's best trial as Optuna's study.best_trial names it

    @property
    def best(self) -> TrialRecord | None:
        if self.best_number is not None:
            return next((t for t in self.trials if t.number == self.best_number), None)
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return max(done, key=lambda t: (t.value, -t.number)) if done else None

    def counts(self) -> dict[str, int]:
        return {state: sum(t.state == state for t in self.trials) for state in ("complete", "pruned", "failed")}

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {"schema": "edgeresnet.experiments.tune/1", "method": self.method, "objective": "best validation top-1 (%)",
                "prune": self.prune, "sampler_seed": self.sampler_seed,
                "space": {n: s.to_dict() for n, s in self.space.items()}, "counts": self.counts(),
                "best": best.to_dict() if best else None,
                "best_recipe": self.best_recipe.to_dict() if self.best_recipe is not None else None,
                "trials": [t.to_dict() for t in self.trials], "base_recipe": self.base_recipe, "notes": self.notes,
                "study": self.study, "duration_s": round(self.duration_s, 2)}


TrialHook = Callable[[int, int, dict[str, Any]], None]  # (trial number, planned trials, params) at the start
EpochHook = Callable[[int, dict[str, Any]], None]  # (trial number, fit's per-epoch record)
DoneHook = Callable[[TrialRecord], None]


def tune(base: Any, space: dict[str, ParamSpec], *, method: str = "bayes", trials: int | None = None,
         prune: bool = True, prune_startup: int = 3, prune_warmup: int = 1, sampler_seed: int = 0,
         load_splits: Callable[[Any], Any] | None = None, on_trial: TrialHook | None = None,
         on_epoch: EpochHook | None = None, on_done: DoneHook | None = None, where: str = "--space",
         storage: str | None = None, study_name: str | None = None, heartbeat_interval: int = 60,
         grace_period: int | None = None) -> TuneResult:
    """Run the search; ``load_splits(recipe)`` gives the data (cached per data set/size/split seed).

    With ``storage`` (a SQLAlchemy URL) and ``study_name`` the study lives in Optuna's relational storage:
    several processes on several machines work it together, each running ``trials`` more trials (Optuna's
    ``n_trials`` is per process), and the result (trials, best recipe) is the whole study's.
    """
    import optuna

    from edgeresnet.models import ModelSpec, build_model, import_weights
    from edgeresnet.train import fit, seed_everything
    from edgeresnet.train.recipe import merge_recipe

    started = time.perf_counter()
    if method not in METHODS:
        raise UserError(f"--method {method}: choose grid or bayes")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise UserError(f"--trials {trials}: must be at least 1")
    if prune_startup < 0 or prune_warmup < 0:
        raise UserError("--prune-startup/--prune-warmup: must be >= 0")
    if (storage is None) != (study_name is None):
        raise UserError("--storage and --study go together: the storage URL holds studies, --study names the "
                        "one the workers share")
    store = check_storage(storage) if storage is not None else None
    if store is not None and method == "grid":
        raise UserError("--method grid with --storage: a grid runs in one process, in file order; share a study "
                        "between workers with --method bayes")
    check_space_against(space, base, where)
    notes: list[str] = []
    if method == "grid":
        points = grid_points(space, where)
        planned = len(points) if trials is None else min(trials, len(points))
        if trials is not None and trials < len(points):
            notes.append(f"the grid has {len(points)} points; --trials {trials} ran the first {trials} in file order")
        elif trials is not None and trials > len(points):
            notes.append(f"the grid has only {len(points)} points; ran all of them")
        sampler: Any = optuna.samplers.RandomSampler(seed=sampler_seed)  # never used: every grid trial is enqueued
    else:
        points = []
        planned = trials if trials is not None else 20
        startup = max(2, min(10, planned // 3))
        if store is None:
            sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=startup)
        else:
            import warnings
            import zlib

            # Workers of one study must not share a seed, or their random start-up trials repeat each other.
            worker_seed = zlib.crc32(f"{sampler_seed}:{socket.gethostname()}:{os.getpid()}".encode())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # Optuna TPESampler docstring: constant_liar=True penalizes running trials "to avoid suggesting
                # parameter configurations nearby", for distributed optimization.
                sampler = optuna.samplers.TPESampler(seed=worker_seed, n_startup_trials=startup, constant_liar=True)
    pruner: Any = (optuna.pruners.MedianPruner(n_startup_trials=prune_startup, n_warmup_steps=prune_warmup + 1)
                   if prune else optuna.pruners.NopPruner())
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    created = False
    if store is None:
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    else:
        assert study_name is not None
        identity = search_identity(space, base, method)
        study, created = open_study(store, study_name, identity, sampler=sampler, pruner=pruner,
                                    heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    for point in points[:planned]:
        study.enqueue_trial(point)

    grids = {name: spec.grid() for name, spec in space.items()} if method == "grid" else {}
    cache: dict[tuple[Any, ...], Any] = {}
    if load_splits is None:
        from edgeresnet.train.job import load_splits as _job_load

        def load_splits(recipe: Any) -> Any:
            return _job_load(recipe)[0]

    records: list[TrialRecord] = []

    def objective(trial: Any) -> float:
        if method == "grid":  # the enqueued point, asked for as a choice among the grid values of each parameter
            params = {name: trial.suggest_categorical(name, grids[name]) for name in space}
        else:
            params = {name: spec.suggest(trial) for name, spec in space.items()}
        if on_trial is not None:
            on_trial(trial.number, planned, params)
        record = TrialRecord(trial.number, "failed", params, None)
        records.append(record)
        tick = time.perf_counter()
        try:
            recipe = merge_recipe(flags=params, base=base)
            key = (recipe.data, recipe.image_size, recipe.split_seed)
            if key not in cache:
                cache[key] = load_splits(recipe)
            splits = cache[key]
            spec = ModelSpec(recipe.arch, splits.num_classes, recipe.small_stem, recipe.dropout)
            seed_everything(recipe.seed)
            if recipe.init:
                model = import_weights(recipe.init, spec)[0]
                model.train()
            else:
                model = build_model(spec)

            def report(epoch_record: dict[str, Any]) -> None:
                epoch, acc = int(epoch_record["epoch"]), float(epoch_record["val_acc"])
                record.curve.append(acc)
                record.epochs_run = epoch
                if on_epoch is not None:
                    on_epoch(trial.number, epoch_record)
                trial.report(acc, epoch)
                if epoch < recipe.epochs and trial.should_prune():  # the last epoch is the result, never pruned
                    record.pruned_at = epoch
                    raise optuna.TrialPruned(f"epoch {epoch}: val top-1 {acc:.2f} % below the median of earlier trials")

            result = fit(model, splits, recipe, None, progress=False, spec=spec, callbacks=[report])
            record.state, record.value, record.best_epoch = "complete", float(result.best_val_acc), result.best_epoch
            record.epochs_run = len(result.history)
            return float(result.best_val_acc)
        except optuna.TrialPruned:
            record.state = "pruned"
            record.value = max(record.curve) if record.curve else None
            raise
        except UserError as exc:
            record.error = str(exc)
            raise
        finally:
            record.seconds = time.perf_counter() - tick
            if store is not None:  # what the study's other readers see of this trial (intermediate values aside)
                for attr in ("best_epoch", "epochs_run", "pruned_at", "seconds", "error"):
                    trial.set_user_attr(attr, getattr(record, attr))
                trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            if on_done is not None:
                on_done(record)

    try:
        study.optimize(objective, n_trials=planned, catch=(UserError,), gc_after_trial=True)
    except optuna.exceptions.StorageInternalError as exc:  # a shared study's database failed mid-search
        detail = " ".join(str(exc).split())[:200]
        raise UserError(f"--storage {store.shown if store is not None else 'memory'}: the study database failed "
                        f"({_hide_password(detail)}); the trials finished so far are kept there, rerun to continue"
                        ) from None
    study_info: dict[str, Any] | None = None
    best_number: int | None = None
    mine = [t.number for t in records]
    if store is not None:  # the result is the study's, all workers together, read back from the storage
        records, unfinished = _records_from_study(study)
        complete = [t for t in records if t.state == "complete"]
        best = None
        if complete:
            best_number = study.best_trial.number
            best = next(t for t in records if t.number == best_number)
        study_info = {"name": study_name, "storage": store.shown, "fingerprint": identity["fingerprint"],
                      "created_by_this_run": created, "this_run_trials": mine, "unfinished_trials": unfinished,
                      "worker_sampler_seed": worker_seed}
        notes.append(f"study {study_name} ({store.shown}): {len(records)} finished trial(s) from all workers, "
                     f"{len(mine)} run here" + (f", {unfinished} still running or queued elsewhere" if unfinished else ""))
    else:
        best = max((t for t in records if t.state == "complete" and t.value is not None),
                   key=lambda t: (t.value, -t.number), default=None)
    best_recipe = merge_recipe(flags=best.params, base=base) if best is not None else None
    failed = [t for t in records if t.state == "failed"]
    if failed:
        notes.append(f"{len(failed)} trial(s) failed, first: trial {failed[0].number}: {failed[0].error}")
    return TuneResult(method=method, space=space, trials=records, base_recipe=base.to_dict(), best_recipe=best_recipe,
                      prune=prune, sampler_seed=sampler_seed, notes=notes, duration_s=time.perf_counter() - started,
                      study=study_info, best_number=best_number)


# -- shared studies (Optuna's relational storage) ----------------------------------------------------------

STUDY_ATTR = "edgeresnet.experiments.tune"  # study user attribute: the fingerprint of the search this study holds
# Recipe fields that may differ between the machines of one study without changing what a trial measures:
# where the data and initial weights lie, and which device / loader workers run it.
_MACHINE_FIELDS = ("data", "init", "device", "workers")
# DB-API modules SQLAlchemy imports per dialect+driver, and the PyPI package that provides each.
_DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pg8000": "pg8000",
                    "asyncpg": "asyncpg", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL",
                    "mysql": "mysql-connector-python", "oracledb": "oracledb", "pyodbc": "pyodbc"}


@dataclass(frozen=True)
class StudyStore:
    """A checked ``--storage`` URL: what SQLAlchemy connects to, and how it is shown (password hidden)."""

    url: str
    shown: str
    engine_kwargs: dict[str, Any]


def _hide_password(text: str) -> str:
    import re

    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", text)


def check_storage(url: str, option: str = "--storage") -> StudyStore:
    """Refuse a storage URL that cannot work, before any training: one line naming the fix."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "use sqlite:///study.db (one machine) or postgresql://USER:PASSWORD@HOST/DB (several machines)"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UserError(f"{option} {_hide_password(url)!r}: not a database URL; {example}") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise UserError(f"{option} {shown}: SQLAlchemy knows no database {parsed.drivername!r}; {example}") from None
    # SQLAlchemy 2.0 dialects load their DB-API module in import_dbapi() (1.4: the dbapi() classmethod).
    load: Any = getattr(dialect, "import_dbapi", None) or dialect.dbapi
    try:
        load()
    except ImportError as exc:
        module = (exc.name or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module or "its driver")
        raise UserError(f"{option} {shown}: the {parsed.get_backend_name()} driver {module or parsed.drivername} is "
                        f"not installed; pip install {package}") from None
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise UserError(f"{option} {shown}: an in-memory SQLite database dies with this process; give a file, "
                            "e.g. sqlite:///study.db")
        if not database.startswith("file:"):
            path = Path(database)
            if path.is_dir():
                raise UserError(f"{option} {shown}: {path} is a directory; name the database file, e.g. "
                                f"sqlite:///{path / 'study.db'}")
            if not path.parent.is_dir():
                raise UserError(f"{option} {shown}: directory {path.parent} does not exist; create it "
                                f"(mkdir -p {path.parent}) or put the database in an existing one")
        # Python sqlite3.connect(timeout=5.0): seconds a connection waits for another's write lock before
        # 'database is locked'; several workers of one study write the same file.
        engine_kwargs["connect_args"] = {"timeout": 60}
    return StudyStore(url, shown, engine_kwargs)


def search_identity(space: dict[str, ParamSpec], base: Any, method: str) -> dict[str, Any]:
    """What every worker of one study must agree on, with its sha256 fingerprint (kept in the study)."""
    import hashlib
    import json

    recipe = {k: v for k, v in base.to_dict().items() if k not in _MACHINE_FIELDS}
    body = {"objective": "maximize best validation top-1 (%)", "method": method,
            "space": {n: s.to_dict() for n, s in space.items()}, "base_recipe": recipe}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return {**body, "fingerprint": digest}


def _identity_mismatch(have: dict[str, Any], want: dict[str, Any]) -> str:
    if have.get("method") != want["method"]:
        return f"its method is {have.get('method')}, this run's {want['method']}"
    hs, ws = have.get("space") or {}, want["space"]
    if hs != ws:
        names = sorted(n for n in set(hs) | set(ws) if hs.get(n) != ws.get(n))
        return f"its search space differs in {', '.join(names)} (study: {hs}; this run: {ws})"
    hr, wr = have.get("base_recipe") or {}, want["base_recipe"]
    names = sorted(n for n in set(hr) | set(wr) if hr.get(n) != wr.get(n))
    return "its base recipe differs in " + ", ".join(f"{n} (study {hr.get(n)!r}, this run {wr.get(n)!r})" for n in names)


def _retry_callback(max_retry: int | None) -> tuple[str, Any]:
    """Optuna >= 4.9 names it RetryHeartbeatStaleTrialCallback (RDBStorage heartbeat_stale_trial_callback); 4.0-4.8
    RetryFailedTrialCallback (failed_trial_callback): Optuna 5.1 RDBStorage docstring, 'Deprecated in v4.9.0'."""
    import optuna.storages as storages

    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
    if cls is not None:
        return "heartbeat_stale_trial_callback", cls(max_retry=max_retry)
    return "failed_trial_callback", storages.RetryFailedTrialCallback(max_retry=max_retry)


def open_study(store: StudyStore, name: str, identity: dict[str, Any], *, sampler: Any, pruner: Any,
               heartbeat_interval: int = 60, grace_period: int | None = None, max_retry: int | None = 3,
               join_wait_s: float = 10.0) -> tuple[Any, bool]:
    """Create the study, or join it when it exists and holds the same search; returns (study, created)."""
    import warnings

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

    where = f"--study {name} in {store.shown}"
    if not name or not name.strip():
        raise UserError("--study: give the study a name (the workers of one search share it)")
    with warnings.catch_warnings():  # heartbeats and the retry callback are marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback_kw, retry = _retry_callback(max_retry)
        try:
            # RDBStorage: a worker records a heartbeat every heartbeat_interval s while its trial runs; before
            # asking for a trial, optimize() fails RUNNING trials silent for grace_period s (default 2x the interval)
            # and the callback re-queues each as a WAITING trial with the same parameters.
            for attempt in range(5):
                try:
                    storage = optuna.storages.RDBStorage(store.url, engine_kwargs=store.engine_kwargs,
                                                         heartbeat_interval=heartbeat_interval,
                                                         grace_period=grace_period, **{callback_kw: retry})
                    break
                except (OperationalError, IntegrityError) as exc:
                    # RDBStorage runs SQLAlchemy metadata.create_all (check, then CREATE TABLE): two workers
                    # starting on a new database race, and the loser gets 'table ... already exists' (measured
                    # with two 'tune' processes on one new SQLite file); a second try finds the tables.
                    if attempt == 4 or not isinstance(exc, IntegrityError) and "already exists" not in str(exc):
                        raise
                    time.sleep(0.5 + attempt)
            try:
                # load_if_exists=False so exactly one worker (the one whose INSERT of the unique study name
                # succeeds) creates the study and writes its fingerprint; the others get DuplicatedStudyError.
                study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                            pruner=pruner, load_if_exists=False)
                created = True
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
                created = False
            if created:
                study.set_user_attr(STUDY_ATTR, identity)
                return study, True
            if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MAXIMIZE:
                got = ", ".join(d.name.lower() for d in study.directions)
                raise UserError(f"{where}: the study's direction is {got}; 'edgeresnet tune' maximizes validation "
                                "top-1; choose another --study")
            deadline = time.monotonic() + join_wait_s
            have = study.user_attrs.get(STUDY_ATTR)
            while have is None and time.monotonic() < deadline:  # its creator writes the fingerprint next
                time.sleep(0.2)
                have = optuna.load_study(study_name=name, storage=storage).user_attrs.get(STUDY_ATTR)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            # Optuna's RDBStorage re-raises a failed commit (e.g. SQLite "database is locked") as its own
            # StorageInternalError, not a SQLAlchemyError (optuna/storages/_rdb/storage.py, _create_scoped_session).
            detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
            raise UserError(f"{where}: cannot use the study database ({_hide_password(detail)})") from None
    if not isinstance(have, dict) or "fingerprint" not in have:
        raise UserError(f"{where}: the study was not made by 'edgeresnet tune' (no search fingerprint); "
                        "choose another --study")
    if have["fingerprint"] != identity["fingerprint"]:
        raise UserError(f"{where}: the study holds another search: {_identity_mismatch(have, identity)}; run with "
                        "the study's --space and recipe, or choose another --study")
    return study, False


def _records_from_study(study: Any) -> tuple[list[TrialRecord], int]:
    """Every finished trial of the study (all workers), and how many are still running or queued."""
    import optuna

    states = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
              optuna.trial.TrialState.FAIL: "failed"}
    trials = study.get_trials(deepcopy=False)
    retried_as: dict[int, int] = {}
    for ft in trials:
        # RetryHeartbeatStaleTrialCallback / RetryFailedTrialCallback keep the chain of retried trial numbers
        # in the retry's system attribute 'retry_history' (Optuna optuna/storages/_callbacks.py).
        history = ft.system_attrs.get("retry_history") or []
        if history:
            retried_as[int(history[-1])] = ft.number
    records, unfinished = [], 0
    for ft in trials:
        state = states.get(ft.state)
        if state is None:
            unfinished += 1
            continue
        attrs = ft.user_attrs
        curve = [float(ft.intermediate_values[k]) for k in sorted(ft.intermediate_values)]
        value = float(ft.value) if state == "complete" and ft.value is not None else (
            max(curve) if state == "pruned" and curve else None)
        error = attrs.get("error")
        if state == "failed" and error is None:
            error = "its worker stopped without finishing it (no heartbeat)"
            if ft.number in retried_as:
                error += f"; retried as trial {retried_as[ft.number]}"
        seconds = attrs.get("seconds")
        if seconds is None and ft.datetime_start is not None and ft.datetime_complete is not None:
            seconds = (ft.datetime_complete - ft.datetime_start).total_seconds()
        records.append(TrialRecord(ft.number, state, dict(ft.params), value, attrs.get("best_epoch"),
                                   int(attrs.get("epochs_run", len(curve))), attrs.get("pruned_at"),
                                   float(seconds or 0.0), error, curve))
    return records, unfinished


# -- outputs ------------------------------------------------------------------------------------------------

BEST_RECIPE = "best-recipe.yaml"


def write_outputs(result: TuneResult, out_dir: Path, space_path: Path | None = None) -> dict[str, str]:
    """``best-recipe.yaml`` (train --config accepts it), ``trials.csv`` and ``tune.json``, each with a manifest."""
    import csv
    import io

    from edgeresnet.artifacts import build_manifest, write_json_atomic, write_manifest, write_text_atomic
    from edgeresnet.train.recipe import recipe_to_yaml

    out_dir = Path(out_dir)
    outputs: dict[str, str] = {}
    inputs = {"space": space_path} if space_path is not None else {}
    best = result.best
    if best is not None and result.best_recipe is not None:
        path = out_dir / BEST_RECIPE
        of_study = f" of study {result.study['name']}" if result.study else ""
        header = (f"best recipe of 'edgeresnet tune' ({result.method}, trial {best.number}{of_study}, val top-1 "
                  f"{best.value:.2f} %); train it with 'edgeresnet train --config {BEST_RECIPE}'")
        write_text_atomic(path, recipe_to_yaml(result.best_recipe, header), option="--out")
        write_manifest(path, build_manifest("recipe", path, command="tune", inputs=inputs,
                                            settings=result.best_recipe.to_dict(),
                                            extra={"trial": best.number, "best_val_acc": best.value,
                                                   "params": best.params, "study": result.study}))
        outputs["best_recipe"] = str(path)
    buffer = io.StringIO()
    names = list(result.space)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "state", *names, "best_val_acc", "best_epoch", "epochs_run", "pruned_at_epoch", "seconds",
                     "error"])
    for t in result.trials:
        writer.writerow([t.number, t.state, *[t.params.get(n) for n in names],
                         "" if t.value is None else f"{t.value:.4f}", t.best_epoch or "", t.epochs_run,
                         t.pruned_at or "", f"{t.seconds:.2f}", t.error or ""])
    table = out_dir / "trials.csv"
    write_text_atomic(table, buffer.getvalue(), option="--out")
    outputs["trials_csv"] = str(table)
    report = out_dir / "tune.json"
    write_json_atomic(report, {**result.to_dict(), "outputs": outputs}, option="--out")
    write_manifest(report, build_manifest("tune-report", report, command="tune", inputs=inputs,
                                          settings={"method": result.method, "trials": len(result.trials),
                                                    "prune": result.prune, **result.base_recipe},
                                          extra={"counts": result.counts()}))
    outputs["tune_json"] = str(report)
    return outputs
