"""Checkpoint writing for training (atomic, with manifest) and the resumable training state.

``last.pt`` carries, beside the weights, the optimizer state, the gradient-scaler state, the step and
epoch counters, the history and every random-number-generator state, all as tensors and plain
containers, so it loads with ``weights_only=True`` and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.artifacts import atomic_output, build_manifest, write_manifest
from edgeresnet.models import make_checkpoint


def save_checkpoint(path: Path, model: Any, spec: Any, preprocess: dict[str, Any], *, recipe: dict[str, Any],
                    epoch: int, metrics: dict[str, Any], role: str, train_state: dict[str, Any] | None = None,
                    inputs: dict[str, Any] | None = None) -> Path:
    """Write ``path`` atomically (temporary name, then rename) and its manifest."""
    import torch

    extra: dict[str, Any] = {"epoch": epoch, "metrics": metrics, "recipe": recipe, "role": role}
    if train_state is not None:
        extra["train_state"] = train_state
    checkpoint = make_checkpoint(model, spec, preprocess, **extra)
    with atomic_output(path) as tmp:
        torch.save(checkpoint, tmp)
    manifest = build_manifest("checkpoint", path, command="train", inputs=inputs or {}, settings=recipe,
                              extra={"preprocess": preprocess, "model": spec.to_dict(), "metrics": metrics,
                                     "epoch": epoch, "role": role})
    write_manifest(path, manifest)
    return path


def capture_rng(loader_generator: Any) -> dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "loader": loader_generator.get_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], loader_generator: Any) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value
