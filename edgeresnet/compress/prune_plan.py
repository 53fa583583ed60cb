"""How many channels each coupled group keeps, and which: the pruning plan, before any surgery.

``ratio`` removes that fraction from every group (rounded to the nearest multiple of ``granularity``);
``flops`` bisects for the ratio whose model keeps at most that fraction of the MACs; ``threshold`` (TAO's
``-pth``) keeps the channels whose normalised merged score is above it, rounded *up* to ``granularity`` as
TAO does; ``allocation`` global ranks normalised scores across the network, latency spends a measured
per-conv latency table (``allocation``). Counts never go below ``min_filters`` (or the layer's width when
that is smaller); the kept channels are the top-scoring ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeresnet.compress.depgraph import DependencyGraph
from edgeresnet.compress.flops import CostReport
from edgeresnet.compress.importance import group_scores
from edgeresnet.errors import UserError

if TYPE_CHECKING:
    from edgeresnet.compress.prune import PruneSettings


@dataclass
class GroupPlan:
    """The channels one coupled group keeps (every conv of the group keeps the same ones)."""

    index: int
    producers: list[str]
    channels: int
    keep: list[int]  # kept channel indices, ascending


@dataclass
class PrunePlan:
    """The whole network's plan, with the MACs it is estimated to leave."""

    settings: PruneSettings
    groups: list[GroupPlan]
    ratio: float | None  # the per-group ratio used (searched when the target is FLOPs; None unless uniform)
    estimated_macs: int
    latency: dict[str, Any] | None = None  # latency allocation: table, predicted and measured speedup


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
    """The plan of a uniform (ratio, FLOPs or threshold) or global allocation; latency is ``plan_latency``."""
    scores = {g.index: group_scores(model, g, settings) for g in graph.prunable_groups()}
    if not scores:
        raise UserError("nothing to prune: the dependency analysis found no prunable channel group in this model")
    depthwise = {n for g in graph.groups for n in g.depthwise}

    def macs_for(plans: list[GroupPlan]) -> int:
        return estimate_macs(base, layer_widths(graph, plans), depthwise)

    if settings.allocation == "global":
        return _plan_global(graph, scores, base, settings, macs_for)
    if settings.allocation == "latency":
        raise ValueError("latency allocation needs the measured table; plan_latency plans it")
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


def plan_latency(model: Any, graph: DependencyGraph, base: CostReport, settings: PruneSettings, image_size: int,
                 preprocess: Any, exporter: str | None, say: Any) -> tuple[PrunePlan, Any]:
    """Latency allocation: per-group costs from the (cached) table, the unpruned model timed end to end, a greedy
    plan against the target, then the pruned model timed end to end beside the unpruned one (interleaved)."""
    import tempfile
    from pathlib import Path

    from edgeresnet.compress import allocation
    from edgeresnet.compress.latency_table import LatencyTable, machine_key
    from edgeresnet.compress.measure import export_onnx_file, ort_latencies
    from edgeresnet.compress.pruners import apply_plan

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
