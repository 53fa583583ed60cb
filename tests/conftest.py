"""Shared fixtures: small real data and a real (briefly trained) checkpoint, built once per session.

``digits_small``: the embedded digits at 32 px cut to a few images per class (train 8, val 3, test 3).
``tiny_checkpoint``: ResNet18 with the small stem, trained for 2 optimizer steps on ``digits_small`` with
the real training loop, saved as ``best.pt`` with its manifest (and ``last.pt``), like ``edgeresnet train``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

SMALL_PER_CLASS = {"train": 8, "val": 3, "test": 3}


def trim_splits(splits, per_class: dict[str, int]):
    """A copy of ``splits`` keeping the first N samples of every class in each split."""
    trimmed = {}
    for name, samples in splits.splits.items():
        counts: dict[int, int] = {}
        kept = []
        for sample in samples:
            if counts.get(sample.label, 0) < per_class.get(name, len(samples)):
                counts[sample.label] = counts.get(sample.label, 0) + 1
                kept.append(sample)
        trimmed[name] = kept
    return dataclasses.replace(splits, splits=trimmed)


def write_digits_folder(folder: Path, per_class: int) -> Path:
    """An ImageFolder of the first ``per_class`` real digits of each class (8x8 grey PNGs, 0..16 scaled to 0..255)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    counts: dict[int, int] = {}
    for image, label in zip(bunch.images, bunch.target):
        if counts.get(int(label), 0) >= per_class:
            continue
        counts[int(label)] = counts.get(int(label), 0) + 1
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = np.clip(image * (255 / 16), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / str(label) / f"{counts[int(label)]}.png")
    return folder


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real CLI entry point in this process: (exit code, stdout, stderr)."""
    from edgeresnet.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Bad input: exit 2, exactly one ``error:`` line holding every fragment, no traceback."""
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture()
def wide_terminal(monkeypatch):
    """Rich wraps at 80 columns when not on a terminal; wide output keeps messages on one line for the asserts."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("TERMINAL_WIDTH", "250")


@pytest.fixture(scope="module")
def torch_single_thread():
    """One torch intra-op thread for a test or a whole module (``pytestmark = pytest.mark.usefixtures(...)``): on
    a few shared cores, two spinning OpenMP threads run a small ResNet ~10x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_small():
    from edgeresnet.data import load_data

    return trim_splits(load_data("digits", 32, seed=0), SMALL_PER_CLASS)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, digits_small) -> Path:
    import torch

    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.train import fit, seed_everything
    from edgeresnet.train.recipe import TrainRecipe

    out = tmp_path_factory.mktemp("tiny_checkpoint")
    recipe = TrainRecipe(image_size=32, small_stem=True, epochs=1, max_steps=2, batch_size=16, warmup_epochs=0)
    spec = ModelSpec("resnet18", digits_small.num_classes, small_stem=True)
    seed_everything(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = fit(build_model(spec), digits_small, recipe, out, progress=False, spec=spec)
    finally:
        torch.set_num_threads(threads)
    assert result.checkpoint is not None and result.checkpoint.exists()
    return result.checkpoint
