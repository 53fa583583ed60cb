"""The training loop shared by ``train``, fine-tuning after pruning/QAT and distillation.

``fit`` owns the epoch/step mechanics (schedule, accumulation, mixed precision, validation, best/last
checkpoints, early stopping, resume, logging); callers own the model, the data and the loss:
``loss_fn(logits, labels, images)`` replaces the default cross-entropy (distillation uses it).

Inside a torchrun process group (``edgeresnet.train.distributed``) the same loop runs data-parallel:
DDP around the model, a ``DistributedSampler`` share per rank, metrics all-reduced, rank 0 alone writing.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.errors import UserError
from edgeresnet.train import distributed, logs, optim
from edgeresnet.train.device import resolve_device
from edgeresnet.train.recipe import STRUCTURAL, TrainRecipe, flag
from edgeresnet.train.schedule import lr_factor
from edgeresnet.train.state import capture_rng, disk_full_error, is_disk_full, restore_rng, save_checkpoint

BEST, LAST = "best.pt", "last.pt"


@dataclass
class TrainResult:
    """What a run produced; ``model`` holds the best weights (eval mode, on the CPU)."""

    model: Any
    best_val_acc: float
    best_val_loss: float
    best_epoch: int
    history: list[dict[str, Any]]
    checkpoint: Path | None  # best.pt (None without an output directory)
    last_checkpoint: Path | None = None
    stopped: str = "completed"  # completed | early_stop | max_steps | already_complete
    steps: int = 0
    duration_s: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"best_val_acc": self.best_val_acc, "best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch,
                "epochs_run": len(self.history), "steps": self.steps, "stopped": self.stopped,
                "duration_s": round(self.duration_s, 2),
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                "outputs": self.outputs, "history": self.history}


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augment_for(splits: Any, recipe: TrainRecipe) -> Any:
    """The data set's augmentation preset with the recipe's explicit switches applied on top."""
    import dataclasses

    changes = {name: getattr(recipe, name) for name in ("random_resized_crop", "crop_scale_min", "hflip", "rotation",
                                                         "color_jitter", "random_erasing")
               if getattr(recipe, name) is not None}
    return dataclasses.replace(splits.augment, **changes)


def _is_better(value: float, best: float | None, monitor: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if monitor == "val_acc" else value < best - min_delta


def fit(model: Any, splits: Any, recipe: TrainRecipe, out_dir: Path | None, loss_fn: Callable[..., Any] | None = None,
        progress: bool = True, spec: Any = None, *, resume: bool = False,
        callbacks: Sequence[Callable[[dict[str, Any]], None]] = (), console: Any = None,
        inputs: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model`` on ``splits["train"]``, validate each epoch on ``splits["val"]``, keep the best weights.

    With ``out_dir``: ``best.pt``/``last.pt`` (+ manifests), ``metrics.csv``, ``tensorboard/`` and
    ``curves.png`` are written there; ``resume=True`` continues from ``out_dir/last.pt``. ``callbacks`` get
    each epoch's record after its checkpoints are on disk (an exception there stops the run, resumably).
    In a process group of several ranks the run is data-parallel and only rank 0 writes, logs and calls back.
    """
    import torch
    from torch.utils.data import DataLoader

    from edgeresnet.models import load_checkpoint

    started = time.perf_counter()
    if not splits.splits.get("train"):
        raise UserError(f"--data {recipe.data}: the training split is empty; add images")
    if not splits.splits.get("val"):
        raise UserError(f"--data {recipe.data}: the validation split is empty; add images (at least 3 per class)")
    if spec is None:
        spec = recipe.model_spec(splits.num_classes)
    ctx = distributed.current()
    main = ctx is None or ctx.is_main
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
    if resume and out is None:
        raise UserError("--resume needs --out, the directory of the run to continue")
    device = resolve_device(recipe.device, ctx)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.precision)
    if recipe.precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16: needs a CUDA GPU (with a gradient scaler); on the CPU use --precision bf16")
    recipe_dict = recipe.to_dict()
    preprocess = splits.preprocess.to_dict()

    if recipe.freeze_backbone:
        optim.freeze_backbone(model)
    model.to(device)
    layout = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model.to(memory_format=layout)  # the state dict keeps its names and values; only the strides change
    net = distributed.wrap_model(model, ctx, device, recipe.sync_bn) if ctx is not None else model
    if recipe.compile:
        # The training step only: validation, checkpoints and export keep using ``model`` itself, so the saved
        # keys carry no ``_orig_mod.`` prefix and evaluation mode never triggers a recompile.
        net = torch.compile(net)

    generator = torch.Generator()
    generator.manual_seed(recipe.seed)
    augment = augment_for(splits, recipe)
    transform = splits.preprocess.train_transform(augment) if recipe.augment else splits.preprocess.eval_transform()
    train_set = splits.dataset("train", transform=transform)
    sampler = distributed.train_sampler(train_set, ctx, recipe.seed, recipe.shuffle) if ctx is not None else None
    per_rank = len(sampler) if sampler is not None else len(train_set)
    drop_last = per_rank > recipe.batch_size  # a last batch of 1 breaks BN at 1x1 feature maps
    train_loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=recipe.shuffle and sampler is None,
                              sampler=sampler, generator=generator, num_workers=recipe.workers, drop_last=drop_last,
                              persistent_workers=recipe.workers > 0)
    val_set = splits.dataset("val")
    if ctx is not None:
        val_set = distributed.eval_subset(val_set, ctx)
    val_loader = DataLoader(val_set, batch_size=max(recipe.batch_size, 256), shuffle=False,
                            num_workers=recipe.workers)
    micro_batches = len(train_loader)
    steps_per_epoch = math.ceil(micro_batches / recipe.accumulate)

    optimizer = optim.make_optimizer(model, recipe)
    scaler = torch.amp.GradScaler("cuda", enabled=recipe.precision == "fp16" and device.type == "cuda")
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    history: list[dict[str, Any]] = []
    start_epoch, global_step = 0, 0
    best_value: float | None = None
    best = {"epoch": 0, "val_acc": 0.0, "val_loss": float("inf")}
    best_state: dict[str, Any] | None = None
    since_best = 0
    if resume:
        assert out is not None
        last_path = out / LAST
        if not last_path.exists():
            raise UserError(f"--resume: no {LAST} in {out}; start the run without --resume")
        ckpt = load_checkpoint(last_path)
        state = ckpt.get("train_state")
        if not isinstance(state, dict):
            raise UserError(f"--resume: {last_path} holds no training state; start the run without --resume")
        saved = ckpt.get("recipe") or {}
        for name in STRUCTURAL:
            if name in saved and saved[name] != getattr(recipe, name):
                raise UserError(f"--resume: {flag(name)} {getattr(recipe, name)!r} differs from the run in {out} "
                                f"({saved[name]!r}); keep it or start a new --out")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        start_epoch, global_step = int(ckpt["epoch"]), int(state["global_step"])
        history = list(state["history"])
        best = dict(state["best"])
        best_value = state.get("best_value")
        since_best = int(state.get("since_best", 0))
        restore_rng(state["rng"], generator)
        if state.get("stopped") in ("early_stop",):
            start_epoch = recipe.epochs  # an early-stopped run does not restart by itself

    try:  # a full disk anywhere in the run's writes (checkpoints, CSV, TensorBoard, curves): one line
        writes = out is not None and main
        tb = logs.TensorBoardLog(out / "tensorboard", start_epoch) if writes else None
        bar = _EpochBar(progress and main, recipe.epochs, console)
        stopped = "completed" if start_epoch < recipe.epochs else "already_complete"
        lr_now = optimizer.param_groups[0]["lr"]
        try:
            for epoch in range(start_epoch, recipe.epochs):
                epoch_start = time.perf_counter()
                if sampler is not None:
                    sampler.set_epoch(epoch)  # a new deal of the shares every epoch, the same on every rank
                model.train()
                if recipe.freeze_backbone:
                    optim.set_frozen_bn_eval(model)
                seen, loss_sum, correct = 0, 0.0, 0
                optimizer.zero_grad(set_to_none=True)
                bar.start(epoch + 1, steps_per_epoch)
                pending = 0
                for index, (images, labels) in enumerate(train_loader):
                    if pending == 0:
                        lr_now = optim.set_lr(optimizer, lr_factor(global_step, steps_per_epoch, recipe))
                    images = images.to(device, non_blocking=True, memory_format=layout)
                    labels = labels.to(device, non_blocking=True)
                    steps_now = pending + 1 == recipe.accumulate or index == micro_batches - 1
                    # DDP all-reduces gradients on the micro-batch that steps; the others accumulate locally
                    sync = net.no_sync() if ctx is not None and not steps_now else contextlib.nullcontext()
                    with sync:
                        with _autocast(device, amp_dtype):
                            logits = net(images)
                            loss = loss_fn(logits, labels, images) if loss_fn is not None else criterion(logits, labels)
                        if not _all_finite(loss.detach(), ctx):
                            raise UserError(f"training diverged: loss is {float(loss.detach()):.4g} at epoch "
                                            f"{epoch + 1}, step {global_step + 1}; lower --lr or use --precision fp32")
                        total = loss
                        if recipe.l1 > 0:
                            total = total + recipe.l1 * optim.l1_penalty(model)
                        scaler.scale(total / recipe.accumulate).backward()
                    pending += 1
                    batch = labels.shape[0]
                    seen += batch
                    loss_sum += float(loss.detach()) * batch
                    correct += int((logits.detach().argmax(1) == labels).sum())
                    if steps_now:
                        scaler.step(optimizer)
                        scaler.update()
                        optimizer.zero_grad(set_to_none=True)
                        pending = 0
                        global_step += 1
                        bar.step(loss_sum / seen, 100.0 * correct / seen, lr_now)
                        if recipe.max_steps is not None and global_step >= recipe.max_steps:
                            stopped = "max_steps"
                            break
                loss_sum, correct, seen = distributed.all_reduce_sums([loss_sum, correct, seen], ctx)
                distributed.sync_buffers(model, ctx)  # every rank scores its shard with rank 0's BN statistics
                val_loss, val_acc = _validate(model, val_loader, device, amp_dtype, ctx)
                record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                          "train_acc": 100.0 * correct / max(seen, 1),
                          "val_loss": val_loss, "val_acc": val_acc, "lr": lr_now, "steps": global_step,
                          "seconds": round(time.perf_counter() - epoch_start, 3), "best": False}
                value = val_acc if recipe.monitor == "val_acc" else val_loss
                improved = _is_better(value, best_value, recipe.monitor, recipe.min_delta)
                if improved:
                    best_value, since_best = value, 0
                    best = {"epoch": epoch + 1, "val_acc": val_acc, "val_loss": val_loss}
                    record["best"] = True
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                else:
                    since_best += 1
                history.append(record)
                if recipe.early_stop and since_best >= recipe.early_stop and epoch + 1 < recipe.epochs:
                    stopped = "early_stop"
                metrics = {"val_acc": val_acc, "val_loss": val_loss, "train_loss": record["train_loss"],
                           "train_acc": record["train_acc"], "best_val_acc": best["val_acc"],
                           "best_epoch": best["epoch"]}
                if writes:
                    if improved:
                        save_checkpoint(out / BEST, model, spec, preprocess, recipe=recipe_dict, epoch=epoch + 1,
                                        metrics=metrics, role="best", inputs=inputs)
                    train_state = {"optimizer": optimizer.state_dict(),
                                   "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                                   "global_step": global_step, "history": history, "best": best,
                                   "best_value": best_value,
                                   "since_best": since_best, "rng": capture_rng(generator), "stopped": stopped}
                    save_checkpoint(out / LAST, model, spec, preprocess, recipe=recipe_dict, epoch=epoch + 1,
                                    metrics=metrics, role="last", train_state=train_state, inputs=inputs)
                    logs.write_metrics_csv(history, out / "metrics.csv")
                    if tb is not None:
                        tb.add(record)
                    logs.plot_curves(history, out / "curves.png", title=f"{spec.arch} on {recipe.data}")
                bar.finish(record)
                for callback in callbacks if main else ():
                    callback(record)
                if stopped in ("early_stop", "max_steps"):
                    break
        finally:
            bar.close()
            if tb is not None:
                tb.close()
    except OSError as exc:
        if out is not None and is_disk_full(exc):
            raise disk_full_error(out, exc) from None
        raise

    if recipe.sync_bn:
        distributed.revert_sync_batchnorm(model)  # plain BatchNorm again: runs, exports and saves like any model
    if best_state is not None:
        model.load_state_dict(best_state)
    elif out is not None and (out / BEST).exists():  # resumed after the best epoch: the best weights are on disk
        model.load_state_dict(load_checkpoint(out / BEST)["state_dict"])
    model.to("cpu").eval()
    outputs = {}
    if out is not None:
        for name in (BEST, LAST, "metrics.csv", "curves.png", "tensorboard"):
            if (out / name).exists():
                outputs[name] = str(out / name)
    best_path = out / BEST if out is not None and (out / BEST).exists() else None
    last_path = out / LAST if out is not None and (out / LAST).exists() else None
    return TrainResult(model=model, best_val_acc=best["val_acc"], best_val_loss=best["val_loss"],
                       best_epoch=best["epoch"], history=history, checkpoint=best_path, last_checkpoint=last_path,
                       stopped=stopped, steps=global_step, duration_s=time.perf_counter() - started, outputs=outputs)


