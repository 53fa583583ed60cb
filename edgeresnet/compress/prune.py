"""Structured filter pruning: TAO's policy over our channel-dependency analysis, producing a dense smaller model.

Policy (TAO's "min weight" pruner, Molchanov et al. arXiv:1611.06440, as in TAO's tf1/tf2 classification):

* importance of a filter = its L2 (default) or L1 kernel norm, bias ignored; with ``normalize`` each layer's
  norms are divided by that layer's largest norm (TAO's default ``max`` normaliser), so layers of different
  scale are comparable;
* channels coupled through residual adds (one ``depgraph`` group) get one merged score per channel, the
  *equalization criterion* (TAO ``equalization_criterion`` / ``-eq``, default ``union``):
  ``union`` = element-wise max over the coupled layers (a channel survives if it matters to *any* of them),
  ``intersection`` = min (it survives only if it matters to *all* of them), ``arithmetic_mean`` = mean,
  ``geometric_mean`` = exp(mean(log)) (one near-zero layer pulls the channel down);
* how many channels each group keeps: ``ratio`` removes that fraction from every group (rounded to the
  nearest multiple of ``granularity``); ``flops`` searches the ratio whose model keeps at most that fraction
  of the MACs; ``threshold`` (TAO's ``-pth``) keeps the channels whose normalised merged score is above it
  (normalisation implied), rounded *up* to ``granularity`` as TAO does. Counts never go below
  ``min_filters`` (or the layer's width when that is smaller); the kept channels are the top-scoring ones;
* the classifier's outputs are never pruned (linear outputs are frozen in the analysis); its inputs shrink
  with the last stage.

The result is a new model with narrower ``Conv2d``/``BatchNorm2d``/``Linear`` layers holding the kept weights,
under the original parameter names, so ``models.conform_to_state_dict`` rebuilds it from a state dict.
The scores are ``importance``, the counts ``prune_plan``, the surgery ``pruners``; this module holds the
settings and the whole step (``prune_model``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgeresnet.compress.depgraph import DependencyGraph, analyze
from edgeresnet.compress.flops import CostReport, count_costs
from edgeresnet.compress.importance import CRITERIA, EQUALIZATIONS
from edgeresnet.compress.prune_plan import PrunePlan, plan_latency, plan_pruning
from edgeresnet.compress.pruners import apply_plan
from edgeresnet.errors import UserError


@dataclass(frozen=True)
class PruneSettings:
    """What to prune and how much; exactly one of ``ratio``, ``flops``, ``threshold``."""

    ratio: float | None = None  # fraction of channels removed from every prunable group
    flops: float | None = None  # fraction of MACs kept
    threshold: float | None = None  # TAO: keep channels whose normalised score is above this
    criterion: str = "l2"
    normalize: bool = False
    equalization: str = "union"
    granularity: int = 8
    min_filters: int = 16
    # how channels are shared out (``allocation``): uniform (TAO), global or latency; None = latency when a
    # latency target is given, else uniform (the behaviour before allocation existed)
    allocation: str | None = None
    speedup: float | None = None  # latency: unpruned / pruned end-to-end latency wanted on the backend
    latency_ms: float | None = None  # latency: wanted end-to-end latency on the backend, in ms
    latency_backend: str = "ort-cpu"
    latency_table: str | None = None  # JSON cache of per-conv timings; None = the per-machine cache file
    latency_threads: int | None = None  # ONNX Runtime intra-op threads for every timing (None = its default)
    width_grid: tuple[float, ...] = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875)  # candidate widths, fractions
    table_duration_s: float = 0.1  # seconds each conv shape is timed for the table
    latency_rounds: int = 3  # end-to-end timing: interleaved rounds of unpruned and pruned model
    latency_duration_s: float = 1.0  # end-to-end timing: seconds per model per round

    def __post_init__(self) -> None:
        from edgeresnet.compress.allocation import ALLOCATIONS

        latency_targets = [n for n, v in (("--speedup", self.speedup), ("--latency-ms", self.latency_ms))
                           if v is not None]
        if self.allocation is None:
            object.__setattr__(self, "allocation", "latency" if latency_targets else "uniform")
        if self.allocation not in ALLOCATIONS:
            raise UserError(f"--allocation {self.allocation}: unknown; choose one of {', '.join(ALLOCATIONS)}")
        object.__setattr__(self, "width_grid", tuple(float(f) for f in self.width_grid))
        if self.allocation == "latency":
            self._check_latency(latency_targets)
        elif latency_targets:
            raise UserError(f"{latency_targets[0]} is a latency target; it needs --allocation latency "
                            f"(not {self.allocation})")
        targets = [n for n, v in (("--ratio", self.ratio), ("--flops", self.flops), ("--threshold", self.threshold))
                   if v is not None]
        if self.allocation == "latency":
            if targets:
                raise UserError(f"{targets[0]} and {latency_targets[0]} are alternatives; with --allocation "
                                "latency pass only --speedup S or --latency-ms X")
            targets = latency_targets
        if self.allocation == "global" and self.threshold is not None:
            raise UserError("--threshold is already one network-wide cut on normalised scores; with "
                            "--allocation global pass --ratio or --flops")
        if not targets:
            raise UserError("no pruning target: pass one of --ratio R (channels removed), --flops F (FLOPs kept) "
                            "or --threshold T")
        if len(targets) > 1:
            raise UserError(f"{' and '.join(targets)} are alternatives; pass only one pruning target")
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise UserError(f"--ratio {self.ratio}: must be between 0 and 1 (exclusive), the fraction of channels "
                            "to remove, e.g. 0.5")
        if self.flops is not None and not 0.0 < self.flops < 1.0:
            raise UserError(f"--flops {self.flops}: must be between 0 and 1 (exclusive), the fraction of FLOPs to "
                            "keep, e.g. 0.5")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise UserError(f"--threshold {self.threshold}: must be between 0 and 1 (exclusive); it is compared "
                            "with per-layer max-normalised filter norms")
        if self.criterion not in CRITERIA:
            raise UserError(f"--criterion {self.criterion}: unknown; choose one of {', '.join(CRITERIA)}")
        if self.equalization not in EQUALIZATIONS:
            raise UserError(f"--equalization {self.equalization}: unknown; choose one of {', '.join(EQUALIZATIONS)}")
        if self.granularity < 1:
            raise UserError(f"--granularity {self.granularity}: must be a positive number of channels "
                            "(8 suits Tensor Cores; 1 disables rounding)")
        if self.min_filters < 1:
            raise UserError(f"--min-filters {self.min_filters}: must be at least 1")

    def _check_latency(self, targets: list[str]) -> None:
        if not targets:
            raise UserError("--allocation latency needs a target: --speedup S (e.g. 1.3) or --latency-ms X")
        if len(targets) > 1:
            raise UserError("--speedup and --latency-ms are alternatives; pass only one latency target")
        if self.speedup is not None and not (math.isfinite(self.speedup) and self.speedup > 1.0):
            raise UserError(f"--speedup {self.speedup:g}: must be above 1 (how many times faster than the unpruned "
                            "model), e.g. 1.3")
        if self.latency_ms is not None and not (math.isfinite(self.latency_ms) and self.latency_ms > 0):
            raise UserError(f"--latency-ms {self.latency_ms:g}: must be a positive number of milliseconds")
        from edgeresnet.compress.latency_table import BACKENDS

        if self.latency_backend not in BACKENDS:
            raise UserError(f"--latency-backend {self.latency_backend}: only {', '.join(BACKENDS)} can be timed "
                            "here; measure the table where the backend runs")
        if not self.width_grid or not all(0.0 < f < 1.0 for f in self.width_grid):
            raise UserError(f"--width-grid {','.join(f'{f:g}' for f in self.width_grid)}: give fractions of each "
                            "group's width between 0 and 1, e.g. 0.25,0.5,0.75")
        if self.latency_threads is not None and self.latency_threads < 1:
            raise UserError(f"--latency-threads {self.latency_threads}: must be at least 1")
        if not self.table_duration_s > 0 or self.latency_rounds < 1 or not self.latency_duration_s > 0:
            raise UserError("--table-duration and --latency-duration must be > 0 seconds and --latency-rounds >= 1")

    @property
    def normalized(self) -> bool:
        """``threshold`` only has a meaning on normalised scores, as in TAO."""
        return self.normalize or self.threshold is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ratio": self.ratio, "flops": self.flops, "threshold": self.threshold,
                               "criterion": self.criterion, "normalize": self.normalized,
                               "equalization": self.equalization, "granularity": self.granularity,
                               "min_filters": self.min_filters, "allocation": self.allocation}
        if self.allocation == "latency":
            out.update({"speedup": self.speedup, "latency_ms": self.latency_ms, "latency_backend": self.latency_backend,
                        "latency_table": self.latency_table, "latency_threads": self.latency_threads,
                        "width_grid": list(self.width_grid), "table_duration_s": self.table_duration_s,
                        "latency_rounds": self.latency_rounds, "latency_duration_s": self.latency_duration_s})
        return out



@dataclass
class PruneResult:
    model: Any
    plan: PrunePlan
    graph: DependencyGraph
    before: CostReport
    after: CostReport
    layers: list[dict[str, Any]] = field(default_factory=list)  # per conv/linear: channels before/after

    def summary(self) -> dict[str, Any]:
        return {
            "settings": self.plan.settings.to_dict(),
            "ratio_used": self.plan.ratio,
            "params": {"before": self.before.params, "after": self.after.params,
                       "kept": round(self.after.params / self.before.params, 4)},
            "macs": {"before": self.before.macs, "after": self.after.macs,
                     "kept": round(self.after.macs / self.before.macs, 4)},
            "image_size": self.before.image_size,
            "groups": [{"index": g.index, "producers": g.producers, "channels": g.channels, "kept": len(g.keep)}
                       for g in self.plan.groups],
            "layers": self.layers,
            **({"latency": self.plan.latency} if self.plan.latency is not None else {}),
        }


def recalibrate_batchnorm(model: Any, images: Any, batch_size: int = 64) -> int:
    """Re-estimate every BatchNorm's running statistics on ``images`` (no gradients, weights untouched).

    Removing channels changes what each residual sum and each next layer sees, so the statistics the
    unpruned model collected no longer fit; a forward pass over a few hundred training images in train
    mode (cumulative average, ``momentum=None``) puts them right. Returns the number of images used.
    """
    import numpy as np
    import torch
    import torch.nn as nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or len(images) == 0:
        return 0
    momenta = [m.momentum for m in norms]
    was = model.training
    device = next(model.parameters()).device
    data = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts equally
        model.train()
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                chunk = data[start:start + batch_size]
                if len(chunk) < 2 and start > 0:  # a batch of one has no variance; skip a lone tail image
                    continue
                model(chunk.to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was)
    return int(len(data))


def layer_table(before: CostReport, after: CostReport) -> list[dict[str, Any]]:
    """Per conv/linear: in/out channels and MACs before and after."""
    rows = []
    for name, cost in before.layers.items():
        new = after.layers.get(name)
        if new is None:
            continue
        rows.append({"layer": name, "kind": cost.kind, "in": [cost.in_channels, new.in_channels],
                     "out": [cost.out_channels, new.out_channels],
                     "macs": [cost.macs, new.macs]})
    return rows


def prune_model(model: Any, settings: PruneSettings, image_size: int, *, preprocess: Any = None,
                exporter: str | None = None, say: Any = None) -> PruneResult:
    """Analyse, score, decide and rebuild: the whole prune step on an in-memory model.

    With ``allocation="latency"`` this also measures: the per-conv table (cached) and both models end to end,
    exported with ``preprocess`` (default: plain resize to ``image_size``) and ``exporter``."""
    import torch

    graph = analyze(model, image_size)
    before = count_costs(model, image_size)
    if settings.allocation == "latency":
        plan, pruned = plan_latency(model, graph, before, settings, image_size, preprocess, exporter, say)
    else:
        plan = plan_pruning(model, graph, before, settings)
        pruned = apply_plan(model, graph, plan.groups)
    after = count_costs(pruned, image_size)
    with torch.no_grad():  # the surgery must leave a model that runs and keeps its classifier
        was = pruned.training
        pruned.eval()
        out = pruned(torch.zeros(1, 3, image_size, image_size, device=next(pruned.parameters()).device))
        pruned.train(was)
    classes = before.layers[list(before.layers)[-1]].out_channels
    assert out.shape[-1] == classes, "pruning changed the classifier width"
    return PruneResult(pruned, plan, graph, before, after, layer_table(before, after))
