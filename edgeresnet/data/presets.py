"""Preprocessing presets: the contract between training, export and deployment.

Everything a deployment must reproduce exactly (input size, resize, mean/std, channel order, scaling,
class names) lives in ``Preprocess``; it is saved in every checkpoint manifest, written into the ONNX
``metadata_props`` and read back by later stages. Augmentation (training only) is built here too so the
preprocessing code exists in one place.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from edgeresnet.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Measured on the digits training split (seed 0) upsampled bilinearly to 32 px, /255: gray, identical per channel.
DIGITS_MEAN = (0.3096, 0.3096, 0.3096)
DIGITS_STD = (0.3494, 0.3494, 0.3494)


@dataclass(frozen=True)
class Preprocess:
    """How raw RGB images become the model's NCHW float32 input."""

    image_size: int
    resize: int  # shorter side is resized to this, then centre-cropped to image_size
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0  # pixel values are multiplied by this before mean/std
    interpolation: str = "bilinear"
    class_names: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mean"], data["std"], data["class_names"] = list(self.mean), list(self.std), list(self.class_names)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("mean", "std", "class_names"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def with_size(self, image_size: int) -> Preprocess:
        ratio = self.resize / self.image_size
        return dataclasses.replace(self, image_size=image_size, resize=max(image_size, round(image_size * ratio)))

    # -- transforms ------------------------------------------------------------------------------
    def eval_transform(self) -> Any:
        """PIL RGB image -> normalised CHW float tensor, deterministic."""
        from torchvision import transforms as T

        return BatchableTransform(T.Compose(
            [
                T.Resize(self.resize, interpolation=_interpolation(self.interpolation)),
                T.CenterCrop(self.image_size),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        ), self, None)

    def train_transform(self, aug: Augment) -> Any:
        """PIL RGB image -> augmented, normalised CHW float tensor."""
        from torchvision import transforms as T

        steps: list[Any] = []
        if aug.random_resized_crop:
            steps.append(T.RandomResizedCrop(self.image_size, scale=(aug.crop_scale_min, 1.0),
                                             interpolation=_interpolation(self.interpolation)))
        else:
            steps += [T.Resize(self.resize, interpolation=_interpolation(self.interpolation)), T.CenterCrop(self.image_size)]
        if aug.hflip:
            steps.append(T.RandomHorizontalFlip())
        if aug.rotation > 0:
            steps.append(T.RandomRotation(aug.rotation))
        if aug.color_jitter > 0:
            j = aug.color_jitter
            steps.append(T.ColorJitter(brightness=j, contrast=j, saturation=j))
        steps += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        if aug.random_erasing > 0:
            steps.append(T.RandomErasing(p=aug.random_erasing))
        return BatchableTransform(T.Compose(steps), self, aug)


class BatchableTransform:
    """A per-image PIL transform that can also run on a whole uint8 batch (in-memory data sets).

    Calling it on a PIL image is the torchvision pipeline; ``batch`` does the same steps with tensor ops on
    an (N,H,W) or (N,C,H,W) uint8 tensor, so in-memory sets (IDX) never build a PIL image per sample.
    """

    def __init__(self, compose: Any, preprocess: Preprocess, augment: Augment | None) -> None:
        self.compose, self.preprocess, self.augment = compose, preprocess, augment

    def __call__(self, image: Any) -> Any:
        return self.compose(image)

    def __repr__(self) -> str:
        return repr(self.compose)

    def batch(self, images: Any) -> Any:
        """uint8 (N,H,W) or (N,C,H,W) -> normalised float32 (N,3,S,S)."""
        import torch

        x = torch.as_tensor(images)
        if x.dtype != torch.uint8 or x.ndim not in (3, 4):
            raise ValueError(f"batch transform expects uint8 (N,H,W) or (N,C,H,W), got {x.dtype} {tuple(x.shape)}")
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if self.augment is None:
            return _batch_eval(self.preprocess, x)
        return _batch_train(self.preprocess, self.augment, x)


def _batch_eval(pre: Preprocess, x: Any) -> Any:
    """Resize (shorter side) + centre crop + /255 + mean/std, like ``eval_transform`` on PIL images.

    torchvision's tensor resize with antialias=True on uint8 rounds back to uint8 like PIL does; torchvision
    docs (transforms.functional.resize): "antialias=True ... closer to PIL"; parity is tested to 1 grey level.
    """
    from torchvision.transforms import functional as F

    x = F.resize(x, [pre.resize], interpolation=_interpolation(pre.interpolation), antialias=True)
    x = F.center_crop(x, [pre.image_size, pre.image_size])
    return _normalise(pre, x.float().div_(255.0))


def _normalise(pre: Preprocess, x: Any) -> Any:
    """[0,1] float (N,1|3,S,S) -> (N,3,S,S) minus mean over std (grey is replicated like PIL's convert('RGB'))."""
    import torch

    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _batch_train(pre: Preprocess, aug: Augment, x: Any) -> Any:
    """The augmentations of ``train_transform`` drawn per image but applied as one batched affine resample.

    Crop, flip and rotation are folded into one affine map per image (torch.nn.functional.affine_grid +
    grid_sample, zeros outside the image like RandomRotation's default fill 0). Differences from the PIL
    pipeline, by design: an out-of-bounds RandomResizedCrop box is clamped to the image instead of
    torchvision's 10 retries, and ColorJitter applies brightness, contrast, saturation in this fixed order
    (torchvision shuffles the order per image). Random numbers come from torch's global generator, as
    torchvision's transforms do, so DataLoader worker seeding works the same.
    """
    import torch
    import torch.nn.functional as nnf
    from torchvision.transforms import functional as F

    n, c, h, w = x.shape
    size = pre.image_size
    if size < min(h, w):  # grid_sample does not antialias: shrink first (antialiased) so it only resamples
        x = F.resize(x, [size], interpolation=_interpolation(pre.interpolation), antialias=True)
        n, c, h, w = x.shape
    x = x.float().div_(255.0)
    if aug.random_resized_crop:
        area = torch.empty(n).uniform_(aug.crop_scale_min, 1.0)
        ratio = torch.exp(torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3)))
        half_w = torch.sqrt(area * ratio * h / w).clamp(max=1.0)  # fraction of the width (= half-width in [-1,1])
        half_h = torch.sqrt(area * w / (ratio * h)).clamp(max=1.0)
        cx = (torch.rand(n) * 2 - 1) * (1 - half_w)
        cy = (torch.rand(n) * 2 - 1) * (1 - half_h)
    else:  # Resize(shorter side -> resize) + CenterCrop(image_size)
        shorter = min(h, w)
        half_w = torch.full((n,), size * shorter / (pre.resize * w))
        half_h = torch.full((n,), size * shorter / (pre.resize * h))
        cx = cy = torch.zeros(n)
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0) if aug.hflip else torch.ones(n)
    angle = (torch.rand(n) * 2 - 1) * math.radians(aug.rotation) if aug.rotation > 0 else torch.zeros(n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output coords u -> input coords: centre + diag(half_w, half_h) . flip . R(-angle) . u
    theta = torch.stack([torch.stack([half_w * flip * cos, half_w * flip * sin, cx], 1),
                         torch.stack([-half_h * sin, half_h * cos, cy], 1)], 1)
    grid = nnf.affine_grid(theta, [n, c, size, size], align_corners=False)
    mode = pre.interpolation if pre.interpolation in ("bilinear", "nearest", "bicubic") else "bilinear"
    x = nnf.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False).clamp_(0.0, 1.0)
    if aug.color_jitter > 0:
        j = aug.color_jitter

        def factor() -> Any:
            return torch.empty(n, 1, 1, 1).uniform_(max(0.0, 1 - j), 1 + j)

        x = (x * factor()).clamp_(0.0, 1.0)  # brightness
        f = factor()  # contrast: blend with the image's mean grey level
        x = (x * f + (1 - f) * _grey(x).mean(dim=(1, 2, 3), keepdim=True)).clamp_(0.0, 1.0)
        if c == 3:  # saturation: blend with the grey image (a no-op on grey data)
            f = factor()
            x = (x * f + (1 - f) * _grey(x)).clamp_(0.0, 1.0)
    x = _normalise(pre, x)
    if aug.random_erasing > 0:  # RandomErasing defaults: scale (0.02, 0.33), ratio (0.3, 3.3), value 0
        area = torch.empty(n).uniform_(0.02, 0.33) * size * size
        ratio = torch.exp(torch.empty(n).uniform_(math.log(0.3), math.log(3.3)))
        eh = torch.sqrt(area * ratio).round().clamp(1, size - 1)
        ew = torch.sqrt(area / ratio).round().clamp(1, size - 1)
        top = (torch.rand(n) * (size - eh + 1)).floor()
        left = (torch.rand(n) * (size - ew + 1)).floor()
        rows = torch.arange(size).view(1, size, 1)
        cols = torch.arange(size).view(1, 1, size)
        box = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
               & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)))
        box &= (torch.rand(n) < aug.random_erasing).view(n, 1, 1)
        x = x.masked_fill(box.unsqueeze(1), 0.0)
    return x.contiguous()


