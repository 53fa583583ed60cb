"""The TensorRT runtime side: the pure compatibility decision, execution through the fake module and fake
device memory, classified load failures, and the runner's refusals before anything is deserialized."""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from edgeresnet.artifacts import build_manifest, write_manifest
from edgeresnet.errors import UserError
from edgeresnet.runners.base import load_runner
from edgeresnet.runners.trt_runner import TrtRunner
from edgeresnet.trt import cuda_mem, cuda_python_backend, pycuda_backend
from edgeresnet.trt.errors import EngineLoadError
from edgeresnet.trt.planfile import PLAN_TAG, parse_plan_header
from edgeresnet.trt.runtime import EngineSession, check_engine_compat, engine_compat_notes, rebuild_command
from fake_cuda import FakeCudart, FakePycudaDriver
from fake_trt import FakeEngineSpec, FakeMemory, FakeTrt


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
    # the timed loop copies from and to pinned host buffers (trtexec / common_runtime.py), released on close
    assert memory.is_pinned(step.images) and all(memory.is_pinned(a) for a in step.outputs.values())
    memory.log.clear()
    step.close()
    assert memory.log == ["event_destroy"] * 4 + ["host_free"] * 2 and memory.pinned == {}


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
    count, reason = cuda_python_backend.probe_gpu()
    assert cuda_mem.gpu_available() is (count > 0)
    if count == 0:
        assert reason and "\n" not in reason


def test_probe_respects_hidden_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert cuda_python_backend.probe_gpu() == (0, "CUDA_VISIBLE_DEVICES=-1 hides every GPU")


def test_cuda_python_errors_are_one_line() -> None:
    if cuda_mem.gpu_available():
        pytest.skip("a GPU is usable here: the failure path cannot be shown")
    try:
        backend = cuda_python_backend.CudaPythonBackend()
    except UserError:
        pytest.skip("cuda-python is not installed")
    with pytest.raises(cuda_mem.CudaError, match=r"^CUDA cudaMalloc failed: error \d+ \(.+\)$"):
        backend.alloc(1024)


def test_backend_choice() -> None:
    with pytest.raises(UserError, match="--cuda-backend 'cupy'"):
        cuda_mem.select_backend("cupy")
    try:
        import pycuda  # noqa: F401
    except ImportError:
        backend, reason = cuda_mem.select_backend("pycuda")
        assert backend is None and "pycuda is not installed" in reason
    assert isinstance(FakeMemory(), cuda_mem.DeviceBackend)


@pytest.mark.gpu
def test_cuda_python_roundtrip_on_a_gpu() -> None:
    if not cuda_mem.gpu_available():
        pytest.skip("no usable CUDA GPU: " + cuda_python_backend.probe_gpu()[1])
    backend, reason = cuda_mem.select_backend("cuda-python")
    assert backend is not None, reason
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


# -- the CUDA binding that runs the engine: probe, device, pinned memory --------------------------------


def _no_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as on a JetPack image without cuda-python: both import paths fail."""
    import sys

    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)


def _with_pycuda(monkeypatch: pytest.MonkeyPatch, driver: FakePycudaDriver) -> None:
    import sys
    import types

    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)


def _with_cudart(monkeypatch: pytest.MonkeyPatch, cudart: FakeCudart) -> None:
    monkeypatch.setattr(cuda_python_backend, "import_cudart", lambda: cudart)


def test_fake_cudart_answers_like_the_real_one_here() -> None:
    """The fake's error tuples have the real shape: this machine has cuda-python and no driver."""
    real = pytest.importorskip("cuda.bindings.runtime")
    assert real.cudaGetDeviceCount()[0] == FakeCudart(driver=0).cudaGetDeviceCount()[0]
    assert real.cudaGetDeviceCount()[1] is FakeCudart(driver=0).cudaGetDeviceCount()[1] is None
    assert type(real.cudaSetDevice(0)) is type(FakeCudart(driver=0).cudaSetDevice(0)) is tuple
    assert real.cudaDriverGetVersion() == FakeCudart(driver=0).cudaDriverGetVersion()


