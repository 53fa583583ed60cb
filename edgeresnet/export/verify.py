"""The verify stage: two artifacts of one model (checkpoint, ONNX or engine) compared on real images at
batch 1 and the largest batch both accept. ``edgeresnet verify`` is ``verify`` behind options.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError

# the preprocessing fields that must agree for the two artifacts to see the same input
CONTRACT_FIELDS = ("image_size", "resize", "mean", "std", "channel_order", "layout", "scale", "interpolation")


class _NoProgress:
    def stage(self, description: str, steps: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


@contextlib.contextmanager
def no_progress() -> Iterator[_NoProgress]:
    yield _NoProgress()


@dataclass
class VerifyResult:
    """The parity report of B against A (the reference); ``to_dict()`` is the ``--json`` document."""

    report: Any  # edgeresnet.export.parity.ParityReport
    data: str
    images: int
    runners: dict[str, Any]
    note: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.report.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgeresnet.export.parity/1", "data": self.data, "images": self.images, **self.report.to_dict(),
                "runners": self.runners}


def verify(a: str | Path, b: str | Path, *, data: str | None = None, atol: float = 1e-3, rtol: float = 1e-3,
           min_agreement: float = 0.99, parity_images: int = 32, max_batch: int = 8, seed: int = 0,
           progress: Callable[[], Any] = no_progress) -> VerifyResult:
    """Compare B against A; ``progress()`` is a context manager with ``stage(description, steps)``/``advance(n)``.

    A failed comparison is a result (``passed`` False), not an exception; input a user can fix is a ``UserError``.
    """
    from edgeresnet.export import resolve_data_spec
    from edgeresnet.export.parity import Tolerance, common_batches, compare_runners, load_parity_images, planned_steps
    from edgeresnet.runners import load_runner

    a, b = Path(a), Path(b)
    tolerance = Tolerance(atol=atol, rtol=rtol, min_agreement=min_agreement)
    if max_batch < 1:
        raise UserError(f"--max-batch {max_batch}: must be at least 1")
    runner_a, runner_b = load_runner(a), load_runner(b)
    preprocess = _common_preprocess(a, runner_a, b, runner_b)
    batches = common_batches(_batch_range(a, runner_a), _batch_range(b, runner_b), default_max=max_batch)
    data_spec, note = resolve_data_spec(data, a)
    images = load_parity_images(data_spec, preprocess, max(parity_images, max(batches)), seed=seed)
    with progress() as bar:
        bar.stage(f"comparing at batch {', '.join(map(str, batches))}", planned_steps(len(images), batches))
        report = compare_runners(runner_a, runner_b, images, batches, tolerance, progress=bar.advance)
    report.a, report.b = f"{runner_a.backend}:{a}", f"{runner_b.backend}:{b}"
    return VerifyResult(report=report, data=data_spec, images=int(images.shape[0]),
                        runners={"a": runner_a.describe(), "b": runner_b.describe()}, note=note)


def _common_preprocess(a: Path, runner_a: Any, b: Path, runner_b: Any) -> Any:
    """The contract both artifacts share; differing contracts make the comparison meaningless."""
    from edgeresnet.export.onnx_meta import preprocess_of

    pa = getattr(runner_a, "preprocess", None) or preprocess_of(a, required=False)
    pb = getattr(runner_b, "preprocess", None) or preprocess_of(b, required=False)
    if pa is None and pb is None:
        raise UserError(f"{a} and {b}: neither carries a preprocessing contract; export them with edgeresnet")
    if pa is not None and pb is not None:
        da, db = pa.to_dict(), pb.to_dict()
        differ = [k for k in CONTRACT_FIELDS if da.get(k) != db.get(k)]
        if differ:
            k = differ[0]
            raise UserError(f"{a} and {b} expect different inputs ({k}: {da.get(k)} vs {db.get(k)}); "
                            "compare artifacts of the same model and input size")
    return pa or pb


def _batch_range(path: Path, runner: Any) -> tuple[int, int] | None:
    found = runner.batch_range  # the Runner contract; an engine without profile data in its manifest falls back
    if found is not None or runner.backend in ("torch", "ort"):
        return found
    from edgeresnet.export.onnx_meta import batch_profile_of

    profile = batch_profile_of(path)
    return (profile.min, profile.max) if profile is not None else None
