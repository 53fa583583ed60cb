"""Learning-rate schedules as a pure function of the optimizer step.

The LR is recomputed from the step count every step instead of being kept in a scheduler object, so
resuming needs only the step number and per-group base LRs can differ (``--backbone-lr-mult``).
"""

from __future__ import annotations

import math
from typing import Any


def lr_factor(step: int, steps_per_epoch: int, recipe: Any) -> float:
    """Multiplier of the base LR for optimizer step ``step`` (0-based), warm-up included."""
    steps_per_epoch = max(1, steps_per_epoch)
    total = max(1, recipe.epochs * steps_per_epoch)
    warmup = min(total, int(round(recipe.warmup_epochs * steps_per_epoch)))
    warm = (step + 1) / warmup if step < warmup else 1.0
    epoch_pos = step / steps_per_epoch
    name = recipe.schedule
    if name == "cosine":
        floor = recipe.min_lr / recipe.lr
        progress = 0.0 if step < warmup else min(1.0, (step - warmup) / max(1, total - warmup))
        factor = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif name == "step":
        factor = recipe.gamma ** math.floor(epoch_pos / recipe.step_size)
    elif name == "exponential":
        factor = recipe.gamma ** epoch_pos
    elif name == "constant":
        factor = 1.0
    else:  # check_recipe rejects this earlier; kept for callers building recipes by hand
        raise ValueError(f"unknown schedule {name!r}")
    return warm * factor
