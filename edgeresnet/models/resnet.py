"""ResNet-18/50 builders, our checkpoint format, and import of torchvision/timm state dicts.

A checkpoint is a plain dict (loadable with ``weights_only=True``): the architecture description, the
state dict and the preprocessing contract. Pruned models have narrower layers than the stock ResNet, so
``model_from_checkpoint`` re-shapes every conv/bn/linear to the tensors in the state dict: one generic
rule instead of a per-model special case.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeresnet.artifacts import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, safe_torch_load
from edgeresnet.errors import UserError

ARCHS = ("resnet18", "resnet50")
_PREFIXES = ("module.", "model.", "backbone.", "_orig_mod.")


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    num_classes: int
    small_stem: bool = False  # 3x3 stem, no max-pool: for inputs of 28-64 pixels
    dropout: float = 0.0
    stem_stride: int = 1  # of the small stem; 2 quarters the compute of every layer after it

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise UserError(f"--arch {self.arch}: unknown architecture; choose one of {', '.join(ARCHS)}")
        if self.num_classes < 1:
            raise UserError(f"--num-classes {self.num_classes}: must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout {self.dropout}: must be in [0, 1)")
        if self.stem_stride not in (1, 2):
            raise UserError(f"--stem-stride {self.stem_stride}: must be 1 or 2")
        if self.stem_stride != 1 and not self.small_stem:
            raise UserError(f"--stem-stride {self.stem_stride}: applies to the small stem; add --small-stem")

    def to_dict(self) -> dict[str, Any]:
        spec = {"arch": self.arch, "num_classes": self.num_classes, "small_stem": self.small_stem,
                "dropout": self.dropout}
        if self.stem_stride != 1:  # recorded only when set: checkpoints of the stride-1 and ImageNet stems unchanged
            spec["stem_stride"] = self.stem_stride
        return spec


def build_model(spec: ModelSpec) -> Any:
    """A torchvision ResNet with the requested head; parameter names stay torchvision's."""
    import torch.nn as nn
    from torchvision import models

    model = getattr(models, spec.arch)(weights=None, num_classes=spec.num_classes)
    if spec.small_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=spec.stem_stride, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if spec.dropout > 0:
        # dropout before the classifier without renaming ``fc.*`` (keeps torchvision/timm keys importable)
        model.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Dropout(spec.dropout))
    return model


def conform_to_state_dict(model: Any, state_dict: dict[str, Any]) -> Any:
    """Re-shape conv/bn/linear layers to the tensors in ``state_dict`` (pruned models are narrower)."""
    import torch.nn as nn

    for name, module in list(model.named_modules()):
        weight = state_dict.get(f"{name}.weight")
        if weight is None:
            continue
        replacement: nn.Module | None = None
        if isinstance(module, nn.Conv2d) and tuple(weight.shape) != tuple(module.weight.shape):
            replacement = nn.Conv2d(weight.shape[1] * module.groups, weight.shape[0], module.kernel_size,
                                    module.stride, module.padding, module.dilation, module.groups,
                                    bias=module.bias is not None)
        elif isinstance(module, nn.BatchNorm2d) and weight.shape[0] != module.num_features:
            replacement = nn.BatchNorm2d(weight.shape[0], module.eps, module.momentum)
        elif isinstance(module, nn.Linear) and tuple(weight.shape) != tuple(module.weight.shape):
            replacement = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
        if replacement is not None:
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], replacement)
    return model


def make_checkpoint(model: Any, spec: ModelSpec, preprocess: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The dict we save: plain types and tensors only, so it loads with ``weights_only=True``."""
    state = OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": spec.to_dict(),
            "state_dict": state, "preprocess": preprocess, **extra}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate one of our checkpoints (never executes code from the file)."""
    data = safe_torch_load(path)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not an edgeresnet checkpoint; for a plain state dict run "
                        "'edgeresnet import WEIGHTS --arch ... --num-classes ... --out model.pt' first")
    if data.get("version", 0) > CHECKPOINT_VERSION:
        raise UserError(f"{path}: checkpoint format version {data.get('version')} is newer than this edgeresnet supports; upgrade")
    for key in ("model", "state_dict", "preprocess"):
        if key not in data:
            raise UserError(f"{path}: checkpoint is missing {key!r}; re-create it with edgeresnet")
    return data


def model_from_checkpoint(checkpoint: dict[str, Any], path: str | Path = "checkpoint") -> tuple[Any, ModelSpec]:
    """Instantiate the model a checkpoint describes (pruned widths included) with its weights, in eval mode."""
    spec = ModelSpec(**checkpoint["model"])
    model = conform_to_state_dict(build_model(spec), checkpoint["state_dict"])
    missing, unexpected = _load_state(model, checkpoint["state_dict"])
    if missing or unexpected:
        raise UserError(f"{path}: weights do not fit {spec.arch}: {describe_key_mismatch(missing, unexpected)}")
    return model.eval(), spec


