"""``edgeresnet cv``, ``ensemble`` and ``tune``: parsing and printing only.

Each command calls one stage: ``experiments.cv.run_cross_validation``, ``experiments.ensemble.evaluate_ensemble``
and ``experiments.tune.run_tune``. ``cv`` and ``tune`` take the training recipe like ``train`` does
(``--config recipe.yaml`` plus the common flags, flags win).
Exit codes: 0 done, 1 an export's parity failed, 2 bad input (one line on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgeresnet.cli import common

_RECIPE = "Training recipe (default: the train defaults; --config file; these flags win)"
_OUTPUT = "Outputs"

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace results already in --out.",
                                         rich_help_panel=_OUTPUT)]
JsonReport = Annotated[Optional[str], typer.Option("--json", help="Write the report as JSON to PATH ('-' = stdout).",
                                                   rich_help_panel=_OUTPUT)]
ProgressBars = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.",
                                            rich_help_panel=_OUTPUT)]


def _recipe_flags(names: str, helps: dict[str, str]) -> list[tuple[str, str | None, str]]:
    """cv/tune recipe flags (``names``, space-separated): not given (None) leaves the --config file's value."""
    return [(name, helps.get(name), _RECIPE) for name in names.split()]


def _recipe(config: Path | None, flags: dict[str, Any]) -> Any:
    """defaults < --config file < the recipe flags given on the command line (``None`` = not given)."""
    from edgeresnet.train.recipe import merge_recipe, read_recipe_file

    file_values = read_recipe_file(config) if config is not None else {}
    return merge_recipe(file_values, {k: v for k, v in flags.items() if v is not None}, config_path=config)


def _print_notes(console: Any, notes: list[str]) -> None:
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def _print_outputs(console: Any, outputs: dict[str, str]) -> None:
    for name, path in outputs.items():
        console.print(f"{name}: {path}", highlight=False)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


# -- tables -----------------------------------------------------------------------------------------------


def num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cv_tables(report: dict[str, Any]) -> list[Any]:
    """Per-fold numbers, then mean / std / min / max over folds."""
    from rich.table import Table


    folds = Table(title=f"{report['k']}-fold stratified cross-validation on {report['data'].get('name')} "
                  f"(train+val {report['data'].get('pool')} images; test split untouched)")
    for column in ("fold", "held-out", "top-1 %", "top-5 %", "macro F1", "CE", "best ep", "time s"):
        folds.add_column(column, justify="left" if column == "fold" else "right")
    for fold in report["folds"]:
        folds.add_row(str(fold["fold"]), str(fold["sizes"]["holdout"]), num(fold["top1"]), num(fold["top5"]),
                      num(fold["macro_f1"], 3), num(fold["loss"], 4), str(fold["best_epoch"]), f"{fold['duration_s']:.0f}")
    folds.caption = "each fold scored once, on its held-out images, by the epoch its training folds chose"
    summary = Table(title=f"over {report['k']} folds (std: sample, ddof=1)")
    for column in ("metric", "mean", "std", "min", "max"):
        summary.add_column(column, justify="left" if column == "metric" else "right")
    labels = {"top1": ("held-out top-1 %", 2), "top5": ("held-out top-5 %", 2), "macro_f1": ("macro F1", 3),
              "weighted_f1": ("weighted F1", 3), "loss": ("cross-entropy", 4),
              "select_val_acc": ("epoch-choice val top-1 %", 2)}
    for key, (label, digits) in labels.items():
        stats = report["summary"][key]
        style = "bold" if key == "top1" else ""
        summary.add_row(label, *[num(stats[k], digits) for k in ("mean", "std", "min", "max")], style=style)
    return [folds, summary]


