"""Foundation: data sources and splits, model building/import, artifacts and manifests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeresnet.artifacts import (
    atomic_output,
    build_manifest,
    read_manifest,
    safe_torch_load,
    sha256_file,
    write_manifest,
)
from edgeresnet.data import Preprocess, load_data
from edgeresnet.data.sources import Sample, stratified_split
from edgeresnet.errors import UserError
from edgeresnet.models import (
    ModelSpec,
    build_model,
    conform_to_state_dict,
    import_weights,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
)


# -- data ------------------------------------------------------------------------------------------
def test_digits_split_is_seeded_stratified_and_disjoint():
    a = load_data("digits", 16, seed=0)
    b = load_data("digits", 16, seed=0)
    sizes = {k: len(v) for k, v in a.splits.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] > 250 and sizes["val"] > 250
    assert [s.label for s in a.splits["test"]] == [s.label for s in b.splits["test"]]
    ids = {split: {id(s.array) for s in a.splits[split]} for split in a.splits}
    assert not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert set(s.label for s in a.splits["test"]) == set(range(10))
    images, labels = a.arrays("test", limit=4)
    assert images.shape == (4, 3, 16, 16) and images.dtype == np.float32 and labels.dtype == np.int64


def test_stratified_split_keeps_every_class_in_every_split():
    samples = [Sample(label=i % 3, array=np.zeros((2, 2), np.uint8)) for i in range(30)]
    out = stratified_split(samples, (0.6, 0.2, 0.2), seed=1)
    for split in out.values():
        assert {s.label for s in split} == {0, 1, 2}
    with pytest.raises(UserError):
        stratified_split(samples, (0.5, 0.2, 0.2), seed=1)


def _write_png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)


def test_image_folder_reports_and_skips_corrupt_files(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(6):
            _write_png(tmp_path / cls / f"{i}.png", 40 * i)
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"not really a jpeg")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match=r"skipped 2 corrupt or non-image file\(s\): .*broken.jpg"):
        splits = load_data(str(tmp_path), 24)
    assert splits.class_names == ("cat", "dog")
    assert len(splits.skipped) == 2
    assert sum(len(v) for v in splits.splits.values()) == 12
    x, _ = splits.arrays("train")
    assert x.shape[1:] == (3, 24, 24)


def test_image_folder_uses_train_val_subfolders(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                _write_png(tmp_path / split / cls / f"{i}.png", 10 * i)
    splits = load_data(str(tmp_path), 16)
    assert len(splits.splits["train"]) == 8 and len(splits.splits["val"]) == 4
    assert splits.splits["test"] is splits.splits["val"]


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "directory not found"),
        ("empty", "directory is empty"),
        ("noclass", "no class sub-folders"),
        ("emptyclass", "has no readable images"),
    ],
)
def test_image_folder_hostile_inputs(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "noclass":
        (root / "x.png").write_bytes(b"x")
    if layout == "emptyclass":
        _write_png(root / "a" / "0.png", 1)
        (root / "b").mkdir()
    with pytest.raises(UserError, match=message):
        load_data(str(root), 16)


def test_preprocess_round_trips_and_rejects_bad_size():
    from edgeresnet.data.presets import preset_for

    pre = preset_for("folder", 224, ("a", "b"))
    assert pre.resize == 256
    again = Preprocess.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre
    assert pre.with_size(112).resize == 128
    with pytest.raises(UserError, match="--image-size"):
        preset_for("digits", 0, ())


# -- models ----------------------------------------------------------------------------------------
def test_spec_validation():
    with pytest.raises(UserError, match="--arch"):
        ModelSpec("vgg16", 10)
    with pytest.raises(UserError, match="--num-classes"):
        ModelSpec("resnet18", 0)
    with pytest.raises(UserError, match="--dropout"):
        ModelSpec("resnet18", 10, dropout=1.0)


def test_small_stem_and_dropout_keep_torchvision_keys():
    plain = build_model(ModelSpec("resnet18", 10))
    small = build_model(ModelSpec("resnet18", 10, small_stem=True, dropout=0.3))
    assert set(plain.state_dict()) == set(small.state_dict())
    small.eval()
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_checkpoint_round_trip_with_narrower_layers(tmp_path):
    spec = ModelSpec("resnet18", 10, small_stem=True)
    model = build_model(spec)
    state = model.state_dict()
    # narrow layer1.0's inner conv to 32 channels, as pruning would
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"][:32].clone()
    for key in ("weight", "bias", "running_mean", "running_var"):
        state[f"layer1.0.bn1.{key}"] = state[f"layer1.0.bn1.{key}"][:32].clone()
    state["layer1.0.conv2.weight"] = state["layer1.0.conv2.weight"][:, :32].clone()
    narrow = conform_to_state_dict(build_model(spec), state)
    narrow.load_state_dict(state)
    path = tmp_path / "narrow.pt"
    torch.save(make_checkpoint(narrow, spec, {"image_size": 32}), path)
    loaded, loaded_spec = model_from_checkpoint(load_checkpoint(path), path)
    assert loaded_spec == spec
    assert loaded.layer1[0].conv1.out_channels == 32
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), narrow.eval()(x))


def test_import_torchvision_and_timm_style_files(tmp_path):
    source = build_model(ModelSpec("resnet18", 1000))
    tv = tmp_path / "tv.pth"
    torch.save(source.state_dict(), tv)
    model, notes = import_weights(tv, ModelSpec("resnet18", 7))
    assert any("re-initialised" in n for n in notes)
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight)
    timm_like = tmp_path / "timm.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, timm_like)
    model, notes = import_weights(timm_like, ModelSpec("resnet18", 1000))
    assert notes == []
    torch.testing.assert_close(model.fc.weight, source.fc.weight)


def test_import_wrong_arch_is_one_line_error(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(build_model(ModelSpec("resnet18", 10)).state_dict(), path)
    with pytest.raises(UserError, match="check --arch|is --arch right") as info:
        import_weights(path, ModelSpec("resnet50", 10))
    assert "\n" not in str(info.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/edgeresnet_pwned_marker",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = Path("/tmp/edgeresnet_pwned_marker")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil()}, path)
    with pytest.raises(UserError, match="refused"):
        safe_torch_load(path)
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(build_model(ModelSpec("resnet18", 10)).state_dict(), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(UserError, match="truncated or not a PyTorch file"):
        safe_torch_load(cut)
    with pytest.raises(UserError, match="not an edgeresnet checkpoint"):
        load_checkpoint(good)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        safe_torch_load(empty)


# -- artifacts -------------------------------------------------------------------------------------
def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"


def test_atomic_output_makes_a_missing_directory_and_refuses_a_file_in_the_way(tmp_path):
    with atomic_output(tmp_path / "nope" / "x.onnx") as tmp:
        tmp.write_bytes(b"onnx")
    assert (tmp_path / "nope" / "x.onnx").read_bytes() == b"onnx"
    with pytest.raises(UserError, match="is a file, not a directory"):
        with atomic_output(tmp_path / "nope" / "x.onnx" / "y.onnx"):
            pass


def test_manifest_records_inputs_by_sha256(tmp_path):
    src = tmp_path / "a.pt"
    src.write_bytes(b"source")
    out = tmp_path / "b.onnx"
    out.write_bytes(b"artifact")
    manifest = build_manifest("onnx", out, command="export", inputs={"checkpoint": src}, settings={"opset": 17})
    write_manifest(out, manifest)
    back = read_manifest(out, required=True)
    assert back["sha256"] == sha256_file(out)
    assert back["inputs"]["checkpoint"]["sha256"] == sha256_file(src)
    assert back["versions"]["torch"] == torch.__version__.split("+")[0] or back["versions"]["torch"].startswith("2.")
    (tmp_path / "b.onnx.json").write_text("{broken")
    with pytest.raises(UserError, match="not valid JSON"):
        read_manifest(out)


def test_atomic_output_gives_ordinary_file_permissions(tmp_path):
    target = tmp_path / "model.engine"
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
