"""benchmarks/gpu_check.py without a GPU: every CUDA check SKIPs with its reason and the script exits 0; the parts
that run on a CPU run here (the stand-in engine through EngineSession and TrtRunner over host memory, the training
harness under bf16 autocast, pycuda's install step), and a crashing check stays that check's FAIL."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import trim_splits
from edgeresnet.errors import UserError
from fake_trt import FakeMemory

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _module()


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=environ,
                          cwd=str(REPO), timeout=300)


def lines(stdout: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("PASS", "FAIL", "SKIP"):
            name, _, detail = rest.partition(": ")
            found[name] = (status, detail)
    return found


def test_without_a_gpu_every_cuda_check_skips_with_its_reason(tmp_path: Path) -> None:
    done = run_script("--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    found = lines(done.stdout)
    assert list(found) == list(gpu_check.NAMES)  # one line per check, in order
    assert found["probe"][0] == "PASS" and "torch" in found["probe"][1]
    for name in gpu_check.NAMES[1:]:
        status, reason = found[name]
        assert status == "SKIP", (name, status, reason)
        assert "CUDA_VISIBLE_DEVICES=-1" in reason or "torch.cuda.is_available() is False" in reason, reason
    payload = json.loads((tmp_path / "r.json").read_text())
    assert [(r["name"], r["status"]) for r in payload["results"]] == [(n, s) for n, (s, _) in found.items()]
    assert payload["summary"] == {"PASS": 1, "FAIL": 0, "SKIP": len(gpu_check.NAMES) - 1}
    assert payload["facts"]["broken_modules"] == [] and payload["facts"]["torch_cuda"] is False


def test_require_gpu_makes_a_missing_gpu_a_failure() -> None:
    done = run_script("--require-gpu", "--only", "cuda-python-memory,torch-cuda-step")
    assert done.returncode == 1
    found = lines(done.stdout)
    assert [s for s, _ in found.values()] == ["FAIL", "FAIL"] and "probe" not in found
    assert "0 passed, 2 failed, 0 skipped" in done.stdout


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    for args, fragment in ((["--only", "probe,nope"], "--only nope: unknown check"),
                           (["--json", str(tmp_path / "missing" / "r.json")], "--json")):
        done = run_script(*args)
        assert done.returncode == 2
        assert done.stderr.startswith("error: ") and fragment in done.stderr and len(done.stderr.splitlines()) == 1
        assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_check_that_kills_its_process_is_that_checks_failure(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("import os\nos._exit(7)\n")  # a native crash at import, say
    done = run_script("--only", "probe,torch-cuda-step", "--site", str(site))
    assert done.returncode == 1
    found = lines(done.stdout)
    assert found["probe"][0] == "FAIL" and "the child process died (exit 7)" in found["probe"][1]
    assert found["torch-cuda-step"][0] == "SKIP"  # the others still report


def _host_stand_in(memory: FakeMemory, **options):
    """The stand-in engine over FakeMemory: its strided copies done with numpy on the host buffers."""

    def copy2d(dst, dpitch, src, spitch, width, height, stream):
        assert stream != 0
        source = np.frombuffer(memory.buffers[src], dtype=np.uint8)
        target = np.frombuffer(memory.buffers[dst], dtype=np.uint8)
        for row in range(height):
            target[row * dpitch:row * dpitch + width] = source[row * spitch:row * spitch + width]

    return gpu_check.StandInTrt(copy2d, memory.alloc, memory.free, **options)


def test_stand_in_engine_runs_through_engine_session_and_timed_step() -> None:
    memory = FakeMemory()
    trt = _host_stand_in(memory, size=8, profile=(1, 4, 8))
    detail, data = gpu_check.run_timed_session(trt, memory, batches=(1, 5), min_iterations=3)
    assert set(data) == {"b1_transfers", "b1_device", "b5_transfers", "b5_device"}
    assert data["b5_transfers"]["h2d"] == data["b5_transfers"]["gpu_compute"] == 1.0  # FakeMemory: 1 ms per event
    assert trt.executions >= 2 * 3 * 2 + 2 and "stand-in executions" in detail
    assert memory.buffers == {}  # the session's buffers and the context's workspace are all freed


def test_stand_in_engine_through_the_trt_runner(tmp_path: Path) -> None:
    memory = FakeMemory()
    trt = _host_stand_in(memory, size=8, profile=(1, 8, 16))
    detail, data = gpu_check.run_trt_runner(trt, tmp_path, "NVIDIA Fake GPU", "8.7", device_backend=memory)
    assert data["describe"]["gpu"] == {"name": "NVIDIA Fake GPU", "compute_capability": "8.7"}
    assert data["gpu_compute"] == 1.0 and "batch 16" in detail
    # built for another GPU: the runner refuses before the stand-in is deserialized, as it would a real engine
    with pytest.raises(UserError, match="built for compute capability 9.0"):
        gpu_check.run_trt_runner(trt, tmp_path, "NVIDIA H200", "9.0", device_backend=memory)


def test_stand_in_refuses_what_tensorrt_refuses() -> None:
    from edgeresnet.trt.runtime import EngineSession

    memory = FakeMemory()
    trt = _host_stand_in(memory, size=8, profile=(1, 4, 8))
    assert trt.Runtime(None).deserialize_cuda_engine(b"\x08\x07pytorch") is None
    session = EngineSession(trt, b"ftrt" + bytes(60), memory, source="s.engine").open()
    with pytest.raises(UserError, match="batch 9 is outside the engine's profile 1..8"):
        session.infer(np.zeros((9, 3, 8, 8), dtype=np.float32))
    assert session.context.execute_async_v3(0xABC1) is False  # no shape bound yet: False, like TensorRT
    session.close()


def test_training_harness_under_bf16_on_the_cpu() -> None:
    from edgeresnet.data import load_data

    tiny = trim_splits(load_data("digits", 32, seed=0), {"train": 1, "val": 1})  # bf16 is emulated on CPUs
    detail, data = gpu_check.run_training("bf16", "cpu", steps=1, batch_size=10, splits=tiny)
    assert data["steps"] == 1 and data["autocast_dtype"] == "torch.bfloat16" and data["scaler_enabled"] is False
    assert data["changed_tensors"] > 0 and "no GradScaler" in detail
    import torch

    assert torch.amp.GradScaler is gpu_check_original_scaler  # restored after the run


gpu_check_original_scaler = __import__("torch").amp.GradScaler


def _toolkit(folder: Path, *, curand: bool = False, stub: bool = False) -> Path:
    for sub in ("bin", "include", "lib64/stubs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "bin" / "nvcc").write_text("")
    (folder / "include" / "cuda.h").write_text("")
    if curand:
        (folder / "include" / "curand.h").write_text("")
    if stub:
        (folder / "lib64" / "stubs" / "libcuda.so").write_text("")
    return folder


def test_pycuda_install_skips_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = gpu_check.parse_args(["--wheels", str(tmp_path / "none"), "--site", str(tmp_path / "site")])
    result = gpu_check.pycuda_install(args, 60)
    assert result.status == "SKIP" and "no pycuda source distribution" in result.detail
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "pycuda-2026.1.tar.gz").write_bytes(b"not a tar file")
    args = gpu_check.parse_args(["--wheels", str(wheels), "--site", str(tmp_path / "site")])
    monkeypatch.setattr(gpu_check, "cuda_toolkit_root", lambda environ=None: None)
    result = gpu_check.pycuda_install(args, 60)
    assert result.status == "SKIP" and "no CUDA toolkit with bin/nvcc and include/cuda.h" in result.detail
    toolkit = _toolkit(tmp_path / "cuda")
    monkeypatch.setattr(gpu_check, "cuda_toolkit_root", lambda environ=None: toolkit)
    result = gpu_check.pycuda_install(args, 60)
    assert result.status == "SKIP" and result.detail.startswith("pycuda-2026.1.tar.gz does not unpack"), result.detail


def test_pip_failure_is_a_skip_with_its_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real sdist whose setup.py fails the way a missing header does: pip's cause is on the SKIP line."""
    import tarfile

    source = tmp_path / "pycuda-0.1"
    source.mkdir()
    (source / "setup.py").write_text("import sys\nsys.stderr.write('src/cpp/cuda.hpp:14:10: fatal error: cuda.h: No "
                                     "such file or directory\\n')\nsys.exit(1)\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with tarfile.open(wheels / "pycuda-0.1.tar.gz", "w:gz") as archive:
        archive.add(source, arcname="pycuda-0.1")
    toolkit = _toolkit(tmp_path / "cuda")
    monkeypatch.setattr(gpu_check, "cuda_toolkit_root", lambda environ=None: toolkit)
    args = gpu_check.parse_args(["--wheels", str(wheels), "--site", str(tmp_path / "site")])
    result = gpu_check.pycuda_install(args, 120)
    assert result.status == "SKIP" and result.detail.startswith("pip exited 1"), result.detail
    assert "fatal error: cuda.h" in result.detail and f"CUDA_ROOT = {str(toolkit)!r}" in result.traceback


def test_siteconf_names_the_toolkit_curand_and_a_libcuda_to_link(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def read(text: str) -> dict:
        values: dict = {}
        exec(compile(text, "siteconf.py", "exec"), values)  # what pycuda's aksetup_helper does with it
        return values

    with_stub = read(gpu_check.pycuda_siteconf(_toolkit(tmp_path / "a", curand=True, stub=True)))
    assert with_stub["CUDA_ROOT"] == str(tmp_path / "a") and with_stub["CUDA_ENABLE_CURAND"] is True
    assert with_stub["CUDADRV_LIB_DIR"][0] == str(tmp_path / "a" / "lib64" / "stubs")
    assert with_stub["CUDADRV_LIBNAME"] == ["cuda"]
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "libcuda.so.1").write_text("")  # a driver folder without the unversioned development link
    monkeypatch.setattr(gpu_check, "DRIVER_DIRS", (str(driver),))
    bare = read(gpu_check.pycuda_siteconf(_toolkit(tmp_path / "b")))
    assert bare["CUDA_ENABLE_CURAND"] is False
    assert bare["CUDADRV_LIB_DIR"][0] == str(driver) and bare["CUDADRV_LIBNAME"] == [":libcuda.so.1"]


def test_benchmark_path_of_the_torch_check_on_the_cpu() -> None:
    """The same ``benchmark_artifact`` call the CUDA check makes; here host latency only, no event timings."""
    detail, data = gpu_check.run_torch_benchmark("cpu", batches=(1,))
    (record,) = data["records"]
    assert record["device"] == "cpu" and record["iterations"] >= 20 and record["gpu_compute_ms"] is None
    assert detail.startswith("batch 1 latency median ")


def test_a_failing_probe_still_hands_its_facts_to_the_other_checks(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "numpy").mkdir(parents=True)
    (site / "numpy" / "__init__.py").write_text("raise ImportError('numpy is broken here')\n")
    done = run_script("--only", "probe,trt-runner", "--site", str(site))
    assert done.returncode == 1
    found = lines(done.stdout)
    assert found["probe"][0] == "FAIL" and "do not import: edgeresnet.data (ImportError: numpy is broken" in found[
        "probe"][1]
    assert found["trt-runner"] == ("SKIP", "no CUDA device for cuda-python: CUDA_VISIBLE_DEVICES=-1 hides every GPU")


def test_pycuda_builds_against_the_real_toolkit_not_an_nvcc_wrapper(tmp_path: Path) -> None:
    """A /usr/local/bin/nvcc wrapper script would make pycuda's setup.py look for cuda.h in /usr/local/include."""
    wrapper = tmp_path / "wrapper" / "bin"
    wrapper.mkdir(parents=True)
    (wrapper / "nvcc").write_text("#!/bin/sh\nexec /somewhere/else/nvcc \"$@\"\n")
    (wrapper / "nvcc").chmod(0o755)
    toolkit = tmp_path / "cuda-13.0"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "bin" / "nvcc").write_text("")
    (toolkit / "include" / "cuda.h").write_text("")
    environ = {"PATH": str(wrapper), "CUDA_HOME": str(toolkit)}
    assert gpu_check.cuda_toolkit_root(environ) == toolkit
