"""Channel-dependency analysis: which output channels must be pruned together.

One generic rule instead of per-model special cases. The model is traced with ``torch.fx`` and shapes are
propagated with one real forward pass; every tensor gets a *channel space*. A conv (groups=1) starts a new
space (it is the space's *producer*); BN, activations, pooling, dropout and a 1x1-spatial flatten keep the
space; an element-wise op over tensors of equal channel count (the residual ``add``) merges the spaces of its
inputs (union-find). A merged space is one *group*: pruning channel ``i`` removes filter ``i`` of every
producer, entry ``i`` of every BN and input ``i`` of every consumer (conv or linear) in that group, so
residual adds keep matching widths.

Anything the analysis does not understand (concat, reshape to other shapes, grouped convs, ops on the
model input or output) *freezes* the spaces it touches: frozen groups are never pruned, which is always
safe. The model input and every linear output (the classifier) are frozen by construction.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

from edgeresnet.errors import UserError

# modules whose output has the same channels, in the same order, as their input
_PASSTHROUGH_MODULES = (
    "ReLU", "ReLU6", "LeakyReLU", "PReLU1", "SiLU", "GELU", "Sigmoid", "Tanh", "Hardswish", "Hardsigmoid", "Mish",
    "ELU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Identity", "Dropout", "Dropout2d",
)
_PASSTHROUGH_FUNCTIONS = {
    "relu", "relu_", "relu6", "leaky_relu", "silu", "gelu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "dropout", "contiguous", "clone",
    "detach", "float",
}
_ELEMENTWISE = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
                operator.truediv}
_ELEMENTWISE_NAMES = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum"}


@dataclass
class ChannelGroup:
    """Channels that must be kept or removed together (one channel space after merging)."""

    index: int
    channels: int
    producers: list[str] = field(default_factory=list)  # convs whose filters (weight dim 0) are these channels
    depthwise: list[str] = field(default_factory=list)  # depthwise convs: filters and inputs both in this space
    norms: list[str] = field(default_factory=list)  # BatchNorm2d layers over these channels
    consumers: list[tuple[str, str]] = field(default_factory=list)  # (module, "conv"|"linear"): weight dim 1
    frozen: list[str] = field(default_factory=list)  # reasons this group must not be pruned

    @property
    def prunable(self) -> bool:
        return bool(self.producers) and not self.frozen

    @property
    def coupled(self) -> bool:
        """True when more than one conv produces these channels (a residual add joins them)."""
        return len(self.producers) > 1

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "channels": self.channels, "producers": self.producers,
                "depthwise": self.depthwise, "norms": self.norms,
                "consumers": [list(c) for c in self.consumers], "frozen": self.frozen}


@dataclass
class DependencyGraph:
    groups: list[ChannelGroup]
    image_size: int

    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def group_of_producer(self, module: str) -> ChannelGroup | None:
        for group in self.groups:
            if module in group.producers or module in group.depthwise:
                return group
        return None


class _Spaces:
    """Union-find over channel spaces, carrying each space's members."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.data: list[ChannelGroup] = []

    def new(self, channels: int, frozen: str | None = None) -> int:
        sid = len(self.parent)
        self.parent.append(sid)
        self.data.append(ChannelGroup(sid, channels, frozen=[frozen] if frozen else []))
        return sid

    def find(self, sid: int) -> int:
        while self.parent[sid] != sid:
            self.parent[sid] = self.parent[self.parent[sid]]
            sid = self.parent[sid]
        return sid

    def union(self, a: int, b: int, where: str) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        da, db = self.data[ra], self.data[rb]
        if da.channels != db.channels:  # cannot happen for a model that runs; guard against analysis bugs
            self.freeze(ra, f"channel mismatch at {where}")
            self.freeze(rb, f"channel mismatch at {where}")
            return ra
        self.parent[rb] = ra
        for attr in ("producers", "depthwise", "norms", "consumers", "frozen"):
            merged = getattr(da, attr)
            for item in getattr(db, attr):
                if item not in merged:
                    merged.append(item)
        return ra

    def freeze(self, sid: int, reason: str) -> None:
        group = self.data[self.find(sid)]
        if reason not in group.frozen:
            group.frozen.append(reason)

    def get(self, sid: int) -> ChannelGroup:
        return self.data[self.find(sid)]


def _tensor_shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if hasattr(node, "meta") else None
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(int(d) for d in meta.shape)


