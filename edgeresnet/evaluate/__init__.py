"""Classification metrics from logits, evaluation of any runner, and the confusion-matrix picture.

``evaluate_logits`` is pure numpy (the same numbers whatever produced the logits: PyTorch, ONNX Runtime or
a TensorRT engine), so accuracy of every backend is computed one way. Top-1/top-5 are in percent;
precision, recall and F1 are fractions in [0, 1] (scikit-learn's convention, zero where undefined).
Every top-1/top-5 carries its 95 % interval over the test images (``intervals``: Wilson score); two models
on the same images are compared with McNemar's test on their per-image outcomes (``paired``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnet.errors import UserError
from edgeresnet.evaluate.intervals import (
    DEFAULT_CONFIDENCE,
    Interval,
    accuracy_interval,
    format_accuracy,
    wilson_interval,
)
from edgeresnet.evaluate.paired import (
    PairedComparison,
    compare_logits,
    compare_outcomes,
    correct_mask,
    mcnemar_exact_p,
    mcnemar_mid_p,
    newcombe_interval,
)

if TYPE_CHECKING:
    from edgeresnet.runners.base import Runner

__all__ = [  # what edgeresnet/evaluate.py exported, then the statistics of the two submodules
    "top1", "evaluate_logits", "runner_logits", "evaluate_runner", "plot_confusion", "load_model_runner",
    "evaluate_model_file", "write_evaluation",
    "DEFAULT_CONFIDENCE", "Interval", "accuracy_interval", "format_accuracy", "wilson_interval",
    "PairedComparison", "compare_logits", "compare_outcomes", "correct_mask", "mcnemar_exact_p", "mcnemar_mid_p",
    "newcombe_interval",
]


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent: the package's one definition (evaluate, benchmark, prune, PTQ/QAT gates).

    No labelled images is an error, not NaN or 0: an accuracy of nothing would pass or fail a gate silently."""
    labels = np.asarray(labels).reshape(-1)
    if len(labels) == 0:
        raise UserError("accuracy: no labelled images to measure top-1 on; check --data and the split sizes")
    return float(100.0 * np.mean(np.argmax(np.asarray(logits), axis=1) == labels))


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """top1/top5 (percent), cross-entropy, per-class precision/recall/F1, macro and weighted averages, confusion."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} do not pair up as (N, K) and (N,)")
    accuracy = top1(logits, labels)  # no images: the one-line error, before anything else is computed
    n, k = logits.shape
    names = [str(c) for c in class_names] if class_names else [str(i) for i in range(k)]
    if len(names) != k:
        raise UserError(f"the model has {k} outputs but {len(names)} class names are known; "
                        "evaluate on the data set the model was trained on")
    if labels.min() < 0 or labels.max() >= k:
        raise UserError(f"labels go up to {int(labels.max())} but the model has only {k} classes; check --data")
    pred = logits.argmax(axis=1)
    top_k = min(5, k)
    in_top = (np.argsort(-logits, axis=1)[:, :top_k] == labels[:, None]).any(axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    true_pos = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    precision = _safe_div(true_pos, predicted)
    recall = _safe_div(true_pos, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    weights = support / support.sum() if support.sum() else np.zeros(k)
    per_class = [{"class": names[i], "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                  "support": int(support[i])} for i in range(k)]
    correct1, correct5 = int((pred == labels).sum()), int(in_top.sum())
    return {
        "n": int(n),
        "num_classes": int(k),
        "top1": accuracy,
        "top1_correct": correct1,
        "top1_ci95": wilson_interval(correct1, int(n)).percent(),
        "top5": float(100.0 * in_top.mean()),
        "top5_k": top_k,
        "top5_correct": correct5,
        "top5_ci95": wilson_interval(correct5, int(n)).percent(),
        "ci_method": "wilson",  # edgeresnet.evaluate.intervals: score interval, 95 %, over these n images
        "loss": _cross_entropy(logits, labels),
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "weighted": {"precision": float((precision * weights).sum()), "recall": float((recall * weights).sum()),
                     "f1": float((f1 * weights).sum())},
        "per_class": per_class,
        "class_names": names,
        "confusion_matrix": confusion.tolist(),  # rows: true class, columns: predicted class
    }


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float | None:
    if not len(labels) or not np.isfinite(logits).all():
        return None
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def runner_logits(runner: Runner, images: np.ndarray, batch_size: int = 64,
                  on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Logits of ``images`` through ``runner`` in batches its ``batch_range`` accepts: ``--batch-size`` clamped
    into the range, a chunk below the minimum (the last one of a static batch-N model) padded up to it."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be a positive integer")
    limits = runner.batch_range
    lo, hi = limits if limits is not None else (1, None)
    size = max(lo, min(batch_size, hi)) if hi else max(lo, batch_size)
    outputs = []
    for start in range(0, len(images), size):
        chunk = images[start:start + size]
        count = len(chunk)
        if count < lo:  # pad by repeating the last image; the extra rows are dropped
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], lo - count, axis=0)])
        outputs.append(np.asarray(runner.infer(np.ascontiguousarray(chunk, dtype=np.float32)))[:count])
        if on_batch is not None:
            on_batch(start + count, len(images))
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def evaluate_runner(runner: Any, images: np.ndarray, labels: np.ndarray, batch_size: int = 64,
                    class_names: Sequence[str] | None = None,
                    on_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``evaluate_logits`` over a runner's outputs; activates the runner unless it is already active (then the
    caller deactivates it)."""
    started = time.perf_counter()
    if class_names is None:
        preprocess = getattr(runner, "preprocess", None)
        class_names = list(preprocess.class_names) if preprocess is not None and preprocess.class_names else None
    if runner.active:
        logits = runner_logits(runner, images, batch_size, on_batch)
    else:
        with runner:
            logits = runner_logits(runner, images, batch_size, on_batch)
    metrics = evaluate_logits(logits, labels, class_names)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    metrics["runner"] = runner.describe()
    return metrics


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised colours with the counts written in the cells (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeresnet.artifacts import atomic_output

    matrix = np.asarray(confusion, dtype=np.float64)
    k = matrix.shape[0]
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = min(16.0, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(k), labels=list(class_names), rotation=90 if k > 12 else 0)
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


# -- a model file on a data split -----------------------------------------------------------------


def load_model_runner(path: str | Path, backend: str | None = None, device: str | None = None,
                      cuda_backend: str = "auto") -> Any:
    """The runner for a checkpoint, ONNX file or engine (``runners.load_runner`` picks by file type);
    ``cuda_backend`` (auto | cuda-python | pycuda) reaches the TensorRT runner only."""
    from edgeresnet.runners import load_runner
    from edgeresnet.trt.cuda_mem import check_backend_name

    check_backend_name(cuda_backend)
    return load_runner(path, backend=backend, device=device, cuda_backend=cuda_backend)


def evaluate_model_file(path: str | Path, data: str | None = None, split: str = "test", *, batch_size: int = 64,
                        limit: int | None = None, split_seed: int | None = None, backend: str | None = None,
                        device: str | None = None, cuda_backend: str = "auto",
                        on_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Evaluate a model file on a split of its data set, preprocessed exactly as the model's contract says.

    ``data``/``split_seed`` default to what the model's manifests record (the data set it was trained on
    and the seed of its split), else digits and 0.
    """
    from edgeresnet.artifacts import require_file
    from edgeresnet.data import load_data
    from edgeresnet.export.onnx_meta import data_spec_of, preprocess_of

    model_path = require_file(path, "model file")
    if split not in ("train", "val", "test", "all"):
        raise UserError(f"--split {split}: choose train, val, test or all (every image of --data, once)")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: must be a positive number of images")
    runner = load_model_runner(model_path, backend, device, cuda_backend)
    preprocess = getattr(runner, "preprocess", None) or preprocess_of(model_path)
    recorded = _recorded_settings(model_path)
    data = data or data_spec_of(model_path) or "digits"
    if split_seed is None:
        split_seed = int(recorded.get("split_seed", 0) or 0)
    with warnings.catch_warnings():  # skipped (corrupt) files are reported in the result, not as Python warnings
        warnings.simplefilter("ignore")
        splits = load_data(data, preprocess.image_size, seed=split_seed)
    if preprocess.class_names and tuple(splits.class_names) != tuple(preprocess.class_names):
        raise UserError(f"--data {data}: classes {list(splits.class_names)[:6]} do not match the model's "
                        f"{list(preprocess.class_names)[:6]}; evaluate on the data set the model was trained on")
    splits.preprocess = preprocess  # the model's own size, mean/std and channel order
    images, labels = splits.arrays(split, limit=limit)
    if not len(labels):
        raise UserError(f"--data {data}: the {split} split is empty; nothing to evaluate")
    metrics = evaluate_runner(runner, images, labels, batch_size, list(splits.class_names), on_batch)
    metrics.update({"model": str(model_path), "data": data, "split": split, "split_seed": split_seed,
                    "image_size": preprocess.image_size, "skipped_files": [Path(s).name for s in splits.skipped]})
    return metrics


def _recorded_settings(path: Path) -> dict[str, Any]:
    from edgeresnet.artifacts import read_manifest

    try:
        manifest = read_manifest(path) or {}
    except UserError:
        return {}
    settings = manifest.get("settings")
    return settings if isinstance(settings, dict) else {}


def write_evaluation(metrics: dict[str, Any], out_dir: Path, plot: bool = True) -> dict[str, str]:
    """``<model>-<type>-<split>-metrics.json`` (+ manifest) and the confusion PNG in ``out_dir``."""
    from edgeresnet.artifacts import build_manifest, make_output_dir, write_json_atomic, write_manifest

    out_dir = make_output_dir(Path(out_dir), "--out")  # with missing parents; a file in the way is one line
    model = Path(metrics["model"])
    stem = f"{model.stem}-{model.suffix.lstrip('.') or 'model'}-{metrics['split']}"
    outputs: dict[str, str] = {}
    if plot:
        png = plot_confusion(metrics["confusion_matrix"], metrics["class_names"], out_dir / f"{stem}-confusion.png",
                             title=f"{model.name} on {metrics['data']} {metrics['split']}: "
                                   f"top-1 {metrics['top1']:.2f} %")
        outputs["confusion_png"] = str(png)
    path = out_dir / f"{stem}-metrics.json"
    outputs["metrics_json"] = str(path)
    write_json_atomic(path, {**metrics, "outputs": outputs}, option="--out")
    write_manifest(path, build_manifest("evaluation", path, command="evaluate", inputs={"model": model},
                                        settings={"data": metrics["data"], "split": metrics["split"],
                                                  "split_seed": metrics["split_seed"]}))
    return outputs
