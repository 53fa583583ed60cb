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
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from edgeresnet.compress.depgraph import ChannelGroup, DependencyGraph, analyze
from edgeresnet.compress.flops import CostReport, count_costs
from edgeresnet.errors import UserError

EQUALIZATIONS = ("union", "intersection", "arithmetic_mean", "geometric_mean")
CRITERIA = ("l2", "l1")


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
class GroupPlan:
    index: int
    producers: list[str]
    channels: int
    keep: list[int]  # kept channel indices, ascending


@dataclass
class PrunePlan:
    settings: PruneSettings
    groups: list[GroupPlan]
    ratio: float | None  # the per-group ratio used (searched when the target is FLOPs; None unless uniform)
    estimated_macs: int
    latency: dict[str, Any] | None = None  # latency allocation: table, predicted and measured speedup


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


# -- policy (pure arithmetic on scores) -----------------------------------------------------------------------
def keep_count(channels: int, wanted: float, granularity: int, min_filters: int, round_up: bool = False) -> int:
    """Channels to keep: ``wanted`` rounded to ``granularity`` (nearest, or up as TAO's threshold mode), never
    below ``min_filters`` (capped at the layer's width) and never above the width."""
    floor = min(min_filters, channels)
    wanted = max(float(wanted), float(floor))
    steps = math.ceil(wanted / granularity - 1e-9) if round_up else math.floor(wanted / granularity + 0.5)
    count = max(steps, 1) * granularity
    if count < floor:
        count = math.ceil(floor / granularity) * granularity
    return int(min(count, channels))


def filter_scores(weight: Any, criterion: str) -> Any:
    """Per-filter norm of a conv/linear weight (dim 0 = output channel)."""
    flat = weight.detach().float().flatten(1)
    return flat.abs().sum(1) if criterion == "l1" else flat.pow(2).sum(1).sqrt()


def merge_scores(stats: Any, equalization: str) -> Any:
    """TAO's equalization of coupled layers' scores (rows = layers, columns = channels)."""
    if stats.shape[0] == 1:
        return stats[0]
    if equalization == "union":
        return stats.max(0).values
    if equalization == "intersection":
        return stats.min(0).values
    if equalization == "arithmetic_mean":
        return stats.mean(0)
    return stats.clamp_min(1e-12).log().mean(0).exp()  # geometric_mean


def group_scores(model: Any, group: ChannelGroup, settings: PruneSettings) -> Any:
    import torch

    modules = dict(model.named_modules())
    rows = []
    for name in group.producers + group.depthwise:
        score = filter_scores(modules[name].weight, settings.criterion)
        if settings.normalized:
            score = score / score.max().clamp_min(1e-12)
        rows.append(score)
    return merge_scores(torch.stack(rows), settings.equalization)


def decide(graph: DependencyGraph, scores: dict[int, Any], settings: PruneSettings,
           ratio: float | None) -> list[GroupPlan]:
    """Kept channel indices per prunable group for one ratio (or the threshold)."""
    plans = []
    for group in graph.prunable_groups():
        score = scores[group.index]
        if settings.threshold is not None:
            count = keep_count(group.channels, int((score > settings.threshold).sum()), settings.granularity,
                               settings.min_filters, round_up=True)
        else:
            assert ratio is not None
            count = keep_count(group.channels, group.channels * (1.0 - ratio), settings.granularity,
                               settings.min_filters)
        keep = sorted(int(i) for i in score.argsort(descending=True, stable=True)[:count])
        plans.append(GroupPlan(group.index, list(group.producers), group.channels, keep))
    return plans


def layer_widths(graph: DependencyGraph, plans: list[GroupPlan]) -> dict[str, dict[str, int]]:
    """New in/out widths of every layer a plan touches."""
    kept = {p.index: len(p.keep) for p in plans}
    widths: dict[str, dict[str, int]] = {}
    for group in graph.groups:
        if group.index not in kept:
            continue
        n = kept[group.index]
        for name in group.producers:
            widths.setdefault(name, {})["out"] = n
        for name in group.depthwise:
            widths.setdefault(name, {}).update({"in": n, "out": n})
        for name, _kind in group.consumers:
            widths.setdefault(name, {})["in"] = n
    return widths


