"""The pruning Pareto sweep of ``benchmarks/fashion_mnist.py``: accuracy against measured latency, at matched latency.

Methods, each pruning the same FP32 baseline:

  ours_latency   our latency-aware allocation (``--allocation latency --speedup S``: per-conv latency table
                 measured on this CPU in ONNX Runtime, then the end-to-end check)
  ours_global    our global allocation (normalised importance ranked across the network), FLOPs bisected
  uniform        our uniform policy (TAO's: the same ratio in every group), ratio bisected
  tp_magnitude   Torch-Pruning 1.6.1 MetaPruner, MagnitudeImportance(p=2), per-layer ratio, bisected
  tp_taylor      Torch-Pruning 1.6.1 MetaPruner, GroupTaylorImportance, global ranking, ratio bisected

"Matched latency": every method but ours_latency has its pruning level bisected until its measured speedup over
the baseline (ONNX Runtime, batch 1, interleaved with the baseline) is the target's. Every pruned model then gets
the same treatment: BatchNorm statistics re-estimated on 512 training images, the same KD fine-tune from the
baseline (epochs, images, batch, LR), and is scored on the whole test split; the final latencies of all methods
at one target are measured together, interleaved, in one process. Pairs are compared with McNemar's exact test.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METHODS = ("ours_latency", "ours_global", "uniform", "tp_magnitude", "tp_taylor")
OURS = ("ours_latency", "ours_global")
# pruning level each bisected method searches over, and whether a larger level prunes more
LEVELS: dict[str, tuple[float, float, bool]] = {
    "ours_global": (0.05, 0.95, False),  # --flops: the fraction of MACs kept
    "uniform": (0.02, 0.9, True),  # --ratio: the fraction of channels removed
    "tp_magnitude": (0.02, 0.9, True),  # pruning_ratio
    "tp_taylor": (0.02, 0.9, True),
}
PROBES = 7  # bisection steps per method and target
ROUND_TO = 8  # channel counts in multiples of 8, like our --granularity default, for every method


@dataclass
class Setup:
    model: Any  # the FP32 baseline (eval mode, never changed)
    spec: Any
    preprocess: Any
    splits: Any
    test: tuple[Any, Any]  # (images, labels) of the test split, preprocessed
    workdir: Path
    finetune_epochs: int
    finetune_images: int
    latency_rounds: int
    latency_duration_s: float
    say: Callable[[str], None] = print
    exported_baseline: Path | None = None

    @property
    def image_size(self) -> int:
        return int(self.preprocess.image_size)

    def baseline_onnx(self) -> Path:
        """The baseline exported once per sweep (a file left by an earlier run may be of another baseline)."""
        if self.exported_baseline is None:
            self.exported_baseline = export(self, self.model, self.workdir / "baseline.onnx")
        return self.exported_baseline


def load_setup(checkpoint: Path, data: str, workdir: Path, **budget: Any) -> Setup:
    from edgeresnet.compress.pipeline import load_source, load_splits

    _ckpt, model, spec, preprocess = load_source(checkpoint, "--baseline")
    splits = load_splits(data, preprocess, 0)
    return Setup(model.eval(), spec, preprocess, splits, splits.arrays("test"), workdir, **budget)


# -- pruning, one function per method --------------------------------------------------------------------------------
def prune_ours(setup: Setup, **settings: Any) -> tuple[Any, dict[str, Any]]:
    from edgeresnet.compress.prune import PruneSettings, prune_model

    result = prune_model(copy.deepcopy(setup.model), PruneSettings(**settings), setup.image_size,
                         preprocess=setup.preprocess)
    return result.model, result.summary()


def prune_torch_pruning(setup: Setup, ratio: float, taylor: bool) -> Any:
    import torch
    import torch_pruning as tp

    model = copy.deepcopy(setup.model).eval()
    example = torch.zeros(1, 3, setup.image_size, setup.image_size)
    if taylor:
        importance = tp.importance.GroupTaylorImportance()
        images, labels = setup.splits.arrays("train", limit=256)  # the gradients Taylor importance needs
        model.zero_grad()
        for start in range(0, len(images), 64):
            x, y = torch.from_numpy(images[start:start + 64]), torch.from_numpy(labels[start:start + 64])
            torch.nn.functional.cross_entropy(model(x), y).backward()
    else:
        importance = tp.importance.MagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio, global_pruning=taylor,
                                  ignored_layers=[model.fc], round_to=ROUND_TO)
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def prune_at(setup: Setup, method: str, level: float) -> Any:
    if method == "ours_global":
        return prune_ours(setup, flops=level, allocation="global")[0]
    if method == "uniform":
        return prune_ours(setup, ratio=level, allocation="uniform")[0]
    return prune_torch_pruning(setup, level, taylor=method == "tp_taylor")


# -- latency ---------------------------------------------------------------------------------------------------------
def export(setup: Setup, model: Any, path: Path) -> Path:
    from edgeresnet.compress.measure import export_onnx_file

    return export_onnx_file(model, setup.preprocess, path, exporter="torchscript")


def speedups(setup: Setup, models: dict[str, Any], rounds: int, duration_s: float) -> dict[str, dict[str, float]]:
    """Each model's batch-1 ONNX Runtime latency, interleaved with the baseline's in one process."""
    from edgeresnet.compress.measure import ort_latencies

    with tempfile.TemporaryDirectory(prefix="pareto-", dir=setup.workdir) as tmp:
        paths = [setup.baseline_onnx()] + [export(setup, m, Path(tmp) / f"{name}.onnx") for name, m in models.items()]
        measured = ort_latencies(paths, setup.image_size, rounds=rounds, duration_s=duration_s / rounds)
    base = measured[0].median_ms
    return {name: {"median_ms": round(lat.median_ms, 4), "p90_ms": round(lat.p90_ms, 4),
                   "speedup": round(base / lat.median_ms, 3), "baseline_median_ms": round(base, 4)}
            for name, lat in zip(models, measured[1:])}


def match_latency(setup: Setup, method: str, target: float) -> tuple[Any, float, list[dict[str, float]]]:
    """Bisect ``method``'s pruning level until its measured speedup is ``target``; the closest probe wins."""
    lo, hi, more_prunes = LEVELS[method]
    probes: list[dict[str, float]] = []
    best: tuple[float, Any, float] | None = None
    for _ in range(PROBES):
        level = (lo + hi) / 2
        model = prune_at(setup, method, level)
        measured = speedups(setup, {"probe": model}, rounds=2, duration_s=0.6)["probe"]["speedup"]
        probes.append({"level": round(level, 4), "speedup": measured})
        setup.say(f"    {method} level {level:.3f}: x{measured:.2f} (target x{target:.2f})")
        if best is None or abs(measured - target) < abs(best[2] - target):
            best = (level, model, measured)
        too_slow = measured < target
        if too_slow == more_prunes:
            lo = level
        else:
            hi = level
    assert best is not None
    return best[1], best[0], probes


