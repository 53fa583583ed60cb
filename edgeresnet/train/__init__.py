"""Training: the recipe-driven loop (``fit``), optimizers, schedules, checkpoints and run logs."""

from edgeresnet.config import TrainRecipe
from edgeresnet.train.loop import BEST, LAST, TrainResult, fit, seed_everything

__all__ = ["BEST", "LAST", "TrainRecipe", "TrainResult", "fit", "seed_everything"]
