"""IDX data sets (Fashion-MNIST, MNIST, KMNIST, EMNIST): the four official files, kept as uint8 in memory.

The IDX format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): two zero bytes, a type byte
(0x08 = unsigned byte), a byte with the number of dimensions, then each dimension as a 4-byte big-endian
integer, then the data in C order. Image files are 3-D (count, rows, cols), label files 1-D (count).

The official test file is the test split; validation is carved from the training file (seeded, stratified,
1/12 of each class: 5,000 of Fashion-MNIST's 60,000, leaving the 55,000/5,000 train/val split TensorFlow's
MNIST tutorial used). Batches are resized and normalised as tensors (``IdxDataset.__getitems__``), never one
PIL image per sample.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.data.presets import digits_augment, fashion_augment, preset_for
from edgeresnet.data.sources import DataSplits, Sample
from edgeresnet.errors import UserError

FASHION_MNIST = "fashion-mnist"
# Debian package dataset-fashion-mnist installs the four gzipped files here (its file list, `dpkg -L`).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Zalando's fashion-mnist README, "Labels": 0 T-shirt/top ... 9 Ankle boot.
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # type 0x08 (ubyte), 3 resp. 1 dimensions
VAL_FRACTION = 1 / 12
INSTALL_HINT = "apt-get install dataset-fashion-mnist"


def idx_file(root: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``root`` (the uncompressed one first), None when neither exists."""
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def is_idx_dir(path: Path) -> bool:
    """A directory holding any of the four IDX file names (then it is read as IDX, not as an ImageFolder)."""
    return path.is_dir() and any(idx_file(path, stem) for pair in FILES.values() for stem in pair)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (gzipped or not: told by the gzip magic bytes 1f 8b, RFC 1952 2.3.1) as a uint8 array."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"--data: {path}: truncated or corrupt gzip file ({exc.__class__.__name__}); "
                        "download or reinstall it") from exc
    except OSError as exc:
        raise UserError(f"--data: {path}: cannot be read ({exc.strerror or exc.__class__.__name__})") from exc
    expected = IMAGES_MAGIC if ndim == 3 else LABELS_MAGIC
    header = 4 + 4 * ndim
    if len(raw) < 4:
        raise UserError(f"--data: {path}: {len(raw)} bytes, shorter than an IDX header; download it again")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected:
        kind = "images" if ndim == 3 else "labels"
        raise UserError(f"--data: {path}: magic number 0x{magic:08x}, expected 0x{expected:08x} (IDX {kind}, "
                        f"unsigned bytes, {ndim}-D); is it the right file?")
    if len(raw) < header:
        raise UserError(f"--data: {path}: {len(raw)} bytes, shorter than its {header}-byte IDX header; "
                        "download it again")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != size:
        which = "shorter" if len(raw) - header < size else "longer"
        raise UserError(f"--data: {path}: {len(raw) - header} data bytes, {which} than its header's "
                        f"{' x '.join(map(str, dims))} = {size}; download it again")
    # a bytearray keeps the array writable (torch.from_numpy warns on read-only buffers)
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(dims)