# -- the sweep -------------------------------------------------------------------------------------------------------
def finetune_and_score(setup: Setup, model: Any) -> tuple[Any, dict[str, Any], Any]:
    from edgeresnet.compress.measure import accuracy_outcomes
    from edgeresnet.compress.pipeline import FinetuneOptions, finetune_pruned
    from edgeresnet.compress.prune import recalibrate_batchnorm
    from edgeresnet.evaluate.intervals import accuracy_interval

    recalibrate_batchnorm(model, setup.splits.arrays("train", limit=512)[0])
    options = FinetuneOptions(epochs=setup.finetune_epochs, batch_size=128, progress=False,
                              images=setup.finetune_images).validate()
    tuned, info = finetune_pruned(model, setup.splits, setup.model, options, setup.spec)
    tuned = tuned.eval()
    top1, correct = accuracy_outcomes(tuned, *setup.test)
    score = {"top1": round(top1, 3), "top1_ci95": accuracy_interval(top1, len(correct)).percent(),
             "finetune": {k: v for k, v in info.items() if k != "history"}}
    return tuned, score, correct


def macs_kept(setup: Setup, model: Any) -> float:
    from edgeresnet.compress.flops import count_costs

    return round(count_costs(model, setup.image_size).macs / count_costs(setup.model, setup.image_size).macs, 4)


def sweep(setup: Setup, targets: tuple[float, ...]) -> dict[str, Any]:
    from edgeresnet.evaluate.paired import compare_outcomes

    points = []
    for target in targets:
        setup.say(f"  target x{target:.2f}")
        pruned: dict[str, Any] = {}
        levels: dict[str, Any] = {}
        model, summary = prune_ours(setup, speedup=target, allocation="latency", latency_rounds=3)
        pruned["ours_latency"] = model
        levels["ours_latency"] = {"predicted_speedup": summary.get("latency", {}).get("predicted_speedup")}
        for method in METHODS[1:]:
            model, level, probes = match_latency(setup, method, target)
            pruned[method], levels[method] = model, {"level": level, "probes": probes}
        rows: dict[str, dict[str, Any]] = {}
        tuned: dict[str, Any] = {}
        outcomes: dict[str, Any] = {}
        for method, model in pruned.items():
            setup.say(f"    fine-tuning {method}")
            tuned[method], score, outcomes[method] = finetune_and_score(setup, model)
            rows[method] = {**score, **levels[method], "macs_kept": macs_kept(setup, model),
                            "params": sum(p.numel() for p in model.parameters())}
        for method, latency in speedups(setup, tuned, setup.latency_rounds, setup.latency_duration_s).items():
            rows[method]["latency"] = latency
        versus = {f"{ours} vs {other}": compare_outcomes(outcomes[other], outcomes[ours]).to_dict()
                  for ours in OURS for other in METHODS if other not in OURS}
        versus["ours_latency vs ours_global"] = compare_outcomes(outcomes["ours_global"],
                                                                 outcomes["ours_latency"]).to_dict()
        points.append({"target_speedup": target, "methods": rows, "paired": versus})
    return {"methods": list(METHODS), "points": points}


def torch_pruning_version() -> str:
    from importlib.metadata import version

    return version("torch-pruning")  # the wheel's own __version__ says 1.6.0 in 1.6.1
