"""Training: the recipe (``recipe``), the recipe-driven loop (``fit``), optimizers, schedules, checkpoints and run
logs.

The names below load lazily (PEP 562 ``__getattr__``): the CLI reads ``edgeresnet.train.recipe`` to build its
options, and that must not import torch (``edgeresnet --help`` stays fast; tests/test_imports.py checks it).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TrainRecipe": "edgeresnet.train.recipe",
    "BEST": "edgeresnet.train.loop",
    "LAST": "edgeresnet.train.loop",
    "TrainResult": "edgeresnet.train.loop",
    "fit": "edgeresnet.train.loop",
    "seed_everything": "edgeresnet.train.loop",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeresnet.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
