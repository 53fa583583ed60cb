"""Parameter and MAC counting by forward hooks on one real forward pass.

We count multiply-accumulates (MACs) of convolutions and linear layers only, the convention behind the
"ResNet-18 = 1.82 G" figure; BN/ReLU/add are memory-bound and small. A pruned model is measured the same
way, so the ratio before/after is what matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LayerCost:
    kind: str  # "conv" | "linear"
    macs: int
    params: int
    in_channels: int
    out_channels: int
    out_hw: tuple[int, int] | None = None


@dataclass
class CostReport:
    macs: int
    params: int
    image_size: int
    layers: dict[str, LayerCost] = field(default_factory=dict)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {"macs": self.macs, "gmacs": round(self.gmacs, 4), "params": self.params,
                "mparams": round(self.mparams, 4), "image_size": self.image_size}


def count_params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_costs(model: Any, image_size: int, in_channels: int = 3) -> CostReport:
    """MACs per conv/linear layer from one batch-1 forward pass at ``image_size`` (model left as it was)."""
    import torch
    import torch.nn as nn

    layers: dict[str, LayerCost] = {}
    handles = []

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if isinstance(module, nn.Conv2d):
                out_h, out_w = int(output.shape[-2]), int(output.shape[-1])
                per_out = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
                macs = out_h * out_w * module.out_channels * per_out
                cost = LayerCost("conv", macs, sum(p.numel() for p in module.parameters(recurse=False)),
                                 module.in_channels, module.out_channels, (out_h, out_w))
            else:
                rows = int(output.numel() // output.shape[-1]) if output.dim() > 1 else 1
                macs = rows * module.in_features * module.out_features
                cost = LayerCost("linear", macs, sum(p.numel() for p in module.parameters(recurse=False)),
                                 module.in_features, module.out_features)
            previous = layers.get(name)
            if previous is not None:  # a module called twice costs twice
                cost.macs += previous.macs
            layers[name] = cost
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(hook_for(name)))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return CostReport(sum(c.macs for c in layers.values()), count_params(model), image_size, layers)
