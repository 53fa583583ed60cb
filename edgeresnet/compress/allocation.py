"""How many channels each prunable group keeps: uniform (TAO), global, or latency-aware.

* ``uniform``: the same ratio in every group (TAO's pruner; ``prune_plan.plan_pruning``);
* ``global``: every group's merged scores are divided by that group's largest (TAO's ``max`` normaliser), then
  all channels of the network are ranked together and one cut-off is searched so that the network keeps
  ``1 - ratio`` of its prunable channels (``--ratio``) or at most ``flops`` of its MACs (``--flops``); groups
  whose filters matter little lose more. Residual-coupled layers stay one group with one merged score, so they
  are still pruned together;
* ``latency``: a measured per-group cost (``latency_table``) and a greedy choice: repeatedly take the width
  step that loses the least importance per millisecond saved, until the predicted latency meets the target.

The prediction (``conv_cost_model``) is a model of the network built from convs timed alone, an approximation
(no fusion, no memory traffic between layers, the per-call overhead of isolated sessions); the achieved speedup
is therefore measured end to end on the pruned model, never taken from the prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeresnet.errors import UserError

ALLOCATIONS = ("uniform", "global", "latency")


def normalized(scores: dict[int, Any]) -> dict[int, Any]:
    """Each group's scores over its largest, so groups of different scale are ranked on one axis."""
    return {i: s / s.max().clamp_min(1e-12) for i, s in scores.items()}


def _plan(group: Any, order: list[int], count: int) -> Any:
    from edgeresnet.compress.prune_plan import GroupPlan

    return GroupPlan(group.index, list(group.producers), group.channels, sorted(order[:count]))


def global_plans(graph: Any, scores: dict[int, Any], settings: Any, fits: Callable[[list[Any]], bool]) -> list[Any]:
    """One network-wide cut-off ``t`` on normalised scores: each group keeps its channels above ``t`` (rounded
    to ``granularity``, at least ``min_filters``); the smallest ``t`` whose plans ``fits`` is taken."""
    from edgeresnet.compress.prune_plan import keep_count

    norm = normalized(scores)
    groups = graph.prunable_groups()
    orders = {g.index: [int(j) for j in norm[g.index].argsort(descending=True, stable=True)] for g in groups}

    def plans_at(t: float) -> list[Any]:
        out = []
        for g in groups:
            above = int((norm[g.index] > t).sum())
            out.append(_plan(g, orders[g.index], keep_count(g.channels, above, settings.granularity,
                                                            settings.min_filters)))
        return out

    if not fits(plans_at(1.0)):  # nothing above 1: every group at its floor
        return []
    lo, hi = 0.0, 1.0
    for _ in range(40):  # kept channels never grow with t: bisect for the smallest t that fits
        mid = (lo + hi) / 2
        if fits(plans_at(mid)):
            hi = mid
        else:
            lo = mid
    plans = plans_at(hi)
    # Rounding to granularity leaves slack: give channels back, most important next channel first, while it fits.
    changed = True
    while changed:
        changed = False
        ranked = sorted((p for p in plans if len(p.keep) < p.channels),
                        key=lambda p: -float(norm[p.index][orders[p.index][len(p.keep)]]))
        for plan in ranked:
            group = next(g for g in groups if g.index == plan.index)
            trial = _plan(group, orders[plan.index], min(len(plan.keep) + settings.granularity, plan.channels))
            candidate = [trial if p is plan else p for p in plans]
            if fits(candidate):
                plans, changed = candidate, True
                break
    return plans


# -- latency-aware ----------------------------------------------------------------------------------------
def candidate_widths(channels: int, grid: tuple[float, ...], granularity: int, min_filters: int) -> list[int]:
    """The widths a group may take: each grid fraction of its width, rounded as ``keep_count`` does, plus full."""
    from edgeresnet.compress.prune_plan import keep_count

    widths = {channels} | {keep_count(channels, channels * f, granularity, min_filters) for f in grid}
    return sorted(widths, reverse=True)


def conv_geometry(model: Any, image_size: int) -> dict[str, Any]:
    """Every Conv2d's shape as it runs at batch 1 and ``image_size`` (input size from a forward hook)."""
    import torch
    import torch.nn as nn

    from edgeresnet.compress.latency_table import ConvShape

    shapes: dict[str, ConvShape] = {}
    handles = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Conv2d, inputs: tuple[Any, ...], _output: Any) -> None:
            h, w = int(inputs[0].shape[-2]), int(inputs[0].shape[-1])
            pad = module.padding if isinstance(module.padding, tuple) else (0, 0)
            k, st = module.kernel_size, module.stride
            shapes[name] = ConvShape(module.in_channels, module.out_channels, (int(k[0]), int(k[1])),
                                     (int(st[0]), int(st[1])), (int(pad[0]), int(pad[1])), module.groups, (h, w))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(hook_for(name)))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was)
    return shapes


def group_shapes(group: Any, geometry: dict[str, Any], width: int) -> list[Any]:
    """The convs a group's width changes, at that width (the other side of each conv at full width)."""
    import dataclasses

    out = []
    for name in group.producers:
        if name in geometry:
            out.append(dataclasses.replace(geometry[name], cout=width))
    for name in group.depthwise:
        if name in geometry:
            out.append(dataclasses.replace(geometry[name], cin=width, cout=width, groups=width))
    for name, kind in group.consumers:
        if kind == "conv" and name in geometry and name not in group.depthwise:
            out.append(dataclasses.replace(geometry[name], cin=width))
    return out


