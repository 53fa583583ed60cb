"""Channel-dependency analysis: residual coupling found generically, unknown ops frozen (never mis-pruned)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from edgeresnet.compress.depgraph import analyze
from edgeresnet.models import ModelSpec, build_model

pytestmark = pytest.mark.usefixtures("torch_single_thread")



def _coupled(graph):
    return [g for g in graph.groups if g.coupled]


def test_resnet18_small_stem_groups_couple_stem_residuals_and_downsamples():
    model = build_model(ModelSpec("resnet18", 10, small_stem=True))
    graph = analyze(model, 32)
    assert len(graph.groups) == 12 and all(g.prunable for g in graph.groups)
    coupled = _coupled(graph)
    assert [g.channels for g in coupled] == [64, 128, 256, 512]
    # the stem conv feeds layer1's identity shortcuts: coupled with both layer1 blocks' last conv
    assert coupled[0].producers == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    assert set(coupled[0].norms) == {"bn1", "layer1.0.bn2", "layer1.1.bn2"}
    # a downsample branch joins the residual group of its stage
    assert coupled[1].producers == ["layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"]
    assert "layer2.0.downsample.1" in coupled[1].norms
    assert ("layer4.0.downsample.0", "conv") in coupled[2].consumers  # the next stage reads it
    # the classifier reads the last stage: its inputs shrink with it, its outputs are never a group
    assert ("fc", "linear") in coupled[3].consumers
    assert all("fc" not in g.producers for g in graph.groups)
    # every block's inner conv is free (a group of its own)
    singles = [g for g in graph.groups if not g.coupled]
    assert sorted(p for g in singles for p in g.producers) == sorted(
        f"layer{s}.{b}.conv1" for s in range(1, 5) for b in range(2))


def test_resnet50_bottlenecks_and_standard_stem():
    model = build_model(ModelSpec("resnet50", 7, dropout=0.2))  # dropout wraps avgpool in a Sequential
    graph = analyze(model, 64)
    assert len(graph.groups) == 37  # stem + 16 blocks x 2 inner convs + 4 stage groups
    coupled = _coupled(graph)
    assert [len(g.producers) for g in coupled] == [4, 5, 7, 4]  # downsample + one conv3 per block
    stem = graph.group_of_producer("conv1")
    assert not stem.coupled and ("layer1.0.downsample.0", "conv") in stem.consumers  # maxpool passes through


def _conv(cin: int, cout: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2)


class _Layers(nn.Module):
    """A test net: its layers given as keywords (registered in that order), its own ``forward``."""

    def __init__(self, **layers: nn.Module) -> None:
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)


class _Concat(_Layers):
    def __init__(self) -> None:
        super().__init__(a=_conv(3, 8), b=_conv(3, 8), c=_conv(16, 8), d=_conv(8, 8, 1), fc=nn.Linear(8 * 4 * 4, 3))

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        z = self.d(torch.relu(self.c(y)))
        return self.fc(torch.flatten(z, 1))  # flatten over a 4x4 map mixes channels and space


def test_unknown_ops_freeze_their_groups():
    graph = analyze(_Concat(), 4)
    by = {p: g for g in graph.groups for p in g.producers}
    assert not by["a"].prunable and any("cat" in r for r in by["a"].frozen)
    assert not by["b"].prunable
    assert by["c"].prunable  # c only feeds d: free
    assert not by["d"].prunable and any("flatten" in r for r in by["d"].frozen)


class _Shared(_Layers):
    """One conv applied twice: both call sites' inputs must be one group."""

    def __init__(self) -> None:
        super().__init__(p=_conv(3, 16), q=_conv(3, 16), shared=_conv(16, 16), fc=nn.Linear(16, 2))

    def forward(self, x):
        y = self.shared(self.p(x)) + self.shared(self.q(x))
        return self.fc(y.mean((2, 3)))


def test_module_used_twice_ties_its_inputs():
    graph = analyze(_Shared(), 8)
    group = graph.group_of_producer("p")
    assert group is graph.group_of_producer("q") and group.prunable
    assert graph.group_of_producer("shared").prunable
    assert ("fc", "linear") in graph.group_of_producer("shared").consumers  # mean over space keeps channels
