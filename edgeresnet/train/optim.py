"""Optimizers with parameter groups: no weight decay on BN/bias, a separate LR for the backbone, freezing.

The classifier head is every parameter of a module named ``fc`` (torchvision's name, kept by our models
and by wrappers such as the distillation adapters, whose names become ``student.fc.*``).
"""

from __future__ import annotations

from typing import Any

from edgeresnet.errors import UserError


def is_head(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[-2] == "fc"


def freeze_backbone(model: Any) -> int:
    """Turn off gradients of everything but the head; returns the number of frozen tensors."""
    names = [n for n, _ in model.named_parameters()]
    if not any(is_head(n) for n in names):
        raise UserError("--freeze-backbone: the model has no 'fc' classifier head to keep trainable")
    frozen = 0
    for name, param in model.named_parameters():
        if not is_head(name):
            param.requires_grad_(False)
            frozen += 1
    return frozen


def set_frozen_bn_eval(model: Any) -> None:
    """Batch-norm layers of a frozen backbone keep their statistics (called after ``model.train()``)."""
    import torch.nn as nn

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if all(not p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


def param_groups(model: Any, recipe: Any) -> list[dict[str, Any]]:
    """Up to four groups: (backbone|head) x (decay|no decay); each records its ``base_lr``."""
    buckets: dict[tuple[bool, bool], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 and not recipe.decay_norm_and_bias  # BN weight/bias and all biases
        buckets.setdefault((is_head(name), no_decay), []).append(param)
    if not buckets:
        raise UserError("nothing to train: every parameter is frozen")
    groups = []
    for (head, no_decay), params in sorted(buckets.items()):
        lr = recipe.lr * (1.0 if head else recipe.backbone_lr_mult)
        groups.append({"params": params, "lr": lr, "base_lr": lr,
                       "weight_decay": 0.0 if no_decay else recipe.weight_decay,
                       "group": ("head" if head else "backbone") + ("/no_decay" if no_decay else "/decay")})
    return groups


def make_optimizer(model: Any, recipe: Any) -> Any:
    import torch

    groups = param_groups(model, recipe)
    name = recipe.optimizer
    if name == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, betas=(recipe.momentum, 0.999))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.momentum, 0.999))
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=recipe.lr, momentum=recipe.momentum, alpha=0.9, eps=1e-3)
    raise UserError(f"--optimizer {name}: choose one of sgd, adam, adamw, rmsprop")


def set_lr(optimizer: Any, factor: float) -> float:
    """Apply the schedule factor to every group's base LR; returns the head LR (what we log)."""
    lr = 0.0
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
        lr = max(lr, group["lr"])
    return lr


def l1_penalty(model: Any) -> Any:
    """Sum of |w| over trainable conv/linear weights (BN and biases excluded)."""
    total = None
    for param in model.parameters():
        if param.requires_grad and param.ndim > 1:
            term = param.abs().sum()
            total = term if total is None else total + term
    return total
