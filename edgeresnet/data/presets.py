"""Preprocessing presets: the contract between training, export and deployment.

Everything a deployment must reproduce exactly (input size, resize, mean/std, channel order, scaling,
class names) lives in ``Preprocess``; it is saved in every checkpoint manifest, written into the ONNX
``metadata_props`` and read back by later stages. Augmentation (training only) is built here too so the
preprocessing code exists in one place.
"""

from __future__ import annotations

import dataclasses
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

        return T.Compose(
            [
                T.Resize(self.resize, interpolation=_interpolation(self.interpolation)),
                T.CenterCrop(self.image_size),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

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
        return T.Compose(steps)


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


def preset_for(dataset: str, image_size: int, class_names: tuple[str, ...]) -> Preprocess:
    """The preset for a data set: digits keeps the whole (tiny) image, photos resize by 256/224 then crop."""
    if image_size <= 0:
        raise UserError(f"--image-size {image_size}: must be a positive number of pixels")
    if dataset == "digits":
        return Preprocess(image_size=image_size, resize=image_size, mean=DIGITS_MEAN, std=DIGITS_STD,
                          class_names=class_names)
    return Preprocess(image_size=image_size, resize=max(image_size, round(image_size * 256 / 224)),
                      class_names=class_names)


def digits_augment() -> Augment:
    """Digits are not mirror-symmetric and fill the frame: small rotations, mild crops, no flips."""
    return Augment(random_resized_crop=True, crop_scale_min=0.7, hflip=False, rotation=10.0)
