"""The adapter's exact TensorRT call sequences per version family, against a recording fake built from the
real bindings' name lists (a name the release lacks raises AttributeError, enum values are the real ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeresnet.errors import UserError
from edgeresnet.trt import adapter
from edgeresnet.trt.errors import EngineLoadError
from edgeresnet.trt.features import TrtFeatures
from edgeresnet.trt.plan import BuildSpec, DeviceCaps, plan_build
from edgeresnet.trt.plan_steps import STEP_OPS, BuildPlan, Step
from edgeresnet.trt.timing_cache import check_timing_cache_file
from fake_trt import NO_SCALING_FACTORS, FakeEngineSpec, FakeMemory, FakeTrt, fake_timing_cache

A100 = DeviceCaps("NVIDIA A100", (8, 0))
L4 = DeviceCaps("NVIDIA L4", (8, 9))
AGX_ORIN = DeviceCaps("Jetson AGX Orin", (8, 7), dla_cores=2, is_jetson=True)

HEAD = ["trt.ILogger.__init__", "trt.Builder(logger)"]


@pytest.fixture()
def onnx_file(tmp_path: Path) -> str:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not parsed by the fake")
    return str(path)


def _build(api: str, spec: BuildSpec, features: TrtFeatures, device: DeviceCaps, backend: object = None,
           **fake: object) -> FakeTrt:
    trt = FakeTrt(api, **fake)  # type: ignore[arg-type]
    adapter.build_engine(trt, plan_build(spec, features, device), backend=backend)
    return trt


def _parse(onnx: str) -> list[str]:
    return ["trt.OnnxParser(network, logger)", f"OnnxParser.parse_from_file({onnx!r})"]


# -- version families -----------------------------------------------------------------------------


def test_trt86_weakly_typed_int8_with_calibrator_cache(onnx_file: str, tmp_path: Path) -> None:
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
    timing = tmp_path / "timing.cache"
    spec = BuildSpec(onnx=onnx_file, precision="int8", batch=(1, 4, 8), input_shape=(None, 3, 32, 32),
                     calib_cache=str(cache), calib_cache_exists=True, workspace_mib=256, timing_cache=str(timing))
    trt = _build("8.6", spec, TrtFeatures.for_version("8.6"), A100)
    assert trt.calls == HEAD + [
        "Builder.create_network(1)",  # 1 << EXPLICIT_BATCH (= 0): ONNX needs explicit batch before 10
        "Builder.create_builder_config()",
        *_parse(onnx_file),
        "IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, 268435456)",
        "IBuilderConfig.set_flag(BuilderFlag.INT8)",
        "Builder.create_optimization_profile()",
        "IOptimizationProfile.set_shape('input', (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))",
        "IBuilderConfig.add_optimization_profile(profile)",
        "trt.IInt8EntropyCalibrator2.__init__",
        "IBuilderConfig.int8_calibrator = calibrator<IInt8EntropyCalibrator2>",
        "IBuilderConfig.set_calibration_profile(profile)",
        "IBuilderConfig.create_timing_cache(<0 bytes>)",
        "IBuilderConfig.set_timing_cache(timing_cache, False)",
        "IBuilderConfig.profiling_verbosity = ProfilingVerbosity.DETAILED",
        "Builder.build_serialized_network(network, config)",
        "IBuilderConfig.get_timing_cache()",
        "ITimingCache.serialize()",
    ]
    assert timing.read_bytes() == fake_timing_cache("8.6.1")  # written back after the build


def test_timing_cache_is_read_back_on_the_next_build(onnx_file: str, tmp_path: Path) -> None:
    timing = tmp_path / "timing.cache"
    timing.write_bytes(fake_timing_cache("10.3.0", b"previous"))
    spec = BuildSpec(onnx=onnx_file, precision="fp16", input_shape=(1, 3, 32, 32), timing_cache=str(timing))
    trt = _build("10.3", spec, TrtFeatures.for_version("10.3"), A100)
    assert "IBuilderConfig.create_timing_cache(<35 bytes>)" in trt.calls
    assert timing.read_bytes() == fake_timing_cache("10.3.0", b"previous")


def test_trt10_weakly_typed_fp16(onnx_file: str) -> None:
    spec = BuildSpec(onnx=onnx_file, precision="fp16", batch=(1, 8, 32), input_shape=(None, 3, 32, 32))
    trt = _build("10.3", spec, TrtFeatures.for_version("10.3"), A100)
    assert trt.calls == HEAD + [
        "Builder.create_network(0)",  # explicit batch is the default from 10; the flag is ignored
        "Builder.create_builder_config()",
        *_parse(onnx_file),
        "IBuilderConfig.set_flag(BuilderFlag.FP16)",
        "Builder.create_optimization_profile()",
        "IOptimizationProfile.set_shape('input', (1, 3, 32, 32), (8, 3, 32, 32), (32, 3, 32, 32))",
        "IBuilderConfig.add_optimization_profile(profile)",
        "IBuilderConfig.profiling_verbosity = ProfilingVerbosity.DETAILED",
        "Builder.build_serialized_network(network, config)",
    ]


@pytest.mark.parametrize("api", ["10.3", "10.13"])
def test_trt10_strongly_typed_qdq(onnx_file: str, api: str) -> None:
    spec = BuildSpec(onnx=onnx_file, precision="int8", input_shape=(1, 3, 32, 32), onnx_has_qdq=True, typing="strong")
    trt = _build(api, spec, TrtFeatures.for_version(api), A100)
    assert trt.calls == HEAD + [
        "Builder.create_network(2)",  # 1 << STRONGLY_TYPED (= 1 in 10.x); no precision flags
        "Builder.create_builder_config()",
        *_parse(onnx_file),
        "IBuilderConfig.profiling_verbosity = ProfilingVerbosity.DETAILED",
        "Builder.build_serialized_network(network, config)",
    ]


def test_trt10_weakly_typed_qdq_sets_int8_flag(onnx_file: str) -> None:
    """TensorRT 10.3 (JetPack 6) builds a Q/DQ ONNX weakly typed by default: the INT8 flag enables Q/DQ."""
    spec = BuildSpec(onnx=onnx_file, precision="int8", input_shape=(1, 3, 32, 32), onnx_has_qdq=True)
    trt = _build("10.3", spec, TrtFeatures.for_version("10.3"), A100)
    assert "Builder.create_network(0)" in trt.calls
    assert "IBuilderConfig.set_flag(BuilderFlag.INT8)" in trt.calls


@pytest.mark.parametrize("api", ["11.0", "11.4"])
def test_trt11_strongly_typed(onnx_file: str, api: str) -> None:
    spec = BuildSpec(onnx=onnx_file, precision="int8", batch=(1, 8, 32), input_shape=(None, 3, 32, 32),
                     onnx_has_qdq=True, hardware_compatibility="SAME_COMPUTE_CAPABILITY", builder_optimization_level=4)
    trt = _build(api, spec, TrtFeatures.for_version(api), A100)
    assert trt.calls == HEAD + [
        "Builder.create_network(1)",  # STRONGLY_TYPED is bit 0 in 11.x (it was bit 1 in 10.x)
        "Builder.create_builder_config()",
        *_parse(onnx_file),
        "Builder.create_optimization_profile()",
        "IOptimizationProfile.set_shape('input', (1, 3, 32, 32), (8, 3, 32, 32), (32, 3, 32, 32))",
        "IBuilderConfig.add_optimization_profile(profile)",
        "IBuilderConfig.profiling_verbosity = ProfilingVerbosity.DETAILED",
        "IBuilderConfig.builder_optimization_level = 4",
        "IBuilderConfig.hardware_compatibility_level = HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY",
        "Builder.build_serialized_network(network, config)",
    ]


def test_rtx_strongly_typed_for_the_target_sm(onnx_file: str) -> None:
    spec = BuildSpec(onnx=onnx_file, precision="fp32", batch=(1, 4, 8), input_shape=(None, 3, 32, 32))
    trt = _build("rtx-1.7", spec, TrtFeatures.for_rtx("1.7.1"), L4)
    assert trt.calls == HEAD + [
        "Builder.create_network(1)",
        "Builder.create_builder_config()",
        "IBuilderConfig.num_compute_capabilities = 1",
        "IBuilderConfig.set_compute_capability(ComputeCapability.SM89, 0)",
        *_parse(onnx_file),
        "Builder.create_optimization_profile()",
        "IOptimizationProfile.set_shape('input', (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))",
        "IBuilderConfig.add_optimization_profile(profile)",
        "IBuilderConfig.profiling_verbosity = ProfilingVerbosity.DETAILED",
        "Builder.build_serialized_network(network, config)",
    ]


# -- DLA on and off ---------------------------------------------------------------------------------

_DLA_BASE = ["Builder.create_network(0)", "Builder.create_builder_config()"]


def _orin(onnx: str, **options: object) -> BuildSpec:
    return BuildSpec(onnx=onnx, precision="fp16", input_shape=(1, 3, 224, 224), **options)  # type: ignore[arg-type]


def test_dla_off(onnx_file: str) -> None:
    trt = _build("10.3", _orin(onnx_file), TrtFeatures.for_version("10.3", platform="jetson", board="agx-orin"), AGX_ORIN)
    assert not [c for c in trt.calls if "DLA" in c or "GPU_FALLBACK" in c or "DIRECT_IO" in c]


def test_dla_on_with_gpu_fallback(onnx_file: str) -> None:
    features = TrtFeatures.for_version("10.3", platform="jetson", board="agx-orin")
    trt = _build("10.3", _orin(onnx_file, dla_core=1, gpu_fallback=True), features, AGX_ORIN)
    assert trt.calls == HEAD + _DLA_BASE + _parse(onnx_file) + [
        "IBuilderConfig.set_flag(BuilderFlag.FP16)",
        "IBuilderConfig.default_device_type = DeviceType.DLA",
        "IBuilderConfig.DLA_core = 1",
        "IBuilderConfig.set_flag(BuilderFlag.PREFER_PRECISION_CONSTRAINTS)",
        "IBuilderConfig.set_flag(BuilderFlag.GPU_FALLBACK)",
        "IBuilderConfig.profiling_verbosity = ProfilingVerbosity.DETAILED",
        "Builder.build_serialized_network(network, config)",
    ]


def test_dla_on_without_fallback_uses_direct_io(onnx_file: str) -> None:
    features = TrtFeatures.for_version("10.3", platform="jetson", board="agx-orin")
    trt = _build("10.3", _orin(onnx_file, dla_core=0), features, AGX_ORIN)
    flags = [c for c in trt.calls if "set_flag" in c or "DLA" in c]
    assert flags == [
        "IBuilderConfig.set_flag(BuilderFlag.FP16)",
        "IBuilderConfig.default_device_type = DeviceType.DLA",
        "IBuilderConfig.DLA_core = 0",
        "IBuilderConfig.set_flag(BuilderFlag.PREFER_PRECISION_CONSTRAINTS)",
        "IBuilderConfig.set_flag(BuilderFlag.DIRECT_IO)",
    ]


def test_dla_int8_with_entropy_calibrator_on_86(onnx_file: str, tmp_path: Path) -> None:
    """JetPack 6.0 DP shipped TensorRT 8.6: DLA INT8 needs the entropy calibrator (per-tensor scales)."""
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
    features = TrtFeatures.for_version("8.6", platform="jetson", board="agx-orin")
    spec = BuildSpec(onnx=onnx_file, precision="int8", input_shape=(1, 3, 224, 224), dla_core=0,
                     calib_cache=str(cache), calib_cache_exists=True)
    trt = _build("8.6", spec, features, AGX_ORIN)
    assert trt.calls == HEAD + ["Builder.create_network(1)", "Builder.create_builder_config()"] + _parse(onnx_file) + [
        "IBuilderConfig.set_flag(BuilderFlag.INT8)",
        "IBuilderConfig.default_device_type = DeviceType.DLA",
        "IBuilderConfig.DLA_core = 0",
        "IBuilderConfig.set_flag(BuilderFlag.PREFER_PRECISION_CONSTRAINTS)",
        "IBuilderConfig.set_flag(BuilderFlag.DIRECT_IO)",
        "trt.IInt8EntropyCalibrator2.__init__",
        "IBuilderConfig.int8_calibrator = calibrator<IInt8EntropyCalibrator2>",
        "IBuilderConfig.profiling_verbosity = ProfilingVerbosity.DETAILED",
        "Builder.build_serialized_network(network, config)",
    ]


# -- refusals -------------------------------------------------------------------------------------


def test_a_name_the_release_lacks_is_a_one_line_error(onnx_file: str) -> None:
    """A plan that asks TensorRT 11 for the FP16 flag (removed in 11.0) fails by name, not with a traceback."""
    features = TrtFeatures.for_version("11.0")
    spec = BuildSpec(onnx=onnx_file, input_shape=(1, 3, 32, 32))
    plan = BuildPlan(spec=spec, features=features, device=A100, steps=(
        Step("create_network", {"strongly_typed": True, "explicit_batch_flag": False}),
        Step("parse_onnx", {"path": onnx_file}), Step("set_flag", {"flag": "FP16"}), Step("build", {})))
    with pytest.raises(UserError, match=r"TensorRT 11\.0\.0\.114 has no BuilderFlag\.FP16"):
        adapter.build_engine(FakeTrt("11.0"), plan)


def test_plan_for_another_release_is_refused(onnx_file: str) -> None:
    plan = plan_build(BuildSpec(onnx=onnx_file, input_shape=(1, 3, 32, 32)), TrtFeatures.for_version("10.3"), A100)
    with pytest.raises(UserError, match=r"plan is for TensorRT 10\.3\.0 but TensorRT 11\.4\.0\.106 is installed"):
        adapter.build_engine(FakeTrt("11.4"), plan)


def test_missing_onnx_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone.onnx")
    plan = plan_build(BuildSpec(onnx=missing, input_shape=(1, 3, 32, 32)), TrtFeatures.for_version("10.3"), A100)
    with pytest.raises(UserError, match="gone.onnx: ONNX file not found"):
        adapter.build_engine(FakeTrt("10.3"), plan)


def test_parser_error_names_the_onnx_and_the_node(onnx_file: str) -> None:
    errors = [{"code": "UNSUPPORTED_NODE", "node": 1, "node_name": "my_unique_node", "node_operator": "Unique",
               "desc": "No importer registered for op: Unique\n[checkMacros.cpp::catchCudaError::250] Error Code 1: "
                       "Cuda Runtime (cudaError 35: CUDA driver version is insufficient)"},
              {"code": "UNSUPPORTED_NODE", "node": 2, "node_name": "other", "desc": "second"}]
    plan = plan_build(BuildSpec(onnx=onnx_file, input_shape=(1, 3, 32, 32)), TrtFeatures.for_version("10.3"), A100)
    with pytest.raises(UserError) as info:
        adapter.build_engine(FakeTrt("10.3", parser_errors=errors), plan)
    message = str(info.value)
    assert message == (f"{onnx_file}: TensorRT 10.3.0 cannot parse node my_unique_node (Unique): No importer registered "
                       "for op: Unique [UNSUPPORTED_NODE] (+1 more); TensorRT 10.3.0 does not support this operator; "
                       "re-export without it or with a lower --opset")
    assert "\n" not in message


def test_trt86_parser_error_takes_the_node_name_from_the_onnx(tmp_path: Path) -> None:
    """ParserError.node_name() does not exist in 8.6 (only the node index): the adapter reads the graph."""
    import onnx
    from onnx import TensorProto, helper

    path = tmp_path / "unique.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["r"], name="relu0"),
         helper.make_node("Unique", ["r"], ["logits"], name="my_unique_node")], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    plan = plan_build(BuildSpec(onnx=str(path), input_shape=(1, 3, 8, 8)), TrtFeatures.for_version("8.6"), A100)
    trt = FakeTrt("8.6", parser_errors=[{"code": "UNSUPPORTED_NODE", "node": 1, "desc": "No importer for Unique"}])
    with pytest.raises(UserError, match=r"unique\.onnx: TensorRT 8\.6\.1 cannot parse node my_unique_node: "):
        adapter.build_engine(trt, plan)
    assert not any("node_name" in c for c in trt.calls)


def test_unreadable_onnx_is_reported_for_the_file(onnx_file: str) -> None:
    errors = [{"code": "MODEL_DESERIALIZE_FAILED", "node": -1,
               "desc": "Assertion failed: model->ParseFromCodedStream(&codedInput): Failed to parse the ONNX model."}]
    plan = plan_build(BuildSpec(onnx=onnx_file, input_shape=(1, 3, 32, 32)), TrtFeatures.for_version("11.4"), A100)
    with pytest.raises(UserError, match=r"cannot parse the file: Failed to parse the ONNX model "
                                        r"\[MODEL_DESERIALIZE_FAILED\]; it is not a readable ONNX model"):
        adapter.build_engine(FakeTrt("11.4", parser_errors=errors), plan)


def test_empty_network_is_not_a_model(onnx_file: str) -> None:
    plan = plan_build(BuildSpec(onnx=onnx_file, input_shape=(1, 3, 32, 32)), TrtFeatures.for_version("10.3"), A100)
    with pytest.raises(UserError, match=r"parsed to an empty network \(0 inputs, 0 outputs\)"):
        adapter.build_engine(FakeTrt("10.3", empty_network=True), plan)


def test_failed_build_reports_the_logged_reason(onnx_file: str) -> None:
    messages = [("WARNING", "something minor"),
                ("ERROR", "IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Network must have at least "
                          "one output. In validate at /_src/optimizer/api/network.cpp:3810)")]
    plan = plan_build(BuildSpec(onnx=onnx_file, input_shape=(1, 3, 32, 32)), TrtFeatures.for_version("10.7"), A100)
    with pytest.raises(UserError) as info:
        adapter.build_engine(FakeTrt("10.7", build_result=None, build_messages=messages), plan)
    assert str(info.value) == f"{onnx_file}: TensorRT 10.7.0.post1 engine build failed: Network must have at least one output"


def test_builder_without_cuda_driver_is_classified(onnx_file: str) -> None:
    plan = plan_build(BuildSpec(onnx=onnx_file, input_shape=(1, 3, 32, 32)), TrtFeatures.for_version("10.3"), A100)
    with pytest.raises(EngineLoadError) as info:
        adapter.build_engine(FakeTrt("10.3", builder_fails=True), plan)
    assert info.value.kind == "no_cuda_driver"
    assert str(info.value).startswith(f"{onnx_file}: CUDA could not start (initialization error 35")


def test_every_plan_op_has_a_handler() -> None:
    assert {op for op in STEP_OPS if not hasattr(adapter.NetworkBuild, "step_" + op)} == set()


# -- logger, calibrator, loading, inspection ---------------------------------------------------------


def test_recording_logger_filters_by_severity() -> None:
    trt = FakeTrt("10.3")
    logger = adapter.make_logger(trt, min_severity="WARNING")
    for severity in ("VERBOSE", "INFO", "WARNING", "ERROR"):
        trt.log(logger, severity, f"{severity.lower()} message")
    assert logger.messages == [("WARNING", "warning message"), ("ERROR", "error message")]
    assert logger.errors() == ["error message"]


def test_calibrator_copies_batches_and_writes_the_cache(tmp_path: Path) -> None:
    trt = FakeTrt("10.3")
    memory = FakeMemory()
    batches = [np.full((2, 3, 4, 4), i, dtype=np.float32) for i in (1, 2)]
    cache = tmp_path / "calib.cache"
    calibrator = adapter.make_calibrator(trt, "minmax", cache=str(cache), batches=batches, batch_size=2, backend=memory)
    assert isinstance(calibrator, trt.IInt8MinMaxCalibrator)
    assert calibrator.get_batch_size() == 2
    assert calibrator.read_calibration_cache() is None  # no cache yet: TensorRT calibrates
    pointers = calibrator.get_batch(["input"])
    assert len(pointers) == 1
    first = np.frombuffer(bytes(memory.buffers[pointers[0]]), dtype=np.float32)
    assert np.all(first == 1.0)
    assert calibrator.get_batch(["input"]) == pointers  # same device buffer, new contents
    assert np.all(np.frombuffer(bytes(memory.buffers[pointers[0]]), dtype=np.float32) == 2.0)
    assert calibrator.get_batch(["input"]) is None  # exhausted
    calibrator.write_calibration_cache(memoryview(b"TRT-1003-MinMaxCalibration\n"))
    assert cache.read_bytes() == b"TRT-1003-MinMaxCalibration\n"
    assert calibrator.read_calibration_cache() == b"TRT-1003-MinMaxCalibration\n"
    calibrator.release()
    assert memory.buffers == {}


def test_calibration_batches_from_npy(tmp_path: Path) -> None:
    images = np.random.default_rng(0).normal(size=(10, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "calib.npy", images)
    batches = list(adapter.calibration_batches(str(tmp_path / "calib.npy"), [4, 3, 8, 8], 4, 9))
    assert [b.shape for b in batches] == [(4, 3, 8, 8), (4, 3, 8, 8)]  # 9 images -> two full batches
    np.testing.assert_array_equal(batches[1], images[4:8])
    with pytest.raises(UserError, match=r"images are \[3, 8, 8\], the engine input is \[3, 16, 16\]"):
        list(adapter.calibration_batches(str(tmp_path / "calib.npy"), [4, 3, 16, 16], 4, 9))


def test_calibrator_step_with_data_builds_batches(onnx_file: str, tmp_path: Path) -> None:
    np.save(tmp_path / "calib.npy", np.zeros((8, 3, 32, 32), dtype=np.float32))
    spec = BuildSpec(onnx=onnx_file, precision="int8", input_shape=(1, 3, 32, 32), calib_data=str(tmp_path / "calib.npy"),
                     calib_cache=str(tmp_path / "new.cache"), calibrator="minmax")
    memory = FakeMemory()
    trt = _build("10.3", spec, TrtFeatures.for_version("10.3"), A100, backend=memory)
    assert "IBuilderConfig.int8_calibrator = calibrator<IInt8MinMaxCalibrator>" in trt.calls
    assert trt.calibration_batches == 8  # batch size 1 (static shape), 8 images
    assert (tmp_path / "new.cache").read_text().startswith("TRT-100300-MinMaxCalibration\n")
    assert memory.buffers == {}  # the device buffer is freed once the build returns


def test_trt_version_and_flavor() -> None:
    assert adapter.trt_version(FakeTrt("10.7")) == (10, 7, 0)  # "10.7.0.post1"
    assert adapter.trt_version(FakeTrt("11.4")) == (11, 4, 0)
    assert adapter.trt_flavor(FakeTrt("rtx-1.7")) == "rtx"
    assert adapter.features_for(FakeTrt("rtx-1.7")).flavor == "rtx"
    assert adapter.features_for(FakeTrt("8.6")).explicit_batch_flag is True


def test_load_trt_refuses_a_stub_only_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # what tensorrt-stubs leaves
    monkeypatch.setitem(sys.modules, "tensorrt_bindings", None)  # None in sys.modules = ImportError
    with pytest.raises(UserError, match="tensorrt is a stub-only package without the bindings"):
        adapter.load_trt("tensorrt")
    monkeypatch.setattr(adapter.rtx, "import_rtx", lambda: None)
    with pytest.raises(UserError, match="neither TensorRT nor TensorRT-RTX is importable"):
        adapter.load_trt("auto")
    with pytest.raises(UserError, match="--builder rtx: TensorRT-RTX is not installed"):
        adapter.load_trt("rtx")
    with pytest.raises(UserError, match="--builder .gpu.: choose auto, tensorrt or rtx"):
        adapter.load_trt("gpu")


def test_inspect_engine_returns_the_inspector_json() -> None:
    from fake_trt import FakeEngineSpec

    trt = FakeTrt("10.3", engine=FakeEngineSpec())
    engine = adapter.deserialize_engine(trt, b"plan")
    info = adapter.inspect_engine(trt, engine)
    assert info["Layers"][0]["LayerType"] == "Reduce"
    assert "EngineInspector.get_engine_information(LayerInformationFormat.JSON)" in trt.calls


# -- calibration errors must not vanish inside TensorRT (its trampoline swallows them) ----------------


def _int8_plan(onnx: str, api: str = "10.3", **spec: object) -> BuildPlan:
    base = dict(onnx=onnx, precision="int8", input_shape=(1, 3, 32, 32))
    base.update(spec)
    return plan_build(BuildSpec(**base), TrtFeatures.for_version(api), A100)  # type: ignore[arg-type]


def test_fake_builder_swallows_calibrator_exceptions_like_the_real_trampoline(onnx_file: str, capfd) -> None:
    """pyInt8.cpp: get_batch exceptions are printed to stderr and read as "no more batches"; calibrating on
    nothing fails the build with the generic "no scaling factors" error. The fake must not be kinder."""
    trt = FakeTrt("10.3")
    logger = adapter.make_logger(trt)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)

    class Raising(trt.IInt8EntropyCalibrator2):
        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            raise FileNotFoundError("calib/ is missing")

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, data):
            raise AssertionError("never reached")

    config.int8_calibrator = Raising()
    assert builder.build_serialized_network(builder.create_network(0), config) is None
    assert "[ERROR] Exception caught in get_batch(): calib/ is missing" in capfd.readouterr().err
    assert logger.errors() == [NO_SCALING_FACTORS]


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d / "missing"), r"--calib-data .*missing: no such folder"),
    (lambda d: (d / "empty").mkdir() or str(d / "empty"), r"--calib-data .*empty: the folder has no images"),
    (lambda d: np.save(d / "small.npy", np.zeros((4, 3, 8, 8), np.float32)) or str(d / "small.npy"),
     r"images are \[3, 8, 8\], the engine input is \[3, 32, 32\]"),
    (lambda d: np.save(d / "gray.npy", np.zeros((4, 1, 32, 32), np.float32)) or str(d / "gray.npy"),
     r"images are \[1, 32, 32\], the engine input is \[3, 32, 32\]"),
])
def test_calibration_data_is_checked_before_any_tensorrt_object(onnx_file: str, tmp_path: Path, make, message) -> None:
    data = make(tmp_path)
    trt = FakeTrt("10.3")
    with pytest.raises(UserError, match=message):
        adapter.build_engine(trt, _int8_plan(onnx_file, calib_data=data), backend=FakeMemory())
    assert not [c for c in trt.calls if c.startswith("trt.Builder")]  # refused before the build started


def test_calibration_batches_validates_eagerly(tmp_path: Path) -> None:
    np.save(tmp_path / "calib.npy", np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(UserError, match=r"images are \[3, 8, 8\]"):
        adapter.calibration_batches(str(tmp_path / "calib.npy"), [1, 3, 16, 16], 1, 4)  # no list(): no iteration


class _BrokenCopy(FakeMemory):
    def h2d_async(self, dst: int, host, stream: int) -> None:
        raise RuntimeError("cudaErrorIllegalAddress")


def test_an_error_raised_while_calibrating_is_reraised_after_the_build(onnx_file: str, tmp_path: Path) -> None:
    np.save(tmp_path / "calib.npy", np.zeros((4, 3, 32, 32), np.float32))
    trt = FakeTrt("10.3")
    with pytest.raises(UserError) as info:
        adapter.build_engine(trt, _int8_plan(onnx_file, calib_data=str(tmp_path / "calib.npy")), backend=_BrokenCopy())
    assert str(info.value) == ("calibration failed at batch 1 (RuntimeError: cudaErrorIllegalAddress); "
                               "check --calib-data and the CUDA setup")
    assert "Builder.build_serialized_network(network, config)" in trt.calls  # raised once the build returned


def test_the_device_context_exists_before_the_builder(onnx_file: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA context (require_backend: probe, then use_device) must exist before any TensorRT builder."""
    from edgeresnet.trt import cuda_mem

    np.save(tmp_path / "calib.npy", np.zeros((2, 3, 32, 32), np.float32))
    trt = FakeTrt("10.3")
    monkeypatch.setattr(cuda_mem, "require_backend",
                        lambda name="auto", device=0: trt.calls.append("require_backend") or FakeMemory())
    adapter.build_engine(trt, _int8_plan(onnx_file, calib_data=str(tmp_path / "calib.npy")))
    assert trt.calls.index("require_backend") < trt.calls.index("trt.Builder(logger)")
    assert trt.calibration_batches == 2


