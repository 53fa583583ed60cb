"""Filter importance for structured pruning: each filter's kernel norm, and the merge of coupled layers' scores.

TAO's "min weight" criterion (Molchanov et al. arXiv:1611.06440): the L2 (default) or L1 norm of each output
filter, bias ignored; with ``normalize`` each layer's norms are divided by its largest (TAO's ``max``
normaliser). Channels coupled through residual adds get one merged score per channel, TAO's equalization
criterion: ``union`` (max), ``intersection`` (min), ``arithmetic_mean`` or ``geometric_mean``.
"""

from __future__ import annotations

from typing import Any

from edgeresnet.compress.depgraph import ChannelGroup

EQUALIZATIONS = ("union", "intersection", "arithmetic_mean", "geometric_mean")
CRITERIA = ("l2", "l1")


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


def group_scores(model: Any, group: ChannelGroup, settings: Any) -> Any:
    """One merged score per channel of a coupled group (``settings``: a ``PruneSettings``)."""
    import torch

    modules = dict(model.named_modules())
    rows = []
    for name in group.producers + group.depthwise:
        score = filter_scores(modules[name].weight, settings.criterion)
        if settings.normalized:
            score = score / score.max().clamp_min(1e-12)
        rows.append(score)
    return merge_scores(torch.stack(rows), settings.equalization)
