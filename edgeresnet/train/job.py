"""A whole training run from a recipe: data, model (fresh or ``--init``), ``fit``, the effective recipe file.

Shared by ``edgeresnet train`` and the demo, so both do exactly the same thing. Under torchrun (two or more
processes) it joins the process group first; every rank trains, rank 0 alone writes and reports.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.train import distributed
from edgeresnet.train.loop import LAST, TrainResult, fit, seed_everything
from edgeresnet.train.recipe import TrainRecipe, recipe_to_yaml

RECIPE_FILE = "recipe.yaml"


@dataclass
class TrainRun:
    result: TrainResult
    recipe: TrainRecipe
    spec: Any
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    dist: distributed.DistContext | None = None  # the process group the run trained in (None: one process)

    @property
    def is_main(self) -> bool:
        """Whether this process reports the run (always, outside torchrun)."""
        return self.dist is None or self.dist.is_main

    def summary(self) -> dict[str, Any]:
        summary = self.result.summary()
        summary.update({"recipe": self.recipe.to_dict(), "model": self.spec.to_dict(), "data": self.data,
                        "notes": self.notes, "distributed": distributed_summary(self.recipe, self.dist)})
        return summary


def distributed_summary(recipe: TrainRecipe, ctx: distributed.DistContext | None) -> dict[str, Any]:
    """World size, backend and the global batch (per-process batch x processes x accumulation)."""
    world = ctx.world_size if ctx is not None else 1
    return {"world_size": world, "backend": ctx.backend if ctx is not None else None,
            "global_batch": recipe.batch_size * recipe.accumulate * world,
            "sync_bn": bool(recipe.sync_bn and ctx is not None)}


def make_out_dir(path: Path, option: str = "--out") -> Path:
    """Create an output directory (parents too) or fail in one line."""
    from edgeresnet.artifacts import make_output_dir

    return make_output_dir(path, option)


def check_out_dir(out: Path, *, resume: bool, overwrite: bool) -> Path:
    """Refuse an --out that is a file, or that holds a run the user did not ask to resume or overwrite."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; pass a directory for the run's outputs")
    if resume and not (out / LAST).exists():
        raise UserError(f"--resume: no {LAST} in {out}; start the run without --resume")
    if not resume and (out / LAST).exists() and not overwrite:
        raise UserError(f"--out {out}: already holds a training run ({LAST}); pass --resume to continue it, "
                        "--overwrite to start over, or choose another --out")
    return out


def saved_recipe(out: Path) -> dict[str, Any]:
    """The recipe of the run in ``out`` (from ``last.pt``), for ``--resume``."""
    from edgeresnet.models import load_checkpoint

    last = out / LAST
    if not last.exists():
        raise UserError(f"--resume: no {LAST} in {out}; start the run without --resume")
    recipe = load_checkpoint(last).get("recipe")
    if not isinstance(recipe, dict):
        raise UserError(f"--resume: {last} records no recipe; start the run without --resume")
    return recipe


def load_splits(recipe: TrainRecipe) -> tuple[Any, list[str]]:
    """The data set of the recipe; skipped (corrupt) files come back as readable notes, not Python warnings."""
    from edgeresnet.data import load_data

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_data(recipe.data, recipe.image_size, seed=recipe.split_seed)
    notes = [str(w.message) for w in caught if "skipped" in str(w.message)]
    return splits, notes


def run_training(recipe: TrainRecipe, out: Path, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = True, console: Any = None, callbacks: tuple[Any, ...] = ()) -> TrainRun:
    """Load the data, build (or ``--init``) the model, save the effective recipe, train.

    Under torchrun (``WORLD_SIZE`` >= 2) the checks run on every rank before the process group forms, so no
    rank writes before all have agreed the output directory is usable; the group is left on return.
    The writing process (rank 0) holds ``OUT/.lock`` for the whole run, so a second run on ``out`` is refused.
    """
    from edgeresnet.train.outlock import OutLock

    ranks = distributed.env_ranks()
    if ranks is not None and ranks[0] != 0:  # rank 0 alone writes, so it alone locks --out
        return _run_locked(recipe, Path(out), resume, overwrite, progress, console, callbacks)
    with OutLock(Path(out)):
        return _run_locked(recipe, Path(out), resume, overwrite, progress, console, callbacks)


def _run_locked(recipe: TrainRecipe, out: Path, resume: bool, overwrite: bool, progress: bool, console: Any,
                callbacks: tuple[Any, ...]) -> TrainRun:
    from edgeresnet.artifacts import write_text_atomic
    from edgeresnet.models import build_model, import_weights
    from edgeresnet.train.state import disk_full_error, is_disk_full

    out = check_out_dir(out, resume=resume, overwrite=overwrite)
    splits, notes = load_splits(recipe)
    ctx = distributed.init_distributed(recipe.device)
    try:
        if recipe.sync_bn and ctx is None:
            notes.append("--sync-bn: a single process has nothing to synchronise; plain BatchNorm used")
        spec = recipe.model_spec(splits.num_classes)
        seed_everything(recipe.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        if recipe.init and not resume:
            model, init_notes = import_weights(recipe.init, spec)
            notes += [f"--init {recipe.init}: {n}" for n in init_notes] or [f"--init {recipe.init}: all weights "
                                                                              "loaded"]
            model.train()
        else:
            model = build_model(spec)
        if ctx is None or ctx.is_main:
            make_out_dir(out)
            try:
                write_text_atomic(out / RECIPE_FILE, recipe_to_yaml(recipe, "effective training recipe; repeat with "
                                                                            "'edgeresnet train --config recipe.yaml'"))
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full_error(out, exc) from None
                raise
        inputs = {"init": recipe.init} if recipe.init and Path(recipe.init).is_file() else None
        try:
            result = fit(model, splits, recipe, out, progress=progress, spec=spec, resume=resume,
                         callbacks=callbacks, console=console, inputs=inputs)
            distributed.barrier(ctx)  # rank 0's last checkpoint is on disk before any rank reports or exits
        except Exception as exc:
            if ctx is not None and not isinstance(exc, UserError) and distributed.is_peer_loss(exc):
                distributed.lost_peer(ctx, exc)  # one line (or, under --nproc, the launcher's line), no traceback
            raise
    finally:
        distributed.cleanup(ctx)
    result.outputs[RECIPE_FILE] = str(out / RECIPE_FILE)
    data = splits.summary()
    data["skipped"] = [Path(s).name for s in splits.skipped]
    return TrainRun(result=result, recipe=recipe, spec=spec, data=data, notes=notes, dist=ctx)