def _target_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def analyze(model: Any, image_size: int, in_channels: int = 3) -> DependencyGraph:
    """Trace ``model`` and return its channel groups (runs one batch-1 forward pass on zeros)."""
    import torch
    import torch.fx as fx
    import torch.nn as nn
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        traced = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise UserError(f"model cannot be traced for pruning ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0][:120]}); only fx-traceable models can be pruned") from exc
    was_training = model.training
    traced.eval()
    with torch.no_grad():
        ShapeProp(traced).propagate(torch.zeros(2, in_channels, image_size, image_size,
                                                device=next(model.parameters()).device))
    model.train(was_training)
    modules = dict(traced.named_modules())

    spaces = _Spaces()
    space_of: dict[Any, int] = {}
    conv_out: dict[str, int] = {}  # a module called twice produces the same space
    module_inputs: dict[str, list[int]] = {}  # consumers/norms called twice: their inputs must merge

    def input_space(node: Any) -> int | None:
        return space_of.get(node) if isinstance(node, fx.Node) else None

    def freeze_inputs(node: Any, reason: str) -> None:
        for arg in node.all_input_nodes:
            sid = space_of.get(arg)
            if sid is not None:
                spaces.freeze(sid, reason)

    def fresh_frozen(node: Any, reason: str) -> None:
        shape = _tensor_shape(node)
        if shape is not None and len(shape) >= 2:
            space_of[node] = spaces.new(shape[1], frozen=reason)

    for node in traced.graph.nodes:
        shape = _tensor_shape(node)
        if node.op == "placeholder":
            if shape is not None and len(shape) >= 2:
                space_of[node] = spaces.new(shape[1], frozen="model input")
            continue
        if node.op == "output":
            freeze_inputs(node, "model output")
            continue
        if node.op == "get_attr":
            fresh_frozen(node, f"parameter tensor {node.target}")
            continue
        if shape is None or len(shape) < 2:
            freeze_inputs(node, f"non-tensor op {node.name}")
            continue
        first = node.args[0] if node.args else None
        src = input_space(first)

        if node.op == "call_module":
            name = str(node.target)
            module = modules[name]
            if isinstance(module, nn.Conv2d):
                if src is None:
                    fresh_frozen(node, f"{name}: input not tracked")
                    continue
                if module.groups == 1:
                    group = spaces.get(src)
                    if (name, "conv") not in group.consumers:
                        group.consumers.append((name, "conv"))
                    module_inputs.setdefault(name, []).append(src)
                    if name not in conv_out:
                        conv_out[name] = spaces.new(module.out_channels)
                        spaces.get(conv_out[name]).producers.append(name)
                    space_of[node] = conv_out[name]
                elif module.groups == module.in_channels == module.out_channels:
                    group = spaces.get(src)
                    if name not in group.depthwise:
                        group.depthwise.append(name)
                    module_inputs.setdefault(name, []).append(src)
                    space_of[node] = src
                else:
                    spaces.freeze(src, f"grouped conv {name}")
                    fresh_frozen(node, f"grouped conv {name}")
            elif isinstance(module, nn.BatchNorm2d):
                if src is None:
                    fresh_frozen(node, f"{name}: input not tracked")
                    continue
                group = spaces.get(src)
                if name not in group.norms:
                    group.norms.append(name)
                module_inputs.setdefault(name, []).append(src)
                space_of[node] = src
            elif isinstance(module, nn.Linear):
                in_shape = _tensor_shape(first) if isinstance(first, fx.Node) else None
                if src is not None and in_shape is not None and len(in_shape) == 2:
                    group = spaces.get(src)
                    if (name, "linear") not in group.consumers:
                        group.consumers.append((name, "linear"))
                    module_inputs.setdefault(name, []).append(src)
                else:
                    freeze_inputs(node, f"linear {name} on a non-2D input")
                fresh_frozen(node, f"output of linear {name} (classifier)")
            elif type(module).__name__ in _PASSTHROUGH_MODULES and src is not None:
                space_of[node] = src
            else:
                freeze_inputs(node, f"unsupported module {name} ({type(module).__name__})")
                fresh_frozen(node, f"output of unsupported module {name}")
            continue

        # call_function / call_method
        target = node.target
        tname = _target_name(target)
        tensor_args = [a for a in node.all_input_nodes if a in space_of]
        if target in _ELEMENTWISE or tname in _ELEMENTWISE_NAMES:
            same = [a for a in tensor_args if (_tensor_shape(a) or (0, 0))[1] == shape[1]]
            other = [a for a in tensor_args if a not in same and (_tensor_shape(a) or (0, 1))[1] != 1]
            if not same or other:
                freeze_inputs(node, f"element-wise op {node.name} over mismatched channels")
                fresh_frozen(node, f"output of {node.name}")
                continue
            sid = space_of[same[0]]
            for arg in same[1:]:
                sid = spaces.union(sid, space_of[arg], node.name)
            space_of[node] = sid
        elif tname in _PASSTHROUGH_FUNCTIONS and src is not None:
            space_of[node] = src
        elif tname in ("flatten", "view", "reshape", "squeeze", "mean", "amax", "sum") and src is not None:
            in_shape = _tensor_shape(first) or ()
            same_nc = len(in_shape) >= 2 and in_shape[:2] == shape[:2]
            if tname in ("mean", "amax", "sum"):
                keeps_channels = same_nc  # a reduction that keeps N and C reduces over space only
            else:  # a reshape keeps the channels only when it squeezes a 1x1 map
                keeps_channels = same_nc and all(d == 1 for d in in_shape[2:]) and all(d == 1 for d in shape[2:])
            if keeps_channels:
                space_of[node] = src
            else:
                freeze_inputs(node, f"{tname} {node.name} changes the channel layout")
                fresh_frozen(node, f"output of {node.name}")
        else:
            freeze_inputs(node, f"unsupported op {node.name} ({tname})")
            fresh_frozen(node, f"output of {node.name}")

    for name, sids in module_inputs.items():  # a layer used twice ties its input spaces together
        for sid in sids[1:]:
            spaces.union(sids[0], sid, name)

    roots = sorted({spaces.find(s) for s in range(len(spaces.parent))})
    groups = [spaces.data[r] for r in roots if spaces.data[r].producers]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    groups.sort(key=lambda g: min(order.get(p, 1 << 30) for p in g.producers))
    for i, group in enumerate(groups):
        group.index = i
        group.producers.sort(key=lambda p: order.get(p, 1 << 30))
        group.norms.sort(key=lambda p: order.get(p, 1 << 30))
        group.consumers.sort(key=lambda c: order.get(c[0], 1 << 30))
    return DependencyGraph(groups, image_size)