def read_pair(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one official split, checked to pair up."""
    paths = []
    for stem in FILES[split]:
        path = idx_file(root, stem)
        if path is None:
            hint = (f"install it with `{INSTALL_HINT}`" if root == FASHION_MNIST_DIR
                    else f"put the four IDX files there (or `{INSTALL_HINT}` and pass --data {FASHION_MNIST})")
            raise UserError(f"--data: {root / stem}[.gz] not found; {hint}")
        paths.append(path)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if len(images) != len(labels):
        raise UserError(f"--data: {paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels; "
                        "the files are from different sets or truncated")
    if len(images) == 0:
        raise UserError(f"--data: {paths[0]} holds no images")
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8, 1-3 dimensions) in the format ``read_idx`` reads: magic 0x08 0x0D (unsigned bytes,
    D dimensions), each size big-endian, then the data."""
    data = np.ascontiguousarray(array, dtype=np.uint8)
    header = (0x0800 + data.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    return header + data.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """``array`` as an IDX file, gzipped when ``path`` ends in .gz."""
    import gzip

    raw = idx_bytes(array)
    Path(path).write_bytes(gzip.compress(raw) if Path(path).suffix == ".gz" else raw)
    return Path(path)


def write_idx_subset(source: Path, out: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    """A class-balanced sample of ``sizes[split]`` images of each official split of the IDX set in ``source``,
    written as the four files into ``out`` (a quick run on the same kind of data; labels stay balanced)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for split, (images_stem, labels_stem) in FILES.items():
        images, labels = read_pair(source, split)
        n = min(sizes[split], len(labels))
        classes = np.unique(labels)
        per_class = [rng.permutation(np.flatnonzero(labels == c))[: -(-n // len(classes))] for c in classes]
        chosen = np.sort(np.concatenate(per_class))[:n]
        write_idx(out / f"{images_stem}.gz", images[chosen])
        write_idx(out / f"{labels_stem}.gz", labels[chosen])
    return out


def carve_val(labels: np.ndarray, seed: int, fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: per class a seeded ``fraction`` (at least one image of a class with two or more)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = members[rng.permutation(len(members))]
        n_val = int(round(len(members) * fraction))
        if len(members) >= 2:
            n_val = max(n_val, 1)
        val.append(order[:n_val])
        train.append(order[n_val:])
    train_idx, val_idx = np.concatenate(train), np.concatenate(val)
    return train_idx[rng.permutation(len(train_idx))], val_idx[rng.permutation(len(val_idx))]


def pixel_mean_std(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of pixel/255 over ``images`` at their native size, from the integer histogram: exact and
    independent of summation order, so the same split always records the same preset."""
    counts = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    mean = float((counts * values).sum() / total)
    std = float(np.sqrt((counts * (values - mean) ** 2).sum() / total))
    return mean, std


class IdxSplits(DataSplits):
    """``DataSplits`` whose samples are uint8 arrays of one size, served a batch of tensors at a time.

    The batch arrays are stacked from ``splits`` on each call, so a copy with other splits
    (``dataclasses.replace(splits, splits=...)``, as cross-validation makes) serves exactly those samples.
    """

    def _arrays_of(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        samples = self.samples(split)
        if not samples:
            return np.zeros((0, 1, 1), np.uint8), np.zeros(0, np.int64)
        arrays = [s.array for s in samples if s.array is not None]  # every IDX sample is an array
        return np.stack(arrays), np.array([s.label for s in samples], dtype=np.int64)

    def dataset(self, split: str, transform: Any | None = None) -> Any:  # an IdxDataset, ImageDataset's interface
        images, labels = self._arrays_of(split)
        return IdxDataset(images, labels, transform or self.preprocess.eval_transform())

    def arrays(self, split: str, limit: int | None = None, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """A split preprocessed for inference as (N,3,H,W) float32 and (N,) int64, a batch of tensors at a time."""
        import torch

        images, labels = self._arrays_of(split)
        if limit:
            images, labels = images[:limit], labels[:limit]
        transform = self.preprocess.eval_transform()
        out = np.empty((len(images), 3, self.preprocess.image_size, self.preprocess.image_size), np.float32)
        with torch.no_grad():
            for start in range(0, len(images), batch):
                out[start:start + batch] = transform.batch(torch.from_numpy(images[start:start + batch])).numpy()
        return out, labels.astype(np.int64)


class IdxDataset:
    """The dataset interface of ``ImageDataset`` (len, items, ``labels``) over a uint8 (N,H,W) array.

    ``torch.utils.data.DataLoader`` hands a map dataset with ``__getitems__`` the whole batch of indices
    (torch/utils/data/_utils/fetch.py, _MapDatasetFetcher.fetch), so one batch is transformed at once.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any) -> None:
        self.images, self._labels, self.transform = images, labels.astype(np.int64), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, int]]:
        import torch

        index = np.asarray(indices, dtype=np.int64)
        labels = self._labels[index].tolist()
        batch_fn = getattr(self.transform, "batch", None)
        if batch_fn is None:  # a caller's own per-image transform: PIL images, as ImageDataset serves them
            from PIL import Image

            return [(self.transform(Image.fromarray(self.images[i]).convert("RGB")), label)
                    for i, label in zip(index, labels)]
        with torch.no_grad():
            x = batch_fn(torch.from_numpy(self.images[index]))
        return list(zip(x.unbind(0), labels))

    @property
    def labels(self) -> list[int]:
        return self._labels.tolist()


def load_idx(spec: str, image_size: int, seed: int = 0) -> IdxSplits:
    """``fashion-mnist`` (the Debian files) or a directory with the four IDX files (MNIST, KMNIST, EMNIST ...)."""
    root = FASHION_MNIST_DIR if spec == FASHION_MNIST else Path(spec)
    fashion = spec == FASHION_MNIST or root.resolve() == FASHION_MNIST_DIR.resolve() or "fashion" in root.name.lower()
    if spec == FASHION_MNIST and not root.is_dir():
        raise UserError(f"--data {FASHION_MNIST}: {root} not found; install it with `{INSTALL_HINT}` "
                        "(or pass --data DIR holding the four IDX files)")
    train_images, train_labels = read_pair(root, "train")
    test_images, test_labels = read_pair(root, "test")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise UserError(f"--data {spec}: train images are {train_images.shape[1]}x{train_images.shape[2]} but test "
                        f"images {test_images.shape[1]}x{test_images.shape[2]}; the files are from different sets")
    present = np.unique(train_labels)
    class_names: tuple[str, ...]
    if fashion:
        if present.max() >= len(FASHION_CLASSES) or test_labels.max() >= len(FASHION_CLASSES):
            raise UserError(f"--data {spec}: labels go up to {int(max(present.max(), test_labels.max()))}, "
                            f"Fashion-MNIST has {len(FASHION_CLASSES)} classes; is it another IDX set?")
        class_names, values = FASHION_CLASSES, np.arange(len(FASHION_CLASSES))
    else:  # classes are the label values present in train (EMNIST letters count from 1), in order
        values = present
        class_names = tuple(str(int(v)) for v in values)
    unknown = np.setdiff1d(np.unique(test_labels), values)
    if len(unknown):
        raise UserError(f"--data {spec}: test labels {unknown[:5].tolist()} never occur in the training labels")
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    train_labels, test_labels = lookup[train_labels], lookup[test_labels]
    missing = [class_names[i] for i in range(len(class_names)) if not np.any(train_labels == i)]
    if missing:
        raise UserError(f"--data {spec}: classes {missing} have no training images; is the train file complete?")
    train_idx, val_idx = carve_val(train_labels, seed)
    images = {"train": train_images[train_idx], "val": train_images[val_idx], "test": test_images}
    labels = {"train": train_labels[train_idx], "val": train_labels[val_idx], "test": test_labels}
    stats = pixel_mean_std(images["train"])
    splits = {k: [Sample(label=int(y), array=img) for img, y in zip(images[k], labels[k])] for k in images}
    name = FASHION_MNIST if fashion and spec == FASHION_MNIST else root.name
    return IdxSplits(name, class_names, splits, preset_for("idx", image_size, class_names, stats),
                     fashion_augment() if fashion else digits_augment())