def estimate_macs(base: CostReport, widths: dict[str, dict[str, int]], depthwise: set[str]) -> int:
    """MACs after pruning, from the unpruned per-layer counts (MACs are bilinear in in/out width)."""
    total = 0
    for name, cost in base.layers.items():
        w = widths.get(name, {})
        out_scale = w.get("out", cost.out_channels) / cost.out_channels
        in_scale = 1.0 if name in depthwise else w.get("in", cost.in_channels) / cost.in_channels
        total += cost.macs * out_scale * in_scale
    return int(round(total))


def plan_pruning(model: Any, graph: DependencyGraph, base: CostReport, settings: PruneSettings) -> PrunePlan:
    scores = {g.index: group_scores(model, g, settings) for g in graph.prunable_groups()}
    if not scores:
        raise UserError("nothing to prune: the dependency analysis found no prunable channel group in this model")
    depthwise = {n for g in graph.groups for n in g.depthwise}

    def macs_for(plans: list[GroupPlan]) -> int:
        return estimate_macs(base, layer_widths(graph, plans), depthwise)

    if settings.allocation == "global":
        return _plan_global(graph, scores, base, settings, macs_for)
    if settings.allocation == "latency":
        raise ValueError("latency allocation needs the measured table; prune_model plans it")
    if settings.flops is None:
        plans = decide(graph, scores, settings, settings.ratio)
        return PrunePlan(settings, plans, settings.ratio, macs_for(plans))

    target = settings.flops * base.macs
    lo, hi = 0.0, 0.999
    smallest = decide(graph, scores, settings, hi)
    if macs_for(smallest) > target:
        reachable = macs_for(smallest) / base.macs
        raise UserError(f"--flops {settings.flops}: unreachable; with --min-filters {settings.min_filters} and "
                        f"--granularity {settings.granularity} this model keeps at least {reachable:.3f} of its FLOPs")
    for _ in range(40):  # MACs never grow with the ratio: bisect for the smallest ratio that meets the target
        mid = (lo + hi) / 2
        if macs_for(decide(graph, scores, settings, mid)) <= target:
            hi = mid
        else:
            lo = mid
    plans = decide(graph, scores, settings, hi)
    # One ratio for all groups moves in coarse steps (64/128/256/512-wide groups round together); give back
    # one granularity step at a time to the most-pruned groups while the budget still holds.
    orders = {i: [int(j) for j in s.argsort(descending=True, stable=True)] for i, s in scores.items()}
    changed = True
    while changed:
        changed = False
        for plan in sorted(plans, key=lambda p: (len(p.keep) / p.channels, p.index)):
            if len(plan.keep) >= plan.channels:
                continue
            count = min(len(plan.keep) + settings.granularity, plan.channels)
            trial = GroupPlan(plan.index, plan.producers, plan.channels, sorted(orders[plan.index][:count]))
            candidate = [trial if p is plan else p for p in plans]
            if macs_for(candidate) <= target:
                plans, changed = candidate, True
                break
    return PrunePlan(settings, plans, round(hi, 4), macs_for(plans))


def _plan_global(graph: DependencyGraph, scores: dict[int, Any], base: CostReport, settings: PruneSettings,
                 macs_for: Any) -> PrunePlan:
    """Network-wide ranking of normalised scores (``allocation.global_plans``) against the channel or MAC budget."""
    from edgeresnet.compress.allocation import global_plans

    if settings.flops is not None:
        target = settings.flops * base.macs

        def fits(plans: list[GroupPlan]) -> bool:
            return macs_for(plans) <= target
        what = f"--flops {settings.flops}"
    else:
        assert settings.ratio is not None
        budget = (1.0 - settings.ratio) * sum(g.channels for g in graph.prunable_groups())

        def fits(plans: list[GroupPlan]) -> bool:
            return sum(len(p.keep) for p in plans) <= budget + 1e-9
        what = f"--ratio {settings.ratio}"
    plans = global_plans(graph, scores, settings, fits)
    if not plans:
        raise UserError(f"{what} with --allocation global: unreachable; with --min-filters {settings.min_filters} "
                        f"and --granularity {settings.granularity} every group is already at its floor; ask for less")
    return PrunePlan(settings, plans, None, macs_for(plans))