# -- calibration caches: the header names the TensorRT that reads it ---------------------------------


def _cache(tmp_path: Path, header: str) -> Path:
    path = tmp_path / "calib.cache"
    path.write_text(f"{header}\ninput: 3c010a14\nlogits: 3d8f5c29\n")
    return path


def test_a_cache_for_another_release_is_rewritten_for_the_installed_one(onnx_file: str, tmp_path: Path) -> None:
    """A cache written for 10.3 (JetPack 6) used on 10.13: TensorRT skips a foreign header and, with no
    batches, would calibrate on nothing. The header is rewritten; the scales are used as they are."""
    cache = _cache(tmp_path, "TRT-100300-EntropyCalibration2")
    trt = FakeTrt("10.13")
    logger = adapter.make_logger(trt)
    data = adapter.build_engine(trt, _int8_plan(onnx_file, "10.13", calib_cache=str(cache), calib_cache_exists=True),
                                logger)
    assert data == b"ftrt-fake-plan" and trt.calibration_batches == 0
    assert cache.read_text().startswith("TRT-100300-")  # the user's file is not touched


def test_a_cache_for_another_calibrator_without_data_is_refused(onnx_file: str, tmp_path: Path) -> None:
    cache = _cache(tmp_path, "TRT-100300-MinMaxCalibration")
    trt = FakeTrt("10.3")
    with pytest.raises(UserError) as info:
        adapter.build_engine(trt, _int8_plan(onnx_file, calib_cache=str(cache), calib_cache_exists=True))
    assert str(info.value) == (f"--calib-cache {cache}: written by the MinMaxCalibration calibrator, this build uses "
                               "entropy2 (EntropyCalibration2) and TensorRT would ignore it; add --calib-data to "
                               "recalibrate, or pass a cache made for entropy2")
    assert trt.calls == ["trt.ILogger.__init__"]  # refused before the builder exists


