"""IDX data sets (``--data fashion-mnist`` or a directory of the four MNIST-style files).

Small IDX files are written here byte by byte in the published format (magic, big-endian dimensions,
C-order bytes), gzipped or not; one test reads the real Debian files when dataset-fashion-mnist is installed.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from edgeresnet.data import idx, load_data
from edgeresnet.data.presets import Augment, preset_for
from edgeresnet.errors import UserError

pytestmark = pytest.mark.usefixtures("torch_single_thread", "wide_terminal")
TRAIN_PER_CLASS, TEST_PER_CLASS = 24, 6


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, cut: int = 0) -> Path:
    """``array`` (uint8) as an IDX file; ``magic`` overrides the header's, ``cut`` drops trailing bytes."""
    raw = idx.idx_bytes(array)
    raw = (magic.to_bytes(4, "big") + raw[4:]) if magic is not None else raw
    raw = raw[:len(raw) - cut] if cut else raw
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def make_set(per_class: int, seed: int, classes: int = 10, first_label: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose brightness and a bar position depend on the class, plus noise: real structure to learn."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(first_label, first_label + classes), per_class)
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(len(labels), 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row = 2 + 2 * (label - first_label)
        images[i, row:row + 3, 4:24] = 120 + 12 * (label - first_label)
    return images, labels.astype(np.uint8)


def write_dir(root: Path, gz: bool = True, classes: int = 10, first_label: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, per_class, seed in (("train", TRAIN_PER_CLASS, 1), ("test", TEST_PER_CLASS, 2)):
        images, labels = make_set(per_class, seed, classes, first_label)
        write_idx(root / (idx.FILES[split][0] + suffix), images)
        write_idx(root / (idx.FILES[split][1] + suffix), labels)
    return root


@pytest.fixture()
def idx_dir(tmp_path) -> Path:
    return write_dir(tmp_path / "mnist-like")


# -- reading and splitting ----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_splits_official_test_and_stratified_seeded_val(tmp_path, gz):
    root = write_dir(tmp_path / "set", gz=gz)
    data = load_data(str(root), 28, seed=3)
    assert data.class_names == tuple(str(i) for i in range(10))
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 220, "val": 20, "test": 60}
    test_images, test_labels = make_set(TEST_PER_CLASS, 2)
    assert [s.label for s in data.splits["test"]] == test_labels.tolist()  # the official test file, in order
    np.testing.assert_array_equal(np.stack([s.array for s in data.splits["test"]]), test_images)
    val_counts = np.bincount([s.label for s in data.splits["val"]], minlength=10)
    assert val_counts.tolist() == [2] * 10  # round(24 / 12) per class
    train_images, _ = make_set(TRAIN_PER_CLASS, 1)
    carved = np.stack([s.array for s in data.splits["train"] + data.splits["val"]])
    assert sorted(map(bytes, carved)) == sorted(map(bytes, train_images))  # train + val = the train file, once
    again = load_data(str(root), 28, seed=3)
    assert [bytes(s.array) for s in again.splits["val"]] == [bytes(s.array) for s in data.splits["val"]]
    other = load_data(str(root), 28, seed=4)
    assert [bytes(s.array) for s in other.splits["val"]] != [bytes(s.array) for s in data.splits["val"]]


def test_preset_mean_std_measured_on_the_train_split(idx_dir):
    data = load_data(str(idx_dir), 32)
    pixels = np.stack([s.array for s in data.splits["train"]]).astype(np.float64) / 255.0
    assert data.preprocess.mean == (round(pixels.mean(), 4),) * 3
    assert data.preprocess.std == (round(pixels.std(), 4),) * 3
    assert data.preprocess.resize == data.preprocess.image_size == 32  # whole image, no crop
    assert load_data(str(idx_dir), 32).preprocess == data.preprocess  # deterministic


def test_class_names_fashion_and_label_values(tmp_path):
    fashion = load_data(str(write_dir(tmp_path / "Fashion-MNIST")), 28)
    assert fashion.class_names == idx.FASHION_CLASSES and fashion.augment.hflip
    letters = load_data(str(write_dir(tmp_path / "emnist-letters", classes=26, first_label=1)), 28)
    assert letters.class_names == tuple(str(i) for i in range(1, 27))  # EMNIST letters count from 1
    assert {s.label for s in letters.splits["train"]} == set(range(26))
    assert not letters.augment.hflip


def test_named_fashion_mnist_reads_the_debian_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "FASHION_MNIST_DIR", write_dir(tmp_path / "debian"))
    data = load_data("fashion-mnist", 28)
    assert data.name == "fashion-mnist" and data.class_names == idx.FASHION_CLASSES
    assert len(data.splits["test"]) == 60


# -- bad files: one line naming the file ---------------------------------------------------------------


def test_absent_debian_files_name_the_path_and_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    with pytest.raises(UserError) as exc:
        load_data("fashion-mnist", 28)
    assert str(tmp_path / "not-installed") in str(exc.value) and "apt-get install dataset-fashion-mnist" in str(exc.value)


def test_absent_file_in_a_directory(idx_dir):
    (idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError) as exc:
        load_data(str(idx_dir), 28)
    assert str(idx_dir / "t10k-labels-idx1-ubyte") in str(exc.value) and "apt-get install" in str(exc.value)


@pytest.mark.parametrize("damage, fragment", [
    ("magic", "magic number 0x00000801, expected 0x00000803"),
    ("short", "shorter than its header's 240 x 28 x 28"),
    ("long", "longer than its header's"),
    ("header", "shorter than its 16-byte IDX header"),
    ("counts", "holds 240 images but"),
    ("gzip", "truncated or corrupt gzip"),
])
def test_damaged_files_are_one_line_naming_the_file(idx_dir, damage, fragment):
    images, labels = make_set(TRAIN_PER_CLASS, 1)
    target = idx_dir / "train-images-idx3-ubyte.gz"
    if damage == "magic":
        write_idx(target, images, magic=0x0801)
    elif damage == "short":
        write_idx(target, images, cut=100)
    elif damage == "long":
        target.write_bytes(gzip.compress(gzip.decompress(target.read_bytes()) + b"\0"))
    elif damage == "header":
        target.write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00"))
    elif damage == "counts":
        target = idx_dir / "train-labels-idx1-ubyte.gz"
        write_idx(target, labels[:-5])
    else:
        target.write_bytes(target.read_bytes()[:200])
    with pytest.raises(UserError) as exc:
        load_data(str(idx_dir), 28)
    message = str(exc.value)
    assert "\n" not in message and fragment in message and str(target) in message, message


def test_cli_absent_fashion_mnist_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "FASHION_MNIST_DIR", tmp_path / "missing")
    code, _, err = run_cli(capsys, "train", "--data", "fashion-mnist", "--out", tmp_path / "run", "--epochs", "1",
                           "--no-progress")
    assert_one_line_error(code, err, str(tmp_path / "missing"), "apt-get install dataset-fashion-mnist")
    assert not (tmp_path / "run" / "best.pt").exists()


