"""The surgery of structured pruning: one pruning function per layer type, each building the narrower layer
with the kept weights (Torch-Pruning's layout: the plan decides, the pruners only cut).

``rows`` are the kept output channels, ``cols`` the kept input channels (None: the dimension is untouched).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from edgeresnet.compress.depgraph import DependencyGraph


def prune_conv(old: Any, rows: Any, cols: Any) -> Any:
    """A Conv2d keeping ``rows`` filters and ``cols`` input channels; a depthwise conv keeps ``rows`` of both."""
    import torch.nn as nn

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
    return new


def prune_batchnorm(old: Any, rows: Any, cols: Any) -> Any:
    """A BatchNorm2d keeping the affine parameters and running statistics of ``rows``."""
    import torch.nn as nn

    assert rows is not None
    new = nn.BatchNorm2d(len(rows), old.eps, old.momentum, old.affine, old.track_running_stats)
    if old.affine:
        new.weight.copy_(old.weight[rows])
        new.bias.copy_(old.bias[rows])
    if old.track_running_stats:
        new.running_mean.copy_(old.running_mean[rows])
        new.running_var.copy_(old.running_var[rows])
        new.num_batches_tracked.copy_(old.num_batches_tracked)
    return new


def prune_linear(old: Any, rows: Any, cols: Any) -> Any:
    """A Linear keeping ``rows`` outputs and ``cols`` inputs."""
    import torch.nn as nn

    weight = old.weight if rows is None else old.weight[rows]
    if cols is not None:
        weight = weight[:, cols]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=old.bias is not None)
    new.weight.copy_(weight)
    if old.bias is not None:
        new.bias.copy_(old.bias if rows is None else old.bias[rows])
    return new


def _pruner_for(name: str, module: Any) -> Callable[[Any, Any, Any], Any]:
    import torch.nn as nn

    for layer_type, pruner in ((nn.Conv2d, prune_conv), (nn.BatchNorm2d, prune_batchnorm), (nn.Linear, prune_linear)):
        if isinstance(module, layer_type):
            return pruner
    raise AssertionError(f"cannot prune {name} ({type(module).__name__})")  # the analysis lists only conv/bn/linear


def kept_indices(graph: DependencyGraph, plans: list[Any]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """(kept output channels, kept input channels) of every layer a plan narrows."""
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
    return out_idx, in_idx


def apply_plan(model: Any, graph: DependencyGraph, plans: list[Any]) -> Any:
    """A deep copy of ``model`` with every touched conv/bn/linear rebuilt narrower, holding the kept weights."""
    import torch

    out_idx, in_idx = kept_indices(graph, plans)
    pruned = copy.deepcopy(model)
    modules = dict(pruned.named_modules())
    for name in sorted(set(out_idx) | set(in_idx)):
        old = modules[name]
        rows = torch.tensor(out_idx[name]) if name in out_idx else None
        cols = torch.tensor(in_idx[name]) if name in in_idx else None
        with torch.no_grad():
            new = _pruner_for(name, old)(old, rows, cols)
        new.to(device=old.weight.device if hasattr(old, "weight") and old.weight is not None else None)
        new.train(old.training)
        parent = pruned.get_submodule(name.rsplit(".", 1)[0]) if "." in name else pruned
        setattr(parent, name.rsplit(".", 1)[-1], new)
    return pruned
