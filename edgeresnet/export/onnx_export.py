"""PyTorch model -> checked ONNX file with its preprocessing contract, proven by parity before it exists.

Order of work: export in memory, stamp the contract into ``metadata_props``, (simplify), run
``onnx.checker`` (full) and strict shape inference, write to a temporary name, compare ONNX Runtime with
PyTorch on real images, and only then rename to the requested name and write the manifest. A failure at
any step leaves nothing under the requested name.
"""

from __future__ import annotations

import copy
import io
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.artifacts import atomic_output, build_manifest, check_output_dir, write_manifest
from edgeresnet.data.presets import Preprocess
from edgeresnet.errors import UserError
from edgeresnet.export.fp16 import FP16_TOLERANCE, KEY_PRECISION, check_precision, convert_to_fp16
from edgeresnet.export.onnx_meta import KEY_MODEL, KEY_SOURCE_SHA256, BatchProfile, contract_props, set_metadata
from edgeresnet.export.opset import OpsetChoice, choose_opset
from edgeresnet.export.parity import ParityReport, Tolerance, compare_runners, planned_steps

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"

Stage = Callable[[str, int], None]  # (stage description, steps in it) -> None
Advance = Callable[[int], None]


@dataclass
class ExportResult:
    """What was written and how it was proven."""

    path: Path
    opset: int
    exporter: str  # "dynamo" | "torchscript"
    dynamic: bool
    profile: BatchProfile
    manifest: dict[str, Any]
    parity: ParityReport | None = None
    timings: dict[str, float] = field(default_factory=dict)
    simplified: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    precision: str = "fp32"
    io_dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "opset": self.opset, "exporter": self.exporter, "dynamic": self.dynamic,
                "precision": self.precision, "io_dtype": self.io_dtype, "fp16": self.manifest.get("fp16"),
                "batch_profile": self.profile.to_dict(), "sha256": self.manifest.get("sha256"),
                "size_bytes": self.manifest.get("size_bytes"), "ir_version": self.manifest.get("ir_version"),
                "simplified": self.simplified, "timings_s": self.timings, "warnings": self.warnings,
                "parity": self.parity.to_dict() if self.parity else None}


def check_onnx_out(out: str | os.PathLike[str]) -> Path:
    """``--out`` must be a ``.onnx`` file name (runners pick the backend by suffix) in a writable directory."""
    path = check_output_dir(out)
    if path.suffix.lower() != ".onnx":
        raise UserError(f"--out {path}: name the file *.onnx (the backend is chosen by the file suffix)")
    if path.is_dir():
        raise UserError(f"--out {path}: is a directory; give a file name such as {path / 'model.onnx'}")
    return path


def as_profile(batch: int | tuple[int, int, int] | list[int] | BatchProfile | str) -> BatchProfile:
    """``1`` -> static 1; ``(1, 8, 32)`` or ``"1:8:32"`` -> dynamic profile."""
    if isinstance(batch, BatchProfile):
        return batch
    if isinstance(batch, str):
        return BatchProfile.parse(batch)
    if isinstance(batch, (tuple, list)):
        if len(batch) != 3:
            raise UserError(f"--dynamic-batch {batch}: expected MIN:OPT:MAX")
        return BatchProfile.parse(":".join(str(int(b)) for b in batch))
    return BatchProfile.static(int(batch))


