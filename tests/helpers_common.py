"""Test helpers several test modules share: small real files to feed the commands."""

from __future__ import annotations

from pathlib import Path


def write_untrained_checkpoint(path: Path, arch: str = "resnet18", size: int = 32, seed: int = 0,
                               small_stem: bool = False) -> Path:
    """A seeded, untrained ResNet checkpoint for 10 classes with the digits preprocessing at ``size`` px: export
    and verify only need a real graph and its contract, and different seeds give different weights."""
    import torch

    from edgeresnet.data.presets import preset_for
    from edgeresnet.models import ModelSpec, build_model, make_checkpoint

    torch.manual_seed(seed)
    spec = ModelSpec(arch, 10, small_stem=small_stem)
    preprocess = preset_for("digits", size, tuple(str(i) for i in range(10)))
    torch.save(make_checkpoint(build_model(spec).eval(), spec, preprocess.to_dict()), path)
    return path


def write_three_digit_classes(root: Path, per_class: int = 8) -> Path:
    """An ImageFolder ``d0``, ``d1``, ``d2`` of the first ``per_class`` real digits of each class (8x8 grey PNGs)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for label in (0, 1, 2):
        (root / f"d{label}").mkdir()
        for i, index in enumerate(np.flatnonzero(bunch.target == label)[:per_class]):
            pixels = np.clip(bunch.images[index] * 16, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / f"d{label}" / f"{i}.png")
    return root
