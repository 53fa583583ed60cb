"""Which TensorRT module to use, and what it is: flavor (TensorRT or TensorRT-RTX), version, feature table.

The module is imported lazily and injected into every other adapter call, which is how tests drive the adapter
with a recording fake built from the real bindings' name lists.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.trt import rtx

INSTALL_HINT = (
    "install TensorRT (JetPack's python3-libnvinfer on Jetson, pip install tensorrt-cu12 on a GPU host) "
    "or the CPU-only builder: " + rtx.INSTALL_HINT
)


def _import_tensorrt() -> tuple[ModuleType | None, str]:
    """``tensorrt`` (or the bare ``tensorrt_bindings``), or None with the reason it is unusable."""
    reasons: list[str] = []
    for name in ("tensorrt", "tensorrt_bindings"):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            text = " ".join(str(exc).split())
            if "No module named" not in text:
                reasons.append(f"import {name}: {text[:160]}")
            continue
        except OSError as exc:
            reasons.append(f"import {name}: {' '.join(str(exc).split())[:160]}")
            continue
        if not hasattr(module, "Builder"):
            # tensorrt-stubs installs an empty namespace package: `import tensorrt` succeeds
            # (github.com/sync-dev-org/tensorrt-stubs ships tensorrt/__init__.pyi and no module)
            reasons.append(f"{name} is a stub-only package without the bindings (uninstall tensorrt-stubs)")
            continue
        return module, ""
    return None, "; ".join(reasons) or "tensorrt is not installed"


def load_trt(builder: str = "auto") -> ModuleType:
    """The TensorRT module to use: ``tensorrt``, ``rtx`` (TensorRT-RTX) or ``auto`` (TensorRT, else RTX)."""
    if builder not in ("auto", "tensorrt", "rtx"):
        raise UserError(f"--builder {builder!r}: choose auto, tensorrt or rtx")
    reason = ""
    if builder in ("auto", "tensorrt"):
        module, reason = _import_tensorrt()
        if module is not None:
            return module
        if builder == "tensorrt":
            raise UserError(f"TensorRT is not usable here ({reason}); {INSTALL_HINT}")
    module = rtx.import_rtx()
    if module is not None:
        return module
    if builder == "rtx":
        raise UserError(f"--builder rtx: TensorRT-RTX is not installed; {rtx.INSTALL_HINT}")
    raise UserError(f"neither TensorRT nor TensorRT-RTX is importable ({reason}); {INSTALL_HINT}")


def trt_flavor(trt: Any) -> str:
    """``"rtx"`` for TensorRT-RTX, else ``"tensorrt"``."""
    return "rtx" if rtx.is_rtx(trt) else "tensorrt"


def trt_version(trt: Any) -> tuple[int, int, int]:
    """``__version__`` as (major, minor, patch): "10.7.0.post1" -> (10, 7, 0), "1.7.1.116" -> (1, 7, 1)."""
    text = str(getattr(trt, "__version__", ""))
    numbers = [int(n) for n in re.findall(r"\d+", text.split("post")[0])[:3]]
    if not numbers:
        raise UserError(f"{getattr(trt, '__name__', 'tensorrt')}: no usable __version__ ({text!r}); reinstall TensorRT")
    numbers += [0] * (3 - len(numbers))
    return (numbers[0], numbers[1], numbers[2])


def trt_label(trt: Any) -> str:
    prefix = "TensorRT-RTX" if trt_flavor(trt) == "rtx" else "TensorRT"
    return f"{prefix} {getattr(trt, '__version__', '?')}"


def features_for(trt: Any, **options: Any) -> Any:
    """The ``TrtFeatures`` of the given module (TensorRT-RTX has its own table, not TensorRT 1.x's)."""
    from edgeresnet.trt.features import TrtFeatures

    if trt_flavor(trt) == "rtx":
        return TrtFeatures.for_rtx(trt_version(trt))
    return TrtFeatures.for_version(trt_version(trt), **options)
