"""Overhead of our measurement loop vs a bare ``session.run`` loop on the same ONNX model, same run.

"Ours" is exactly what ``edgeresnet benchmark --backend ort`` times: ``measure(host_step(runner.infer))``
(loop bookkeeping, two perf_counter_ns reads, the runner's input checks and output conversion). "Bare" is
``session.run`` on the same InferenceSession with only a perf_counter_ns pair around it. Rounds are
interleaved (ours, bare, bare, ours, ...) so machine load drifts hit both alike. Target: the median of
ours within 2 % of the bare median. A tiny one-convolution model is also run to show the fixed cost per
iteration in microseconds (there, a fixed cost is a large fraction by construction).

Run: python benchmarks/bench_overhead.py [--model m.onnx] [--rounds 12] [--iterations 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeresnet.bench.timing import TimingConfig, host_step, measure  # noqa: E402
from edgeresnet.runners.ort_runner import OrtRunner  # noqa: E402


def export_resnet18(out: Path, image_size: int) -> Path:
    """A small-stem ResNet-18 (random weights: speed does not depend on them) at ``image_size``."""
    import torch

    from edgeresnet.models import ModelSpec, build_model

    model = build_model(ModelSpec("resnet18", 10, small_stem=True)).eval()
    path = out / f"resnet18_{image_size}.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, image_size, image_size), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def export_tiny(out: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [10, 3, 8, 8], rng.standard_normal(1920).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["conv"]), helper.make_node("Flatten", ["conv"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = out / "tiny_conv.onnx"
    onnx.save(model, str(path))
    return path


def compare(path: Path, rounds: int, iterations: int, threads: int | None) -> dict[str, float]:
    runner = OrtRunner.load(path, threads=threads)
    with runner:
        shape = [d if isinstance(d, int) else 1 for d in runner.input_shape]
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        session, feed_name, out_names = runner.session, runner.signature.input_name, [runner.signature.output_names[0]]
        config = TimingConfig(warmup_ms=0.0, warmup_iterations=3, min_iterations=iterations, duration_s=0.0)

        def ours() -> tuple[list[float], float]:
            start = time.perf_counter_ns()
            timings = measure(host_step(runner.infer, x), config)
            return timings.latency_ms, (time.perf_counter_ns() - start) / 1e6

        def loop() -> tuple[list[float], float]:  # our loop around the bare call: isolates the loop's own cost
            start = time.perf_counter_ns()
            timings = measure(host_step(lambda images: session.run(out_names, {feed_name: images}), x), config)
            return timings.latency_ms, (time.perf_counter_ns() - start) / 1e6

        def bare() -> tuple[list[float], float]:
            start = time.perf_counter_ns()
            for _ in range(3):
                session.run(out_names, {feed_name: x})
            samples = []
            for _ in range(iterations):
                t0 = time.perf_counter_ns()
                session.run(out_names, {feed_name: x})
                samples.append((time.perf_counter_ns() - t0) / 1e6)
            return samples, (time.perf_counter_ns() - start) / 1e6

        pooled: dict[str, list[float]] = {"ours": [], "loop": [], "bare": []}
        wall = {"ours": 0.0, "loop": 0.0, "bare": 0.0}
        ratios = []
        for r in range(rounds):
            order = (ours, loop, bare) if r % 2 == 0 else (bare, loop, ours)
            got = {}
            for fn in order:
                got[fn.__name__] = fn()
            for name, (samples, ms) in got.items():
                pooled[name] += samples
                wall[name] += ms
            ratios.append(statistics.median(got["ours"][0]) / statistics.median(got["bare"][0]))
    m_ours, m_loop, m_bare = (statistics.median(pooled[k]) for k in ("ours", "loop", "bare"))
    return {"median_ours_ms": m_ours, "median_loop_ms": m_loop, "median_bare_ms": m_bare,
            "pooled_ratio": m_ours / m_bare, "ratio": statistics.median(ratios),
            "loop_ratio": m_loop / m_bare, "overhead_us": (m_ours - m_bare) * 1000,
            "loop_overhead_us": (m_loop - m_bare) * 1000, "round_ratio_min": min(ratios),
            "round_ratio_max": max(ratios), "wall_ratio": wall["ours"] / wall["bare"], "samples": len(pooled["ours"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="ONNX model (default: export a small-stem ResNet-18 at 32x32)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=8, help="timed iterations per round and side")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (1 = least noise)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or export_resnet18(Path(tmp), args.image_size)
        main_result = compare(model, args.rounds, args.iterations, args.threads)
        tiny = compare(export_tiny(Path(tmp)), 10, 300, args.threads)
    print(f"model: {model.name if args.model else f'resnet18 small-stem {args.image_size}x{args.image_size}'} "
          f"(ORT CPU, {args.threads} thread(s)), {args.rounds} interleaved rounds, {main_result['samples']} samples/side")
    print(f"  median per iteration: ours {main_result['median_ours_ms']:.4f} ms, bare session.run "
          f"{main_result['median_bare_ms']:.4f} ms")
    print(f"  ratio ours/bare at the median (median of per-round ratios): {main_result['ratio']:.4f} "
          f"({(main_result['ratio'] - 1) * 100:+.2f} %, target <= +2 %)")
    print(f"  pooled medians ratio {main_result['pooled_ratio']:.4f}; per-round ratios "
          f"{main_result['round_ratio_min']:.3f}..{main_result['round_ratio_max']:.3f} (machine noise); "
          f"wall-time ratio {main_result['wall_ratio']:.4f}")
    implied = 1 + tiny["overhead_us"] / 1000 / main_result["median_bare_ms"]
    print(f"  fixed cost from the tiny model / bare median = implied ratio {implied:.5f}")
    print(f"  our loop around the bare call (no runner): ratio {main_result['loop_ratio']:.4f}")
    print(f"tiny 1-conv model: ours {tiny['median_ours_ms'] * 1000:.1f} us, our loop around session.run "
          f"{tiny['median_loop_ms'] * 1000:.1f} us, bare {tiny['median_bare_ms'] * 1000:.1f} us -> fixed cost per "
          f"iteration: loop {tiny['loop_overhead_us']:.1f} us, loop + runner.infer conversions "
          f"{tiny['overhead_us']:.1f} us")
    ok = main_result["ratio"] <= 1.02
    print("RESULT: within 2 %" if ok else "RESULT: above 2 %")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
