"""Parity arithmetic (pure) and compare_runners on real runners and real digits images."""

from __future__ import annotations

import numpy as np
import pytest

from edgeresnet.errors import UserError
from edgeresnet.export.parity import (
    Tolerance,
    _batches_of,
    common_batches,
    compare_logits,
    compare_runners,
    load_parity_images,
    planned_steps,
)


def test_identical_logits_pass_and_small_noise_is_within_default_tolerance():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(16, 10)).astype(np.float32) * 5
    case = compare_logits(ref, ref.copy(), 4, Tolerance())
    assert case.passed and case.max_abs == 0 and case.top1_agreement == 1.0
    noisy = ref + rng.normal(scale=1e-5, size=ref.shape)
    case = compare_logits(ref, noisy, 4, Tolerance())
    assert case.passed and 0 < case.max_abs < 1e-4


def test_relative_error_is_per_image_against_the_largest_reference_logit():
    ref = np.array([[10.0, 0.0, -2.0], [0.5, 0.1, 0.0]])
    other = ref + np.array([[0.0, 0.1, 0.0], [0.05, 0.0, 0.0]])
    case = compare_logits(ref, other, 1, Tolerance(atol=0.0, rtol=0.02, min_agreement=0.0))
    assert case.max_abs == pytest.approx(0.1)
    assert case.max_rel == pytest.approx(0.1)  # image 2: 0.05 / 0.5
    assert case.failing_images == 1 and not case.passed  # image 1: 0.1 <= 0.02*10 passes, image 2 fails


def test_top1_disagreement_fails_even_when_values_are_close():
    ref = np.array([[1.0, 0.9999]] * 10)
    other = ref.copy()
    other[0] = [0.9999, 1.0]
    case = compare_logits(ref, other, 1, Tolerance(atol=1e-3, rtol=0, min_agreement=0.95))
    assert case.failing_images == 0 and case.top1_agreement == pytest.approx(0.9) and not case.passed
    assert compare_logits(ref, other, 1, Tolerance(atol=1e-3, rtol=0, min_agreement=0.9)).passed


def test_non_finite_and_shape_mismatch():
    ref = np.ones((2, 3))
    bad = ref.copy()
    bad[1, 2] = np.nan
    case = compare_logits(ref, bad, 2, Tolerance())
    assert not case.passed and case.max_abs == float("inf") and case.failing_images == 1
    with pytest.raises(UserError, match="outputs differ in shape"):
        compare_logits(ref, np.ones((2, 4)), 2, Tolerance())


def test_tolerance_validation():
    with pytest.raises(UserError, match="--atol -1"):
        Tolerance(atol=-1)
    with pytest.raises(UserError, match="--min-agreement 1.5"):
        Tolerance(min_agreement=1.5)


def test_batching_repeats_images_to_fill_the_largest_batch():
    images = np.arange(5, dtype=np.float32).reshape(5, 1)
    chunks = _batches_of(images, 8)
    assert len(chunks) == 1 and chunks[0].shape[0] == 8 and chunks[0][5, 0] == 0
    assert [c.shape[0] for c in _batches_of(images, 2)] == [2, 2]
    assert planned_steps(32, [1, 8]) == 16 + 4
    assert planned_steps(4, [1, 8]) == 4 + 1


def test_common_batches():
    assert common_batches(None, None, default_max=8) == [1, 8]
    assert common_batches((1, 32), None) == [1, 32]
    assert common_batches((1, 32), (4, 4)) == [4]
    assert common_batches((2, 16), (1, 8)) == [2, 8]
    with pytest.raises(UserError, match=r"no common batch size \(batch 1 vs batch 8\)"):
        common_batches((1, 1), (8, 8))


@pytest.fixture(scope="module")
def two_models():
    import torch

    from edgeresnet.data.presets import preset_for
    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.runners.torch_runner import TorchRunner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # OpenMP threads spinning on a busy 2-core box cost seconds per call
    spec = ModelSpec("resnet18", 10)
    pre = preset_for("digits", 32, tuple(str(i) for i in range(10)))
    torch.manual_seed(0)
    a = TorchRunner.from_model(build_model(spec), pre, name="a.pt", device="cpu")
    torch.manual_seed(1)
    b = TorchRunner.from_model(build_model(spec), pre, name="b.pt", device="cpu")
    yield a, b, load_parity_images("digits", pre, 6)
    torch.set_num_threads(threads)


def test_compare_runners_on_real_digits(two_models):
    a, b, images = two_models
    assert images.shape == (6, 3, 32, 32) and images.dtype == np.float32
    assert abs(float(images.mean())) < 2.0 and images.std() > 0.1  # normalised real images, not zeros
    same = compare_runners(a, a, images, [1, 4])
    assert same.passed and same.max_abs == 0.0 and [c.batch for c in same.cases] == [1, 4]
    assert [c.images for c in same.cases] == [6, 4]
    other = compare_runners(a, b, images, [1, 4])
    assert not other.passed and other.max_abs > 1e-2
    assert "at batch" in other.failure_summary() and other.to_dict()["passed"] is False
