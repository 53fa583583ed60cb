"""edgeresnet: ResNet-18/50 from training to a measured, regression-guarded TensorRT engine.

The stages are a Python API (``edgeresnet.api``), lazily: ``import edgeresnet`` imports none of torch,
onnx, onnxruntime or TensorRT. ``from edgeresnet import build, calibrate, regress, BuildSettings`` works for
every API name that is not also a sub-package (``train``, ``evaluate``, ``export`` and ``report`` are
sub-packages: take those from ``edgeresnet.api``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_SUBPACKAGE_NAMES = frozenset({"train", "evaluate", "export", "report"})


def __getattr__(name: str) -> Any:
    # PEP 562 (https://peps.python.org/pep-0562/): called only for names the package does not have yet
    import importlib

    api = importlib.import_module("edgeresnet.api")  # not "from edgeresnet import api": that calls back here
    if name in api.NAMES and name not in _SUBPACKAGE_NAMES:
        value = api.resolve(name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
