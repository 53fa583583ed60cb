"""Plan-header parsing without TensorRT, on synthetic bytes and on recorded real headers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from edgeresnet.errors import UserError
from edgeresnet.trt.planfile import PLAN_TAG, check_plan_file, parse_plan_header, read_plan_header


def synthetic_plan(version=(10, 3, 0, 26), size=4096, word=0) -> bytes:
    head = struct.pack("<II", PLAN_TAG, word) + bytes(16) + bytes(version)
    return head + bytes(size - len(head))


# First 32 bytes of a real TensorRT-RTX 1.7.1 plan built on this CPU-only machine ("vtrt" tag).
RTX_HEADER = bytes.fromhex("76747274000000000200000000000000d47b0600000000000107017476747274")


def test_tag_is_ftrt():
    assert struct.pack("<I", PLAN_TAG) == b"ftrt"


def test_version_bytes_24_to_27():
    header = parse_plan_header(synthetic_plan((8, 5, 2, 2)))
    assert header.is_plan and header.version == (8, 5, 2, 2) and header.trt_version == (8, 5, 2)
    assert header.version_string == "8.5.2.2" and header.flavor == "tensorrt"


def test_unknown_layout_is_best_effort():
    header = parse_plan_header(synthetic_plan(word=3))
    assert header.is_plan and header.version is None and "unknown layout" in header.reason


def test_rtx_plan_is_recognised_without_a_version():
    header = parse_plan_header(RTX_HEADER, size=424916)
    assert header.is_plan and header.flavor == "tensorrt-rtx" and header.version is None


@pytest.mark.parametrize(
    "data, reason",
    [(b"", "empty"), (b"ftr", "too short"), (b"\x08\x01\x12\x04onnx-model-bytes-here-xxxxxxxx", "no TensorRT plan tag"),
     (b"ftrt\x00\x00\x00\x00abcd", "truncated")],
)
def test_not_plans(data, reason):
    header = parse_plan_header(data)
    assert reason in header.reason


def test_check_plan_file(tmp_path):
    good = tmp_path / "m.engine"
    good.write_bytes(synthetic_plan((10, 3, 0, 26)))
    assert check_plan_file(good, "10.3").version == (10, 3, 0, 26)
    assert check_plan_file(good, (10, 3, 0)).is_plan
    with pytest.raises(UserError, match=r"built by TensorRT 10.3.0.26, this runtime is 10.13; rebuild"):
        check_plan_file(good, "10.13")
    onnx_like = tmp_path / "m.onnx.engine"
    onnx_like.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(2000))
    with pytest.raises(UserError, match="not a TensorRT engine"):
        check_plan_file(onnx_like)
    cut = tmp_path / "cut.engine"
    cut.write_bytes(synthetic_plan()[:200])
    with pytest.raises(UserError, match=r"engine is truncated \(200 bytes\)"):
        check_plan_file(cut)
    with pytest.raises(UserError, match="engine file not found"):
        read_plan_header(tmp_path / "none.engine")
    assert read_plan_header(good).size == 4096


# -- real headers from public plans (tests/data/planfile/README.md names each source) ---------------------------

REAL = json.loads((Path(__file__).parent / "data" / "planfile" / "headers.json").read_text())["plans"]
BY_NAME = {p["name"]: p for p in REAL}


def _real(name: str):
    plan = BY_NAME[name]
    return parse_plan_header(bytes.fromhex(plan["head"]), size=plan["size"]), plan


@pytest.mark.parametrize("name", [p["name"] for p in REAL if p["version"]])
def test_real_ftrt_plans_name_their_version_in_bytes_24_to_27(name):
    header, plan = _real(name)
    assert header.is_plan and header.flavor == "tensorrt" and header.layout == "ftrt"
    assert header.version_string == plan["version"] and header.reason == ""
    assert header.declared_size == plan["size"]  # bytes 16..23: the plan's size


def test_real_8_6_plan_is_checked_and_refused_by_another_runtime(tmp_path):
    plan = BY_NAME["trt-8.6.1.6-a"]
    engine = tmp_path / "m.engine"
    engine.write_bytes(bytes.fromhex(plan["head"]) + bytes(plan["size"] - 32))
    assert check_plan_file(engine, "8.6.1").version == (8, 6, 1, 6)
    with pytest.raises(UserError, match=r"built by TensorRT 8.6.1.6, this runtime is 10.3; rebuild"):
        check_plan_file(engine, "10.3")


def test_real_pre_8_6_plan_is_a_plan_without_a_version(tmp_path):
    header, plan = _real("trt-pre-8.6-serialization-205")
    assert header.is_plan and header.flavor == "tensorrt" and header.layout == "ptrt"
    assert header.version is None and header.serialization_version == 205 and header.legacy_release == "8.2"
    assert "before 8.6" in header.reason and "advisory" in header.reason
    engine = tmp_path / "nano.engine"
    engine.write_bytes(bytes.fromhex(plan["head"]) + bytes(4096))
    # advisory: the header cannot say which TensorRT wrote it, so no runtime version is refused on it
    assert check_plan_file(engine, "8.2.1").is_plan
    assert check_plan_file(engine, "10.3").version is None


def test_real_tensorrt7_plan_is_recognised():
    header, _ = _real("trt-7.x-2021")
    assert header.is_plan and header.layout == "ptrt" and header.serialization_word == 97
    assert header.version is None and header.serialization_version is None


def test_rtx_header_declares_its_size():
    header = parse_plan_header(RTX_HEADER, size=424916)
    assert header.declared_size == 424916 and header.layout == "vtrt"


def test_cut_plan_is_truncated_by_its_declared_size(tmp_path):
    plan = BY_NAME["trt-10.3.0.26"]
    cut = tmp_path / "cut.engine"
    cut.write_bytes(bytes.fromhex(plan["head"]) + bytes(500_000))  # well above the plausibility floor
    assert parse_plan_header(cut.read_bytes()[:64], size=cut.stat().st_size).declared_size == 862484
    with pytest.raises(UserError, match=r"engine is truncated \(500032 bytes, its header says 862484\)"):
        check_plan_file(cut)
