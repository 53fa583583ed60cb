"""``edgeresnet train``, ``import``, ``evaluate`` and ``demo``: parsing and printing only.

The work is in ``edgeresnet.train`` (``run_training``), ``edgeresnet.models`` (``import_weights``),
``edgeresnet.evaluate`` and ``edgeresnet.demo``. Exit codes: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgeresnet.cli import common
from edgeresnet.errors import UserError

_DATA, _OPT, _AUG, _RUN, _OUT = "Data and model", "Optimisation", "Augmentation", "Run control", "Outputs"
_DIST = "Multi-process (torchrun)"
_AUG_PRESET = "Default: the data set's preset (digits: on)."


def _given(ctx: typer.Context, names: tuple[str, ...]) -> dict[str, Any]:
    """Options the user typed (or set in the environment), as opposed to defaults: these override --config."""
    given = {}
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given[name] = ctx.params[name]
    return given


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def train_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="training", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    recipe, model, data = summary["recipe"], summary["model"], summary["data"]
    stride = model.get("stem_stride", 1)
    stem = (f", small stem stride {stride}" if stride != 1 else ", small stem") if model["small_stem"] else ""
    table.add_row("model", f"{model['arch']} ({model['num_classes']} classes{stem}) at {recipe['image_size']} px")
    sizes = data.get("sizes", {})
    table.add_row("data", f"{data.get('name')}: train {sizes.get('train')}, val {sizes.get('val')}, "
                  f"test {sizes.get('test')}"
                  + (f" ({data['skipped_files']} corrupt files skipped)" if data.get("skipped_files") else ""))
    table.add_row("recipe", f"{recipe['optimizer']} lr {recipe['lr']:g}, {recipe['schedule']} (warm-up "
                  f"{recipe['warmup_epochs']:g} ep), batch {recipe['batch_size']}x{recipe['accumulate']}, "
                  f"{recipe['epochs']} epochs, {recipe['precision']}")
    dist = summary.get("distributed") or {}
    if dist.get("world_size", 1) > 1:
        table.add_row("processes", f"{dist['world_size']} ({dist['backend']}), global batch {dist['global_batch']}"
                      + (", SyncBatchNorm" if dist.get("sync_bn") else ""))
    table.add_row("best val top-1", f"{_fmt_pct(summary['best_val_acc'])} (epoch {summary['best_epoch']})")
    table.add_row("stopped", f"{summary['stopped']} after {summary['epochs_run']} epoch(s), {summary['steps']} steps, "
                  f"{summary['duration_s']:.1f} s")
    for name, path in summary["outputs"].items():
        table.add_row(name, path)
    return table


def eval_tables(metrics: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    head = Table(title=f"{metrics.get('model', 'model')} on {metrics.get('data')} ({metrics.get('split')}, "
                 f"{metrics['n']} images)", show_header=False)
    head.add_column("", style="bold")
    head.add_column("", justify="right")
    head.add_row("top-1", _fmt_pct(metrics["top1"]))
    head.add_row(f"top-{metrics['top5_k']}", _fmt_pct(metrics["top5"]))
    if metrics.get("loss") is not None:
        head.add_row("cross-entropy", f"{metrics['loss']:.4f}")
    for avg in ("macro", "weighted"):
        m = metrics[avg]
        head.add_row(f"{avg} P / R / F1", f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}")
    per_class = Table(title="per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for row in metrics["per_class"]:
        per_class.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                          str(row["support"]))
    tables = [head, per_class]
    names = metrics["class_names"]
    if len(names) <= 20:
        confusion = Table(title="confusion matrix (rows: true, columns: predicted)")
        confusion.add_column("true \\ pred", style="bold")
        for name in names:
            confusion.add_column(name[:8], justify="right")
        for name, row in zip(names, metrics["confusion_matrix"], strict=True):
            confusion.add_row(name[:12], *[f"[bold]{v}[/bold]" if i == names.index(name) else (str(v) if v else ".")
                                          for i, v in enumerate(row)])
        tables.append(confusion)
    return tables


# --help panel -> (recipe field, help) of each of train's recipe options, in --help order; the flag, type and
# default of each option come from its TrainRecipe field (common.add_recipe_options).
_TRAIN_RECIPE_OPTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    _DATA: (
        ("data", "'digits' (embedded, no download), 'fashion-mnist' (Debian dataset-fashion-mnist), a directory of "
                 "the four MNIST-style IDX files, or an ImageFolder directory (class per sub-folder; train/ and "
                 "val/ used when present)."),
        ("image_size", "Square input size in pixels."),
        ("split_seed", "Seed of the train/val/test split (keep 0 so every command sees the same test set)."),
        ("arch", "resnet18 or resnet50."),
        ("small_stem", "3x3 stride-1 stem without max-pool, for tiny inputs (about 7x the compute at 32 px)."),
        ("stem_stride", "Stride of the small stem: 2 keeps the 3x3 stem but halves every feature map (about 2x "
                        "the ImageNet stem's compute; the Fashion-MNIST recipe)."),
        ("dropout", "Dropout before the classifier, in [0, 1)."),
        ("init", "Start from these weights (our checkpoint, a torchvision or timm state dict); a head of another "
                 "class count is re-initialised."),
        ("freeze_backbone", "Train only the classifier head (fc); backbone BN statistics stay fixed."),
        ("backbone_lr_mult", "LR of the backbone = --lr x this (e.g. 0.1 when fine-tuning from --init)."),
    ),
    _OPT: (
        ("epochs", "Number of epochs."),
        ("batch_size", "Images per micro-batch."),
        ("optimizer", "sgd | adam | adamw | rmsprop."),
        ("lr", "Peak learning rate (after warm-up)."),
        ("momentum", "SGD/RMSprop momentum; Adam/AdamW beta1."),
        ("nesterov", "Nesterov momentum (SGD)."),
        ("weight_decay", "L2 weight decay (decoupled for AdamW)."),
        ("decay_norm_and_bias", "Also decay BN weights and biases (off by default)."),
        ("l1", "L1 penalty on conv/linear weights added to the loss (0 = off)."),
        ("label_smoothing", "Label smoothing in [0, 1)."),
        ("schedule", "cosine | step | exponential | constant."),
        ("warmup_epochs", "Linear warm-up length in epochs (per step; 0 = none)."),
        ("step_size", "'step' schedule: epochs between LR drops."),
        ("gamma", "'step': factor per drop; 'exponential': factor per epoch."),
        ("min_lr", "'cosine': the LR reached at the end."),
        ("accumulate", "Gradient accumulation: micro-batches per optimizer step (effective batch = batch size x "
                       "this)."),
        ("precision", "fp32 | bf16 (autocast, CPU or CUDA) | fp16 (CUDA, with a gradient scaler)."),
    ),
    _AUG: (
        ("augment", "All training augmentation on/off."),
        ("random_resized_crop", f"Random resized crop. {_AUG_PRESET}"),
        ("crop_scale_min", "Smallest crop area fraction, in (0, 1]. Default: the preset's (digits 0.7)."),
        ("hflip", "Random horizontal flip. Default: the preset's (digits: off, folders: on)."),
        ("rotation", "Random rotation up to this many degrees. Default: the preset's (digits 10)."),
        ("color_jitter", "Brightness/contrast/saturation jitter strength in [0, 1]. Default: off."),
        ("random_erasing", "Probability of random erasing. Default: off."),
    ),
    _RUN: (
        ("monitor", "val_acc | val_loss: what 'best' means for best.pt and what early stopping watches."),
        ("early_stop", "Stop after this many epochs without improvement (0 = off)."),
        ("min_delta", "Smallest change of the monitored value that counts as improvement."),
        ("max_steps", "Stop after this many optimizer steps in total (smoke runs; resumable)."),
        ("seed", "Seed of initialisation, shuffling and augmentation."),
        ("shuffle", "Reshuffle the training set every epoch (off: a fixed order, for exact comparisons)."),
        ("device", "auto | cpu | cuda."),
        ("workers", "DataLoader worker processes (0 = in-process)."),
        ("channels_last", "NHWC weights and batches (oneDNN's faster convolution layout on CPUs)."),
        ("compile", "torch.compile the training step (about a minute to compile; validation and saved weights "
                    "are the plain model's)."),
    ),
}
_SYNC_BN_HELP = "SyncBatchNorm across the processes of a multi-GPU run (CUDA only; refused on the CPU)."


def train_cmd(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", help="YAML recipe: any option below as 'key: value' "
                                       "(e.g. 'batch_size: 32'); flags given on the command line override it.",
                                       rich_help_panel=_OUT),
    out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="Directory for best.pt, last.pt "
                             "(+ manifests), recipe.yaml, metrics.csv, tensorboard/ and curves.png.",
                             rich_help_panel=_OUT),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt (same recipe; "
                                "flags such as --epochs may extend it).", rich_help_panel=_OUT),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over even if --out already holds a run.",
                                   rich_help_panel=_OUT),
    json_out: str | None = typer.Option(None, "--json", help="Write the run summary as JSON to PATH "
                                        "('-' = stdout).",
                                        rich_help_panel=_OUT),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar per epoch.",
                                  rich_help_panel=_OUT),
    nproc: int | None = typer.Option(None, "--nproc", help="Data-parallel training in N local processes: runs "
                                     "'torchrun --standalone --nproc-per-node N -m edgeresnet train ...' (one "
                                     "process per GPU; gloo on the CPU). --batch-size is per process.",
                                     rich_help_panel=_DIST),
    **recipe_flags: Any,
) -> None:
    """Train ResNet-18/50 on digits or an image folder with a modern recipe; keeps the best checkpoint.

    Every option can also be set in a YAML recipe (--config); the effective recipe is saved as
    OUT/recipe.yaml. Ctrl-C (or a crash) leaves OUT/last.pt loadable; --resume continues from it.
    Runs unchanged under 'torchrun --nproc-per-node N -m edgeresnet train ...' (or use --nproc N).
    """
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.train.job import run_training, saved_recipe
    from edgeresnet.train.recipe import merge_recipe, read_recipe_file, recipe_from_dict

    check_json_dest(json_out)
    file_values = read_recipe_file(config) if config is not None else {}
    flags = _given(ctx, tuple(recipe_flags))
    base = None
    if resume:  # the run's own recipe; a --max-steps budget applies to one invocation, not to the resumed one
        base = recipe_from_dict({**saved_recipe(out), "max_steps": None})
    recipe = merge_recipe(file_values, flags, base=base, config_path=config)
    if nproc is not None and nproc != 1:
        from edgeresnet.train.distributed import launch

        raise typer.Exit(launch(recipe, nproc, out=out, resume=resume, overwrite=overwrite, progress=progress,
                                json_out=json_out))
    console = common.console(json_out)
    run = run_training(recipe, out, resume=resume, overwrite=overwrite, progress=progress, console=console)
    if not run.is_main:  # under torchrun, rank 0 reports for the group
        return
    for note in run.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    summary = run.summary()
    console.print(train_table(summary))
    emit_json(summary, json_out)


common.add_recipe_options(train_cmd, [(name, help, panel) for panel, rows in _TRAIN_RECIPE_OPTIONS.items()
                                      for name, help in rows], recipe_defaults=True, before="nproc")
common.add_recipe_options(train_cmd, [("sync_bn", _SYNC_BN_HELP, _DIST)], recipe_defaults=True)


def import_cmd(
    weights: Path = typer.Argument(..., help="Local torchvision- or timm-format ResNet weights: a state dict or "
                                   "training checkpoint (.pth/.pt, loaded with weights_only=True, so a file that "
                                   "would run code is refused) or a .safetensors file. DDP 'module.' and "
                                   "torch.compile '_orig_mod.' prefixes are stripped."),
    arch: str = typer.Option(..., "--arch", help="resnet18 or resnet50: the architecture of the file."),
    num_classes: int = typer.Option(..., "--num-classes", help="Classes of the new head; when it differs from the "
                                    "file's, the head is re-initialised (and you are told)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (.pt); its manifest goes to OUT.json."),
    small_stem: bool = typer.Option(False, "--small-stem/--no-small-stem", help="The file uses the 3x3 stride-1 "
                                    "stem without max-pool."),
    image_size: int = typer.Option(224, "--image-size", help="Input size recorded in the preprocessing contract."),
    class_names: str | None = typer.Option(None, "--class-names", help="Comma-separated class names "
                                           "(default 0..K-1)."),
    dropout: float = typer.Option(0.0, "--dropout", help="Dropout before the classifier, in [0, 1)."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Take the EMA weights when the file has them (timm "
                             "'state_dict_ema', torchvision references 'model_ema'), as timm does."),
    json_out: str | None = typer.Option(None, "--json", help="Write what was imported as JSON to PATH "
                                        "('-' = stdout)."),
) -> None:
    """Import external ResNet weights as an edgeresnet checkpoint (ImageNet preprocessing recorded)."""
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.models.weights_import import ImportSettings, import_weights

    check_json_dest(json_out)  # a --json PATH that cannot be written fails before the work
    result = import_weights(ImportSettings(weights=weights, arch=arch, num_classes=num_classes, out=out,
                                           small_stem=small_stem, image_size=image_size, class_names=class_names,
                                           dropout=dropout, ema=ema))
    console = common.console(json_out)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"imported {weights} -> {out} ({arch}, {num_classes} classes, {result.parameters / 1e6:.2f} M "
                  f"parameters, {image_size} px ImageNet preprocessing)", highlight=False)
    emit_json(result.to_dict(), json_out)


def evaluate_cmd(
    model: Path = typer.Argument(..., help="Model file: checkpoint (.pt), ONNX (.onnx) or TensorRT engine "
                                 "(.engine)."),
    data: str | None = typer.Option(None, "--data", help="'digits', 'fashion-mnist', an IDX or ImageFolder directory "
                                    "(default: the data set recorded in the model's manifest, else digits)."),
    split: str = typer.Option("test", "--split", help="train | val | test | all (every image of --data once: "
                              "a separate held-out folder scored whole)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per inference batch."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N images of the split."),
    split_seed: int | None = typer.Option(None, "--split-seed", help="Seed of the data split (default: the one the "
                                          "model was trained with, else 0)."),
    backend: str | None = typer.Option(None, "--backend", help="torch | ort | trt (default: from the file type)."),
    device: str | None = typer.Option(None, "--device", help="torch: cpu or cuda[:N] (default: CUDA when "
                                      "available); trt: cuda, cuda:N or N (default 0)."),
    cuda_backend: str = typer.Option("auto", "--cuda-backend", help="trt: CUDA binding for memory, streams and "
                                     "the device probe: auto (cuda-python, else pycuda) | cuda-python | pycuda."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Directory for the confusion-matrix PNG and the "
                                    "metrics JSON (default: beside the model)."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write the confusion-matrix PNG."),
    json_out: str | None = typer.Option(None, "--json", help="Write the metrics as JSON to PATH ('-' = stdout)."),
) -> None:
    """Top-1/top-5, per-class precision/recall/F1, macro/weighted averages and the confusion matrix."""
    from edgeresnet.artifacts import emit_json
    from edgeresnet.evaluate import evaluate_model_file, write_evaluation

    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be a positive integer")
    from edgeresnet.artifacts import check_json_dest, check_output_folder

    check_output_folder(out if out is not None else model.parent)  # before the evaluation, not after it
    check_json_dest(json_out)
    console = common.console(json_out)
    metrics = evaluate_model_file(model, data, split, batch_size=batch_size, limit=limit, split_seed=split_seed,
                                  backend=backend, device=device, cuda_backend=cuda_backend)
    outputs = write_evaluation(metrics, out if out is not None else model.parent, plot=plot)
    metrics["outputs"] = outputs
    for table in eval_tables(metrics):
        console.print(table)
    if metrics.get("skipped_files"):
        console.print(f"[yellow]note:[/yellow] skipped {len(metrics['skipped_files'])} corrupt file(s): "
                      f"{', '.join(metrics['skipped_files'][:5])}", highlight=False)
    for name, path in outputs.items():
        console.print(f"{name}: {path}", highlight=False)
    emit_json(metrics, json_out)


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Directory for every output of the demo "
                             "(replaced stage by stage on a re-run)."),
    data: str = typer.Option("digits", "--data", help="'digits' (embedded; the 32 px training defaults), "
                             "'fashion-mnist' or a directory of the four IDX files (the 28 px IDX recipe)."),
    fast: bool = typer.Option(False, "--fast", help="A few training steps instead of full training (a smoke test; "
                              "accuracy will be low)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs (default: the recipe's)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    json_out: str | None = typer.Option(None, "--json", help="Write every stage's numbers as JSON to PATH "
                                        "('-' = stdout)."),
) -> None:
    """The main job end to end: train ResNet18, evaluate, export, prune, quantize, build and benchmark it."""
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.demo import run_demo

    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs {epochs}: must be a positive integer")
    check_json_dest(json_out)
    report = run_demo(out, data=data, fast=fast, epochs=epochs, progress=progress, console=common.console(json_out))
    emit_json(report, json_out)


def register(app: typer.Typer) -> None:
    """Add ``train``, ``import``, ``evaluate`` and ``demo``."""
    app.command("train")(train_cmd)
    app.command("import")(import_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("demo")(demo_cmd)