def conv_cost_model(graph: Any, geometry: dict[str, Any], conv_ms: Callable[[Any], float],
                    base_ms: float) -> Callable[[dict[int, int]], float]:
    """Predicted end-to-end ms for a choice of group widths, from the per-conv table.

    Each conv's time at (input width, output width) is its full time times the measured ratio of each side
    (the table holds each side changed alone; MACs are a product of the two widths, so the ratios multiply,
    and a conv shrunk on both sides is not counted twice). Convs timed alone also pay a session call each, so
    their sum can exceed the model's measured time; savings are then scaled by ``base_ms / sum``, never
    predicting below zero."""
    import dataclasses

    groups = {g.index: g for g in graph.prunable_groups()}
    out_of: dict[str, int] = {}
    in_of: dict[str, int] = {}
    for g in groups.values():
        for name in g.producers + g.depthwise:
            out_of[name] = g.index
        for name, kind in g.consumers:
            if kind == "conv" and name not in g.depthwise:
                in_of[name] = g.index
    convs = sorted(n for n in set(out_of) | set(in_of) if n in geometry)
    full = {c: conv_ms(geometry[c]) for c in convs}
    total = sum(full.values())
    scale = min(1.0, base_ms / total) if total > 0 else 0.0

    def side_ratio(name: str, group: int, width: int, side: str) -> float:
        if width == groups[group].channels or full[name] <= 0:
            return 1.0
        shape = geometry[name]
        if side == "in":
            shape = dataclasses.replace(shape, cin=width)
        elif name in groups[group].depthwise:
            shape = dataclasses.replace(shape, cin=width, cout=width, groups=width)
        else:
            shape = dataclasses.replace(shape, cout=width)
        return min(1.0, conv_ms(shape) / full[name])  # a narrower conv measured slower is noise: no saving

    def predict(widths: dict[int, int]) -> float:
        saved = 0.0
        for name in convs:
            ratio = 1.0
            if name in out_of:
                ratio *= side_ratio(name, out_of[name], widths[out_of[name]], "out")
            if name in in_of:
                ratio *= side_ratio(name, in_of[name], widths[in_of[name]], "in")
            saved += full[name] * (1.0 - ratio)
        return base_ms - scale * saved

    return predict


@dataclass
class LatencyPlan:
    plans: list[Any]
    base_ms: float  # measured end to end, the unpruned model
    target_ms: float
    predicted_ms: float
    steps: int

    @property
    def predicted_speedup(self) -> float:
        return self.base_ms / self.predicted_ms if self.predicted_ms > 0 else float("inf")


def latency_plans(graph: Any, scores: dict[int, Any], settings: Any, options: dict[int, list[int]],
                  predict: Callable[[dict[int, int]], float], base_ms: float, target_ms: float,
                  what: str) -> LatencyPlan:
    """Greedy: from full width, take the width step (any group, any narrower candidate width in ``options``)
    with the least importance lost per ms of predicted latency saved, until ``predict`` meets ``target_ms``.

    Importance lost = the normalised merged scores of the dropped channels, times the number of convs producing
    them (a coupled channel is a filter in each of them). A step that saves no time is never taken."""
    norm = normalized(scores)
    groups = graph.prunable_groups()
    orders = {g.index: [int(j) for j in norm[g.index].argsort(descending=True, stable=True)] for g in groups}
    ranked = {g.index: [float(norm[g.index][j]) for j in orders[g.index]] for g in groups}
    weight = {g.index: max(1, len(g.producers) + len(g.depthwise)) for g in groups}
    width = {g.index: g.channels for g in groups}

    steps = 0
    current = predict(width)
    while current > target_ms:
        best: tuple[float, float, int, int] | None = None  # (lost per ms, -saved, group, width)
        for g in groups:
            cur = width[g.index]
            for w in options[g.index]:
                if w >= cur:
                    continue
                saved = current - predict({**width, g.index: w})
                if saved <= 0:
                    continue
                lost = weight[g.index] * sum(ranked[g.index][w:cur])
                key = (lost / saved, -saved, g.index, w)
                if best is None or key < best:
                    best = key
        if best is None:
            speedup = base_ms / current if current > 0 else float("inf")
            raise UserError(f"{what}: unreachable; the latency table predicts at best x{speedup:.2f} "
                            f"({current:.3f} ms of the measured {base_ms:.3f} ms) with --min-filters "
                            f"{settings.min_filters}, --granularity {settings.granularity} and --width-grid "
                            f"{','.join(f'{f:g}' for f in settings.width_grid)}; ask for less or widen the grid")
        width[best[2]] = best[3]
        steps += 1
        current = predict(width)
    plans = [_plan(g, orders[g.index], width[g.index]) for g in groups]
    return LatencyPlan(plans, base_ms, target_ms, current, steps)


def parse_grid(text: str) -> tuple[float, ...]:
    """``--width-grid 0.25,0.5,0.75`` -> (0.25, 0.5, 0.75); anything else is a one-line UserError."""
    try:
        grid = tuple(sorted({float(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise UserError(f"--width-grid {text}: expected comma-separated fractions, e.g. 0.25,0.5,0.75") from None
    if not grid or not all(0.0 < f < 1.0 for f in grid):
        raise UserError(f"--width-grid {text}: give fractions of each group's width between 0 and 1, "
                        "e.g. 0.25,0.5,0.75")
    return grid