def _validate(model: Any, loader: Any, device: Any, amp_dtype: Any,
              ctx: distributed.DistContext | None = None) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and top-1 in percent over the validation split (over every
    rank's shard when data-parallel: the sums are all-reduced, so each image counts once)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            with _autocast(device, amp_dtype):
                logits = model(images)
            loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
            seen += labels.shape[0]
    loss_sum, correct, seen = distributed.all_reduce_sums([loss_sum, correct, seen], ctx)
    return loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1)


def _all_finite(loss: Any, ctx: distributed.DistContext | None) -> bool:
    """Whether the loss is finite on every rank (one rank stopping alone would leave the others waiting)."""
    import torch

    finite = bool(torch.isfinite(loss))
    if ctx is None:
        return finite
    return distributed.all_reduce_sums([0.0 if finite else 1.0], ctx)[0] == 0.0


def _autocast(device: Any, amp_dtype: Any) -> Any:
    """bf16/fp16 autocast when mixed precision is on, else a no-op context."""
    import torch

    return torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)


class _EpochBar:
    """One rich progress line per epoch: steps, running loss/accuracy, LR, then the validation numbers.

    On a terminal the line is a live bar; elsewhere (CI logs, pipes) each epoch prints one plain line when
    it ends, so logs show progress as it happens instead of all bars at exit.
    """

    def __init__(self, enabled: bool, epochs: int, console: Any = None) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self.progress: Any = None
        self.task: Any = None
        self.console: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.console = console or Console(stderr=True)
            if self.console.is_terminal:
                self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                                         MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                                         console=self.console)
                self.progress.start()

    def start(self, epoch: int, steps: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=steps, stats="")

    def step(self, loss: float, acc: float, lr: float) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1, stats=f"loss {loss:.4f} acc {acc:5.1f}% lr {lr:.2e}")

    def finish(self, record: dict[str, Any]) -> None:
        star = " *" if record["best"] else ""
        stats = (f"loss {record['train_loss']:.4f} acc {record['train_acc']:5.1f}% lr {record['lr']:.2e} | "
                 f"val loss {record['val_loss']:.4f} acc {record['val_acc']:5.1f}%{star}")
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, stats=stats)
        elif self.console is not None:
            self.console.print(f"epoch {record['epoch']}/{self.epochs} ({record['seconds']:.1f} s)  {stats}",
                               highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