# -- surgery -------------------------------------------------------------------------------------------------
def apply_plan(model: Any, graph: DependencyGraph, plans: list[GroupPlan]) -> Any:
    """A deep copy of ``model`` with every touched conv/bn/linear rebuilt narrower, holding the kept weights."""
    import torch
    import torch.nn as nn

    out_idx: dict[str, list[int]] = {}
    in_idx: dict[str, list[int]] = {}
    by_index = {p.index: p.keep for p in plans}
    for group in graph.groups:
        keep = by_index.get(group.index)
        if keep is None or len(keep) == group.channels:
            continue
        for name in group.producers + group.norms:
            out_idx[name] = keep
        for name in group.depthwise:
            out_idx[name] = keep
            in_idx[name] = keep
        for name, _kind in group.consumers:
            in_idx[name] = keep

    pruned = copy.deepcopy(model)
    modules = dict(pruned.named_modules())
    for name in sorted(set(out_idx) | set(in_idx)):
        old = modules[name]
        rows = torch.tensor(out_idx[name]) if name in out_idx else None
        cols = torch.tensor(in_idx[name]) if name in in_idx else None
        with torch.no_grad():
            if isinstance(old, nn.Conv2d):
                depthwise = old.groups > 1 and old.groups == old.in_channels == old.out_channels
                weight = old.weight if rows is None else old.weight[rows]
                if cols is not None and not depthwise:
                    weight = weight[:, cols]
                out_ch = weight.shape[0]
                groups = out_ch if depthwise else old.groups
                new = nn.Conv2d(weight.shape[1] * groups, out_ch, old.kernel_size, old.stride, old.padding,
                                old.dilation, groups, bias=old.bias is not None, padding_mode=old.padding_mode)
                new.weight.copy_(weight)
                if old.bias is not None:
                    new.bias.copy_(old.bias if rows is None else old.bias[rows])
            elif isinstance(old, nn.BatchNorm2d):
                assert rows is not None
                new = nn.BatchNorm2d(len(rows), old.eps, old.momentum, old.affine, old.track_running_stats)
                if old.affine:
                    new.weight.copy_(old.weight[rows])
                    new.bias.copy_(old.bias[rows])
                if old.track_running_stats:
                    new.running_mean.copy_(old.running_mean[rows])
                    new.running_var.copy_(old.running_var[rows])
                    new.num_batches_tracked.copy_(old.num_batches_tracked)
            elif isinstance(old, nn.Linear):
                weight = old.weight if rows is None else old.weight[rows]
                if cols is not None:
                    weight = weight[:, cols]
                new = nn.Linear(weight.shape[1], weight.shape[0], bias=old.bias is not None)
                new.weight.copy_(weight)
                if old.bias is not None:
                    new.bias.copy_(old.bias if rows is None else old.bias[rows])
            else:  # the analysis only lists conv/bn/linear
                raise AssertionError(f"cannot prune {name} ({type(old).__name__})")
        new.to(device=old.weight.device if hasattr(old, "weight") and old.weight is not None else None)
        new.train(old.training)
        parent = pruned.get_submodule(name.rsplit(".", 1)[0]) if "." in name else pruned
        setattr(parent, name.rsplit(".", 1)[-1], new)
    return pruned


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
    rows = []
    for name, cost in before.layers.items():
        new = after.layers.get(name)
        if new is None:
            continue
        rows.append({"layer": name, "kind": cost.kind, "in": [cost.in_channels, new.in_channels],
                     "out": [cost.out_channels, new.out_channels],
                     "macs": [cost.macs, new.macs]})
    return rows


