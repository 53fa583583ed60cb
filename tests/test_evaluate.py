"""Metrics from logits (checked against scikit-learn), runner evaluation, the confusion PNG."""

from __future__ import annotations

import numpy as np
import pytest

from edgeresnet.errors import UserError
from edgeresnet.evaluate import evaluate_logits, evaluate_model_file, evaluate_runner, plot_confusion, write_evaluation
from edgeresnet.runners.base import Runner

pytestmark = pytest.mark.usefixtures("torch_single_thread")
PNG = b"\x89PNG\r\n\x1a\n"


def test_metrics_match_scikit_learn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

    rng = np.random.default_rng(1)
    k, n = 7, 300
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.5 * np.eye(k)[labels] * rng.random((n, 1))
    logits[:, 6] -= 10  # class 6 is never predicted: precision undefined -> 0
    m = evaluate_logits(logits, labels, [f"c{i}" for i in range(k)])
    pred = logits.argmax(1)
    assert m["n"] == n and m["num_classes"] == k and m["top5_k"] == 5
    assert m["top1"] == pytest.approx(100 * (pred == labels).mean())
    assert m["top5"] == pytest.approx(100 * top_k_accuracy_score(labels, logits, k=5, labels=range(k)))
    assert m["confusion_matrix"] == confusion_matrix(labels, pred, labels=range(k)).tolist()
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(labels, pred, labels=range(k), average=avg, zero_division=0)
        assert (m[avg]["precision"], m[avg]["recall"], m[avg]["f1"]) == pytest.approx((p, r, f))
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=range(k), zero_division=0)
    assert [c["precision"] for c in m["per_class"]] == pytest.approx(p)
    assert [c["recall"] for c in m["per_class"]] == pytest.approx(r)
    assert [c["f1"] for c in m["per_class"]] == pytest.approx(f)
    assert [c["support"] for c in m["per_class"]] == s.tolist()
    assert m["per_class"][6]["precision"] == 0.0
    shifted = logits - logits.max(1, keepdims=True)
    expected_ce = -(shifted[np.arange(n), labels] - np.log(np.exp(shifted).sum(1))).mean()
    assert m["loss"] == pytest.approx(expected_ce)


def test_perfect_and_few_class_cases():
    labels = np.array([0, 1, 2, 1])
    m = evaluate_logits(np.eye(3)[labels] * 5, labels, ["a", "b", "c"])
    assert m["top1"] == 100.0 and m["top5"] == 100.0 and m["top5_k"] == 3
    assert m["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    with pytest.raises(UserError, match="3 outputs but 2 class names"):
        evaluate_logits(np.zeros((4, 3)), labels, ["a", "b"])
    with pytest.raises(UserError, match="labels go up to 5"):
        evaluate_logits(np.zeros((2, 3)), np.array([0, 5]))


def test_confusion_png(tmp_path):
    path = plot_confusion([[5, 1], [0, 4]], ["cat", "dog"], tmp_path / "cm.png", title="t")
    assert path.read_bytes()[:8] == PNG


class StaticBatchRunner(Runner):
    """A real Runner with a fixed batch of 4 (like a static ONNX/engine): a linear model in numpy."""

    backend = "numpy"
    batch_range = (4, 4)

    def __init__(self, weights):
        super().__init__(path="linear.npy")
        self.weights = weights
        self.calls = []

    def infer_impl(self, images):
        assert self.active and images.shape[0] == 4, images.shape
        self.calls.append(images.shape[0])
        return images.reshape(len(images), -1) @ self.weights

    @property
    def input_shape(self):
        return (4, 3, 16, 16)


def test_evaluate_runner_pads_static_batches_and_matches_direct_metrics(digits_small):
    images, labels = digits_small.arrays("test")  # 30 images: 7 full chunks of 4 + one padded chunk
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(images[0].size, 10)).astype(np.float32)
    runner = StaticBatchRunner(weights)
    metrics = evaluate_runner(runner, images, labels, batch_size=64, class_names=list(digits_small.class_names))
    assert len(runner.calls) == 8 and not runner.active
    direct = evaluate_logits(images.reshape(len(images), -1) @ weights, labels, digits_small.class_names)
    assert metrics["confusion_matrix"] == direct["confusion_matrix"] and metrics["top1"] == direct["top1"]
    assert metrics["runner"]["backend"] == "numpy"


def test_evaluate_checkpoint_file_and_write_outputs(tiny_checkpoint, tmp_path):
    from edgeresnet.models import load_checkpoint, model_from_checkpoint
    from edgeresnet.runners.torch_runner import TorchRunner

    metrics = evaluate_model_file(tiny_checkpoint, split="val", limit=20, batch_size=8)
    assert metrics["n"] == 20 and metrics["data"] == "digits" and metrics["image_size"] == 32
    assert sum(map(sum, metrics["confusion_matrix"])) == 20
    # the same numbers through a runner built by hand
    model, _ = model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    from edgeresnet.data import load_data

    images, labels = load_data("digits", 32).arrays("val", limit=20)
    by_hand = evaluate_runner(TorchRunner.from_model(model, None, device="cpu"), images, labels)
    assert by_hand["confusion_matrix"] == metrics["confusion_matrix"]
    outputs = write_evaluation(metrics, tmp_path / "eval")
    assert open(outputs["confusion_png"], "rb").read(8) == PNG
    assert (tmp_path / "eval" / "best-pt-val-metrics.json.json").exists()  # the metrics file's manifest
    with pytest.raises(UserError, match="--split bogus"):
        evaluate_model_file(tiny_checkpoint, split="bogus")
    with pytest.raises(UserError, match="model file not found"):
        evaluate_model_file(tmp_path / "missing.pt")