def ensemble_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    ev = report["evaluation"]
    table = Table(title=f"ensemble ({report['method']}) on {ev['data']} {ev['split']} ({ev['n']} images)")
    for column in ("model", "weight", "top-1", "top-5", "macro F1", "cross-entropy", "backend"):
        table.add_column(column, justify="left" if column in ("model", "backend") else "right")
    weights = report.get("weights") or [None] * len(report["members"])
    names = _display_names([member["path"] for member in report["members"]])
    for member, weight, name in zip(report["members"], weights, names):
        m = member["metrics"]
        table.add_row(name, "-" if weight is None else f"{weight:.3f}", _pct(m["top1"]),
                      _pct(m["top5"]), f"{m['macro_f1']:.3f}", "-" if m["loss"] is None else f"{m['loss']:.4f}", "torch")
    e = report["ensemble"]
    table.add_section()
    table.add_row(f"[bold]ensemble ({report['method']})[/bold]", "", f"[bold]{_pct(e['top1'])}[/bold]", _pct(e["top5"]),
                  f"{e['macro_f1']:.3f}", "-" if e["loss"] is None else f"{e['loss']:.4f}", e["backend"])
    best = max(m["metrics"]["top1"] for m in report["members"])
    table.caption = f"top-1 vs the best member: {e['top1'] - best:+.2f} points"
    return table


def tune_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    from edgeresnet.experiments.tune import format_param

    names = list(report["space"])
    best = (report.get("best") or {}).get("trial")
    table = Table(title=f"tune ({report['method']}): {len(report['trials'])} trial(s), objective: best val top-1")
    for column in ("#", "state", *names, "val top-1 %", "time s"):
        table.add_column(column, justify="left" if column in ("#", "state") else "right")
    for t in report["trials"]:
        state = {"complete": "done", "pruned": f"pruned@{t['pruned_at_epoch']}", "failed": "[red]failed[/red]"}[t["state"]]
        mark = "[green]★[/green]" if t["trial"] == best else ""
        acc = "-" if t["best_val_acc"] is None else f"{t['best_val_acc']:.2f}"
        table.add_row(f"{t['trial']}{mark}", state, *[format_param(t["params"].get(n)) for n in names], acc,
                      f"{t['seconds']:.0f}")
    c = report["counts"]
    table.caption = (f"{c['complete']} complete, {c['pruned']} pruned (stopped at epoch @, below the median of earlier "
                     f"trials), {c['failed']} failed; ★ best")
    return table


def _display_names(paths: list[str]) -> list[str]:
    """File names, or parent/name where two members share a file name (run-a/best.pt, run-b/best.pt)."""
    names = [Path(p).name for p in paths]
    return [f"{Path(p).parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


# -- commands ---------------------------------------------------------------------------------------------


def cv_cmd(
    folds: int = typer.Option(5, "--folds", "-k", help="Number of folds (2 .. images of the smallest class)."),
    inner_val: float = typer.Option(0.15, "--inner-val", help="Share of the training folds that picks the best "
                                    "epoch (and early stopping), so the held-out fold is scored unseen."),
    fold_seed: int = typer.Option(0, "--fold-seed", help="Seed of the fold assignment."),
    out: Path = typer.Option(Path("runs/cv"), "--out", "-o", help="Directory for cv.json (+ manifest) and "
                             "folds.csv.", rich_help_panel=_OUTPUT),
    checkpoints: bool = typer.Option(False, "--checkpoints/--no-checkpoints", help="Keep every fold's training "
                                     "outputs (best.pt, last.pt, metrics.csv, ...) in OUT/fold-N.",
                                     rich_help_panel=_OUTPUT),
    overwrite: Overwrite = False,
    json_out: JsonReport = None,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.",
                                  rich_help_panel=_OUTPUT),
    config: Path | None = typer.Option(None, "--config", help="YAML training recipe (as for train).",
                                       rich_help_panel=_RECIPE),
    **recipe_flags: Any,
) -> None:
    """Stratified k-fold cross-validation of a training recipe: per-fold results, mean and std.

    Folds are cut from train+val; the test split is not used. Every fold trains from the same
    initial weights with the same recipe and is scored on its held-out fold.
    """
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.experiments.cv import check_fold_count, run_cross_validation

    check_json_dest(json_out)  # a --json PATH that cannot be written fails before the work
    check_fold_count(folds)
    recipe = _recipe(config, recipe_flags)
    console = common.console(json_out)
    report = run_cross_validation(recipe, out, folds=folds, inner_val=inner_val, fold_seed=fold_seed,
                                  checkpoints=checkpoints, overwrite=overwrite, console=console, progress=progress)
    for table in cv_tables(report):
        console.print(table)
    _print_notes(console, report["notes"])
    _print_outputs(console, report["outputs"])
    emit_json(report, json_out)


