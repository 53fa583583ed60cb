"""Plan-header parsing without TensorRT, on synthetic bytes and on recorded real headers."""

from __future__ import annotations

import struct

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