def _grey(x: Any) -> Any:
    """ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses; a 1-channel batch is already grey."""
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation switches (each can be turned off)."""

    random_resized_crop: bool = True
    crop_scale_min: float = 0.08
    hflip: bool = True
    rotation: float = 0.0
    color_jitter: float = 0.0
    random_erasing: float = 0.0


def _interpolation(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    try:
        return InterpolationMode(name)
    except ValueError as exc:
        raise UserError(f"interpolation {name!r} is not known; use bilinear, bicubic or nearest") from exc


def preset_for(dataset: str, image_size: int, class_names: tuple[str, ...],
               mean_std: tuple[float, float] | None = None) -> Preprocess:
    """The preset for a data set: digits and IDX sets keep the whole (small, centred) image, photos resize by
    256/224 then crop. IDX sets (``idx``) take the grey mean/std measured on their train split (``mean_std``)."""
    if image_size <= 0:
        raise UserError(f"--image-size {image_size}: must be a positive number of pixels")
    if dataset == "digits":
        return Preprocess(image_size=image_size, resize=image_size, mean=DIGITS_MEAN, std=DIGITS_STD,
                          class_names=class_names)
    if dataset == "idx":
        if mean_std is None:
            raise ValueError("the idx preset needs the mean/std measured on the train split")
        mean, std = (round(float(mean_std[0]), 4),) * 3, (round(float(mean_std[1]), 4),) * 3
        return Preprocess(image_size=image_size, resize=image_size, mean=mean, std=std, class_names=class_names)
    return Preprocess(image_size=image_size, resize=max(image_size, round(image_size * 256 / 224)),
                      class_names=class_names)


def fashion_augment() -> Augment:
    """Fashion-MNIST items are centred and roughly left-right symmetric (flips are the usual augmentation
    for it), but upright: mild crops and flips, no rotation."""
    return Augment(random_resized_crop=True, crop_scale_min=0.7, hflip=True, rotation=0.0)


def digits_augment() -> Augment:
    """Digits are not mirror-symmetric and fill the frame: small rotations, mild crops, no flips."""
    return Augment(random_resized_crop=True, crop_scale_min=0.7, hflip=False, rotation=10.0)
