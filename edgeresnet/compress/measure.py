"""Measuring what compression cost: top-1 on a split, ONNX size, ONNX Runtime latency, fine-tuning.

Thin edges over the shared parts (training loop, ONNX exporter, runners, timing loop, ``evaluate.top1``) so
``prune``, ``distill`` and the benchmark scripts measure the same way.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.evaluate import top1
from edgeresnet.evaluate.paired import correct_mask


def predict(model: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of a torch model on preprocessed NCHW images, in eval mode, without gradients."""
    import torch

    was = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size]).to(device)
            outs.append(model(batch).float().cpu().numpy())
    model.train(was)
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def accuracy(model: Any, images: np.ndarray, labels: np.ndarray) -> float:
    return top1(predict(model, images), labels)


def accuracy_outcomes(model: Any, images: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Top-1 and the per-image outcomes (True: correct) of one forward pass, for McNemar's paired test."""
    logits = predict(model, images)
    return top1(logits, labels), correct_mask(logits, labels)


def export_onnx_file(model: Any, preprocess: Any, out: Path, exporter: str | None = None) -> Path:
    """Export a copy via the shared exporter (its default exporter/opset unless ``exporter`` is given)."""
    import copy

    from edgeresnet.export import export_onnx

    return Path(export_onnx(copy.deepcopy(model).eval().cpu(), preprocess, Path(out), exporter=exporter).path)


def onnx_size_bytes(model: Any, preprocess: Any, exporter: str | None = None) -> int:
    """Bytes of the exported ONNX (external-data files included, the JSON manifest not)."""
    with tempfile.TemporaryDirectory(prefix="edgeresnet-onnx-") as tmp:
        export_onnx_file(model, preprocess, Path(tmp) / "model.onnx", exporter)
        return sum(p.stat().st_size for p in Path(tmp).iterdir() if p.is_file() and p.suffix != ".json")


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    mean_ms: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": round(self.median_ms, 4), "p90_ms": round(self.p90_ms, 4),
                "mean_ms": round(self.mean_ms, 4), "n": self.n}


def ort_latencies(paths: list[Path], image_size: int, rounds: int = 3, duration_s: float = 1.0,
                  batch: int = 1, seed: int = 0, threads: int | None = None) -> list[Latency]:
    """Batch-``batch`` ONNX Runtime CPU latency of several models, measured in interleaved rounds.

    Interleaving (A B C, A B C, ...) spreads the drift of a shared machine over all models instead of
    charging it to whichever ran last; each model's samples from all rounds are pooled.
    """
    from edgeresnet.bench.stats import summarize
    from edgeresnet.bench.timing import TimingConfig, measure
    from edgeresnet.runners import load_runner

    images = np.random.default_rng(seed).standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
    samples: list[list[float]] = [[] for _ in paths]
    config = TimingConfig(warmup_ms=100.0, warmup_iterations=3, min_iterations=10, duration_s=duration_s)
    with contextlib.ExitStack() as stack:
        runners = [stack.enter_context(load_runner(Path(p), "ort", threads=threads)) for p in paths]
        steps = [runner.benchmark_step(images) for runner in runners]
        for _ in range(rounds):
            for i, step in enumerate(steps):
                samples[i] += measure(step, config).latency_ms
    out = []
    for values in samples:
        s = summarize(values, resamples=200)
        out.append(Latency(s["median"], s["p90"], s["mean"], s["n"]))
    return out


FINETUNE_LR = 0.01  # fine-tuning a trained (pruned) model: a fifth of the from-scratch LR, no warm-up


def finetune(model: Any, splits: Any, *, epochs: int, loss_fn: Any = None, batch_size: int = 64,
             lr: float | None = None, seed: int = 0, progress: bool = True, spec: Any = None,
             from_scratch: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` on ``splits`` with the shared loop (``train.fit``); returns (best model, summary).

    A fine-tune (the default) starts at ``FINETUNE_LR`` without warm-up and decays by cosine; training from
    scratch (a fresh student) uses the training recipe's own LR and warm-up.
    """
    if epochs < 1:
        return model, {"epochs": 0}
    from edgeresnet.train import TrainRecipe, fit

    changes: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "seed": seed,
                               "image_size": int(splits.preprocess.image_size), "data": str(splits.name)}
    if not from_scratch:
        changes.update({"lr": FINETUNE_LR, "warmup_epochs": 0.0})
    if lr is not None:
        changes["lr"] = lr
    recipe = TrainRecipe(**changes)
    result = fit(model, splits, recipe, None, loss_fn=loss_fn, progress=progress, spec=spec)
    return result.model, {"epochs": epochs, "best_val_acc": result.best_val_acc, "lr": recipe.lr,
                          "warmup_epochs": recipe.warmup_epochs, "schedule": recipe.schedule,
                          "optimizer": recipe.optimizer, "batch_size": batch_size, "history": result.history}
