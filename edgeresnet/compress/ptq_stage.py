"""The INT8 stages: ``calibrate`` (post-training calibration of an FP32 ONNX) and ``qat`` (quantization-aware
fine-tuning of a checkpoint), each gated on the accuracy of the written artifact.

``edgeresnet calibrate`` and ``edgeresnet qat`` are these functions behind options. Both check their input
before any work, return the report, and leave the decision on a failed gate to the caller: the INT8 model
is only written when the gate passed (``report.written``); ``int8_accuracy.gate_failure(report)`` is the error
the CLI raises after printing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgeresnet.errors import UserError

ProgressFn = Callable[[str, int, int], None]
SettingsT = TypeVar("SettingsT", "CalibrateSettings", "QatSettings")
ProgressFactory = Callable[[], "contextlib.AbstractContextManager[ProgressFn]"]


@contextlib.contextmanager
def no_progress() -> Iterator[ProgressFn]:
    """The default progress: a callback that does nothing."""
    yield lambda stage, done, total: None


def _settings_and_console(stage: str, settings_type: type[SettingsT], settings: SettingsT | None,
                          options: dict[str, Any], console: Any) -> tuple[SettingsT, Any]:
    """The stage's settings (given whole or as keywords, not both), checked for what every INT8 stage shares
    (range method, accuracy budget), and the console for its warnings (a silent one by default)."""
    from rich.console import Console

    from edgeresnet.compress.calibration import check_method
    from edgeresnet.compress.sensitivity import check_max_drop

    if settings is not None and options:
        raise TypeError(f"{stage}() takes a {settings_type.__name__} or keyword options, not both")
    s = settings if settings is not None else settings_type(**options)
    check_method(s.method)
    check_max_drop(s.max_drop)
    return s, console if console is not None else Console(quiet=True)


def _warn(console: Any, messages: list[str]) -> None:
    for message in messages:
        console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


@dataclass
class CalibrateSettings:
    """What ``edgeresnet calibrate`` takes, one field per option (same defaults)."""

    model: Path
    out: Path
    method: str = "entropy"
    flavour: str | None = None
    target: str | None = None
    images: int | None = None
    calib_list: Path | None = None
    data: str | None = None
    max_drop: float = 1.0
    max_keep: int | None = None
    cache: Path | None = None
    percentile: float = 99.99
    ort_format: str = "qdq"
    reduce_range: bool | None = None
    eval_images: int | None = None
    bench_iters: int = 30

    def __post_init__(self) -> None:
        self.model, self.out = Path(self.model), Path(self.out)
        self.calib_list = Path(self.calib_list) if self.calib_list is not None else None
        self.cache = Path(self.cache) if self.cache is not None else None


@dataclass
class CalibrateResult:
    """The PTQ report plus how the flavour was chosen and which images calibrated it."""

    report: Any  # edgeresnet.compress.ptq.PtqReport
    flavour: str
    flavour_reason: str
    calibration: Any  # edgeresnet.compress.calibration.CalibrationSet

    @property
    def passed(self) -> bool:
        return bool(self.report.gate.passed)

    def to_dict(self) -> dict[str, Any]:
        return self.report.to_dict()


def calibrate(settings: CalibrateSettings | None = None, *, console: Any = None,
              progress: ProgressFactory = no_progress, **options: Any) -> CalibrateResult:
    """Post-training INT8: calibrate an FP32 ONNX and write a Q/DQ ONNX for TensorRT or ONNX Runtime.

    Takes a ``CalibrateSettings`` or its fields as keywords; ``console`` gets the calibration-set warnings.
    """
    from edgeresnet.artifacts import check_output_dir
    from edgeresnet.compress import calibration as cal
    from edgeresnet.compress import ptq
    from edgeresnet.compress.int8_flavours import ORT_FORMATS, choose_flavour
    from edgeresnet.compress.qdq import check_float_source
    from edgeresnet.data import load_data
    from edgeresnet.export.onnx_meta import data_spec_of, load_onnx_model, preprocess_of

    s, console = _settings_and_console("calibrate", CalibrateSettings, settings, options, console)
    chosen, why, trt_version = choose_flavour(s.flavour, s.target)
    if s.ort_format not in ORT_FORMATS:
        raise UserError(f"--format {s.ort_format}: choose qdq or qoperator")
    if s.images is not None and s.calib_list is not None:
        raise UserError("--images and --calib-list both given; pass one source of calibration images")
    if s.max_keep is not None and s.max_keep < 0:
        raise UserError(f"--max-keep {s.max_keep}: must be 0 or more")
    check_output_dir(s.out)
    if s.out.resolve() == s.model.resolve():
        raise UserError(f"--out {s.out}: would overwrite the FP32 model; choose another path")
    if s.cache is not None:
        check_output_dir(s.cache, "--cache")
    source = s.model
    check_float_source(load_onnx_model(source, weights=True, option="MODEL"), source)
    preprocess = preprocess_of(source, required=True)
    data_spec = s.data or data_spec_of(source)
    if data_spec is None:
        raise UserError(f"MODEL {source}: no data set recorded with it; pass --data (held-out images for the "
                        "accuracy gate, and calibration images unless --calib-list is given)")
    splits = load_data(data_spec, preprocess.image_size)
    if s.calib_list is not None:
        calib = cal.read_calibration_list(s.calib_list)
    else:
        calib = cal.calibration_from_data(data_spec, splits.splits["train"], s.images)
    _warn(console, list(calib.warnings))
    ptq_options = ptq.PtqOptions(method=s.method, flavour=chosen, flavour_reason=why, ort_format=s.ort_format,
                                 reduce_range=s.reduce_range, percentile=s.percentile, max_drop=s.max_drop,
                                 max_keep=s.max_keep, cache=s.cache, trt_version=trt_version,
                                 bench_iterations=s.bench_iters, eval_images=s.eval_images, data_spec=data_spec)
    with progress() as update:
        report = ptq.quantize_onnx(source, s.out, calib, splits, ptq_options, update)
    return CalibrateResult(report=report, flavour=chosen, flavour_reason=why, calibration=calib)


@dataclass
class QatSettings:
    """What ``edgeresnet qat`` takes, one field per option (same defaults)."""

    model: Path
    out: Path
    calib_images: int | None = None
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int | None = None
    method: str = "percentile"
    percentile: float = 99.99
    max_drop: float = 1.0
    max_keep: int | None = None
    data: str | None = None
    opset: int = 13
    seed: int = 0
    max_steps: int | None = None
    eval_images: int | None = None
    bench_iters: int = 30

    def __post_init__(self) -> None:
        self.model, self.out = Path(self.model), Path(self.out)


def qat(settings: QatSettings | None = None, *, console: Any = None, progress: ProgressFactory = no_progress,
        **options: Any) -> Any:
    """Quantization-aware training: fake-quantize as TensorRT runs INT8, fine-tune, export Q/DQ ONNX.

    Takes a ``QatSettings`` or its fields as keywords; returns the ``QatReport`` (``console`` gets its warnings).
    """
    from edgeresnet.artifacts import check_output_dir, require_file
    from edgeresnet.compress import qat as qat_lib

    s, console = _settings_and_console("qat", QatSettings, settings, options, console)
    require_file(s.model, "checkpoint")
    if s.model.suffix.lower() == ".onnx":
        raise UserError(f"MODEL {s.model}: qat fine-tunes a checkpoint (.pt); for an ONNX use 'edgeresnet calibrate'")
    check_output_dir(s.out)
    if s.max_steps is not None and s.max_steps < 1:
        raise UserError(f"--max-steps {s.max_steps}: must be at least 1")
    if s.calib_images is not None and s.calib_images < 1:
        raise UserError(f"--calib-images {s.calib_images}: must be at least 1")
    data_spec = s.data or checkpoint_data(s.model)
    if data_spec is None:
        raise UserError(f"MODEL {s.model}: no data set recorded in the checkpoint; pass --data")
    qat_options = qat_lib.QatOptions(epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, calib_images=s.calib_images,
                                     method=s.method, percentile=s.percentile, opset=s.opset, max_drop=s.max_drop,
                                     max_keep=s.max_keep, seed=s.seed, bench_iterations=s.bench_iters,
                                     eval_images=s.eval_images, max_steps=s.max_steps)
    with progress() as update:
        report = qat_lib.run_qat(s.model, s.out, data_spec, qat_options, update)
    _warn(console, report.warnings)
    return report


def checkpoint_data(path: Path) -> str | None:
    """The data set a checkpoint records (in the checkpoint itself, else its manifest chain)."""
    from edgeresnet.export.onnx_meta import data_spec_of
    from edgeresnet.models import load_checkpoint

    ckpt = load_checkpoint(path)
    value = ckpt.get("data")
    if isinstance(value, str) and value:
        return value
    return data_spec_of(path)