def ensemble_cmd(
    models: list[Path] = typer.Argument(..., help="Two or more checkpoints (.pt) with the same classes and "
                                        "preprocessing (architectures may differ, pruned ones too)."),
    method: str = typer.Option("average", "--method", "-m", help="average (mean probability) | weighted "
                               "(weighted mean probability) | vote (majority of top-1, ties by probability)."),
    weights: str | None = typer.Option(None, "--weights", help="Comma-separated weight per model, in order (weighted, "
                                       "vote). Default for weighted: each model's validation top-1."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the ensemble as ONE ONNX graph (+ manifest "
                                    "listing the members' sha256) and evaluate that file; it then goes through "
                                    "build/benchmark like any model.", rich_help_panel=_OUTPUT),
    data: str | None = typer.Option(None, "--data", help="Evaluation data (default: the members' recorded data set)."),
    split: str = typer.Option("test", "--split", help="train | val | test."),
    split_seed: int | None = typer.Option(None, "--split-seed", help="Seed of the data split (default: the members')."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N images."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per inference batch."),
    device: str | None = typer.Option(None, "--device", help="Device of the members' PyTorch runs: cpu or cuda."),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset of --out (as for export).",
                                     rich_help_panel=_OUTPUT),
    exporter: str = typer.Option("auto", "--exporter", help="auto | dynamo | torchscript.", rich_help_panel=_OUTPUT),
    batch: int | None = typer.Option(None, "--batch", help="Static batch of --out (default 1).",
                                     rich_help_panel=_OUTPUT),
    dynamic_batch: str | None = typer.Option(None, "--dynamic-batch", help="Dynamic batch of --out, MIN:OPT:MAX.",
                                             rich_help_panel=_OUTPUT),
    target: str | None = typer.Option(None, "--target", help="Pick the opset the target's TensorRT parses.",
                                      rich_help_panel=_OUTPUT),
    parity_images: int = typer.Option(32, "--parity-images", help="Real images for the export's parity check.",
                                      rich_help_panel=_OUTPUT),
    json_out: JsonReport = None,
    progress: ProgressBars = True,
) -> None:
    """Evaluate an ensemble of checkpoints (and each member), optionally export it as one ONNX model."""
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.experiments.ensemble import EnsembleSettings, evaluate_ensemble

    check_json_dest(json_out)  # a --json PATH that cannot be written fails before the work
    settings = EnsembleSettings(models=models, method=method, weights=weights, out=out, data=data, split=split,
                                split_seed=split_seed, limit=limit, batch_size=batch_size, device=device,
                                opset=opset, exporter=exporter, batch=batch, dynamic_batch=dynamic_batch,
                                target=target, parity_images=parity_images)
    console = common.console(json_out)
    report = evaluate_ensemble(settings, console=console, progress=progress).to_dict()
    console.print(ensemble_table(report))
    _print_notes(console, report["notes"])
    if report.get("export"):
        console.print(f"wrote {report['export']['path']} and {report['export']['path']}.json "
                      f"(parity max-abs {report['export']['parity']['max_abs']:.2g})", highlight=False)
    emit_json(report, json_out)


