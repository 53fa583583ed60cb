"""Which opset and which exporter (pure, unless asked to read the installed torch's exporter signature).

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


def _no_dynamo(option: str) -> UserError:
    from edgeresnet.export.torch_compat import DYNAMO_MIN_TORCH, dynamo_missing, torch_version

    missing = ", ".join(dynamo_missing()) or "?"
    return UserError(f"{option}: the dynamo exporter needs torch >= {DYNAMO_MIN_TORCH} (the installed torch "
                     f"{torch_version()} has no torch.onnx.export parameter {missing}); use --opset "
                     f"{TORCHSCRIPT_OPSETS[1]} or lower (TorchScript exporter) or upgrade torch")


def choose_opset(opset: int | None = None, exporter: str | None = None, target: Any = None,
                 dynamo_available: bool | None = None) -> OpsetChoice:
    """Decide (exporter, opset). ``target`` is any object with ``name`` and ``max_onnx_opset`` (int or None).

    An explicit ``opset`` overrides the target (as the user asked), with a warning when it is above what
    the target's TensorRT parses. ``dynamo_available`` False (None: ask the installed torch, see
    ``torch_compat``) means torch < 2.6, e.g. JetPack 6.0's 2.3 or 6.1's 2.5.0a0: without an explicit
    request the TorchScript exporter's newest opset is used, an explicit dynamo request is an error.
    """
    if exporter is not None and exporter not in EXPORTERS and exporter != "auto":
        raise UserError(f"--exporter {exporter}: choose auto, {', '.join(EXPORTERS)}")
    exporter = None if exporter == "auto" else exporter
    if dynamo_available is None:
        from edgeresnet.export.torch_compat import dynamo_available as _probe

        dynamo_available = _probe()
    if not dynamo_available:
        if exporter == "dynamo":
            raise _no_dynamo("--exporter dynamo")
        if opset is not None and opset > TORCHSCRIPT_OPSETS[1] and exporter is None:
            _check_range(opset, "--opset")
            raise _no_dynamo(f"--opset {opset}")
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
        chosen = exporter or (exporter_for_opset(wanted) if dynamo_available else "torchscript")
        if chosen == "torchscript":
            wanted = min(wanted, TORCHSCRIPT_OPSETS[1])
        _check_exporter(chosen, wanted)
        return OpsetChoice(chosen, wanted, f"target {tname} (TensorRT {getattr(target, 'tensorrt', '?')} parses "
                                           f"opset <= {cap})", tuple(warnings))
    if exporter == "torchscript":
        return OpsetChoice("torchscript", TORCHSCRIPT_OPSETS[1], "newest opset of the TorchScript exporter")
    if not dynamo_available:
        return OpsetChoice("torchscript", TORCHSCRIPT_OPSETS[1], "newest opset of the TorchScript exporter: this "
                           "torch's torch.onnx.export cannot run the dynamo exporter (torch < 2.6)")
    return OpsetChoice("dynamo", None, "the default exporter's default opset")


def resolve_target(name: str | None, loader: Callable[[str], Any] | None = None) -> Any:
    """``--target NAME`` -> Target (via ``edgeresnet.trt.targets.load_target`` unless a loader is given)."""
    if name is None:
        return None
    if loader is None:
        try:
            from edgeresnet.trt.targets import load_target as loader  # type: ignore[no-redef]
        except ImportError as exc:  # pragma: no cover - targets ship with the package
            raise UserError(f"--target {name}: target definitions are not available in this install") from exc
    target = loader(name)
    if not hasattr(target, "max_onnx_opset"):
        raise UserError(f"--target {name}: the target does not state max_onnx_opset; fix its YAML file")
    return target