# -- batched serving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 28, 20])
def test_batched_eval_matches_the_pil_transform(idx_dir, size):
    data = load_data(str(idx_dir), size)
    batched, labels = data.arrays("test")
    transform = data.preprocess.eval_transform()
    per_image = np.stack([transform(s.image()).numpy() for s in data.splits["test"]])
    assert batched.shape == per_image.shape == (60, 3, size, size) and batched.dtype == np.float32
    grey_levels = np.abs(batched - per_image).max() * data.preprocess.std[0] * 255
    assert grey_levels <= 1.0 + 1e-4, grey_levels  # uint8 rounding of the resize, at most one level
    assert labels.tolist() == [s.label for s in data.splits["test"]]


def test_dataloader_gets_whole_batches_without_pil(idx_dir, monkeypatch):
    from PIL import Image
    from torch.utils.data import DataLoader

    data = load_data(str(idx_dir), 32)
    augment = Augment(random_resized_crop=True, crop_scale_min=0.5, hflip=True, rotation=15, color_jitter=0.3,
                      random_erasing=0.5)
    dataset = data.dataset("train", transform=data.preprocess.train_transform(augment))
    calls = []
    monkeypatch.setattr(Image, "fromarray", lambda *a, **k: calls.append(1) / 0)  # any PIL use fails the test
    torch.manual_seed(0)
    batches = list(DataLoader(dataset, batch_size=64, shuffle=True))
    assert not calls and sum(len(y) for _, y in batches) == 220
    x, y = batches[0]
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.isfinite(x).all()


