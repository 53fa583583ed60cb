"""Data sources: the embedded ``digits`` set and ImageFolder directories, split train/val/test.

A source yields PIL RGB images and integer labels; ``DataSplits.dataset(split, transform)`` wraps a
split as a torch ``Dataset``. Splits are seeded and stratified so every command sees the same test set.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.data.presets import Augment, Preprocess, digits_augment, preset_for
from edgeresnet.errors import UserError

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass
class Sample:
    """One image: either an in-memory array (digits) or a file path (ImageFolder)."""

    label: int
    array: np.ndarray | None = None  # HxW uint8 grayscale or HxWx3 uint8
    path: Path | None = None

    def image(self) -> Any:
        from PIL import Image

        if self.array is not None:
            mode = "L" if self.array.ndim == 2 else "RGB"
            return Image.fromarray(self.array, mode=mode).convert("RGB")
        assert self.path is not None
        with Image.open(self.path) as img:
            return img.convert("RGB")


@dataclass
class DataSplits:
    """Train/val/test samples of one data set plus the preprocessing contract that goes with it."""

    name: str
    class_names: tuple[str, ...]
    splits: dict[str, list[Sample]]
    preprocess: Preprocess
    augment: Augment
    skipped: list[str] = field(default_factory=list)  # corrupt or non-image files, reported to the user

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def samples(self, split: str) -> list[Sample]:
        """One split's samples; ``all`` is every distinct sample once (a train/val tree without test/ scores
        val as test: the same objects, counted once), so a separate held-out folder is evaluated whole."""
        if split == "all":
            seen: set[int] = set()
            out = []
            for s in (s for key in self.splits for s in self.splits[key]):
                if id(s) not in seen:
                    seen.add(id(s))
                    out.append(s)
            return out
        if split not in self.splits:
            raise UserError(f"split {split!r} is not known; use one of {', '.join(self.splits)}, all")
        return self.splits[split]

    def dataset(self, split: str, transform: Any | None = None) -> ImageDataset:
        return ImageDataset(self.samples(split), transform or self.preprocess.eval_transform())

    def arrays(self, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A split preprocessed for inference, as (N,3,H,W) float32 images and (N,) int64 labels."""
        samples = self.samples(split)[:limit] if limit else self.samples(split)
        transform = self.preprocess.eval_transform()
        images = np.stack([transform(s.image()).numpy() for s in samples]).astype(np.float32)
        labels = np.array([s.label for s in samples], dtype=np.int64)
        return images, labels

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "classes": len(self.class_names),
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "skipped_files": len(self.skipped),
        }


class ImageDataset:
    """A torch-style map dataset over samples with a transform."""

    def __init__(self, samples: Sequence[Sample], transform: Any) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = self.samples[index]
        return self.transform(sample.image()), sample.label

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]


# Data sets named instead of given as a path; both are served from memory (Sample.array, no files).
BUILTIN_SOURCES = ("digits", "fashion-mnist")


def in_memory_source(spec: str) -> bool:
    """A named data set or an IDX directory: samples are arrays, there are no image files to check or list."""
    from edgeresnet.data.idx import is_idx_dir

    return spec in BUILTIN_SOURCES or is_idx_dir(Path(spec))