def test_pycuda_only_machine_runs_an_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No cuda-python, pycuda present: the probe goes through pycuda, and its context exists before TensorRT."""
    _no_cuda_python(monkeypatch)
    spec = FakeEngineSpec()
    trt = FakeTrt("10.3", engine=spec)
    driver = FakePycudaDriver(calls=trt.calls)
    trt.options["memory"] = driver
    _with_pycuda(monkeypatch, driver)
    runner = TrtRunner.load(write_engine(tmp_path), trt_module=trt)
    images = np.random.default_rng(4).normal(size=(3, 3, 8, 8)).astype(np.float32)
    with runner:
        np.testing.assert_allclose(runner.infer(images), spec.reference(images), rtol=1e-5, atol=1e-6)
    assert runner.describe()["cuda_backend"] == "pycuda" and runner.gpu.name == "NVIDIA Fake GPU 0"
    assert trt.calls.index("pycuda.Device(0).make_context()") < trt.calls.index("trt.Runtime(logger)")


def test_explicit_cuda_backend_and_device_for_pycuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt = FakeTrt("10.3", engine=FakeEngineSpec())
    driver = FakePycudaDriver(devices=2, calls=trt.calls)
    trt.options["memory"] = driver
    _with_pycuda(monkeypatch, driver)
    _with_cudart(monkeypatch, FakeCudart(devices=2, calls=trt.calls))  # present, but not the one asked for
    runner = TrtRunner.load(write_engine(tmp_path), trt_module=trt, cuda_backend="pycuda", device="cuda:1")
    with runner:
        runner.infer(np.zeros((1, 3, 8, 8), np.float32))
    assert runner.device == "cuda:1" and runner.describe()["cuda_backend"] == "pycuda"
    assert "pycuda.Device(1).make_context()" in trt.calls and not [c for c in trt.calls if c.startswith("cudaSet")]
    assert [c for c in trt.calls if c.startswith("pycuda.mem_alloc")][0].endswith("on 1")


def test_cuda_python_13_on_a_cuda_12_driver_says_which_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Error 35 from cuda-python 13 under a CUDA 12.6 driver: the pin that fixes it, not "no GPU"."""
    _with_cudart(monkeypatch, FakeCudart(driver=12060, runtime=13050))
    count, reason = cuda_python_backend.probe_gpu()
    assert count == 0
    assert re.search(r"error 35: cuda-python \S+ \(CUDA runtime 13\.5\) needs driver >= 580\.65\.06; this driver "
                     r"supports CUDA 12\.6: install cuda-python<13 \(pip install 'edgeresnet\[trt-cu12\]'\)", reason)
    with pytest.raises(cuda_mem.CudaError, match=r"^CUDA cudaMalloc failed: error 35 \(cuda-python .* install "
                                                 r"cuda-python<13"):
        cuda_python_backend.CudaPythonBackend(FakeCudart(driver=12060, runtime=13050)).alloc(16)
    _with_cudart(monkeypatch, FakeCudart(driver=0, runtime=13050))
    assert "no NVIDIA driver is loaded" in cuda_python_backend.probe_gpu()[1]


def test_auto_falls_back_to_pycuda_when_cuda_python_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_cudart(monkeypatch, FakeCudart(driver=12060, runtime=13050))
    _with_pycuda(monkeypatch, FakePycudaDriver())
    backend, reason = cuda_mem.select_backend("auto", 0)
    assert isinstance(backend, pycuda_backend.PycudaBackend) and reason == "1 CUDA device(s) (pycuda)"
    backend, reason = cuda_mem.select_backend("cuda-python", 0)
    assert backend is None and "install cuda-python<13" in reason


def test_engine_refused_in_one_line_when_the_driver_is_too_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_cuda_python(monkeypatch)
    _with_cudart(monkeypatch, FakeCudart(driver=12060, runtime=13050))
    monkeypatch.setitem(__import__("sys").modules, "pycuda", None)
    with pytest.raises(UserError) as info:
        TrtRunner.load(write_engine(tmp_path), trt_module=FakeTrt("10.3"))
    text = str(info.value)
    assert "none is usable here (no usable CUDA device: error 35: cuda-python" in text and "\n" not in text
    assert "install cuda-python<13" in text


