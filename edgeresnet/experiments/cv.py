"""Stratified k-fold cross-validation of a training recipe; the test split is never touched.

The folds are built from train+val. Each fold trains with ``fit`` (the same recipe as ``train``) on K-1
folds and is scored once, at the end, on the held-out fold. ``fit`` needs a validation split to pick its
best epoch and for early stopping; choosing the epoch on the very fold that is then scored would flatter
the estimate, so a stratified share of the training folds (``inner_val``) is set aside for that choice.
Reported: per-fold metrics and, over folds, the mean and the sample standard deviation (ddof=1).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.errors import UserError

# Headline numbers aggregated over folds; all but ``loss`` are "higher is better".
SUMMARY_METRICS = ("top1", "top5", "macro_f1", "weighted_f1", "loss", "select_val_acc")
EpochHook = Callable[[int, dict[str, Any]], None]  # (fold number from 1, fit's per-epoch record)


# -- pure fold arithmetic -----------------------------------------------------------------------------


def check_fold_count(folds: int) -> None:
    """At least 2 folds, checked before the recipe and the data are read."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise UserError(f"--folds {folds}: cross-validation needs at least 2 folds")


def check_folds(labels: Sequence[int], folds: int, class_names: Sequence[str] | None = None) -> None:
    """One-line errors for a fold count the data cannot support."""
    check_fold_count(folds)
    counts = Counter(int(y) for y in labels)
    if not counts:
        raise UserError("--data: train+val is empty; nothing to cross-validate")
    label, fewest = min(counts.items(), key=lambda item: (item[1], item[0]))
    name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
    if fewest < 2:
        raise UserError(f"--data: class {name!r} has only {fewest} image in train+val; cross-validation needs at least "
                        "2 per class; add images")
    if folds > fewest:
        raise UserError(f"--folds {folds}: class {name!r} has only {fewest} image(s) in train+val, so it cannot appear "
                        f"in every fold; use --folds {fewest} or fewer (or add images)")


def fold_indices(labels: Sequence[int], folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training indices, held-out indices) per fold: scikit-learn's shuffled ``StratifiedKFold``."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels, dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(np.sort(train), np.sort(held)) for train, held in splitter.split(np.zeros(len(y)), y)]


def inner_split(indices: np.ndarray, labels: Sequence[int], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training-fold ``indices`` into (fit, select) per class; a class of >= 2 keeps >= 1 on each side."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"--inner-val {fraction}: must be a fraction in (0, 1), e.g. 0.15")
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fit_part: list[int] = []
    select_part: list[int] = []
    for label in sorted(set(y[indices].tolist())):
        group = indices[y[indices] == label]
        group = group[rng.permutation(len(group))]
        n_select = int(round(len(group) * fraction))
        if len(group) >= 2:
            n_select = min(max(n_select, 1), len(group) - 1)
        else:
            n_select = 0
        select_part += group[:n_select].tolist()
        fit_part += group[n_select:].tolist()
    return np.array(sorted(fit_part), dtype=np.int64), np.array(sorted(select_part), dtype=np.int64)


def aggregate(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof=1), min and max; ``None`` values (undefined) are left out."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": list(values)}
    arr = np.asarray(kept, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "min": float(arr.min()), "max": float(arr.max()), "n": len(kept),
            "values": list(values)}


# -- results ----------------------------------------------------------------------------------------


@dataclass
class FoldResult:
    fold: int
    sizes: dict[str, int]  # fit / select (epoch choice) / holdout (scored)
    metrics: dict[str, Any]  # evaluate_logits on the held-out fold
    select_val_acc: float
    best_epoch: int
    epochs_run: int
    steps: int
    stopped: str
    duration_s: float
    checkpoint: str | None = None

    def headline(self) -> dict[str, Any]:
        m = self.metrics
        return {"top1": m["top1"], "top5": m["top5"], "macro_f1": m["macro"]["f1"], "weighted_f1": m["weighted"]["f1"],
                "loss": m["loss"], "select_val_acc": self.select_val_acc}

    def to_dict(self) -> dict[str, Any]:
        return {"fold": self.fold, "sizes": self.sizes, **self.headline(), "best_epoch": self.best_epoch,
                "epochs_run": self.epochs_run, "steps": self.steps, "stopped": self.stopped,
                "duration_s": round(self.duration_s, 2), "checkpoint": self.checkpoint,
                "per_class": self.metrics["per_class"], "confusion_matrix": self.metrics["confusion_matrix"]}