def _plan_latency(model: Any, graph: DependencyGraph, base: CostReport, settings: PruneSettings, image_size: int,
                  preprocess: Any, exporter: str | None, say: Any) -> tuple[PrunePlan, Any]:
    """Latency allocation: per-group costs from the (cached) table, the unpruned model timed end to end, a greedy
    plan against the target, then the pruned model timed end to end beside the unpruned one (interleaved)."""
    import tempfile
    from pathlib import Path

    from edgeresnet.compress import allocation
    from edgeresnet.compress.latency_table import LatencyTable, machine_key
    from edgeresnet.compress.measure import export_onnx_file, ort_latencies

    say = say or (lambda _msg: None)
    if preprocess is None:
        from edgeresnet.data.presets import Preprocess

        preprocess = Preprocess(image_size, image_size)
    groups = graph.prunable_groups()
    if not groups:
        raise UserError("nothing to prune: the dependency analysis found no prunable channel group in this model")
    scores = {g.index: group_scores(model, g, settings) for g in groups}
    geometry = allocation.conv_geometry(model, image_size)
    key = machine_key(settings.latency_backend, settings.latency_threads)
    table = LatencyTable.open(settings.latency_table, key)
    widths = {g.index: allocation.candidate_widths(g.channels, settings.width_grid, settings.granularity,
                                                   settings.min_filters) for g in groups}
    table.ensure([shape for g in groups for w in widths[g.index] for shape in allocation.group_shapes(g, geometry, w)],
                 threads=settings.latency_threads, duration_s=settings.table_duration_s, say=say)
    what = f"--speedup {settings.speedup:g}" if settings.speedup is not None else f"--latency-ms {settings.latency_ms:g}"
    timing = {"image_size": image_size, "rounds": settings.latency_rounds, "duration_s": settings.latency_duration_s,
              "threads": settings.latency_threads}
    with tempfile.TemporaryDirectory(prefix="edgeresnet-latency-") as tmp:
        base_onnx = export_onnx_file(model, preprocess, Path(tmp) / "unpruned.onnx", exporter)
        say(f"timing the unpruned model end to end ({settings.latency_backend})")
        base_ms = ort_latencies([base_onnx], **timing)[0].median_ms
        target_ms = base_ms / settings.speedup if settings.speedup is not None else float(settings.latency_ms or 0)
        if target_ms >= base_ms:
            raise UserError(f"{what}: the unpruned model already runs in {base_ms:.3f} ms on "
                            f"{settings.latency_backend}; nothing to prune (ask for less than that)")
        predict = allocation.conv_cost_model(graph, geometry, table.ms, base_ms)
        chosen = allocation.latency_plans(graph, scores, settings, widths, predict, base_ms, target_ms, what)
        pruned = apply_plan(model, graph, chosen.plans)
        pruned_onnx = export_onnx_file(pruned, preprocess, Path(tmp) / "pruned.onnx", exporter)
        say("timing the unpruned and the pruned model end to end, interleaved")
        before_lat, after_lat = ort_latencies([base_onnx, pruned_onnx], **timing)
    depthwise = {n for g in graph.groups for n in g.depthwise}
    measured = before_lat.median_ms / after_lat.median_ms
    latency = {
        "backend": settings.latency_backend, "machine": key,
        "table": {"path": str(table.path), "entries": len(table.entries), "timed_now": table.timed,
                  "reused": table.reused},
        "target_ms": round(target_ms, 4), "target_speedup": round(base_ms / target_ms, 4),
        "planning_base_ms": round(base_ms, 4), "greedy_steps": chosen.steps,
        "predicted_ms": round(chosen.predicted_ms, 4), "predicted_speedup": round(chosen.predicted_speedup, 4),
        "measured": {"unpruned": before_lat.to_dict(), "pruned": after_lat.to_dict(),
                     "speedup": round(measured, 4)},
        # the target is judged on the interleaved measurement: a speedup on the ratio of the two medians
        # taken together, a latency in ms on the pruned model's median
        "target_met": bool(measured >= settings.speedup if settings.speedup is not None
                           else after_lat.median_ms <= target_ms),
    }
    say(f"speedup: predicted x{chosen.predicted_speedup:.2f}, measured x{measured:.2f} "
        f"({before_lat.median_ms:.3f} -> {after_lat.median_ms:.3f} ms median)")
    plan = PrunePlan(settings, chosen.plans, None, estimate_macs(base, layer_widths(graph, chosen.plans), depthwise),
                     latency)
    return plan, pruned


def prune_model(model: Any, settings: PruneSettings, image_size: int, *, preprocess: Any = None,
                exporter: str | None = None, say: Any = None) -> PruneResult:
    """Analyse, score, decide and rebuild: the whole prune step on an in-memory model.

    With ``allocation="latency"`` this also measures: the per-conv table (cached) and both models end to end,
    exported with ``preprocess`` (default: plain resize to ``image_size``) and ``exporter``."""
    import torch

    graph = analyze(model, image_size)
    before = count_costs(model, image_size)
    if settings.allocation == "latency":
        plan, pruned = _plan_latency(model, graph, before, settings, image_size, preprocess, exporter, say)
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
