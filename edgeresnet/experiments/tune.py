"""Hyper-parameter search over the training recipe: grid, or Bayesian (Optuna's TPE), with median pruning.

The space is checked in ``tune_space``; a shared study lives in ``tune_storage``. Every trial is a full
``fit`` on the same data with the same seed, so only the recipe differs; its per-epoch validation top-1 is
reported to Optuna's ``MedianPruner``, which stops trials that are below the median of earlier trials at
the same epoch. The objective is the best validation top-1 (percent) of the trial; the test split is
never looked at. The best recipe is written as YAML that ``edgeresnet train --config`` accepts.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.experiments.tune_space import ParamSpec, check_space_against, grid_points
from edgeresnet.experiments.tune_storage import check_storage, hide_password, open_study, search_identity

METHODS = ("grid", "bayes")


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


def check_search_options(method: str, trials: int | None, prune_startup: int, prune_warmup: int) -> None:
    """The search's own options, checked before the space file and the recipe are read."""
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise UserError(f"--trials {trials}: must be at least 1")
    if method not in METHODS:
        raise UserError(f"--method {method}: choose grid or bayes")
    if prune_startup < 0 or prune_warmup < 0:
        raise UserError("--prune-startup/--prune-warmup: must be >= 0")


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

    from edgeresnet.models import build_model, import_weights
    from edgeresnet.train import fit, seed_everything
    from edgeresnet.train.recipe import merge_recipe

    started = time.perf_counter()
    check_search_options(method, trials, prune_startup, prune_warmup)
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
        if store is not None:
            # Optuna's HeartbeatThread (optuna/storages/_heartbeat.py) writes the first heartbeat from a thread it
            # has just started, and fail_stale_trials only fails trials that have one: a worker that dies before
            # that write would leave its trial RUNNING forever. One heartbeat now closes the gap.
            study._storage.record_heartbeat(trial._trial_id)
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
            spec = recipe.model_spec(splits.num_classes)
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
                        f"({hide_password(detail)}); the trials finished so far are kept there, rerun to continue"
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


# -- the stage ----------------------------------------------------------------------------------------------


def run_tune(base: Any, space: dict[str, ParamSpec], out: Path, *, space_path: Path | None = None,
             method: str = "bayes", trials: int | None = None, prune: bool = True, prune_startup: int = 3,
             prune_warmup: int = 1, sampler_seed: int = 0, storage: str | None = None, study_name: str | None = None,
             overwrite: bool = False, console: Any = None, progress: bool = False) -> dict[str, Any]:
    """``edgeresnet tune``: search with progress bars on ``console``, write the outputs to ``out``.

    Returns the ``tune.json`` document with its ``outputs``; its ``best`` is None when no trial completed.
    """
    from edgeresnet.artifacts import make_output_dir
    from edgeresnet.experiments.common import check_results_dir, progress_bar, quiet_console

    check_results_dir(out, "tune.json", overwrite)
    with progress_bar(quiet_console(console), progress) as bar:
        trial_task = bar.add_task("trials", total=trials or None, stats="")
        epoch_task = bar.add_task("  epochs", total=base.epochs, stats="")
        best: list[float] = []

        def on_trial(number: int, planned: int, params: dict[str, Any]) -> None:
            bar.update(trial_task, total=planned, description=f"trial {number + 1}/{planned}",
                       stats=", ".join(f"{k}={format_param(v)}" for k, v in params.items()))
            bar.reset(epoch_task, total=params.get("epochs", base.epochs), stats="")

        def on_epoch(number: int, record: dict[str, Any]) -> None:
            bar.update(epoch_task, completed=record["epoch"], stats=f"val {record['val_acc']:.1f} %")

        def on_done(record: TrialRecord) -> None:
            if record.state == "complete" and record.value is not None:
                best.append(record.value)
            bar.update(trial_task, advance=1, stats=f"best so far {max(best):.2f} %" if best else "")

        result = tune(base, space, method=method, trials=trials, prune=prune, prune_startup=prune_startup,
                      prune_warmup=prune_warmup, sampler_seed=sampler_seed, storage=storage, study_name=study_name,
                      on_trial=on_trial, on_epoch=on_epoch, on_done=on_done,
                      where=f"--space {space_path}" if space_path is not None else "--space")
    make_output_dir(out)
    outputs = write_outputs(result, out, space_path)
    return {**result.to_dict(), "outputs": outputs}


def format_param(value: Any) -> str:
    """A parameter value as the progress line and the trials table show it (floats to 3 digits)."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