def load_data(spec: str, image_size: int, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> DataSplits:
    """``digits`` (embedded), ``fashion-mnist`` (Debian's IDX files), a directory of the four IDX files
    (MNIST-style; official test split, val carved from train) or an ImageFolder directory."""
    if spec == "digits":
        return load_digits(image_size, seed, fractions)
    from edgeresnet.data.idx import FASHION_MNIST, is_idx_dir, load_idx

    if spec == FASHION_MNIST or is_idx_dir(Path(spec)):
        return load_idx(spec, image_size, seed)
    return load_image_folder(Path(spec), image_size, seed, fractions)


def load_digits(image_size: int, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> DataSplits:
    """scikit-learn's 1,797 real handwritten 8x8 digits (shipped inside its wheel: no download)."""
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    images = np.clip(bunch.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    samples = [Sample(label=int(y), array=img) for img, y in zip(images, bunch.target)]
    class_names = tuple(str(i) for i in range(10))
    splits = stratified_split(samples, fractions, seed)
    return DataSplits("digits", class_names, splits, preset_for("digits", image_size, class_names), digits_augment())


def stratified_split(samples: list[Sample], fractions: tuple[float, float, float], seed: int) -> dict[str, list[Sample]]:
    """Seeded per-class split so every class is represented in each split in its proportion."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise UserError(f"split fractions {fractions} must be non-negative and sum to 1")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    for label in sorted(by_class):
        group = by_class[label]
        order = rng.permutation(len(group))
        n_val = int(round(len(group) * fractions[1]))
        n_test = int(round(len(group) * fractions[2]))
        if len(group) >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        n_train = len(group) - n_val - n_test
        chosen = [group[i] for i in order]
        out["train"] += chosen[:n_train]
        out["val"] += chosen[n_train:n_train + n_val]
        out["test"] += chosen[n_train + n_val:]
    for key in out:  # interleave classes deterministically
        perm = rng.permutation(len(out[key]))
        out[key] = [out[key][i] for i in perm]
    return out


def with_train_subset(splits: DataSplits, images: int, seed: int = 0, option: str = "--finetune-images") -> DataSplits:
    """``splits`` with its train split cut to ``images`` samples, every class in its proportion (seeded): a
    fine-tune budget stated in images. val and test are untouched, so accuracy is comparable with a full run."""
    import dataclasses

    train = splits.samples("train")
    if images < 1:
        raise UserError(f"{option} {images}: must be at least 1 (leave it out to use the whole train split)")
    if images >= len(train):
        return splits
    fraction = images / len(train)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Sample]] = {}
    for sample in train:
        by_class.setdefault(sample.label, []).append(sample)
    chosen: list[Sample] = []
    for label in sorted(by_class):
        group = by_class[label]
        take = max(1, int(round(len(group) * fraction)))
        chosen += [group[i] for i in sorted(rng.permutation(len(group))[:take])]
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    return dataclasses.replace(splits, splits={**splits.splits, "train": chosen})


def _scan_class_dirs(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"--data {root}: no class sub-folders found; expected ImageFolder layout root/<class>/<image>")
    return classes


def _readable_image(path: Path) -> bool:
    """Whether PIL opens and verifies ``path`` within its pixel limit.

    Pillow's decompression-bomb guard (PIL/Image.py ``_decompression_bomb_check``) warns above
    ``Image.MAX_IMAGE_PIXELS`` (89,478,485 pixels) and raises DecompressionBombError above twice that; both
    are refused here, as Pillow's docs suggest (``warnings.simplefilter('error', Image.DecompressionBombWarning)``),
    so a file claiming 20000x20000 pixels is skipped like a corrupt one instead of being decoded later.
    """
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                img.verify()
        except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError, OSError,
                SyntaxError, ValueError, EOFError):
            return False
    return True


def _scan_images(root: Path, class_names: Sequence[str], skipped: list[str]) -> list[Sample]:
    samples: list[Sample] = []
    for label, name in enumerate(class_names):
        folder = root / name
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        good = 0
        for path in files:
            if path.name.startswith("."):
                continue
            if not _readable_image(path):
                skipped.append(str(path))
                continue
            samples.append(Sample(label=label, path=path))
            good += 1
        if good == 0:
            bad = [s for s in skipped if folder in Path(s).parents]
            why = f" ({len(bad)} unreadable, e.g. {_preview(bad, root, 3)})" if bad else ""
            raise UserError(f"--data {root}: class folder {name!r} has no readable images{why}; add images or "
                            "remove the folder")
    return samples


def _preview(paths: Sequence[str], root: Path, show: int = 5) -> str:
    """The first few paths, relative to the data root (as the user would look for them)."""
    def rel(path: str) -> str:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            return path

    return ", ".join(rel(p) for p in paths[:show]) + (f" ... ({len(paths) - show} more)" if len(paths) > show else "")


def load_image_folder(root: Path, image_size: int, seed: int = 0,
                      fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> DataSplits:
    """An ImageFolder tree; uses ``train/``, ``val/`` (and ``test/``) sub-folders when present."""
    if not root.exists():
        raise UserError(f"--data {root}: directory not found; pass 'digits', 'fashion-mnist', an ImageFolder "
                        "directory or a directory of MNIST-style IDX files")
    if not root.is_dir():
        raise UserError(f"--data {root}: is a file, expected an ImageFolder directory")
    if not any(root.iterdir()):
        raise UserError(f"--data {root}: directory is empty; expected root/<class>/<image> files")
    skipped: list[str] = []
    if (root / "train").is_dir() and (root / "val").is_dir():
        class_names = tuple(_scan_class_dirs(root / "train"))
        splits = {"train": _scan_images(root / "train", class_names, skipped),
                  "val": _scan_images(root / "val", class_names, skipped)}
        test_root = root / "test" if (root / "test").is_dir() else root / "val"
        splits["test"] = splits["val"] if test_root == root / "val" else _scan_images(test_root, class_names, skipped)
    else:
        class_names = tuple(_scan_class_dirs(root))
        splits = stratified_split(_scan_images(root, class_names, skipped), fractions, seed)
    if skipped:
        warnings.warn(f"--data {root}: skipped {len(skipped)} corrupt or non-image file(s): "
                      f"{_preview(skipped, root)}", stacklevel=2)
    counts = Counter(s.label for s in splits["train"])
    if len(counts) < len(class_names):
        missing = [class_names[i] for i in range(len(class_names)) if counts[i] == 0]
        raise UserError(f"--data {root}: classes {missing} have no training images; add more images")
    return DataSplits(root.name, class_names, splits, preset_for("folder", image_size, class_names), Augment(), skipped)