@pytest.mark.parametrize("text, message", [
    ("hello\n", r"first line is 'hello', not a TRT-<version>-<Calibrator> header"),
    ("TRT-100300-EntropyCalibration2\ninput 3c010a14\n", r"line 2 'input 3c010a14' is not 'tensor: <8 hex digits>'"),
    ("TRT-100300-EntropyCalibration2\n", r"the cache has a header but no tensor scales"),
])
def test_a_file_that_is_not_a_calibration_cache_is_refused(onnx_file: str, tmp_path: Path, text: str,
                                                            message: str) -> None:
    cache = tmp_path / "calib.cache"
    cache.write_text(text)
    trt = FakeTrt("10.3")
    with pytest.raises(UserError, match=rf"^--calib-cache {cache}: {message}"):
        adapter.build_engine(trt, _int8_plan(onnx_file, calib_cache=str(cache), calib_cache_exists=True))
    assert trt.calls == ["trt.ILogger.__init__"]


# -- timing caches: a rejected one is a warning, never a lost engine -----------------------------------


def test_a_foreign_timing_cache_is_rejected_and_the_engine_still_built(onnx_file: str, tmp_path: Path) -> None:
    timing = tmp_path / "timing.cache"
    foreign = fake_timing_cache("10.13.3.9", b"other GPU")
    timing.write_bytes(foreign)
    spec = BuildSpec(onnx=onnx_file, precision="fp16", input_shape=(1, 3, 32, 32), timing_cache=str(timing))
    trt = FakeTrt("10.3")
    logger = adapter.make_logger(trt, "WARNING")
    data = adapter.build_engine(trt, plan_build(spec, TrtFeatures.for_version("10.3"), A100), logger)
    assert data == b"ftrt-fake-plan"
    assert "IBuilderConfig.get_timing_cache()" not in trt.calls  # nothing attached, nothing saved
    assert timing.read_bytes() == foreign  # left as it was
    assert ("WARNING", f"--timing-cache {timing}: TensorRT 10.3.0 rejected it (written by another GPU or TensorRT); "
                       "built without it and left the file unchanged (delete it to start a new one)") in logger.messages


