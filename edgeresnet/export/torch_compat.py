"""What the installed ``torch.onnx.export`` accepts, read from its signature.

We read parameters instead of comparing version strings because NVIDIA's Jetson wheels are pre-release
snapshots (JetPack 6.1/6.2: ``torch-2.5.0a0+872d972``), whose API can sit between two releases. The facts
below were read from the ``torch/onnx`` sources inside PyPI's torch wheels 2.3.1, 2.4.0, 2.5.0 and 2.6.0:

- torch 2.3: ``torch.onnx.export`` (torch/onnx/utils.py) has no ``dynamo`` parameter; passing one is a
  TypeError. The TorchScript exporter is the only thing it runs.
- torch 2.4: ``dynamo: bool = False`` exists (torch/onnx/utils.py), but ``dynamo=True`` goes to
  ``torch.onnx.dynamo_export`` with no ``dynamic_shapes``/``optimize``/``report`` parameters (TypeError).
- torch 2.5: torch/onnx/__init__.py adds ``dynamic_shapes`` and ``report``; ``optimize`` is not a
  parameter and is swallowed by the ``**_`` catch-all ("ignored options"), so constants would stay unfolded.
- torch 2.6: ``optimize: bool = False`` is a named parameter.
- torch 2.6.0 still defaults to ``dynamo=False``; torch 2.14.1's torch/onnx/__init__.py defaults to
  ``dynamo=True`` and warns on the TorchScript path ("Starting in PyTorch 2.9, the new torch.export-based
  ONNX exporter has become the default"), so the TorchScript exporter must be asked for with
  ``dynamo=False`` wherever the parameter exists, and must not be passed where it does not.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

# Keyword arguments edgeresnet passes on the dynamo path (export/onnx_export.py _export_dynamo).
DYNAMO_KEYWORDS = ("dynamo", "dynamic_shapes", "optimize", "report")
# The oldest PyPI torch release whose torch.onnx.export names all of DYNAMO_KEYWORDS (read from the wheels).
DYNAMO_MIN_TORCH = "2.6"


def onnx_export_parameters(export: Callable[..., Any] | None = None) -> frozenset[str]:
    """Names of ``torch.onnx.export``'s parameters; a ``**kwargs`` catch-all does not count as accepting a name."""
    if export is None:
        import torch.onnx

        export = torch.onnx.export
    try:
        params = inspect.signature(export).parameters
    except (TypeError, ValueError):  # a C function or a wrapper without a signature: assume nothing
        return frozenset()
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return frozenset(name for name, p in params.items() if p.kind not in skip)


def torchscript_kwargs(export: Callable[..., Any] | None = None) -> dict[str, Any]:
    """``{"dynamo": False}`` where ``torch.onnx.export`` has that parameter (torch >= 2.4), else ``{}`` (torch 2.3)."""
    return {"dynamo": False} if "dynamo" in onnx_export_parameters(export) else {}


def dynamo_missing(export: Callable[..., Any] | None = None) -> tuple[str, ...]:
    """The keywords of our dynamo call that this torch does not name (empty: the dynamo path can run)."""
    names = onnx_export_parameters(export)
    return tuple(k for k in DYNAMO_KEYWORDS if k not in names)


def dynamo_available(export: Callable[..., Any] | None = None) -> bool:
    return not dynamo_missing(export)


def torch_version() -> str:
    try:
        import torch

        return str(torch.__version__)
    except ImportError:  # pragma: no cover - export needs torch
        return "not installed"