def export_onnx(
    model: Any,
    preprocess: Preprocess,
    out: str | os.PathLike[str],
    *,
    opset: int | None = None,
    batch: int | tuple[int, int, int] | BatchProfile = 1,
    exporter: str | None = None,
    source: str | os.PathLike[str] | None = None,
    simplify: bool = False,
    parity_images: np.ndarray | None = None,
    tolerance: Tolerance | None = None,
    target: Any = None,
    spec: Any = None,
    settings: dict[str, Any] | None = None,
    stage: Stage | None = None,
    advance: Advance | None = None,
    precision: str = "fp32",
    io_fp16: bool = False,
) -> ExportResult:
    """Export ``model`` to ``out``; with ``parity_images`` the file exists only if parity passed.

    ``target`` is a Target (opset cap); ``source`` the checkpoint the model came from (hashed into the
    manifest); ``stage``/``advance`` feed a progress display. ``precision="fp16"`` converts the checked FP32
    graph to FP16 (``edgeresnet.export.fp16``; the I/O stays float32 unless ``io_fp16``), and parity then
    compares the FP32 PyTorch model with the FP16 ONNX at FP16 tolerances unless ``tolerance`` is given.
    """
    out = check_onnx_out(out)
    check_precision(precision, io_fp16)
    if tolerance is None and precision == "fp16":
        tolerance = FP16_TOLERANCE
    profile = as_profile(batch)
    choice = choose_opset(opset, exporter, target)
    stage = stage or (lambda _name, _steps: None)
    timings: dict[str, float] = {}
    notes: list[str] = list(choice.warnings)

    model = _cpu_eval_copy(model)
    stage(f"exporting ({choice.exporter}, opset {choice.opset or 'default'})", 1)
    start = time.perf_counter()
    proto, captured = _export_proto(model, preprocess.image_size, profile, choice)
    timings["export_s"] = time.perf_counter() - start
    notes += captured
    produced = _default_opset(proto)
    if choice.opset is not None and produced != choice.opset:
        raise UserError(f"--opset {choice.opset}: the {choice.exporter} exporter produced opset {produced} instead; "
                        "nothing was written; choose another opset", exit_code=1)
    _normalise_io(proto, profile)
    _lower_ir_version(proto)
    props_extra: dict[str, Any] = {}
    if spec is not None:
        props_extra[KEY_MODEL] = spec.to_dict()
    if source is not None:
        from edgeresnet.artifacts import sha256_file

        props_extra[KEY_SOURCE_SHA256] = sha256_file(source)
    io_dtype = "float16" if io_fp16 else "float32"
    props_extra[KEY_PRECISION] = precision
    set_metadata(proto, contract_props(preprocess, profile, props_extra))
    proto.producer_name = "edgeresnet"
    proto.doc_string = f"edgeresnet export ({precision}): input 'input' NCHW {io_dtype}, output 'logits' {io_dtype}"

    simplified = None
    if simplify:
        stage("simplifying (onnxslim)", 1)
        start = time.perf_counter()
        proto, simplified = _simplify(proto)
        _normalise_io(proto, profile)  # the simplifier must keep the documented names and batch axis
        timings["simplify_s"] = time.perf_counter() - start

    stage("checking (onnx.checker full, shape inference)", 1)
    start = time.perf_counter()
    proto = _check(proto, profile, preprocess)
    timings["check_s"] = time.perf_counter() - start
    fp16_stats = None
    if precision == "fp16":
        stage("converting to FP16 (checked again)", 1)
        start = time.perf_counter()
        proto, fp16_stats = convert_to_fp16(proto, io_fp16=io_fp16)
        proto = _check(proto, profile, preprocess)
        timings["fp16_s"] = time.perf_counter() - start
        if fp16_stats.underflow_to_zero:
            notes.append(f"FP16: {fp16_stats.underflow_to_zero} of {fp16_stats.values_converted} nonzero weights "
                         "round to 0 in float16 (|w| < 2**-25, half its smallest subnormal)")

    report: ParityReport | None = None
    batches = profile.parity_batches()
    with atomic_output(out) as tmp:
        _save(proto, tmp)
        if parity_images is not None:
            stage(f"parity PyTorch vs ONNX Runtime at batch {', '.join(map(str, batches))}",
                  planned_steps(len(parity_images), batches))
            start = time.perf_counter()
            report = _parity(model, preprocess, tmp, out, parity_images, batches, tolerance, advance)
            timings["parity_s"] = time.perf_counter() - start
            if not report.passed:
                raise UserError(f"parity failed for {out}: {report.failure_summary()}; nothing was written "
                                "(loosen --atol/--rtol/--min-agreement only if the difference is expected)", exit_code=1)
        manifest = build_manifest(
            "onnx", tmp, command="export",
            inputs={"checkpoint": Path(source).resolve()} if source is not None else None,
            settings={"opset": choice.opset, "exporter": choice.exporter, "opset_reason": choice.reason,
                      "batch": profile.to_dict(), "image_size": preprocess.image_size, "simplify": simplify,
                      "target": getattr(target, "name", None), "tolerance": (tolerance or Tolerance()).__dict__,
                      "precision": precision, "io_fp16": io_fp16, **(settings or {})},
            extra={"preprocess": preprocess.to_dict(), "batch_profile": profile.to_dict(), "opset": produced,
                   "exporter": choice.exporter, "ir_version": int(proto.ir_version),
                   "model": spec.to_dict() if spec is not None else None,
                   "precision": precision,
                   "fp16": fp16_stats.to_dict() if fp16_stats is not None else None,
                   "input": {"name": INPUT_NAME, "shape": _shape_of(proto.graph.input[0]), "dtype": io_dtype,
                             "layout": "NCHW"},
                   "output": {"name": OUTPUT_NAME, "shape": _shape_of(proto.graph.output[0]), "dtype": io_dtype},
                   "checks": {"onnx_checker": "full_check", "shape_inference": "strict"},
                   "simplified": simplified, "parity": report.to_dict() if report else None,
                   "exporter_versions": _exporter_versions(), "warnings": notes, "timings_s": timings},
        )
        manifest["file"] = out.name
    write_manifest_or_remove(out, manifest)
    return ExportResult(path=out, opset=produced, exporter=choice.exporter, dynamic=profile.dynamic, profile=profile,
                        manifest=manifest, parity=report, timings=timings, simplified=simplified, warnings=notes,
                        precision=precision, io_dtype=io_dtype)


