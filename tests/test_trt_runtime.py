"""The TensorRT runtime side: the pure compatibility decision, execution through the fake module and fake
device memory, classified load failures, and the runner's refusals before anything is deserialized."""

from __future__ import annotations

import dataclasses

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_trt import FakeEngineSpec, FakeMemory, FakeTrt

from edgeresnet.artifacts import build_manifest, write_manifest
from edgeresnet.errors import UserError
from edgeresnet.runners.base import load_runner
from edgeresnet.runners.trt_runner import TrtRunner
from edgeresnet.trt import cuda_mem
from edgeresnet.trt.errors import EngineLoadError
from edgeresnet.trt.planfile import PLAN_TAG, parse_plan_header
from edgeresnet.trt.runtime import EngineSession, check_engine_compat, engine_compat_notes, rebuild_command


def plan_bytes(version: tuple[int, int, int, int] = (10, 3, 0, 26), size: int = 4096) -> bytes:
    head = struct.pack("<II", PLAN_TAG, 0) + bytes(16) + bytes(version)
    return head + bytes(size - len(head))


def manifest(version: str = "10.3.0", cc: str = "8.7", size: int = 4096, builder: str = "tensorrt",
             **options: Any) -> dict[str, Any]:
    return {
        "kind": "tensorrt-engine", "size_bytes": size,
        "engine": {"format": "edgeresnet-trt-engine", "builder": builder, "tensorrt_version": version,
                   "target": "agx-orin", "precision": "fp16", "precision_label": "fp16",
                   "profiles": [{"input": "input", "min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [8, 3, 8, 8]}],
                   "input": {"name": "input", "shape": [-1, 3, 8, 8]}, "dla_core": None,
                   "build_options": dict(options)},
        "gpu": {"name": "Orin", "compute_capability": cc},
        "inputs": {"onnx": {"path": "models/resnet18.onnx"}},
    }


# -- the pure decision --------------------------------------------------------------------------------


def test_matching_engine_has_no_problems() -> None:
    header = parse_plan_header(plan_bytes())
    assert check_engine_compat(manifest(), header, (10, 3, 0), "Orin", (8, 7)) == []


def test_other_tensorrt_version_from_manifest_and_header() -> None:
    header = parse_plan_header(plan_bytes((10, 7, 0, 23)))
    problems = check_engine_compat(manifest("10.7.0"), header, "10.3.0.30", "Orin", (8, 7))
    assert problems == ["the plan header says TensorRT 10.7.0 built it, this runtime is 10.3.0"]
    problems = check_engine_compat(manifest("10.7.0"), None, "10.3.0.30", "Orin", (8, 7))
    assert problems == ["built by TensorRT 10.7.0, this runtime is TensorRT 10.3.0"]


def test_other_compute_capability() -> None:
    problems = check_engine_compat(manifest(cc="8.9"), None, (10, 3, 0), "Orin", (8, 7))
    assert problems == ["built for compute capability 8.9 (Orin), this GPU is 8.7 (Orin)"]


def test_hardware_compatible_engine_runs_on_another_ampere_plus_gpu() -> None:
    data = manifest(cc="8.9", hardware_compatibility="AMPERE_PLUS")
    assert check_engine_compat(data, None, (10, 3, 0), "A100", (8, 0)) == []
    assert check_engine_compat(data, None, (10, 3, 0), "T4", (7, 5)) != []


def test_version_compatible_engine_runs_on_a_newer_runtime() -> None:
    data = manifest("10.3.0", version_compatible=True)
    assert check_engine_compat(data, None, (10, 7, 0), "Orin", (8, 7)) == []
    assert check_engine_compat(data, None, (11, 4, 0), "Orin", (8, 7)) == []  # 10 -> 11 is allowed
    assert check_engine_compat(data, None, (10, 0, 1), "Orin", (8, 7)) != []  # older runtime is not


def test_truncated_and_foreign_files() -> None:
    cut = plan_bytes()[:2000]
    problems = check_engine_compat(manifest(), parse_plan_header(cut, size=2000), (10, 3, 0), None, None)
    assert problems == ["the engine is 2000 bytes but its manifest says 4096: truncated or replaced"]
    onnx_like = b"\x08\x07\x12\x07pytorch" + bytes(100)
    assert check_engine_compat(None, parse_plan_header(onnx_like), (10, 3, 0), None, None)[0].startswith(
        "not a TensorRT engine (no TensorRT plan tag")


def test_rtx_engine_in_tensorrt_runtime() -> None:
    rtx_head = bytes.fromhex("76747274000000000200000000000000d47b0600000000000107017476747274")
    header = parse_plan_header(rtx_head + bytes(5000), size=5032)
    data = manifest("1.7.1.116", builder="tensorrt-rtx", size=5032)
    assert check_engine_compat(data, header, (10, 3, 0), "Orin", (8, 7)) == [
        "the plan was written by TensorRT-RTX, this runtime is TensorRT"]
    assert check_engine_compat(data, header, (1, 7, 1), "RTX 4090", (8, 7), running_flavor="rtx") == []


def test_no_gpu_skips_the_gpu_checks() -> None:
    assert check_engine_compat(manifest(cc="9.0"), None, (10, 3, 0), None, None) == []


def test_notes_for_another_gpu_of_the_same_sm() -> None:
    data = manifest()
    assert engine_compat_notes(data, "Orin") == []
    assert "built on Orin, running on Jetson AGX Orin 64GB" in engine_compat_notes(data, "Jetson AGX Orin 64GB")[0]
    assert "no manifest" in engine_compat_notes(None, "Orin")[0]


def test_rebuild_command_from_the_manifest() -> None:
    assert rebuild_command(manifest(), "engines/model.engine") == (
        "edgeresnet build models/resnet18.onnx --target agx-orin --precision fp16 --batch 1:4:8 --out engines")
    assert rebuild_command({"rebuild_command": "edgeresnet build x.onnx --target t"}, "e") == (
        "edgeresnet build x.onnx --target t")


# -- execution through the fake ------------------------------------------------------------------------


@pytest.fixture()
def session() -> tuple[EngineSession, FakeTrt, FakeMemory, FakeEngineSpec]:
    spec = FakeEngineSpec(channels=3, size=8, classes=4, profile=(1, 4, 8))
    memory = FakeMemory()
    trt = FakeTrt("10.3", engine=spec, memory=memory)
    return EngineSession(trt, b"plan", memory, source="m.engine").open(), trt, memory, spec


def test_dynamic_batches_run_with_v3_calls(session: Any) -> None:
    sess, trt, memory, spec = session
    rng = np.random.default_rng(0)
    for batch in (1, 3, 8, 2):
        images = rng.normal(size=(batch, 3, 8, 8)).astype(np.float32)
        out = sess.infer(images)["logits"]
        assert out.shape == (batch, 4)
        np.testing.assert_allclose(out, spec.reference(images), rtol=1e-5, atol=1e-6)
    calls = [c for c in trt.calls if c.startswith("IExecutionContext")]
    assert calls[:5] == ["IExecutionContext.set_input_shape('input', (1, 3, 8, 8))",
                         "IExecutionContext.set_tensor_address('input', 4096)",
                         "IExecutionContext.get_tensor_shape('logits')",  # resolved after the input shape is set
                         "IExecutionContext.set_tensor_address('logits', 5120)",
                         f"IExecutionContext.execute_async_v3({0xABC1})"]  # the session's own stream, never 0
    assert memory.log[:6] == ["stream_create", "alloc(768)", "alloc(16)", "h2d(768)", "d2h(16)", "sync"]
    assert memory.log.count("stream_create") == 1
    # buffers grow with the batch (1 -> 3 -> 8) and are reused for the smaller batch 2
    assert [e for e in memory.log if e.startswith("alloc")] == [
        "alloc(768)", "alloc(16)", "alloc(2304)", "alloc(48)", "alloc(6144)", "alloc(128)"]
    sess.close()
    assert memory.buffers == {}


def test_timed_step_records_events_around_each_part_on_the_session_stream(session: Any) -> None:
    sess, trt, memory, spec = session
    images = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    step = sess.timed_step(images)
    bound = len(trt.calls)
    memory.log.clear()
    parts = step()
    # per iteration: no re-binding, events around H2D / the engine / D2H, one synchronize (trtexec's split)
    assert not [c for c in trt.calls[bound:] if "set_input_shape" in c or "set_tensor_address" in c]
    assert [e.split("(")[0] for e in memory.log] == ["record", "h2d", "record", "record", "d2h", "record", "sync"]
    assert parts["h2d"] == parts["gpu_compute"] == parts["d2h"] == 1.0 and parts["enqueue"] >= 0.0  # fake: 1 ms/event
    np.testing.assert_allclose(step.outputs["logits"], spec.reference(images), rtol=1e-5, atol=1e-6)
    memory.log.clear()
    step.close()
    assert memory.log == ["event_destroy"] * 4


def test_timed_step_without_transfers_keeps_data_on_the_device(session: Any) -> None:
    sess, _, memory, _ = session
    step = sess.timed_step(np.ones((1, 3, 8, 8), dtype=np.float32), transfers=False)
    memory.log.clear()
    parts = step()
    assert [e.split("(")[0] for e in memory.log] == ["record", "record", "sync"] and set(parts) == {"gpu_compute",
                                                                                                      "enqueue"}


def test_timed_steps_of_one_session_rebind_when_they_take_turns(session: Any) -> None:
    """Interleaved benchmarks time batch 1 and batch 3 of one engine in turn: each step finds its own shapes."""
    sess, trt, _, spec = session
    rng = np.random.default_rng(3)
    small, large = (rng.normal(size=(b, 3, 8, 8)).astype(np.float32) for b in (1, 3))
    one, three = sess.timed_step(small), sess.timed_step(large)
    for step, images in ((one, small), (three, large), (one, small)):
        before = len(trt.calls)
        step()
        assert f"IExecutionContext.set_input_shape('input', {images.shape})" in trt.calls[before:]
        np.testing.assert_allclose(step.outputs["logits"], spec.reference(images), rtol=1e-5, atol=1e-6)
    before = len(trt.calls)
    one()  # bound already: no re-binding in the timed loop
    assert not [c for c in trt.calls[before:] if "set_input_shape" in c]
    sess.infer(large)  # infer binds its own shapes, so the step binds again afterwards
    before = len(trt.calls)
    one()
    assert "IExecutionContext.set_input_shape('input', (1, 3, 8, 8))" in trt.calls[before:]


def test_benchmark_times_a_trt_engine_with_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeresnet.bench import core
    from edgeresnet.bench.timing import TimingConfig

    runner = _runner(write_engine(tmp_path))
    monkeypatch.setattr(core, "open_runner", lambda path, settings: (runner, "trt", []))
    settings = core.BenchSettings(batches=(1, 4), target="orin-nano", timing=TimingConfig(
        warmup_ms=0, warmup_iterations=1, min_iterations=5, duration_s=0.0))
    results = core.benchmark_artifact(runner.path, settings, environment={})
    assert [r["batch"] for r in results] == [1, 4]
    for r in results:
        assert r["gpu_compute_ms"]["median"] == 1.0 and r["h2d_ms"]["n"] == r["d2h_ms"]["n"] == r["iterations"] == 5
    with pytest.raises(UserError, match="--cuda-graph: not available for the trt backend yet"):
        core.benchmark_artifact(runner.path, dataclasses.replace(settings, cuda_graph=True), environment={})


def test_batch_outside_the_profile_is_refused(session: Any) -> None:
    sess = session[0]
    with pytest.raises(UserError, match=r"m.engine: batch 9 is outside the engine's profile 1..8"):
        sess.infer(np.zeros((9, 3, 8, 8), dtype=np.float32))
    with pytest.raises(UserError, match=r"input of shape \[2, 3, 16, 16\] does not fit the engine's \[-1, 3, 8, 8\]"):
        sess.infer(np.zeros((2, 3, 16, 16), dtype=np.float32))


@pytest.mark.parametrize("message, kind", [
    ("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion stdVersionRead == "
     "kSERIALIZATION_VERSION failed.Version tag does not match. Note: Current Version: 237, Serialized Engine "
     "Version: 239)", "version_mismatch"),
    ("IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan file is generated on an "
     "incompatible device, expecting compute 8.9 got compute 8.6, please rebuild.)", "wrong_compute_capability"),
    ("Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match", "not_a_plan"),
])
def test_none_from_deserialization_is_classified(message: str, kind: str) -> None:
    trt = FakeTrt("10.3", deserialize_messages=[("ERROR", message)])
    with pytest.raises(EngineLoadError) as info:
        EngineSession(trt, b"plan", FakeMemory(), source="m.engine", rebuild="edgeresnet build x.onnx").open()
    assert info.value.kind == kind
    assert str(info.value).startswith("m.engine: ") and "\n" not in str(info.value)


def test_runtime_without_cuda_driver_is_classified() -> None:
    with pytest.raises(EngineLoadError) as info:
        EngineSession(FakeTrt("11.4", runtime_fails=True), b"plan", FakeMemory(), source="m.engine").open()
    assert info.value.kind == "no_cuda_driver"


def test_dla_core_is_set_before_deserializing() -> None:
    trt = FakeTrt("10.3", engine=FakeEngineSpec(), memory=FakeMemory())
    EngineSession(trt, b"plan", trt.options["memory"], dla_core=1).open()
    assert trt.calls[trt.calls.index("trt.Runtime(logger)") + 1:][:2] == [
        "Runtime.DLA_core = 1", "Runtime.deserialize_cuda_engine(<4 bytes>)"]


# -- the runner --------------------------------------------------------------------------------------


def write_engine(tmp_path: Path, version: str = "10.3.0", header_version: tuple[int, int, int, int] = (10, 3, 0, 26),
                 cc: str = "8.7", cut: int | None = None) -> Path:
    path = tmp_path / "model.engine"
    data = plan_bytes(header_version)
    path.write_bytes(data)
    extra = manifest(version, cc, size=len(data))
    extra.pop("size_bytes")
    extra.pop("kind")
    write_manifest(path, build_manifest("tensorrt-engine", path, command="build", extra=extra))
    if cut is not None:
        path.write_bytes(data[:cut])
    return path


def _runner(path: Path, api: str = "10.3") -> TrtRunner:
    memory = FakeMemory()
    trt = FakeTrt(api, engine=FakeEngineSpec(), memory=memory)
    return load_runner(path, trt_module=trt, device_backend=memory)  # type: ignore[return-value]


def test_runner_runs_a_matching_engine(tmp_path: Path) -> None:
    runner = _runner(write_engine(tmp_path))
    assert isinstance(runner, TrtRunner) and runner.input_shape == ("batch", 3, 8, 8)
    images = np.random.default_rng(1).normal(size=(5, 3, 8, 8)).astype(np.float32)
    with runner:
        logits = runner.infer(images)
    np.testing.assert_allclose(logits, FakeEngineSpec().reference(images), rtol=1e-5, atol=1e-6)
    assert runner.describe()["gpu"] == {"name": "NVIDIA Fake GPU", "compute_capability": "8.7"}


def test_runner_refuses_an_engine_of_another_tensorrt(tmp_path: Path) -> None:
    path = write_engine(tmp_path, "10.7.0", (10, 7, 0, 23))
    with pytest.raises(UserError) as info:
        _runner(path)
    assert str(info.value) == (
        f"{path}: cannot run here: the plan header says TensorRT 10.7.0 built it, this runtime is 10.3.0; "
        f"rebuild it: edgeresnet build models/resnet18.onnx --target agx-orin --precision fp16 --batch 1:4:8 "
        f"--out {tmp_path}")


def test_runner_refuses_an_engine_of_another_gpu(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cannot run here: built for compute capability 7\.2 \(Orin\), this GPU is 8\.7"):
        _runner(write_engine(tmp_path, cc="7.2"))


def test_runner_refuses_a_truncated_engine(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"the engine is 1500 bytes but its manifest says 4096: truncated or replaced"):
        _runner(write_engine(tmp_path, cut=1500))


def test_runner_refuses_a_file_that_is_not_an_engine(tmp_path: Path) -> None:
    path = tmp_path / "model.engine"
    path.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))
    with pytest.raises(UserError, match=r"model.engine: not a TensorRT engine \(no TensorRT plan tag"):
        TrtRunner.load(path)  # refused before TensorRT is even imported (it is not installed here)


def test_runner_without_tensorrt_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_bindings", None)
    with pytest.raises(UserError, match="TensorRT is not usable here"):
        TrtRunner.load(write_engine(tmp_path))


# -- device memory -------------------------------------------------------------------------------------


def test_gpu_probe_is_safe_here() -> None:
    count, reason = cuda_mem.probe_gpu()
    assert cuda_mem.gpu_available() is (count > 0)
    if count == 0:
        assert reason and "\n" not in reason


def test_probe_respects_hidden_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert cuda_mem.probe_gpu() == (0, "CUDA_VISIBLE_DEVICES=-1 hides every GPU")


def test_cuda_python_errors_are_one_line() -> None:
    if cuda_mem.gpu_available():
        pytest.skip("a GPU is usable here: the failure path cannot be shown")
    try:
        backend = cuda_mem.CudaPythonBackend()
    except UserError:
        pytest.skip("cuda-python is not installed")
    with pytest.raises(cuda_mem.CudaError, match=r"^CUDA cudaMalloc failed: error \d+ \(.+\)$"):
        backend.alloc(1024)


def test_backend_choice() -> None:
    with pytest.raises(UserError, match="--cuda-backend 'cupy'"):
        cuda_mem.get_backend("cupy")
    try:
        import pycuda  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pycuda is not installed"):
            cuda_mem.get_backend("pycuda")
    assert isinstance(FakeMemory(), cuda_mem.DeviceBackend)


@pytest.mark.gpu
def test_cuda_python_roundtrip_on_a_gpu() -> None:
    if not cuda_mem.gpu_available():
        pytest.skip("no usable CUDA GPU: " + cuda_mem.probe_gpu()[1])
    backend = cuda_mem.get_backend("cuda-python")
    stream = backend.stream_create()
    start, end = backend.event_create(), backend.event_create()
    data = np.arange(1024, dtype=np.float32)
    out = np.empty_like(data)
    pointer = backend.alloc(data.nbytes)
    backend.event_record(start, stream)
    backend.h2d_async(pointer, data, stream)
    backend.d2h_async(out, pointer, stream)
    backend.event_record(end, stream)
    backend.stream_sync(stream)
    assert backend.event_elapsed_ms(start, end) >= 0.0
    np.testing.assert_array_equal(out, data)
    backend.free(pointer)
    info = backend.gpu_info()
    assert info.compute_capability >= (5, 0) and info.name
