"""classify_trt_messages on the strings TensorRT and CUDA really log, each from a public log named beside it."""

from __future__ import annotations

import pytest

from edgeresnet.errors import UserError
from edgeresnet.trt.errors import KINDS, EngineLoadError, classify_trt_messages

# Recorded messages; the comment names the GitHub repository#issue each was pasted in.
TRT10_VERSION = ("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion "
                 "stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not match. Note: Current Version: "
                 "237, Serialized Engine Version: 239)")  # yuvraj108c/ComfyUI-Dwpose-Tensorrt#5
TRT8_VERSION = ["[stdArchiveReader.cpp::StdArchiveReader::40] Error Code 1: Serialization (Serialization assertion "
                "stdVersionRead == serializationVersion failed.Version tag does not match.)",
                "[runtime.cpp::deserializeCudaEngine::50] Error Code 4: Internal Error (Engine deserialization failed.)"]
MAGIC = "Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match"  # tensorrt-insight#65
WRONG_GPU = ("IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan file is generated on an "
             "incompatible device, expecting compute 8.9 got compute 8.6, please rebuild.)")  # insightface#2882
CUDA35 = "CUDA initialization failure with error: 35. Please check your CUDA installation"  # TensorRT#2913
CUDA100 = "CUDA initialization failure with error: 100"  # CUDA_VISIBLE_DEVICES=-1
CUDA2_NEW = "createInferBuilder: Error Code 6: API Usage Error (CUDA initialization failure with error: 2 ...)"
RTX_NO_DRIVER = "[defaultAllocator.cpp::catchCudaError] cudaError 35: CUDA driver version is insufficient"  # RTX 1.7
YOLOX = "[runtime.cpp::isCudaInstalledCorrectly::41] Error Code 6: Cuda Runtime (initialization error)"  # YOLOX#515


@pytest.mark.parametrize(
    "messages, kind",
    [
        ([TRT10_VERSION], "version_mismatch"),
        (TRT8_VERSION, "version_mismatch"),
        ([MAGIC], "not_a_plan"),
        ([WRONG_GPU], "wrong_compute_capability"),
        ([CUDA35, "pybind11::init(): factory function returned nullptr"], "no_cuda_driver"),
        ([CUDA100], "no_device"),
        ([CUDA2_NEW], "no_cuda_driver"),
        ([RTX_NO_DRIVER], "no_cuda_driver"),
        ([YOLOX], "no_cuda_driver"),
        (["something nobody has seen"], "unknown"),
        ([], "unknown"),
    ],
)
def test_recorded_messages_are_classified(messages, kind):
    result = classify_trt_messages(messages)
    assert isinstance(result, EngineLoadError) and isinstance(result, UserError)
    assert result.kind == kind and kind in KINDS
    assert "\n" not in str(result) and result.fix


def test_details_and_message():
    e = classify_trt_messages([("ERROR", TRT10_VERSION)], engine="m.engine", rebuild="edgeresnet build m.onnx --target x")
    assert e.details == {"runtime_serialization_version": 237, "engine_serialization_version": 239}
    assert str(e) == ("m.engine: the engine was built by a different TensorRT version (serialization version 239, "
                      "this runtime reads 237); rebuild it here: edgeresnet build m.onnx --target x")
    e = classify_trt_messages([WRONG_GPU], context="m.engine")
    assert e.details == {"engine_compute_capability": "8.9", "device_compute_capability": "8.6"}
    assert str(e).startswith("m.engine: the engine was built for a GPU of compute capability 8.9, this GPU is 8.6")
    assert classify_trt_messages([CUDA35]).details == {"cuda_error": 35}
    assert classify_trt_messages([MAGIC]).to_dict()["kind"] == "not_a_plan"


def test_cuda_failure_wins_over_what_follows_it():
    # CUDA could not start, so a later deserialization complaint is a consequence, not the cause
    assert classify_trt_messages([CUDA35, TRT8_VERSION[1]]).kind == "no_cuda_driver"


def test_truncated_engine_is_not_a_plan():
    # synthetic: a cut-off plan fails a size assertion during deserialization
    e = classify_trt_messages(["IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                               "assertion size == expected failed.)"])
    assert e.kind == "not_a_plan" and "corrupt or truncated" in str(e)


def test_it_can_be_raised():
    with pytest.raises(EngineLoadError, match="different TensorRT version"):
        raise classify_trt_messages(TRT8_VERSION)