def test_augmentation_is_drawn_per_image(idx_dir):
    data = load_data(str(idx_dir), 32)
    same = torch.from_numpy(np.stack([data.splits["train"][0].array] * 8))
    transform = data.preprocess.train_transform(Augment(crop_scale_min=0.5, hflip=True, rotation=10))
    torch.manual_seed(1)
    out = transform.batch(same)
    assert len({bytes(o.numpy()) for o in out}) == 8  # eight copies, eight different crops
    torch.manual_seed(1)
    assert torch.equal(transform.batch(same), out)  # torch's generator drives it, as torchvision's transforms


def test_augmentation_off_is_the_eval_image(idx_dir):
    data = load_data(str(idx_dir), 28)
    plain = Augment(random_resized_crop=False, hflip=False, rotation=0.0)
    batch = torch.from_numpy(np.stack([s.array for s in data.splits["test"]]))
    trained = data.preprocess.train_transform(plain).batch(batch)
    evaluated = data.preprocess.eval_transform().batch(batch)
    assert (trained - evaluated).abs().max() * data.preprocess.std[0] * 255 < 1e-3


def test_cross_validation_style_copy_serves_its_own_samples(idx_dir):
    import dataclasses

    data = load_data(str(idx_dir), 16)
    fold = dataclasses.replace(data, splits={**data.splits, "train": data.splits["train"][:10],
                                             "holdout": data.splits["val"][:4]})
    assert len(fold.dataset("train")) == 10 and fold.arrays("holdout")[0].shape == (4, 3, 16, 16)


def test_calibration_references_fashion_mnist_samples(tmp_path, monkeypatch):
    from edgeresnet.compress import calibration as cal

    monkeypatch.setattr(idx, "FASHION_MNIST_DIR", write_dir(tmp_path / "debian"))
    data = load_data("fashion-mnist", 28)
    calib = cal.calibration_from_data("fashion-mnist", data.splits["train"], 8)
    assert calib.entries[:2] == ("fashion-mnist:train:0", "fashion-mnist:train:1")
    expected = data.arrays("train", limit=8)[0]
    for loader in (lambda: data, None):  # handed the loaded set, or loading it by the entries' name
        batches = list(cal.load_calibration_images(calib, data.preprocess, loader, batch_size=4))
        assert np.abs(np.concatenate(batches) - expected).max() * data.preprocess.std[0] * 255 <= 1.0 + 1e-4
    listing = tmp_path / "list.txt"
    listing.write_text("fashion-mnist:train:3\nfashion-mnist:val:x\n")
    with pytest.raises(UserError, match="is not a fashion-mnist reference"):
        cal.read_calibration_list(listing)


def test_calibration_references_samples_of_an_idx_directory(tmp_path, idx_dir):
    """Any IDX directory (MNIST, KMNIST, a sample of Fashion-MNIST) calibrates by reference, like the named sets."""
    from edgeresnet.compress import calibration as cal

    data = load_data(str(idx_dir), 28)
    calib = cal.calibration_from_data(str(idx_dir), data.splits["train"], 6)
    assert calib.entries[0] == f"idx:{idx_dir.resolve()}:train:0" and len(calib.entries) == 6
    batches = list(cal.load_calibration_images(calib, data.preprocess, None, batch_size=4))
    assert np.abs(np.concatenate(batches) - data.arrays("train", limit=6)[0]).max() < 1e-5
    listing = tmp_path / "list.txt"
    listing.write_text(f"{calib.entries[2]}\n")
    assert cal.read_calibration_list(listing).entries == (calib.entries[2],)
    listing.write_text(f"idx:{idx_dir}:train\n")
    with pytest.raises(UserError, match="is not a idx reference; write idx:DIRECTORY:train:INDEX"):
        cal.read_calibration_list(listing)