@dataclass
class CVResult:
    folds: list[FoldResult]
    recipe: dict[str, Any]
    data: dict[str, Any]
    fold_seed: int
    inner_val: float
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: aggregate([f.headline()[name] for f in self.folds]) for name in SUMMARY_METRICS}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgeresnet.experiments.cv/1", "k": len(self.folds), "fold_seed": self.fold_seed,
                "inner_val": self.inner_val, "std": "sample standard deviation over folds (ddof=1)",
                "summary": self.summary, "folds": [f.to_dict() for f in self.folds], "recipe": self.recipe,
                "data": self.data, "duration_s": round(self.duration_s, 2), "notes": self.notes}


# -- the run ----------------------------------------------------------------------------------------


def pool_of(splits: Any) -> list[Any]:
    """train + val samples, the material the folds are cut from."""
    return list(splits.splits.get("train", [])) + list(splits.splits.get("val", []))


def cross_validate(splits: Any, recipe: Any, folds: int, *, out_dir: Path | None = None, inner_val: float = 0.15,
                   fold_seed: int = 0, on_epoch: EpochHook | None = None, on_fold: Callable[[FoldResult], None] | None = None,
                   console: Any = None) -> CVResult:
    """Train and score ``folds`` models; ``out_dir`` keeps each fold's ``fit`` outputs in ``out_dir/fold-N``."""
    from edgeresnet.evaluate import evaluate_runner
    from edgeresnet.models import build_model, import_weights
    from edgeresnet.runners.torch_runner import TorchRunner
    from edgeresnet.train import fit, seed_everything

    started = time.perf_counter()
    pool = pool_of(splits)
    labels = [s.label for s in pool]
    check_folds(labels, folds, splits.class_names)
    if not 0.0 < inner_val < 1.0:
        raise UserError(f"--inner-val {inner_val}: must be a fraction in (0, 1), e.g. 0.15")
    spec = recipe.model_spec(splits.num_classes)
    device = None if recipe.device == "auto" else recipe.device
    results: list[FoldResult] = []
    notes: list[str] = []
    for number, (train_idx, held_idx) in enumerate(fold_indices(labels, folds, fold_seed), start=1):
        fit_idx, select_idx = inner_split(train_idx, labels, inner_val, fold_seed + number)
        if not len(select_idx):
            raise UserError(f"--inner-val {inner_val}: fold {number} has no images left to choose the best epoch; "
                            "raise --inner-val or use fewer --folds")
        fold_splits = dataclasses.replace(splits, splits={
            "train": [pool[i] for i in fit_idx], "val": [pool[i] for i in select_idx],
            "test": list(splits.splits.get("test", [])), "holdout": [pool[i] for i in held_idx]})
        seed_everything(recipe.seed)  # every fold starts from the same initial weights: the recipe is what varies
        if recipe.init:
            model, init_notes = import_weights(recipe.init, spec)
            model.train()
            if number == 1:
                notes += [f"--init {recipe.init}: {n}" for n in init_notes]
        else:
            model = build_model(spec)
        fold_out = Path(out_dir) / f"fold-{number}" if out_dir is not None else None
        hooks = [lambda record, n=number: on_epoch(n, record)] if on_epoch is not None else []
        result = fit(model, fold_splits, recipe, fold_out, progress=False, spec=spec, callbacks=hooks, console=console)
        images, held_labels = fold_splits.arrays("holdout")
        runner = TorchRunner.from_model(result.model, splits.preprocess, name=f"fold-{number}", spec=spec, device=device)
        metrics = evaluate_runner(runner, images, held_labels, batch_size=max(recipe.batch_size, 128),
                                  class_names=list(splits.class_names))
        fold = FoldResult(fold=number, sizes={"fit": len(fit_idx), "select": len(select_idx), "holdout": len(held_idx)},
                          metrics=metrics, select_val_acc=result.best_val_acc, best_epoch=result.best_epoch,
                          epochs_run=len(result.history), steps=result.steps, stopped=result.stopped,
                          duration_s=result.duration_s, checkpoint=str(result.checkpoint) if result.checkpoint else None)
        results.append(fold)
        if on_fold is not None:
            on_fold(fold)
    data = splits.summary() if hasattr(splits, "summary") else {}
    data["pool"] = len(pool)
    return CVResult(folds=results, recipe=recipe.to_dict(), data=data, fold_seed=fold_seed, inner_val=inner_val,
                    duration_s=time.perf_counter() - started, notes=notes)


