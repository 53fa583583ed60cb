"""Typed manifests (edgeresnet/artifacts/manifests.py): round trip, versions, damaged files, typed readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeresnet.artifacts import (
    MANIFEST_VERSION,
    CheckpointManifest,
    EngineManifest,
    Manifest,
    OnnxManifest,
    build_manifest,
    read_any_manifest,
    read_manifest,
    write_manifest,
)
from edgeresnet.errors import UserError

PRE = {"image_size": 32, "resize": 36, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
       "class_names": ["a", "b", "c"]}


def _artifact(tmp_path: Path, name: str = "model.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(b"\x08\x07" * 50)
    return path


def test_round_trip_keeps_every_key_in_order(tmp_path):
    art = _artifact(tmp_path)
    data = build_manifest("onnx", art, command="export", settings={"opset": 17},
                          extra={"preprocess": PRE, "batch_profile": {"min": 1, "opt": 4, "max": 8, "dynamic": True},
                                 "precision": "FP16", "ir_version": 9})
    assert data["manifest_version"] == MANIFEST_VERSION
    write_manifest(art, data)
    typed = read_any_manifest(art)
    assert isinstance(typed, OnnxManifest)
    assert list(typed.to_dict()) == list(data)
    assert typed.to_dict() == json.loads((tmp_path / "model.onnx.json").read_text())
    assert (typed.image_size, typed.precision, typed.ir_version, typed.size_bytes) == (32, "fp16", 9, 100)
    assert typed.batch_profile.max == 8
    assert typed.preprocess.class_names == ("a", "b", "c")
    again = tmp_path / "again.onnx"
    again.write_bytes(art.read_bytes())
    typed.write(again)
    assert OnnxManifest.read(again) == typed


def test_manifest_written_today_adds_only_the_version_key(tmp_path):
    art = _artifact(tmp_path, "best.pt")
    keys = set(build_manifest("checkpoint", art, command="train"))
    assert keys == {"kind", "file", "sha256", "size_bytes", "created", "command", "argv", "versions", "host",
                    "inputs", "settings", "manifest_version"}


def test_old_file_without_version_reads_as_version_1(tmp_path):
    art = _artifact(tmp_path, "best.pt")
    old = build_manifest("checkpoint", art, command="train", extra={"preprocess": PRE, "epoch": 3})
    del old["manifest_version"]
    (tmp_path / "best.pt.json").write_text(json.dumps(old))
    typed = CheckpointManifest.require(art)
    assert typed.manifest_version == 1
    assert typed.preprocess.image_size == 32 and typed.epoch == 3
    assert read_manifest(art) == old  # the plain-dict reader returns the file as it is


@pytest.mark.parametrize("reader", [read_manifest, read_any_manifest, CheckpointManifest.read])
def test_newer_version_refused_in_one_line(tmp_path, reader):
    art = _artifact(tmp_path, "best.pt")
    data = build_manifest("checkpoint", art, command="train")
    data["manifest_version"] = MANIFEST_VERSION + 1
    (tmp_path / "best.pt.json").write_text(json.dumps(data))
    with pytest.raises(UserError) as info:
        reader(art)
    assert str(info.value) == (f"{tmp_path / 'best.pt.json'}: manifest version {MANIFEST_VERSION + 1} is newer "
                               f"than this edgeresnet understands ({MANIFEST_VERSION}); upgrade edgeresnet")


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"kind": "checkpoint", "size_bytes": "big"}', "'size_bytes' is not a whole number"),
    ('{"kind": "checkpoint", "preprocess": [32]}', "'preprocess' is not an object"),
    ('{"kind": "checkpoint", "manifest_version": "two"}', "manifest_version 'two'"),
    ('{"kind": "tensorrt-engine", "engine": {"profiles": [{"min": 1}]}}', "'engine.profiles'"),
    ('{"kind": "tensorrt-engine", "engine": {"dla_core": "zero"}}', "'engine.dla_core'"),
])
def test_damaged_manifest_refused_naming_the_file(tmp_path, text, words):
    art = _artifact(tmp_path, "model.engine")
    (tmp_path / "model.engine.json").write_text(text)
    with pytest.raises(UserError) as info:
        read_any_manifest(art)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'model.engine.json'}: ") and words in message
    assert "\n" not in message


def test_absent_manifest_is_none_or_a_one_line_error(tmp_path):
    art = _artifact(tmp_path)
    assert read_any_manifest(art) is None and Manifest.read(art) is None
    with pytest.raises(UserError, match="no manifest model.onnx.json beside it"):
        OnnxManifest.require(art)


def test_engine_manifest_accessors(tmp_path):
    art = _artifact(tmp_path, "model.engine")
    section = {"format": "edgeresnet-trt-engine", "format_version": 1, "builder": "tensorrt-rtx",
               "tensorrt_version": "1.2.0", "target": "rtx-4090", "precision": "fp16", "precision_label": "FP16",
               "input": {"name": "input", "shape": [-1, 3, 32, 32]}, "dla_core": None,
               "profiles": [{"input": "input", "min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [8, 3, 32, 32]}],
               "build_options": {"version_compatible": True, "hardware_compatibility": "AMPERE_PLUS"}}
    write_manifest(art, build_manifest("tensorrt-engine", art, command="build", inputs={"onnx": art},
                                       extra={"engine": section, "gpu": {"name": "RTX", "compute_capability": 8.9},
                                              "preprocess": None, "rebuild_command": None}))
    typed = read_any_manifest(art)
    assert isinstance(typed, EngineManifest) and typed.is_edgeresnet_engine
    engine = typed.engine
    assert (engine.builder, engine.input_shape, engine.version_compatible) == ("tensorrt-rtx", (-1, 3, 32, 32), True)
    assert (engine.profiles[0].min, engine.profiles[0].opt, engine.profiles[0].max) == (1, 4, 8)
    assert typed.gpu.compute_capability == "8.9" and typed.precision == "fp16"
    assert typed.input("onnx").path == str(art) and typed.rebuild_command is None and typed.preprocess is None


def test_benchmark_precision_comes_from_the_typed_manifest(tmp_path):
    """What find_in_manifest found by searching nested dicts, the typed accessors name directly."""
    from edgeresnet.bench.artifact import artifact_precision, input_image_size, model_size_bytes

    engine = {"kind": "tensorrt-engine", "size_bytes": 7, "engine": {"precision_label": "INT8"}, "preprocess": PRE}
    assert artifact_precision(Path("m.engine"), engine) == "int8"
    assert model_size_bytes(Path("m.engine"), engine) == 7
    checkpoint = {"kind": "checkpoint", "settings": {"precision": "bf16"}, "preprocess": PRE}
    assert artifact_precision(Path("m.pt"), checkpoint) == "bf16"
    assert artifact_precision(Path("m.pt"), {"kind": "checkpoint"}) == "fp32"

    class Dynamic:
        input_shape = ("batch", 3, "h", "w")

    assert input_image_size(Dynamic(), checkpoint, None, Path("m.pt")) == 32
