"""The import stage: external torchvision- or timm-format ResNet weights -> an edgeresnet checkpoint.

The file is read without running code (``torch.load(weights_only=True)`` or safetensors, in
``edgeresnet.models.import_weights``); the checkpoint records ImageNet preprocessing at ``image_size`` and
gets its sidecar manifest. ``edgeresnet import`` is ``import_weights`` behind options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError


@dataclass
class ImportSettings:
    """What ``edgeresnet import`` takes, one field per option (same defaults)."""

    weights: Path
    arch: str
    num_classes: int
    out: Path
    small_stem: bool = False
    image_size: int = 224
    class_names: str | None = None  # comma-separated; default 0..K-1
    dropout: float = 0.0
    ema: bool = True

    def __post_init__(self) -> None:
        self.weights, self.out = Path(self.weights), Path(self.out)


@dataclass
class ImportResult:
    """The checkpoint written; ``to_dict()`` is the ``--json`` document."""

    checkpoint: Path
    source: Path
    model: dict[str, Any]
    parameters: int
    preprocess: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "source": str(self.source), "model": self.model,
                "parameters": self.parameters, "notes": self.notes, "preprocess": self.preprocess}


def _check(settings: ImportSettings) -> tuple[Any, Any]:
    """The model spec and preprocessing contract, or the ``UserError`` naming the option (before any reading)."""
    from edgeresnet.artifacts import check_output_dir
    from edgeresnet.data.presets import preset_for
    from edgeresnet.models import ModelSpec

    s = settings
    spec = ModelSpec(s.arch, s.num_classes, s.small_stem, s.dropout)
    names = (tuple(n.strip() for n in s.class_names.split(",")) if s.class_names
             else tuple(str(i) for i in range(s.num_classes)))
    if len(names) != s.num_classes or not all(names):
        raise UserError(f"--class-names: {len(names)} name(s) given for --num-classes {s.num_classes}; "
                        "give one non-empty name per class, comma-separated")
    preprocess = preset_for("imagenet", s.image_size, names)
    if s.out.suffix.lower() not in (".pt", ".pth"):
        raise UserError(f"--out {s.out}: a checkpoint file name ending in .pt is expected")
    if s.out.is_dir():
        raise UserError(f"--out {s.out}: is a directory; pass a file name such as {s.out}/model.pt")
    check_output_dir(s.out)
    return spec, preprocess


def import_weights(settings: ImportSettings | None = None, **options: Any) -> ImportResult:
    """Import external ResNet weights as an edgeresnet checkpoint (ImageNet preprocessing recorded).

    Takes an ``ImportSettings`` or its fields as keywords."""
    if settings is not None and options:
        raise TypeError("import_weights() takes an ImportSettings or keyword options, not both")
    s = settings if settings is not None else ImportSettings(**options)
    spec, preprocess = _check(s)
    return _write(s, spec, preprocess)


def _write(s: ImportSettings, spec: Any, preprocess: Any) -> ImportResult:
    import torch

    from edgeresnet.artifacts import atomic_output, build_manifest, write_manifest
    from edgeresnet.models import import_weights as load_external
    from edgeresnet.models import make_checkpoint

    model, notes = load_external(s.weights, spec, ema=s.ema)
    checkpoint = make_checkpoint(model, spec, preprocess.to_dict(), source=str(s.weights), notes=notes)
    with atomic_output(s.out) as tmp:
        torch.save(checkpoint, tmp)
    write_manifest(s.out, build_manifest("checkpoint", s.out, command="import", inputs={"weights": s.weights},
                                         settings={"arch": s.arch, "num_classes": s.num_classes,
                                                   "small_stem": s.small_stem, "image_size": s.image_size,
                                                   "dropout": s.dropout, "ema": s.ema},
                                         extra={"preprocess": preprocess.to_dict(), "model": spec.to_dict(),
                                                "notes": notes}))
    return ImportResult(checkpoint=s.out, source=s.weights, model=spec.to_dict(),
                        parameters=sum(p.numel() for p in model.parameters()), preprocess=preprocess.to_dict(),
                        notes=list(notes))