def write_report(result: CVResult, out_dir: Path, command: str = "cv") -> dict[str, str]:
    """``cv.json`` (+ manifest) and ``folds.csv`` in ``out_dir``."""
    import csv
    import io

    from edgeresnet.artifacts import build_manifest, write_json_atomic, write_manifest, write_text_atomic

    out_dir = Path(out_dir)
    report = out_dir / "cv.json"
    write_json_atomic(report, result.to_dict(), option="--out")
    write_manifest(report, build_manifest("cv-report", report, command=command,
                                          settings={"k": len(result.folds), "fold_seed": result.fold_seed,
                                                    "inner_val": result.inner_val, **result.recipe},
                                          extra={"summary": result.summary}))
    buffer = io.StringIO()
    columns = ("fold", "fit", "select", "holdout", *SUMMARY_METRICS, "best_epoch", "epochs_run", "duration_s")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for fold in result.folds:
        row = fold.to_dict()
        writer.writerow([fold.fold, fold.sizes["fit"], fold.sizes["select"], fold.sizes["holdout"],
                         *[_csv(row[m]) for m in SUMMARY_METRICS], fold.best_epoch, fold.epochs_run,
                         round(fold.duration_s, 2)])
    table = out_dir / "folds.csv"
    write_text_atomic(table, buffer.getvalue(), option="--out")
    return {"cv_json": str(report), "folds_csv": str(table)}


def _csv(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else ("" if value is None else value)


# -- the stage ----------------------------------------------------------------------------------------------


def run_cross_validation(recipe: Any, out: Path, *, folds: int = 5, inner_val: float = 0.15, fold_seed: int = 0,
                         checkpoints: bool = False, overwrite: bool = False, console: Any = None,
                         progress: bool = False) -> dict[str, Any]:
    """``edgeresnet cv``: the folds of ``recipe``'s data, trained with a progress bar on ``console``.

    Writes ``cv.json`` and ``folds.csv`` (with ``checkpoints``, every fold's training outputs too) to ``out``;
    returns the report with its ``outputs``. Bad folds or data fail before any training.
    """
    from edgeresnet.artifacts import make_output_dir
    from edgeresnet.experiments.common import check_results_dir, progress_bar, quiet_console
    from edgeresnet.train.job import load_splits

    check_fold_count(folds)
    check_results_dir(out, "cv.json", overwrite)
    splits, notes = load_splits(recipe)
    check_folds([s.label for s in pool_of(splits)], folds, splits.class_names)
    make_output_dir(out)
    with progress_bar(quiet_console(console), progress) as bar:
        task = bar.add_task(f"fold 1/{folds}", total=folds * recipe.epochs, stats="")

        def on_epoch(fold: int, record: dict[str, Any]) -> None:
            bar.update(task, completed=(fold - 1) * recipe.epochs + record["epoch"],
                       description=f"fold {fold}/{folds} epoch {record['epoch']}/{recipe.epochs}",
                       stats=f"select val {record['val_acc']:.1f} %")

        def on_fold(result: FoldResult) -> None:
            bar.update(task, completed=result.fold * recipe.epochs,
                       description=f"fold {min(result.fold + 1, folds)}/{folds}",
                       stats=f"fold {result.fold} held-out top-1 {result.metrics['top1']:.2f} %")

        result = cross_validate(splits, recipe, folds, out_dir=out if checkpoints else None, inner_val=inner_val,
                                fold_seed=fold_seed, on_epoch=on_epoch, on_fold=on_fold)
    result.notes = notes + result.notes
    outputs = write_report(result, out)
    return {**result.to_dict(), "outputs": outputs}