def test_fake_timing_cache_api_is_as_strict_as_the_real_one() -> None:
    trt = FakeTrt("10.3")
    logger = adapter.make_logger(trt)
    config = trt.Builder(logger).create_builder_config()
    assert config.get_timing_cache() is None  # "or None if no timing cache is set"
    assert config.set_timing_cache(config.create_timing_cache(fake_timing_cache("8.6.1")), False) is False
    assert config.get_timing_cache() is None
    empty = config.create_timing_cache(b"not a cache")  # real RTX 1.7.1: warns, returns an empty cache
    assert empty is not None and logger.messages[-1] == (
        "WARNING", "Failed to deserialize timing cache. Returning an empty timing cache.")


def test_an_unreadable_timing_cache_is_not_overwritten(onnx_file: str, tmp_path: Path) -> None:
    """Binary bytes TensorRT cannot read as a timing cache: it hands back an empty cache; saving that
    would replace the user's file. Build without it, warn, leave the file."""
    timing = tmp_path / "timing.cache"
    timing.write_bytes(bytes(range(256)))
    spec = BuildSpec(onnx=onnx_file, precision="fp16", input_shape=(1, 3, 32, 32), timing_cache=str(timing))
    trt = FakeTrt("10.3")
    logger = adapter.make_logger(trt, "WARNING")
    assert adapter.build_engine(trt, plan_build(spec, TrtFeatures.for_version("10.3"), A100), logger) == b"ftrt-fake-plan"
    assert timing.read_bytes() == bytes(range(256))
    assert "IBuilderConfig.set_timing_cache(timing_cache, False)" not in trt.calls
    assert any(m.startswith(f"--timing-cache {timing}: TensorRT 10.3.0 could not read it") for _, m in logger.messages)


