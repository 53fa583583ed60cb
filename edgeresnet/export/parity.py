"""Do two runners compute the same thing? Max-abs and max-relative error and top-1 agreement.

Runner ``a`` is the reference. Relative error is taken per image against the reference's largest
absolute logit (an element-wise ratio explodes on logits near zero and says nothing). An image passes
when its largest absolute difference is at most ``atol + rtol * max|reference|``; the comparison passes
when every image does at every batch size and top-1 agreement is at least ``min_agreement``.
Comparisons run at batch 1 and at the largest batch of the profile: batch-dependent bugs (a batch axis
baked into a Reshape, a static profile) only show at the larger size.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeresnet.errors import UserError


@dataclass(frozen=True)
class Tolerance:
    """FP32 vs FP32 defaults; loosen them for FP16/INT8 comparisons (``edgeresnet.export.fp16.FP16_TOLERANCE``)."""

    atol: float = 1e-3
    rtol: float = 1e-3
    min_agreement: float = 0.99

    def __post_init__(self) -> None:
        if self.atol < 0 or self.rtol < 0:
            raise UserError(f"--atol {self.atol} / --rtol {self.rtol}: tolerances must be >= 0")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise UserError(f"--min-agreement {self.min_agreement}: must be a fraction in [0, 1]")


@dataclass
class ParityCase:
    """The comparison at one batch size."""

    batch: int
    images: int
    max_abs: float
    max_rel: float
    top1_agreement: float
    failing_images: int
    passed: bool


@dataclass
class ParityReport:
    """All batch sizes together; ``passed`` is the verdict."""

    a: str
    b: str
    tolerance: Tolerance
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.cases), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((c.max_rel for c in self.cases), default=0.0)

    @property
    def top1_agreement(self) -> float:
        return min((c.top1_agreement for c in self.cases), default=1.0)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "passed": self.passed, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "top1_agreement": self.top1_agreement, "tolerance": asdict(self.tolerance),
                "cases": [asdict(c) for c in self.cases]}

    def failure_summary(self) -> str:
        """One line saying what exceeded which tolerance (empty when passed)."""
        bad = [c for c in self.cases if not c.passed]
        if not bad:
            return ""
        c = max(bad, key=lambda x: x.max_abs)
        t = self.tolerance
        return (f"at batch {c.batch}: max-abs {c.max_abs:.3g}, max-rel {c.max_rel:.3g} "
                f"({c.failing_images}/{c.images} images beyond atol {t.atol:g} + rtol {t.rtol:g}), "
                f"top-1 agreement {c.top1_agreement:.1%} (min {t.min_agreement:.1%})")


def compare_logits(ref: np.ndarray, other: np.ndarray, batch: int, tolerance: Tolerance) -> ParityCase:
    """Pure core: compare two (N, K) logit arrays."""
    ref = np.asarray(ref, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if ref.shape != other.shape:
        raise UserError(f"outputs differ in shape: {ref.shape} vs {other.shape}; the models do not have the same classes")
    if ref.ndim != 2 or ref.shape[0] == 0:
        raise UserError(f"expected (N, classes) logits, got shape {ref.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(other).all()):
        bad = int((~np.isfinite(ref)).any(axis=1).sum() + (~np.isfinite(other)).any(axis=1).sum())
        return ParityCase(batch, ref.shape[0], float("inf"), float("inf"),
                          float(np.mean(ref.argmax(1) == other.argmax(1))), bad, False)
    diff = np.abs(ref - other).max(axis=1)
    scale = np.abs(ref).max(axis=1)
    rel = diff / np.maximum(scale, np.finfo(np.float64).tiny)
    failing = int((diff > tolerance.atol + tolerance.rtol * scale).sum())
    agreement = float(np.mean(ref.argmax(axis=1) == other.argmax(axis=1)))
    passed = failing == 0 and agreement >= tolerance.min_agreement
    return ParityCase(batch=batch, images=int(ref.shape[0]), max_abs=float(diff.max()), max_rel=float(rel.max()),
                      top1_agreement=agreement, failing_images=failing, passed=passed)


def _batches_of(images: np.ndarray, batch: int) -> list[np.ndarray]:
    """Split into full batches, repeating images when there are fewer than ``batch``."""
    n = images.shape[0]
    total = max(batch, n - n % batch if n >= batch else batch)
    if total > n:
        reps = -(-total // n)
        images = np.concatenate([images] * reps)[:total]
    else:
        images = images[:total]
    return [images[i:i + batch] for i in range(0, total, batch)]


def compare_runners(runner_a: Any, runner_b: Any, images: np.ndarray, batch_sizes: tuple[int, ...] | list[int] = (1,),
                    tolerance: Tolerance | None = None, single_limit: int = 16, progress: Any = None) -> ParityReport:
    """Run both runners on the same preprocessed images at each batch size and compare.

    At batch 1 only the first ``single_limit`` images are run one by one (enough to catch a wrong
    batch-1 path without N separate calls on a big model). Runners not yet active are entered here.
    ``progress`` is an optional callable(advance: int) called after each batch.
    """
    tolerance = tolerance or Tolerance()
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise UserError(f"parity needs a non-empty NCHW image batch, got shape {images.shape}")
    report = ParityReport(a=_name(runner_a), b=_name(runner_b), tolerance=tolerance)
    with contextlib.ExitStack() as stack:
        for runner in (runner_a, runner_b):
            if not getattr(runner, "active", True):
                stack.enter_context(runner)
        for batch in sorted(set(int(b) for b in batch_sizes)):
            if batch < 1:
                raise UserError(f"parity batch size {batch}: must be at least 1")
            pool = images[:single_limit] if batch == 1 else images
            outs_a, outs_b = [], []
            for chunk in _batches_of(pool, batch):
                outs_a.append(runner_a.infer(chunk))
                outs_b.append(runner_b.infer(chunk))
                if progress is not None:
                    progress(1)
            report.cases.append(compare_logits(np.concatenate(outs_a), np.concatenate(outs_b), batch, tolerance))
    return report


def planned_steps(n_images: int, batch_sizes: list[int] | tuple[int, ...], single_limit: int = 16) -> int:
    """How many batches ``compare_runners`` will run (for a progress bar)."""
    steps = 0
    for batch in sorted(set(batch_sizes)):
        pool = min(n_images, single_limit) if batch == 1 else n_images
        steps += len(_batches_of(np.empty((pool, 1)), batch))
    return steps


def common_batches(range_a: tuple[int, int] | None, range_b: tuple[int, int] | None, default_max: int = 8) -> list[int]:
    """Batch sizes both artifacts take: the smallest (1 when allowed) and the largest common one.

    A range is (min, max); None means any batch size (a PyTorch model), bounded by ``default_max``.
    """
    lo = max(r[0] for r in (range_a, range_b) if r is not None) if (range_a or range_b) else 1
    his = [r[1] for r in (range_a, range_b) if r is not None]
    hi = min(his) if his else max(default_max, lo)
    if lo > hi:
        raise UserError(f"the two models take no common batch size ({_fmt_range(range_a)} vs {_fmt_range(range_b)}); "
                        "export them with overlapping batch profiles")
    return sorted({lo, hi})


def _fmt_range(r: tuple[int, int] | None) -> str:
    if r is None:
        return "any batch"
    return f"batch {r[0]}" if r[0] == r[1] else f"batch {r[0]}-{r[1]}"


def _name(runner: Any) -> str:
    path = getattr(runner, "path", None)
    backend = getattr(runner, "backend", "?")
    return f"{backend}:{getattr(path, 'name', path)}"


def load_parity_images(data: str, preprocess: Any, count: int, seed: int = 0) -> np.ndarray:
    """``count`` real images of data set ``data`` (test split first), preprocessed by the model's contract.

    The model's own ``Preprocess`` is applied (not the data set's preset): parity must see exactly what
    the deployed model will see.
    """
    from edgeresnet.data import load_data

    if count < 1:
        raise UserError(f"--parity-images {count}: must be at least 1")
    splits = load_data(data, preprocess.image_size, seed=seed)
    samples = []
    for split in ("test", "val", "train"):
        samples += splits.splits.get(split, [])
        if len(samples) >= count:
            break
    samples = samples[:count]
    if not samples:
        raise UserError(f"--data {data}: no images found for the parity check")
    transform = preprocess.eval_transform()
    return np.stack([transform(s.image()).numpy() for s in samples]).astype(np.float32)
