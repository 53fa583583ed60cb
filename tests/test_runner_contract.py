"""The one runtime layer: the Runner base class owns activation, the input checks and the timed step; benchmark,
PTQ/QAT and compression measurement time and evaluate through it; one top-1."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edgeresnet.errors import UserError
from edgeresnet.runners.base import BACKENDS, Runner

PACKAGE = Path(__file__).resolve().parents[1] / "edgeresnet"


class CountingRunner(Runner):
    """A real Runner (numpy: logits = the first 10 flattened pixels) that counts its backend calls."""

    backend = "numpy"

    def __init__(self, limits: tuple[int, int] | None = None) -> None:
        super().__init__(Path("counting.npy"))
        self.limits = limits
        self.activations = self.deactivations = 0
        self.batches: list[int] = []

    def activate_impl(self) -> None:
        self.activations += 1

    def deactivate_impl(self) -> None:
        self.deactivations += 1

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.float32 and images.flags.c_contiguous
        self.batches.append(images.shape[0])
        return images.reshape(len(images), -1)[:, :10]

    @property
    def batch_range(self) -> tuple[int, int] | None:
        return self.limits


def images(n: int) -> np.ndarray:
    return np.arange(n * 3 * 2 * 2, dtype=np.float32).reshape(n, 3, 2, 2)


def test_activate_is_guarded_like_polygraphy() -> None:
    runner = CountingRunner()
    with pytest.raises(RuntimeError, match=r"CountingRunner.infer called outside 'with runner:'"):
        runner.infer(images(1))
    with runner:
        runner.activate()  # already active: a no-op
        assert runner.active and runner.activations == 1
        assert runner.infer(images(2)).shape == (2, 10)
    assert not runner.active and runner.deactivations == 1
    runner.deactivate()  # not active: a no-op
    assert runner.deactivations == 1
    with pytest.raises(RuntimeError, match="benchmark_step called outside"):
        runner.benchmark_step(images(1))


def test_torch_runner_refuses_infer_outside_activation() -> None:
    torch = pytest.importorskip("torch")
    from edgeresnet.runners.torch_runner import TorchRunner

    runner = TorchRunner.from_model(torch.nn.Flatten(), None, device="cpu")
    with pytest.raises(RuntimeError, match="outside 'with runner:'"):
        runner.infer(images(1))
    with runner:
        np.testing.assert_array_equal(runner.infer(images(2)), images(2).reshape(2, -1))


def test_input_checks_live_in_the_base_class() -> None:
    with CountingRunner(limits=(1, 4)) as runner:
        with pytest.raises(UserError, match=r"counting.npy: takes float32 images, got an array of bool"):
            runner.infer(np.zeros((1, 3, 2, 2), bool))
        with pytest.raises(UserError, match=r"counting.npy: takes NCHW images .* got shape \(3, 2, 2\)"):
            runner.infer(np.zeros((3, 2, 2), np.float32))
        with pytest.raises(UserError, match=r"counting.npy: takes batches of 1..4 images, got 5"):
            runner.infer(images(5))
        out = runner.infer(images(3).astype(np.float64))  # cast once to contiguous float32
        assert out.dtype == np.float32 and runner.batches == [3]


def test_a_static_batch_is_chunked_and_padded_by_the_base_class() -> None:
    with CountingRunner(limits=(2, 2)) as runner:
        out = runner.infer(images(5))
    assert runner.batches == [2, 2, 2] and out.shape == (5, 10)
    np.testing.assert_array_equal(out, images(5).reshape(5, -1)[:, :10])


def test_default_benchmark_step_is_one_host_infer() -> None:
    with CountingRunner() as runner:
        step = runner.benchmark_step(images(2))
        assert step() is None and step() is None
        assert runner.batches == [2, 2]
        with pytest.raises(UserError, match=r"--no-transfers: supported for the torch backend on CUDA .*"
                                            r"--backend numpy times the host call only"):
            runner.benchmark_step(images(2), transfers=False)


def test_every_backend_loads_with_the_same_options() -> None:
    import importlib
    import inspect

    for target in BACKENDS.values():
        module, name = target.split(":")
        params = inspect.signature(getattr(importlib.import_module(module), name).load).parameters
        for option in ("device", "threads", "cuda_backend"):
            assert params[option].kind is inspect.Parameter.KEYWORD_ONLY, (name, option)
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), name


def tiny_onnx(path: Path) -> Path:
    """input (batch, 3, 2, 2) -> Flatten -> logits (batch, 12)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["logits"], axis=1)], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 12])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_ort_runner_names_options_it_ignores(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from edgeresnet.runners import load_runner

    runner = load_runner(tiny_onnx(tmp_path / "tiny.onnx"), device="cuda", threads=1, cuda_backend="pycuda")
    assert runner.warnings == ["--cuda-backend pycuda applies to TensorRT engines only; ignored"]
    with runner:
        np.testing.assert_array_equal(runner.infer(images(3)), images(3).reshape(3, -1))


def test_compression_latency_is_timed_through_the_runner_and_the_benchmark_loop(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from edgeresnet.bench import timing
    from edgeresnet.compress import measure as compress_measure
    from edgeresnet.compress import ort_cpu
    from edgeresnet.runners.ort_runner import OrtRunner

    path = tiny_onnx(tmp_path / "tiny.onnx")
    steps: list[str] = []
    real_step = OrtRunner.benchmark_step

    def spy_step(self, batch, **kw):
        steps.append(self.path.name)
        return real_step(self, batch, **kw)

    calls: list[int] = []
    real_measure = timing.measure

    def spy_measure(step, config, *args, **kw):
        out = real_measure(step, config, *args, **kw)
        calls.append(out.iterations)
        return out

    monkeypatch.setattr(OrtRunner, "benchmark_step", spy_step)
    monkeypatch.setattr(timing, "measure", spy_measure)
    (latency,) = compress_measure.ort_latencies([path], image_size=2, rounds=2, duration_s=0.0)
    assert steps == ["tiny.onnx"] and len(calls) == 2 and latency.n == sum(calls) == 20
    calls.clear()
    result = ort_cpu.measure_latency({"a": ort_cpu.ort_session(path), "b": ort_cpu.ort_session(path)},
                                     (1, 3, 2, 2), iterations=4, warmup=1)
    assert calls == [1] * 8 and result["a"]["iterations"] == result["b"]["iterations"] == 4


def test_one_top1_and_no_images_is_an_error() -> None:
    from edgeresnet.compress import int8_accuracy, measure, sensitivity
    from edgeresnet.evaluate import evaluate_logits, top1

    assert measure.top1 is top1 and sensitivity.top1 is top1 and int8_accuracy.top1 is top1
    assert top1(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1, 1])) == 50.0
    with pytest.raises(UserError, match="accuracy: no labelled images to measure top-1 on"):
        top1(np.zeros((0, 10)), np.zeros(0, np.int64))
    with pytest.raises(UserError, match="accuracy: no labelled images"):
        evaluate_logits(np.zeros((0, 10)), np.zeros(0, np.int64))


def source(relative: str) -> str:
    return (PACKAGE / relative).read_text(encoding="utf-8")


def test_only_the_ort_runner_opens_an_onnxruntime_session() -> None:
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if re.search(r"\bInferenceSession\(", p.read_text(encoding="utf-8"))]
    assert offenders == ["runners/ort_runner.py"]


def test_bench_package_is_split_and_has_no_backend_probes() -> None:
    for name in ("bench/core.py", "bench/artifact.py", "bench/rundir.py"):
        text = source(name)
        assert len(text.splitlines()) <= 500, name
        for probe in ("inspect.signature", "BACKENDS[", '"module"', '"net"', "onnx.load("):
            assert probe not in text, (name, probe)