def write_manifest_or_remove(onnx_path: Path, manifest: dict[str, Any]) -> None:
    """Write the sidecar manifest of a just-published ONNX, or remove the ONNX: no ONNX without its manifest."""
    try:
        write_manifest(onnx_path, manifest)
    except BaseException:
        onnx_path.unlink(missing_ok=True)
        raise


# -- steps -------------------------------------------------------------------------------------------


def _cpu_eval_copy(model: Any) -> Any:
    """Export happens on the CPU in eval mode; a model on a GPU is copied, never moved under the caller."""
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    return (model if on_cpu else copy.deepcopy(model).cpu()).eval()


def _export_proto(model: Any, image_size: int, profile: BatchProfile, choice: OpsetChoice) -> tuple[Any, list[str]]:
    import torch

    # torch.export specialises a dimension whose example size is 0 or 1, so a dynamic export traces batch 2.
    example_batch = max(2, profile.opt) if profile.dynamic else profile.max
    example = torch.zeros(example_batch, 3, image_size, image_size)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if choice.exporter == "torchscript":
                proto = _export_torchscript(model, example, profile, choice.opset)
            else:
                proto = _export_dynamo(model, example, profile, choice.opset)
        except UserError:
            raise
        except Exception as exc:  # torch raises many types; the user gets one line
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise UserError(f"the {choice.exporter} exporter failed (opset {choice.opset or 'default'}): "
                            f"{exc.__class__.__name__}: {first[:200]}; nothing was written", exit_code=1) from exc
    for w in caught:
        text = " ".join(str(w.message).split())
        if "legacy TorchScript-based ONNX export" in text or "feature will be removed" in text:
            text = "legacy TorchScript exporter used (deprecated in torch >= 2.9; needed for opset <= 17)"
        if text and text[:200] not in notes:
            notes.append(text[:200])
    return proto, notes


def _export_torchscript(model: Any, example: Any, profile: BatchProfile, opset: int | None) -> Any:
    import onnx
    import torch

    from edgeresnet.export.torch_compat import torchscript_kwargs  # dynamo=False only where torch names it (>= 2.4)

    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}} if profile.dynamic else None
    torch.onnx.export(model, (example,), buffer, **torchscript_kwargs(), opset_version=opset,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True,
                      training=torch.onnx.TrainingMode.EVAL, export_params=True)
    return onnx.load_from_string(buffer.getvalue())


def _export_dynamo(model: Any, example: Any, profile: BatchProfile, opset: int | None) -> Any:
    import torch

    dynamic_shapes = None
    if profile.dynamic:
        dynamic_shapes = ({0: torch.export.Dim(BATCH_DIM, min=1, max=max(2, profile.max))},)
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=dynamic_shapes, optimize=True, verbose=False, report=False, **kwargs)
    return program.model_proto  # constants are folded by onnxscript's optimizer (optimize=True)


