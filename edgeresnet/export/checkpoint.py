"""Export from a checkpoint file: the model, its contract and real parity images come from the file and
its manifest, so the user names only the checkpoint and the output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.export.onnx_export import Advance, ExportResult, Stage, as_profile, check_onnx_out, export_onnx
from edgeresnet.export.onnx_meta import BatchProfile, data_spec_of
from edgeresnet.export.opset import choose_opset, resolve_target
from edgeresnet.export.parity import Tolerance, load_parity_images

DEFAULT_PARITY_IMAGES = 32


def resolve_data_spec(data: str | None, artifact: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(data set for parity, a note for the user or None): ``--data``, else the one in the manifests, else digits."""
    if data is not None:
        return data, None
    recorded = data_spec_of(artifact)
    if recorded is None:
        return "digits", None
    from edgeresnet.data.sources import BUILTIN_SOURCES

    if recorded not in BUILTIN_SOURCES and not Path(recorded).is_dir():
        return "digits", (f"data set {recorded} named in the manifest of {Path(artifact).name} is not here; "
                          "parity uses digits images (pass --data to choose)")
    return recorded, None


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    opset: int | None = None,
    batch: int | tuple[int, int, int] | BatchProfile | str = 1,
    exporter: str | None = None,
    target: Any = None,
    image_size: int | None = None,
    simplify: bool = False,
    data: str | None = None,
    tolerance: Tolerance | None = None,
    parity_images: int = DEFAULT_PARITY_IMAGES,
    seed: int = 0,
    stage: Stage | None = None,
    advance: Advance | None = None,
    precision: str = "fp32",
    io_fp16: bool = False,
) -> ExportResult:
    """Export one of our checkpoints and prove parity on real images; ``target`` is a name or a Target.

    ``precision="fp16"`` writes an FP16 ONNX (float32 I/O unless ``io_fp16``), checked against the FP32 model."""
    from edgeresnet.data.presets import Preprocess
    from edgeresnet.export.fp16 import check_precision
    from edgeresnet.models import load_checkpoint, model_from_checkpoint

    check_onnx_out(out)
    check_precision(precision, io_fp16)
    profile = as_profile(batch)
    if isinstance(target, str):
        target = resolve_target(target)
    choose_opset(opset, exporter, target)  # bad opset/exporter: fail before loading anything
    if image_size is not None and image_size < 8:
        raise UserError(f"--image-size {image_size}: must be at least 8 pixels")
    if stage:
        stage("loading checkpoint", 1)
    ckpt = load_checkpoint(checkpoint)
    model, spec = model_from_checkpoint(ckpt, checkpoint)
    preprocess = Preprocess.from_dict(ckpt["preprocess"])
    if image_size is not None and image_size != preprocess.image_size:
        preprocess = preprocess.with_size(image_size)
    data_spec, note = resolve_data_spec(data, checkpoint)
    if stage:
        stage(f"loading {data_spec} images for parity", 1)
    images = load_parity_images(data_spec, preprocess, max(parity_images, profile.max), seed=seed)
    result = export_onnx(model, preprocess, out, opset=opset, batch=profile, exporter=exporter, source=checkpoint,
                         simplify=simplify, parity_images=images, tolerance=tolerance, target=target, spec=spec,
                         settings={"data": data_spec, "parity_images": int(images.shape[0]), "seed": seed},
                         stage=stage, advance=advance, precision=precision, io_fp16=io_fp16)
    if note:
        result.warnings.append(note)
    return result


def export_stage(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 dynamic_batch: tuple[int, int, int] = (1, 8, 32), opset: int | None = 17, data: str | None = None,
                 simplify: bool = False, name: str | None = None,
                 parity_images: int = DEFAULT_PARITY_IMAGES) -> dict[str, Any]:
    """The demo's export + parity stage: a dynamic-batch ONNX beside the checkpoint's outputs.

    Opset 17 by default: every GPU target's TensorRT parses it (Xavier's 8.5 and the 8.6 end of the
    desktop ranges stop at 17) and the TorchScript path exports in seconds. Returns a JSON-ready summary;
    raises UserError (exit code 1) when parity fails, with nothing written.
    """
    from edgeresnet.artifacts import make_output_dir

    out_dir = make_output_dir(Path(out_dir))
    out = out_dir / (name or (Path(checkpoint).stem + ".onnx"))
    result = export_checkpoint(checkpoint, out, opset=opset, batch=dynamic_batch, data=data, simplify=simplify,
                               parity_images=parity_images)
    summary = result.to_dict()
    summary["manifest"] = str(out) + ".json"
    return summary