def _load_state(model: Any, state_dict: dict[str, Any]) -> tuple[list[str], list[str]]:
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:
        shapes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise UserError(f"weights do not fit the model: {len(shapes)} shape mismatch(es), first: "
                        f"{shapes[0] if shapes else str(exc).splitlines()[0]}") from exc
    return list(result.missing_keys), list(result.unexpected_keys)


def describe_key_mismatch(missing: list[str], unexpected: list[str], show: int = 4) -> str:
    """A readable one-line summary of missing/unexpected keys (not a raw traceback)."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:show])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:show])})")
    return "; ".join(parts) or "none"


# Where model hubs and training scripts keep the weights, EMA first. timm timm/models/_helpers.py
# load_state_dict(use_ema=True) picks 'state_dict_ema', then 'model_ema', then 'state_dict', then 'model';
# torchvision references/classification/train.py saves {"model": ..., "model_ema": model_ema.state_dict(), ...}.
_EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema")
_PLAIN_KEYS = ("state_dict", "model_state_dict", "model", "net")
# torch.optim.swa_utils.AveragedModel (torchvision's ExponentialMovingAverage) registers the buffer
# 'n_averaged' and wraps the model as self.module, so its state dict is 'n_averaged' + 'module.<key>'.
_WRAPPER_BUFFERS = ("n_averaged",)


def extract_state_dict(data: Any, path: str | Path, ema: bool = True) -> dict[str, Any]:
    """The state dict in torchvision/timm/Lightning-style files, wrapper prefixes stripped."""
    return find_state_dict(data, path, ema)[0]


def _is_tensor_dict(value: Any) -> bool:
    import torch

    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def find_state_dict(data: Any, path: str | Path, ema: bool = True) -> tuple[dict[str, Any], str | None]:
    """(state dict, the key it was found under or None for a bare state dict).

    EMA weights are taken when present and ``ema`` (timm's default); the prefixes of DDP (``module.``),
    ``torch.compile`` (``_orig_mod.``), AveragedModel and Lightning wrappers are stripped when every key has them.
    """
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        data = data["state_dict"]
    source: str | None = None
    if isinstance(data, dict) and not _is_tensor_dict(data):
        for key in (_EMA_KEYS if ema else ()) + _PLAIN_KEYS:
            if isinstance(data.get(key), dict) and data[key]:
                data, source = data[key], key
                break
    if not _is_tensor_dict(data):
        where = f" under {source!r}" if source else ""
        raise UserError(f"{path}: no state dict of tensors found{where}; expected a torchvision or timm ResNet state "
                        "dict (or a checkpoint with 'state_dict', 'model' or 'state_dict_ema')")
    state = {k: v for k, v in data.items() if k not in _WRAPPER_BUFFERS}
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    return state, source


def import_weights(path: str | Path, spec: ModelSpec, ema: bool = True) -> tuple[Any, list[str]]:
    """Load external ResNet weights into ``spec``'s model; returns the model and notes for the user.

    A head of another class count is re-initialised (and said so); any other mismatch is an error that
    names the keys, since it means the file is not the architecture the user asked for.
    """
    state, source = find_state_dict(safe_torch_load(path), path, ema)
    model = build_model(spec)
    notes: list[str] = []
    if source in _EMA_KEYS:
        notes.append(f"using the EMA weights stored under {source!r} (edgeresnet import --no-ema takes the raw ones)")
    expected = model.state_dict()
    fc_w = state.get("fc.weight")
    if fc_w is not None and tuple(fc_w.shape) != tuple(expected["fc.weight"].shape):
        if fc_w.ndim == 2 and fc_w.shape[1] == expected["fc.weight"].shape[1]:
            notes.append(f"classifier head re-initialised: the file has {fc_w.shape[0]} classes, "
                         f"--num-classes is {spec.num_classes}")
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if "conv1.weight" in state and tuple(state["conv1.weight"].shape) != tuple(expected["conv1.weight"].shape):
        got = tuple(state["conv1.weight"].shape)
        raise UserError(f"{path}: stem conv1 has shape {got}, {spec.arch} expects {tuple(expected['conv1.weight'].shape)}; "
                        "check --arch and --small-stem")
    shape_errors = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if shape_errors:
        raise UserError(f"{path}: {len(shape_errors)} tensor(s) have the wrong shape for {spec.arch} "
                        f"(e.g. {', '.join(shape_errors[:3])}); is --arch right?")
    missing, unexpected = _load_state(model, state)
    missing = [k for k in missing if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise UserError(f"{path}: weights do not match {spec.arch}: {describe_key_mismatch(missing, unexpected)}; "
                        "check --arch")
    return model.eval(), notes
