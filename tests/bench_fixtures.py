"""Real artifacts for the benchmark/report tests, built once per test session.

A small-stem ResNet-18 at 32x32 exported with torch.onnx (TorchScript exporter: seconds, not minutes) plus
its checkpoint, each with the sidecar manifest the pipeline writes, and a 30-image ImageFolder of real
digits. Weights are random: these tests check measurement and plumbing, not learning. The test modules
import the session fixtures ``assets`` and ``results_file``; other tests call the builders directly.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from edgeresnet.export.torch_compat import torchscript_kwargs  # dynamo=False only where torch names it

_CACHE: dict[str, Any] = {}
IMAGE_SIZE = 32


def _build(root: Path) -> dict[str, Path]:
    import numpy as np
    import torch
    from PIL import Image
    from sklearn.datasets import load_digits

    from edgeresnet.artifacts import build_manifest, write_manifest
    from edgeresnet.data import load_data
    from edgeresnet.export.onnx_meta import BatchProfile
    from edgeresnet.models import ModelSpec, build_model, make_checkpoint

    bunch = load_digits()
    data_dir = root / "digits3"
    for label in range(10):
        folder = data_dir / str(label)
        folder.mkdir(parents=True)
        picks = np.flatnonzero(bunch.target == label)[:3]
        for k, index in enumerate(picks):
            pixels = np.clip(bunch.images[index] * (255.0 / 16.0), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{k}.png")
    splits = load_data(str(data_dir), IMAGE_SIZE)
    preprocess = splits.preprocess.to_dict()

    torch.manual_seed(0)
    spec = ModelSpec("resnet18", 10, small_stem=True)
    model = build_model(spec).eval()
    onnx_path = root / "r18.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose: fast
        torch.onnx.export(model, torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE), str(onnx_path), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, **torchscript_kwargs())
    profile = BatchProfile(1, 2, 4, dynamic=True).to_dict()
    write_manifest(onnx_path, build_manifest("onnx", onnx_path, command="test-export",
                                             extra={"preprocess": preprocess, "batch_profile": profile}))
    checkpoint = root / "r18.pt"
    torch.save(make_checkpoint(model, spec, preprocess), checkpoint)
    write_manifest(checkpoint, build_manifest("checkpoint", checkpoint, command="test-train",
                                              extra={"preprocess": preprocess}))
    return {"root": root, "data": data_dir, "onnx": onnx_path, "checkpoint": checkpoint}


def bench_assets(tmp_path_factory: Any) -> dict[str, Path]:
    if "assets" not in _CACHE:
        _CACHE["assets"] = _build(tmp_path_factory.mktemp("bench_assets"))
    return _CACHE["assets"]


def ort_results(tmp_path_factory: Any) -> Path:
    """A results file of the ONNX model at batch 1 and 2 with accuracy, written like the CLI does."""
    if "results" not in _CACHE:
        from edgeresnet.bench.core import BenchSettings, run_benchmark
        from edgeresnet.bench.schema import write_results
        from edgeresnet.bench.timing import TimingConfig

        assets = bench_assets(tmp_path_factory)
        settings = BenchSettings(batches=(1, 2), target="host-cpu",
                                 timing=TimingConfig(warmup_ms=0, warmup_iterations=1, min_iterations=5, duration_s=0.05))
        document = run_benchmark([assets["onnx"]], settings, data=str(assets["data"]))
        path = tmp_path_factory.mktemp("bench_results") / "r18_ort.json"
        write_results(path, document, inputs={"model": assets["onnx"]})
        _CACHE["results"] = path
    return _CACHE["results"]


@pytest.fixture(scope="session")
def assets(tmp_path_factory: Any) -> dict[str, Path]:
    """The ONNX model, its checkpoint and the digits folder (see ``bench_assets``)."""
    return bench_assets(tmp_path_factory)


@pytest.fixture(scope="session")
def results_file(tmp_path_factory: Any) -> Path:
    """The ONNX model's results file (see ``ort_results``)."""
    return ort_results(tmp_path_factory)