@pytest.mark.parametrize("value, index", [(None, 0), ("cuda", 0), ("cuda:0", 0), ("cuda:2", 2), ("1", 1), (3, 3),
                                          ("GPU:1", 1)])
def test_device_is_parsed_once_into_an_int(value: Any, index: int) -> None:
    assert cuda_mem.parse_device(value) == index


@pytest.mark.parametrize("value, fragment", [("cpu", "TensorRT engines run on a CUDA GPU"), ("cuda:x", "unknown device"),
                                             ("-1", "unknown device"), ("tpu", "unknown device")])
def test_bad_device_is_one_line(value: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        cuda_mem.parse_device(value)


def test_device_n_is_made_current_before_the_engine_is_deserialized(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--device cuda:1: cudaSetDevice(1) before trt.Runtime, the compatibility check reads GPU 1, memory on 1."""
    trt = FakeTrt("10.3", engine=FakeEngineSpec())
    cudart = FakeCudart(devices=2, calls=trt.calls)
    trt.options["memory"] = cudart
    _with_cudart(monkeypatch, cudart)
    runner = TrtRunner.load(write_engine(tmp_path), trt_module=trt, device="cuda:1")
    assert runner.gpu.name == "NVIDIA Fake GPU 1" and runner.device == "cuda:1"
    with runner:
        runner.infer(np.zeros((2, 3, 8, 8), np.float32))
    assert trt.calls.index("cudaSetDevice(1)") < trt.calls.index("trt.Runtime(logger)")
    assert all(c.endswith(" on 1") for c in trt.calls if c.startswith("cudaMalloc("))
    with pytest.raises(UserError, match=r"--device 2: cuda-python sees 2 CUDA device\(s\), numbered 0\.\.1"):
        TrtRunner.load(write_engine(tmp_path), trt_module=trt, device=2)


def test_cuda_python_timed_loop_uses_pinned_host_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = FakeEngineSpec()
    cudart = FakeCudart()
    trt = FakeTrt("10.3", engine=spec, memory=cudart)
    backend = cuda_python_backend.CudaPythonBackend(cudart)
    sess = EngineSession(trt, b"plan", backend, source="m.engine").open()
    images = np.random.default_rng(5).normal(size=(2, 3, 8, 8)).astype(np.float32)
    sess.infer(images)  # not timed: pageable is fine
    assert [c for c in cudart.calls if c.startswith(("H2D", "D2H"))] == ["H2D(1536, pinned=False)",
                                                                        "D2H(32, pinned=False)"]
    cudart.calls.clear()
    step = sess.timed_step(images)
    step()
    assert [c for c in cudart.calls if c.startswith(("H2D", "D2H"))] == ["H2D(1536, pinned=True)",
                                                                        "D2H(32, pinned=True)"]
    np.testing.assert_allclose(step.outputs["logits"], spec.reference(images), rtol=1e-5, atol=1e-6)
    assert cudart.calls.count("cudaMallocHost(1536)") == 1 and len(cudart.pinned) == 2
    step.close()
    assert cudart.pinned == {} and cudart.calls.count("cudaFreeHost") == 2
    sess.close()


def test_pycuda_timed_loop_uses_page_locked_arrays() -> None:
    spec = FakeEngineSpec()
    driver = FakePycudaDriver()
    trt = FakeTrt("10.3", engine=spec, memory=driver)
    backend = pycuda_backend.PycudaBackend(driver)
    backend.use_device(0)
    sess = EngineSession(trt, b"plan", backend, source="m.engine").open()
    images = np.ones((4, 3, 8, 8), np.float32)
    step = sess.timed_step(images)
    step()
    assert type(step.images.base).__name__ == "HostAllocation"
    assert all(type(a.base).__name__ == "HostAllocation" for a in step.outputs.values())
    np.testing.assert_allclose(step.outputs["logits"], spec.reference(images), rtol=1e-5, atol=1e-6)
    step.close()
    assert driver.calls.count("pycuda.HostAllocation.free()") == 2 and all(b.freed for b in driver.pinned)


# -- I/O data types numpy does not have ---------------------------------------------------------------


def test_bf16_io_runs_through_ml_dtypes() -> None:
    pytest.importorskip("ml_dtypes")
    spec = FakeEngineSpec(io_dtype="BF16")
    memory = FakeMemory()
    sess = EngineSession(FakeTrt("10.3", engine=spec, memory=memory), b"plan", memory, source="m.engine").open()
    assert str(sess.dtypes["input"]) == "bfloat16"
    images = np.random.default_rng(6).normal(size=(2, 3, 8, 8)).astype(np.float32)
    out = np.asarray(sess.infer(images)["logits"], dtype=np.float32)
    np.testing.assert_allclose(out, spec.reference(images), rtol=0.05, atol=0.05)


def test_bf16_without_ml_dtypes_and_fp8_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    def open_with(dtype: str) -> None:
        memory = FakeMemory()
        EngineSession(FakeTrt("10.3", engine=FakeEngineSpec(io_dtype=dtype), memory=memory), b"plan", memory,
                      source="m.engine", rebuild="edgeresnet build m.onnx --target t").open()

    with pytest.raises(UserError) as info:
        open_with("FP8")
    assert str(info.value) == ("m.engine: tensor 'input' is FP8, which has no numpy type; rebuild the engine with FP32 "
                               "inputs and outputs (export the ONNX model with float32 I/O): edgeresnet build m.onnx "
                               "--target t")
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(UserError, match=r"tensor 'input' is BF16, which numpy cannot hold without ml_dtypes; pip "
                                        r"install ml_dtypes, or rebuild"):
        open_with("BF16")


def test_fake_nptype_raises_like_the_real_one() -> None:
    trt = FakeTrt("10.3")
    assert trt.nptype(trt.DataType.FLOAT) is np.float32
    for name in ("BF16", "FP8", "INT4"):
        with pytest.raises(TypeError, match="Could not resolve TensorRT datatype"):
            trt.nptype(getattr(trt.DataType, name))


# -- one batch-range contract: evaluate and benchmark ---------------------------------------------------


def _engine_runner(tmp_path: Path, spec: FakeEngineSpec) -> TrtRunner:
    memory = FakeMemory()
    trt = FakeTrt("10.3", engine=spec, memory=memory)
    return TrtRunner.load(write_engine(tmp_path), trt_module=trt, device_backend=memory)


def test_evaluate_a_batch_1_engine_with_the_default_batch_size(tmp_path: Path) -> None:
    from edgeresnet.evaluate import evaluate_runner

    spec = FakeEngineSpec(profile=(1, 1, 1))
    runner = _engine_runner(tmp_path, spec)
    images = np.random.default_rng(7).normal(size=(5, 3, 8, 8)).astype(np.float32)
    labels = spec.reference(images).argmax(axis=1)
    metrics = evaluate_runner(runner, images, labels, batch_size=64)
    assert metrics["n"] == 5 and metrics["top1"] == 100.0


def test_evaluate_pads_the_last_chunk_of_a_static_batch_engine(tmp_path: Path) -> None:
    from edgeresnet.evaluate import runner_logits

    spec = FakeEngineSpec(static_batch=4)
    runner = _engine_runner(tmp_path, spec)
    images = np.random.default_rng(8).normal(size=(10, 3, 8, 8)).astype(np.float32)
    with runner:
        assert runner.batch_range == (4, 4) and runner.static_batch == 4
        logits = runner_logits(runner, images, batch_size=64)
    np.testing.assert_allclose(logits, spec.reference(images), rtol=1e-5, atol=1e-6)


def test_trt_runner_batch_range_before_and_after_activation(tmp_path: Path) -> None:
    runner = _engine_runner(tmp_path, FakeEngineSpec(profile=(1, 4, 8)))
    assert runner.batch_range == (1, 8)  # from the manifest's profile
    with runner:
        assert runner.batch_range == (1, 8) and runner.static_batch is None  # from the engine


def test_benchmark_skips_batches_outside_the_engine_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeresnet.bench import core
    from edgeresnet.bench.timing import TimingConfig

    runner = _engine_runner(tmp_path, FakeEngineSpec(profile=(1, 2, 4)))
    monkeypatch.setattr(core, "open_runner", lambda path, settings: (runner, "trt", []))
    settings = core.BenchSettings(batches=(1, 4, 16), target="orin-nano", timing=TimingConfig(
        warmup_ms=0, warmup_iterations=1, min_iterations=2, duration_s=0.0))
    skipped: list[str] = []
    results = core.benchmark_artifact(runner.path, settings, environment={}, skipped=skipped)
    assert [r["batch"] for r in results] == [1, 4]
    assert skipped == ["model.engine: batch 16 is outside the batch range it was made for; skipped"]


def test_every_runner_declares_the_batch_range() -> None:
    import importlib

    from edgeresnet.runners.base import BACKENDS, Runner

    for target in BACKENDS.values():
        module, name = target.split(":")
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, Runner) and isinstance(cls.__dict__.get("batch_range"), property), name

    class Forgetful(Runner):
        def infer(self, images: np.ndarray) -> np.ndarray:
            return images

    with pytest.raises(TypeError, match="batch_range"):
        Forgetful(Path("x.pt"))  # type: ignore[abstract]


# -- the CLI: --cuda-backend and --device on evaluate and benchmark ------------------------------------


def _digits_engine(tmp_path: Path, spec: FakeEngineSpec) -> Path:
    from edgeresnet.data.presets import preset_for

    path = tmp_path / "digits.engine"
    data = plan_bytes()
    path.write_bytes(data)
    extra = manifest(size=len(data))
    extra.pop("size_bytes")
    extra.pop("kind")
    extra["engine"]["profiles"] = [{"input": "input", "min": [spec.profile[0], 3, 8, 8],
                                    "opt": [spec.profile[1], 3, 8, 8], "max": [spec.profile[2], 3, 8, 8]}]
    extra["preprocess"] = preset_for("digits", 8, tuple(str(i) for i in range(10))).to_dict()
    write_manifest(path, build_manifest("tensorrt-engine", path, command="build", extra=extra))
    return path


def test_cli_evaluate_engine_on_gpu_1_with_the_default_batch_size(tmp_path: Path, capsys: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import sys

    pytest.importorskip("torchvision")  # imported for real first: torch._dynamo probes find_spec("tensorrt")
    spec = FakeEngineSpec(classes=10, profile=(1, 1, 1))
    trt = FakeTrt("10.3", engine=spec)
    cudart = FakeCudart(devices=2, calls=trt.calls)
    trt.options["memory"] = cudart
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    _with_cudart(monkeypatch, cudart)
    path = _digits_engine(tmp_path, spec)
    code, out, err = run_cli(capsys, "evaluate", path, "--limit", "6", "--no-plot", "--device", "cuda:1",
                             "--cuda-backend", "cuda-python", "--json", str(tmp_path / "m.json"))
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n"] == 6 and metrics["runner"]["device"] == "cuda:1"
    assert metrics["runner"]["cuda_backend"] == "cuda-python"
    assert trt.calls.index("cudaSetDevice(1)") < trt.calls.index("trt.Runtime(logger)")
    assert len([c for c in trt.calls if "execute_async_v3" in c]) == 6  # --batch-size 64 became six batch-1 calls


@pytest.mark.parametrize("command", ["evaluate", "benchmark"])
def test_cli_refuses_an_unknown_cuda_backend_in_one_line(command: str, tmp_path: Path, capsys: Any) -> None:
    path = write_engine(tmp_path)
    code, _, err = run_cli(capsys, command, path, "--cuda-backend", "cupy")
    assert_one_line_error(code, err, "--cuda-backend 'cupy': choose one of auto, cuda-python, pycuda")


def test_trt_extras_pin_the_cuda_python_major() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]
    assert extras["trt-cu12"] == ["cuda-python>=12.2,<13"]
    assert extras["trt-cu13"] == ["cuda-python>=13,<14"]
    assert extras["trt"] == extras["trt-cu12"]  # JetPack 6 and every r525+ driver


def test_trt_runner_takes_the_common_load_options_and_guards_its_session(tmp_path: Path) -> None:
    memory = FakeMemory()
    trt = FakeTrt("10.3", engine=FakeEngineSpec(profile=(1, 4, 8)), memory=memory)
    runner = TrtRunner.load(write_engine(tmp_path), trt_module=trt, device_backend=memory, threads=2)
    assert runner.warnings == ["--threads 2 has no effect on TensorRT; ignored"]
    with pytest.raises(RuntimeError, match=r"TrtRunner.infer called outside 'with runner:'"):
        runner.infer(np.zeros((1, 3, 8, 8), np.float32))
    with runner:
        runner.activate()  # already active: no second EngineSession
        assert trt.calls.count("trt.Runtime(logger)") == 1
        with pytest.raises(UserError, match=r"model.engine: takes batches of 1..8 images, got 9"):
            runner.infer(np.zeros((9, 3, 8, 8), np.float32))
        step = runner.benchmark_step(np.zeros((2, 3, 8, 8), np.float32))
        assert set(step()) >= {"gpu_compute", "h2d", "d2h"}
        step.close()


def test_pycuda_refused_allocation_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """pycuda raises pycuda.driver.MemoryError for cuMemAlloc's out-of-memory; we report it in one line."""
    driver = FakePycudaDriver()
    _with_pycuda(monkeypatch, driver)
    backend = pycuda_backend.PycudaBackend()
    with pytest.raises(UserError, match=r"cannot allocate 1125899906842624 bytes .*out of memory") as info:
        backend.alloc(1 << 50)
    assert "\n" not in str(info.value)


def test_a_timed_step_that_cannot_bind_releases_its_pinned_memory_and_events() -> None:
    """A batch outside the engine's profile fails at binding: the pinned buffers and events made before it go."""
    spec = FakeEngineSpec()
    cudart = FakeCudart()
    trt = FakeTrt("10.3", engine=spec, memory=cudart)
    backend = cuda_python_backend.CudaPythonBackend(cudart)
    sess = EngineSession(trt, b"plan", backend, source="m.engine").open()
    too_many = np.zeros((512, 3, 8, 8), np.float32)
    with pytest.raises(UserError):
        sess.timed_step(too_many)
    assert cudart.pinned == {} and backend._events == {}  # the backend's live events: none left
    sess.close()


def test_pycuda_context_refused_by_the_driver_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuCtxCreate can fail (out of memory, a GPU in exclusive-process mode): pycuda raises its Error; one line."""
    driver = FakePycudaDriver()
    _with_pycuda(monkeypatch, driver)

    def refused(self: Any) -> Any:
        raise driver.Error("cuCtxCreate failed: out of memory")

    monkeypatch.setattr(driver.Device, "make_context", refused)
    with pytest.raises(UserError, match=r"pycuda: cannot make a CUDA context on device 0 \(.*out of memory\)") as info:
        cuda_mem.select_backend("pycuda", 0)
    assert "\n" not in str(info.value)


def test_calibration_on_a_pycuda_only_machine_makes_its_context_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """require_backend (the builder's calibrator) probes and makes the device current like the runner does."""
    driver = FakePycudaDriver()
    _with_pycuda(monkeypatch, driver)
    monkeypatch.setattr(cuda_python_backend, "import_cudart", lambda: (_ for _ in ()).throw(UserError("cuda-python missing")))
    backend = cuda_mem.require_backend()
    assert backend.name == "pycuda" and driver.contexts == [0]
    driver.devices = 0
    fresh = FakePycudaDriver(devices=0)
    _with_pycuda(monkeypatch, fresh)
    with pytest.raises(UserError, match="INT8 calibration needs a CUDA GPU"):
        cuda_mem.require_backend()