def tune_cmd(
    space: Path = typer.Option(..., "--space", help="YAML search space: {field: {type: float|int|categorical|"
                               "loguniform, low, high, choices, step, num}} over TrainRecipe fields."),
    trials: int | None = typer.Option(None, "--trials", "-n", help="Number of trials this process runs (bayes "
                                      "default 20; grid default: the whole grid). With --storage: N more trials "
                                      "from this worker, added to the study's (like Optuna's n_trials)."),
    method: str = typer.Option("bayes", "--method", help="grid (every combination, in file order) | bayes "
                               "(Optuna TPE)."),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Stop trials whose validation top-1 is below the "
                               "median of earlier trials at the same epoch (Optuna MedianPruner)."),
    prune_startup: int = typer.Option(3, "--prune-startup", help="Complete trials before pruning starts."),
    prune_warmup: int = typer.Option(1, "--prune-warmup", help="Epochs of every trial that are never pruned."),
    sampler_seed: int = typer.Option(0, "--sampler-seed", help="Seed of the Bayesian sampler."),
    storage: str | None = typer.Option(None, "--storage", help="Keep the study in Optuna's relational storage "
                                       "(SQLAlchemy URL): sqlite:///study.db on one machine, postgresql://user@host/db "
                                       "for several; workers share it, resume it, and the best recipe is the "
                                       "study's. Needs --study; bayes only."),
    study: str | None = typer.Option(None, "--study", help="Name of the study in --storage; created by the first "
                                     "worker, joined by the others (same --space and recipe required)."),
    out: Path = typer.Option(Path("runs/tune"), "--out", "-o", help="Directory for best-recipe.yaml, trials.csv, "
                             "tune.json (+ manifests).", rich_help_panel=_OUTPUT),
    overwrite: Overwrite = False,
    json_out: JsonReport = None,
    progress: ProgressBars = True,
    config: Path | None = typer.Option(None, "--config", help="YAML base recipe (as for train); the space "
                                       "overrides its fields per trial.", rich_help_panel=_RECIPE),
    **recipe_flags: Any,
) -> None:
    """Search the training recipe (grid or Bayesian) with early pruning; writes the best recipe as YAML.

    Train the winner with 'edgeresnet train --config OUT/best-recipe.yaml'.
    """
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.experiments.tune import check_search_options, run_tune
    from edgeresnet.experiments.tune_space import load_space

    check_json_dest(json_out)  # a --json PATH that cannot be written fails before the work
    check_search_options(method, trials, prune_startup, prune_warmup)
    param_space = load_space(space)
    base = _recipe(config, recipe_flags)
    console = common.console(json_out)
    report = run_tune(base, param_space, out, space_path=space, method=method, trials=trials, prune=prune,
                      prune_startup=prune_startup, prune_warmup=prune_warmup, sampler_seed=sampler_seed,
                      storage=storage, study_name=study, overwrite=overwrite, console=console, progress=progress)
    console.print(tune_table(report))
    _print_notes(console, report["notes"])
    if report["best"] is None:
        console.print("[red]no trial completed[/red]: no best recipe written", highlight=False)
    _print_outputs(console, report["outputs"])
    emit_json(report, json_out)
    if report["best"] is None:
        raise typer.Exit(1)


common.add_recipe_options(cv_cmd, _recipe_flags(
    "data image_size arch small_stem stem_stride epochs batch_size optimizer lr augment early_stop max_steps seed "
    "device workers channels_last compile",
    {"data": "'digits', 'fashion-mnist', an IDX or ImageFolder directory.",
     "seed": "Initialisation/shuffling seed (the same for every fold)."}), recipe_defaults=False)
common.add_recipe_options(tune_cmd, _recipe_flags(
    "data image_size arch small_stem stem_stride epochs batch_size lr augment max_steps seed device workers "
    "channels_last compile",
    {"epochs": "Epochs per trial.", "max_steps": "Optimizer steps per trial (a budget).",
     "seed": "Initialisation seed (the same for every trial)."}), recipe_defaults=False)


def register(app: typer.Typer) -> None:
    """Add ``cv``, ``ensemble`` and ``tune``."""
    app.command("cv")(cv_cmd)
    app.command("ensemble")(ensemble_cmd)
    app.command("tune")(tune_cmd)
