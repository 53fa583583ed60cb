"""TensorRT-RTX: where it differs from TensorRT, in one place.

TensorRT-RTX (``tensorrt-rtx-cu12-libs`` + ``tensorrt-rtx-cu12-bindings``, real wheels on PyPI) has
TensorRT's Python API with these differences (checked against the installed 1.7.1 bindings, whose names are
recorded in ``edgeresnet/trt/api/trt-rtx-1.7.json``, and by real CPU-only builds in tests/test_trt_rtx_build.py):

- module ``tensorrt_rtx`` (the bindings wheel alone installs it as ``tensorrt_rtx_bindings``);
  ``__version__`` is 1.x, so version rules of TensorRT must not be applied to it (``TrtFeatures.for_rtx``);
- strongly typed only: ``NetworkDefinitionCreationFlag`` has just STRONGLY_TYPED; no EXPLICIT_BATCH,
  no FP16/INT8/precision-constraint flags, no calibrators (precision comes from the ONNX: ``build --precision
  fp16`` converts an FP32 ONNX with ``edgeresnet.export.fp16.fp16_for_build``);
- builds ahead of time on a CPU, for the compute capabilities set with ``set_compute_capability``;
- timing cache calls exist but are no-ops (and warn "Deprecated in TensorRT-RTX 1.2");
- nothing can be executed without a GPU: ``deserialize_cuda_engine`` returns None (cudaError 35);
- its plans start with the tag ``vtrt`` where TensorRT's start with ``ftrt``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

MODULE_NAMES = ("tensorrt_rtx", "tensorrt_rtx_bindings")
INSTALL_HINT = (
    "pip install 'edgeresnet[rtx]' (tensorrt-rtx-cu12-libs and tensorrt-rtx-cu12-bindings, same version)"
)
#: what TensorRT-RTX does not have that TensorRT build plans may ask for
LACKS = ("EXPLICIT_BATCH", "FP16", "INT8", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "calibrators", "DLA")
SUPPORTS_TIMING_CACHE = False
CAN_EXECUTE_WITHOUT_GPU = False

# TensorRT-RTX names used by the adapter beyond the TensorRT ones (checked by tests/test_trt_api_contract.py)
NAMES_USED = [
    "ComputeCapability",
    "IBuilderConfig.num_compute_capabilities",
    "IBuilderConfig.set_compute_capability",
]


def import_rtx() -> ModuleType | None:
    """The TensorRT-RTX module, or None when neither import name works (or only a stub namespace exists)."""
    for name in MODULE_NAMES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        except OSError:  # bindings present, libraries missing or broken
            continue
        if hasattr(module, "Builder"):
            return module
    return None


def is_rtx(trt: Any) -> bool:
    """True for the TensorRT-RTX module (or a fake built from its name list)."""
    name = getattr(trt, "__name__", "") or ""
    return name.split(".")[0] in MODULE_NAMES or bool(getattr(trt, "IS_RTX", False))


def network_flags(trt: Any) -> int:
    """RTX networks are always strongly typed; the flag is the only creation flag it has."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def compute_capability_member(trt: Any, compute_capability: tuple[int, int] | None) -> Any | None:
    """``ComputeCapability.SM89`` for (8, 9), or None when RTX has no such target (then RTX picks)."""
    if compute_capability is None:
        return None
    name = f"SM{compute_capability[0]}{compute_capability[1]}"
    return getattr(trt.ComputeCapability, name, None)


def set_target_compute_capability(trt: Any, config: Any, compute_capability: tuple[int, int] | None) -> str | None:
    """Build for the target's GPU only: ``num_compute_capabilities = 1``, ``set_compute_capability(SMxy, 0)``.

    Returns the member name set, or None when the target's SM is not one RTX builds for (RTX's default).
    """
    member = compute_capability_member(trt, compute_capability)
    if member is None:
        return None
    config.num_compute_capabilities = 1
    if not config.set_compute_capability(member, 0):
        return None
    return f"SM{compute_capability[0]}{compute_capability[1]}"  # type: ignore[index]