def test_timing_cache_save_failure_is_a_warning(onnx_file: str, tmp_path: Path) -> None:
    timing = tmp_path / "timing.cache"
    spec = BuildSpec(onnx=onnx_file, precision="fp16", input_shape=(1, 3, 32, 32), timing_cache=str(timing))
    trt = FakeTrt("10.3")
    state = adapter.run_build(trt, plan_build(spec, TrtFeatures.for_version("10.3"), A100))
    state.config._state["_timing_cache"] = None  # TensorRT handed back no cache
    assert state.save_timing_cache() == f"--timing-cache {timing}: TensorRT 10.3.0 kept no timing cache; not saved"
    assert state.serialized == b"ftrt-fake-plan" and not timing.exists()


@pytest.mark.parametrize("content, what", [
    (b"ftrt" + bytes(60), "is a TensorRT engine"),
    (b"TRT-100300-EntropyCalibration2\ninput: 3c010a14\n", "is an INT8 calibration cache"),
    (b"\x93NUMPY\x01\x00", "is a numpy array"),
    (b"{\"engine\": 1}\n", "is a text file"),
])
def test_a_timing_cache_that_is_something_else_is_refused(tmp_path: Path, content: bytes, what: str) -> None:
    path = tmp_path / "timing.cache"
    path.write_bytes(content)
    with pytest.raises(UserError, match=rf"^--timing-cache {path}: {what}"):
        check_timing_cache_file(path)
    path.write_bytes(fake_timing_cache("10.3.0", bytes(range(256))))
    check_timing_cache_file(path)  # a binary cache passes


# -- version-compatible plans need engine host code allowed to deserialize --------------------------------


def test_version_compatible_plan_loads_only_with_host_code_allowed(onnx_file: str) -> None:
    spec = BuildSpec(onnx=onnx_file, precision="fp32", input_shape=(1, 3, 32, 32), version_compatible=True)
    trt = FakeTrt("10.3", engine=FakeEngineSpec())
    data = adapter.build_engine(trt, plan_build(spec, TrtFeatures.for_version("10.3"), A100))
    with pytest.raises(EngineLoadError):
        adapter.deserialize_engine(trt, data)
    assert adapter.deserialize_engine(trt, data, host_code_allowed=True) is not None
    assert "Runtime.engine_host_code_allowed = True" in trt.calls
