"""Which opset and which exporter (pure: no torch import).

torch 2.14 has two ONNX exporters. The default one (``dynamo=True``, torch.export + onnxscript) emits
opset 18 or newer and fails to down-convert ResNet to 17 (ReduceMean's axes input cannot become an
attribute). The legacy TorchScript exporter (``dynamo=False``) emits opset 17 or older and still works,
with a deprecation warning. TensorRT 8.2 (Jetson Nano/TX2) parses opset <= 13 and 8.5/8.6 <= 17, so
both paths are needed: the opset decides the exporter, and a combination that cannot be produced is an
error, never a silent change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeresnet.errors import UserError

EXPORTERS = ("dynamo", "torchscript")
TORCHSCRIPT_OPSETS = (11, 17)  # below 11 Resize/Pad semantics differ and no target needs it
DYNAMO_OPSETS = (18, 23)  # torch.onnx._constants.ONNX_MAX_OPSET in torch 2.14 is 23
DYNAMO_DEFAULT_OPSET = 20  # torch.onnx._constants.ONNX_DEFAULT_OPSET in torch 2.14


@dataclass(frozen=True)
class OpsetChoice:
    """The decision and why: ``opset`` None means the exporter's own default."""

    exporter: str
    opset: int | None
    reason: str
    warnings: tuple[str, ...] = field(default_factory=tuple)


def exporter_for_opset(opset: int) -> str:
    return "torchscript" if opset <= TORCHSCRIPT_OPSETS[1] else "dynamo"


def _check_range(opset: int, option: str) -> None:
    lo, hi = TORCHSCRIPT_OPSETS[0], DYNAMO_OPSETS[1]
    if not lo <= opset <= hi:
        raise UserError(f"{option} {opset}: unsupported opset; choose {lo}-{hi} ({TORCHSCRIPT_OPSETS[0]}-"
                        f"{TORCHSCRIPT_OPSETS[1]} through the TorchScript exporter, {DYNAMO_OPSETS[0]}-{DYNAMO_OPSETS[1]} "
                        "through dynamo)")


def _check_exporter(exporter: str, opset: int) -> None:
    if exporter == "dynamo" and opset < DYNAMO_OPSETS[0]:
        raise UserError(f"--opset {opset}: the dynamo exporter produces opset {DYNAMO_OPSETS[0]} or newer and cannot "
                        f"down-convert ResNet; use --exporter torchscript (or auto) for opset <= {TORCHSCRIPT_OPSETS[1]}")
    if exporter == "torchscript" and opset > TORCHSCRIPT_OPSETS[1]:
        raise UserError(f"--opset {opset}: the TorchScript exporter is used here for opset <= {TORCHSCRIPT_OPSETS[1]} "
                        f"only; use --exporter dynamo (or auto) for opset {opset}")


def choose_opset(opset: int | None = None, exporter: str | None = None, target: Any = None) -> OpsetChoice:
    """Decide (exporter, opset). ``target`` is any object with ``name`` and ``max_onnx_opset`` (int or None).

    An explicit ``opset`` overrides the target (as the user asked), with a warning when it is above what
    the target's TensorRT parses.
    """
    if exporter is not None and exporter not in EXPORTERS and exporter != "auto":
        raise UserError(f"--exporter {exporter}: choose auto, {', '.join(EXPORTERS)}")
    exporter = None if exporter == "auto" else exporter
    cap = getattr(target, "max_onnx_opset", None) if target is not None else None
    tname = getattr(target, "name", "?")
    warnings: list[str] = []
    if opset is not None:
        _check_range(opset, "--opset")
        chosen = exporter or exporter_for_opset(opset)
        _check_exporter(chosen, opset)
        if cap is not None and opset > cap:
            warnings.append(f"--opset {opset} is above {cap}, the highest opset target {tname}'s TensorRT "
                            f"({getattr(target, 'tensorrt', '?')}) parses; the build there may fail")
        return OpsetChoice(chosen, opset, "--opset", tuple(warnings))
    if cap is not None:
        if cap < TORCHSCRIPT_OPSETS[0]:
            raise UserError(f"--target {tname}: its TensorRT parses opset <= {cap}, below the oldest we export "
                            f"({TORCHSCRIPT_OPSETS[0]})")
        wanted = min(cap, DYNAMO_DEFAULT_OPSET)
        chosen = exporter or exporter_for_opset(wanted)
        if chosen == "torchscript":
            wanted = min(wanted, TORCHSCRIPT_OPSETS[1])
        _check_exporter(chosen, wanted)
        return OpsetChoice(chosen, wanted, f"target {tname} (TensorRT {getattr(target, 'tensorrt', '?')} parses "
                                           f"opset <= {cap})", tuple(warnings))
    if exporter == "torchscript":
        return OpsetChoice("torchscript", TORCHSCRIPT_OPSETS[1], "newest opset of the TorchScript exporter")
    return OpsetChoice("dynamo", None, "the default exporter's default opset")


def resolve_target(name: str | None, loader: Callable[[str], Any] | None = None) -> Any:
    """``--target NAME`` -> Target (via ``edgeresnet.targets.load_target`` unless a loader is given)."""
    if name is None:
        return None
    if loader is None:
        try:
            from edgeresnet.targets import load_target as loader  # type: ignore[no-redef]
        except ImportError as exc:  # pragma: no cover - targets ship with the package
            raise UserError(f"--target {name}: target definitions are not available in this install") from exc
    target = loader(name)
    if not hasattr(target, "max_onnx_opset"):
        raise UserError(f"--target {name}: the target does not state max_onnx_opset; fix its YAML file")
    return target