def test_written_idx_files_and_a_class_balanced_sample_read_back(tmp_path, idx_dir):
    images, labels = make_set(3, 5)
    for suffix in ("", ".gz"):
        np.testing.assert_array_equal(idx.read_idx(idx.write_idx(tmp_path / f"i{suffix}", images), 3), images)
        np.testing.assert_array_equal(idx.read_idx(idx.write_idx(tmp_path / f"l{suffix}", labels), 1), labels)
    sample = idx.write_idx_subset(idx_dir, tmp_path / "sample", {"train": 50, "test": 20})
    data = load_data(str(sample), 28)
    assert len(data.splits["test"]) == 20 and len(data.splits["train"]) + len(data.splits["val"]) == 50
    assert np.bincount([s.label for s in data.splits["test"]], minlength=10).tolist() == [2] * 10


def test_idx_preset_needs_measured_stats():
    with pytest.raises(ValueError):
        preset_for("idx", 32, ("a",))


# -- the commands -------------------------------------------------------------------------------------


def test_train_then_evaluate_split_all_on_an_idx_dir(capsys, tmp_path, idx_dir):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", idx_dir, "--out", out, "--epochs", "1", "--max-steps", "2",
                           "--image-size", "16", "--batch-size", "32", "--no-progress", "--warmup-epochs", "0")
    assert code == 0, err
    recorded = json.loads((out / "best.pt.json").read_text())["preprocess"]
    data = load_data(str(idx_dir), 16)
    assert recorded["mean"] == list(data.preprocess.mean) and recorded["std"] == list(data.preprocess.std)
    assert recorded["class_names"] == [str(i) for i in range(10)]
    code, stdout, err = run_cli(capsys, "evaluate", out / "best.pt", "--split", "all", "--json", "-", "--no-plot")
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["split"] == "all" and metrics["n"] == 240 + 60
    code, _, err = run_cli(capsys, "evaluate", out / "best.pt", "--split", "everything")
    assert_one_line_error(code, err, "--split everything", "all")


def test_evaluate_split_all_scores_a_held_out_folder_whole(capsys, tmp_path, tiny_checkpoint):
    from PIL import Image

    folder = tmp_path / "held-out"
    images, labels = make_set(2, 5)
    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{i}.png")
    code, stdout, err = run_cli(capsys, "evaluate", tiny_checkpoint, "--data", folder, "--split", "all", "--json",
                                "-", "--no-plot")
    assert code == 0, err
    assert json.loads(stdout)["n"] == 20  # every image once (--split test would score 15 % of them)


# -- the real files --------------------------------------------------------------------------------


@pytest.mark.skipif(not (idx.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="dataset-fashion-mnist is not installed")
def test_real_debian_fashion_mnist():
    train_images, train_labels = idx.read_pair(idx.FASHION_MNIST_DIR, "train")
    test_images, test_labels = idx.read_pair(idx.FASHION_MNIST_DIR, "test")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
    data = load_data("fashion-mnist", 28)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 55000, "val": 5000, "test": 10000}
    # the widely quoted Fashion-MNIST statistics over all 60,000 training images: mean 0.2860, std 0.3530
    assert abs(data.preprocess.mean[0] - 0.2860) < 0.002 and abs(data.preprocess.std[0] - 0.3530) < 0.002


def test_split_all_counts_a_train_val_tree_once(tmp_path):
    from PIL import Image

    images, labels = make_set(3, 7, classes=3)
    for i, (image, label) in enumerate(zip(images, labels)):
        for part in ("train", "val"):
            (tmp_path / part / f"c{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(tmp_path / part / f"c{label}" / f"{part}{i}.png")
    data = load_data(str(tmp_path), 16)
    assert data.splits["test"] is data.splits["val"]  # no test/: val doubles as test
    assert len(data.samples("all")) == 9 + 9 and data.arrays("all")[0].shape == (18, 3, 16, 16)
    with pytest.raises(UserError, match="use one of train, val, test, all"):
        data.samples("holdout")