def _default_opset(proto: Any) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _normalise_io(proto: Any, profile: BatchProfile) -> None:
    """Names and the batch dimension exactly as documented, whichever exporter ran."""
    graph = proto.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(graph.output) != 1 or graph.output[0].name != OUTPUT_NAME:
        raise UserError(f"exporter produced inputs {[i.name for i in inputs]} / outputs {[o.name for o in graph.output]}, "
                        f"expected ['{INPUT_NAME}'] / ['{OUTPUT_NAME}']; nothing was written", exit_code=1)
    for value in (inputs[0], graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        if profile.dynamic:
            dim.Clear()
            dim.dim_param = BATCH_DIM
        elif dim.dim_value != profile.max:
            raise UserError(f"exporter produced batch {dim.dim_value or dim.dim_param} for a static batch "
                            f"{profile.max}; nothing was written", exit_code=1)


def _lower_ir_version(proto: Any) -> None:
    """Use the oldest IR version the opsets allow: TensorRT 8.x parsers reject newer IR versions."""
    import onnx

    try:
        lowest = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    except (ValueError, TypeError):
        return
    if lowest < proto.ir_version:
        proto.ir_version = lowest


def _simplify(proto: Any) -> tuple[Any, dict[str, Any]]:
    try:
        import onnxslim
    except ImportError as exc:
        raise UserError("--simplify needs onnxslim, which is not installed; pip install onnxslim "
                        "(or export without --simplify)") from exc
    before = len(proto.graph.node)
    try:
        slim = onnxslim.slim(copy.deepcopy(proto))
    except Exception as exc:  # onnxslim failures: report, never write a half-simplified model
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise UserError(f"--simplify: onnxslim failed ({first[:160]}); export without --simplify", exit_code=1) from exc
    if slim is None:
        raise UserError("--simplify: onnxslim returned no model; export without --simplify", exit_code=1)
    set_metadata(slim, {p.key: p.value for p in proto.metadata_props})
    slim.producer_name, slim.doc_string = proto.producer_name, proto.doc_string
    from importlib import metadata

    return slim, {"tool": "onnxslim", "version": metadata.version("onnxslim"), "nodes_before": before,
                  "nodes_after": len(slim.graph.node)}


def _check(proto: Any, profile: BatchProfile, preprocess: Preprocess) -> Any:
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise UserError(f"exported model fails onnx.checker/shape inference: {first[:200]}; nothing was written",
                        exit_code=1) from exc
    out_shape = _shape_of(inferred.graph.output[0])
    expected_batch = BATCH_DIM if profile.dynamic else profile.max
    classes = preprocess.num_classes or None
    if len(out_shape) != 2 or out_shape[0] != expected_batch or (classes and out_shape[1] != classes):
        raise UserError(f"exported logits have shape {out_shape}, expected [{expected_batch}, "
                        f"{classes or 'classes'}]; nothing was written", exit_code=1)
    return inferred


def _save(proto: Any, path: Path) -> None:
    import onnx

    if proto.ByteSize() >= 2**31 - 1:  # pragma: no cover - ResNet-50 is ~100 MB
        raise UserError("exported model exceeds 2 GB, which needs external data; not supported for ResNet export")
    try:
        onnx.save_model(proto, str(path))
    except OSError as exc:
        raise UserError(f"--out {path.parent}: cannot write ({exc.strerror or exc}); free space or choose another path") from exc


def _parity(model: Any, preprocess: Preprocess, tmp: Path, out: Path, images: np.ndarray, batches: list[int],
            tolerance: Tolerance | None, advance: Advance | None) -> ParityReport:
    from edgeresnet.runners.ort_runner import OrtRunner
    from edgeresnet.runners.torch_runner import TorchRunner

    reference = TorchRunner.from_model(model, preprocess, name="pytorch", device="cpu")
    candidate = OrtRunner.load(tmp, providers=["CPUExecutionProvider"])  # the file about to become ``out``
    report = compare_runners(reference, candidate, images, batches, tolerance or Tolerance(), progress=advance)
    report.a, report.b = "torch", f"ort:{out.name}"
    return report


def _shape_of(value: Any) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def _exporter_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("torch", "onnx", "onnxscript", "onnxruntime", "onnxslim"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
