"""The compression speed claim: ResNet-18 at 224 pruned to about half its FLOPs + INT8 (ONNX Runtime flavour)
runs >= 2.5x faster than the FP32 original in ONNX Runtime on the same machine, measured in one run.

    python benchmarks/bench_pruned_int8_speed.py [--baseline CKPT] [--pruned CKPT] [--flops 0.5]
                                                 [--image-size 224] [--rounds 5] [--duration 1.0]
                                                 [--json benchmarks/data/pruned_int8_speed.json]

Models (all batch 1, 224 px, ONNX Runtime CPU):
  fp32            the FP32 original: the digits ResNet-18 ``compression_accuracy.py`` trains (fully
                  convolutional, so it runs at 224)
  int8            the original, INT8 ONNX Runtime flavour (``edgeresnet calibrate --flavour ort``)
  pruned-fp32     pruned to ``--flops`` of the MACs: ``--pruned`` (default: the KD fine-tuned
                  ``runs/compression/prune50_kd.pt`` if it exists) or pruned here with
                  ``edgeresnet.compress.prune.prune_model`` (filter L2 norm, union equalization)
  pruned-int8     the pruned model, INT8 ONNX Runtime flavour, QDQ (the calibrate default)
  pruned-int8-qop the same in QOperator form

INT8 models come from the calibrate command's own functions, calibrated on real digits images upsampled to
224 (``max`` method; ranges do not change speed). Latency: interleaved rounds with pooled samples
(``edgeresnet.compress.measure.ort_latencies``); the claim is checked on the ratio of medians from this run.

The CPU's own INT8 head-room is measured too: one ``MatMulInteger`` (u8 x s8, the kernel under every ORT
INT8 conv) against one FP32 ``MatMul`` of the same shape, in ONNX Runtime on one thread. Where that ratio is
about 1 (measured 1.00 on our AMD EPYC family 23 model 1, Zen 1: 256-bit AVX2 runs as two 128-bit halves and
the int8 multiply-adds are no wider than the FP32 FMAs), INT8 cannot make a model faster on this CPU, whatever
the quantizer does, and the claim then rests on pruning alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_int8_latency import _cpu_name  # noqa: E402

DEFAULT_BASELINE = ROOT / "runs" / "compression" / "baseline" / "best.pt"
DEFAULT_PRUNED = ROOT / "runs" / "compression" / "prune50_kd.pt"
CLAIM = 2.5


def int8_ort(model: Any, preprocess: Any, fp32_path: Path, out: Path, calib_images: int, fmt: str) -> dict[str, Any]:
    import onnx

    from edgeresnet.compress import calibration as cal
    from edgeresnet.compress import ptq
    from edgeresnet.data import load_data

    proto = onnx.load(str(fp32_path))
    folded, _ = ptq.prepare_float_model(proto)
    work = ptq.with_dynamic_batch(folded) or folded
    data = load_data("digits", preprocess.image_size)
    calib = cal.calibration_from_data("digits", data.splits["train"], calib_images)
    source = ptq.BatchSource(calib, preprocess, ptq.calibration_batch(preprocess.image_size) if work is not folded
                             else 1, digits_loader=lambda: data)
    table = ptq.calibrate(work, "-", calib, source, "max", cal.DEFAULT_PERCENTILE)
    reduce_range, _why = ptq.default_reduce_range()
    built, summary = ptq.build_ort(folded, table, fmt=fmt, reduce_range=reduce_range)
    onnx.save(built, str(out))
    return summary


def int8_gemm_speedup(size: int = 512, repeats: int = 30) -> dict[str, float]:
    """FP32 MatMul time / u8 x s8 MatMulInteger time, same shape, ONNX Runtime CPU, one thread."""
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def session(int8: bool) -> tuple[Any, Any]:
        kind = TensorProto.UINT8 if int8 else TensorProto.FLOAT
        weight = (rng.integers(-64, 64, (size, size)).astype(np.int8) if int8
                  else rng.standard_normal((size, size)).astype(np.float32))
        node = helper.make_node("MatMulInteger" if int8 else "MatMul", ["a", "w"], ["y"])
        graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", kind, [size, size])],
                                  [helper.make_tensor_value_info("y", TensorProto.INT32 if int8 else TensorProto.FLOAT,
                                                                 [size, size])],
                                  [numpy_helper.from_array(weight, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        sess = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = (rng.integers(0, 255, (size, size)).astype(np.uint8) if int8
                else rng.standard_normal((size, size)).astype(np.float32))
        return sess, feed

    sessions = {"fp32": session(False), "int8": session(True)}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for sess, feed in sessions.values():
        for _ in range(5):
            sess.run(None, {"a": feed})
    for _ in range(repeats):  # interleaved, so drift hits both alike
        for name, (sess, feed) in sessions.items():
            start = time.perf_counter()
            sess.run(None, {"a": feed})
            times[name].append(time.perf_counter() - start)
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    ops = 2.0 * size ** 3
    return {"size": size, "fp32_gops": round(ops / median["fp32"] / 1e9, 1),
            "int8_gops": round(ops / median["int8"] / 1e9, 1),
            "int8_speedup": round(median["fp32"] / median["int8"], 3)}


def _cpu_model() -> str | None:
    """``family F model M`` from /proc/cpuinfo: names the microarchitecture where the model name does not."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines()[:12] if ":" in line)
    except OSError:
        return None
    family, model = fields.get("cpu family\t"), fields.get("model\t\t")
    return f"family {family.strip()} model {model.strip()}" if family and model else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=str(DEFAULT_BASELINE))
    parser.add_argument("--pruned", default=None, help="pruned checkpoint (default: prune50_kd.pt if present, "
                                                       "else prune here)")
    parser.add_argument("--flops", type=float, default=0.5, help="fraction of MACs kept when pruning here")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default="benchmarks/data/pruned_int8_speed.json")
    args = parser.parse_args(argv)

    import onnxruntime

    from edgeresnet.compress.flops import count_costs
    from edgeresnet.compress.int8_flavours import cpu_has_vnni
    from edgeresnet.compress.measure import ort_latencies
    from edgeresnet.compress.qat import export_float_onnx
    from edgeresnet.data import Preprocess
    from edgeresnet.models import load_checkpoint, model_from_checkpoint

    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    baseline = Path(args.baseline)
    if not baseline.exists():
        print(f"no baseline {baseline}: run benchmarks/compression_accuracy.py first (it trains it)", file=sys.stderr)
        return 2
    ckpt = load_checkpoint(baseline)
    model, _ = model_from_checkpoint(ckpt, baseline)
    preprocess = Preprocess.from_dict(ckpt["preprocess"]).with_size(args.image_size)
    pruned_path = Path(args.pruned) if args.pruned else (DEFAULT_PRUNED if DEFAULT_PRUNED.exists() else None)
    if pruned_path is not None:
        pruned, _ = model_from_checkpoint(load_checkpoint(pruned_path), pruned_path)
        pruned_from = str(pruned_path)
    else:
        from edgeresnet.compress.prune import PruneSettings, prune_model

        pruned = prune_model(model, PruneSettings(flops=args.flops), args.image_size).model.eval()
        pruned_from = f"pruned here: prune_model(flops={args.flops}), no fine-tune (speed only)"
    before, after = count_costs(model, args.image_size), count_costs(pruned, args.image_size)

    with tempfile.TemporaryDirectory(prefix="edgeresnet-pruned-int8-") as tmp:
        d = Path(tmp)
        paths = {"fp32": d / "fp32.onnx", "pruned-fp32": d / "pruned-fp32.onnx"}
        export_float_onnx(model, preprocess, paths["fp32"])
        export_float_onnx(pruned, preprocess, paths["pruned-fp32"])
        summaries = {
            "int8": int8_ort(model, preprocess, paths["fp32"], d / "int8.onnx", args.calib_images, "qdq"),
            "pruned-int8": int8_ort(pruned, preprocess, paths["pruned-fp32"], d / "pruned-int8.onnx",
                                    args.calib_images, "qdq"),
            "pruned-int8-qop": int8_ort(pruned, preprocess, paths["pruned-fp32"], d / "pruned-int8-qop.onnx",
                                        args.calib_images, "qoperator"),
        }
        for name in summaries:
            paths[name] = d / f"{name}.onnx"
        order = ["fp32", "int8", "pruned-fp32", "pruned-int8", "pruned-int8-qop"]
        sizes = {n: paths[n].stat().st_size for n in order}
        lat = ort_latencies([paths[n] for n in order], args.image_size, rounds=args.rounds, duration_s=args.duration,
                            threads=args.threads)
    gemm = int8_gemm_speedup()
    results = {n: lat[i].to_dict() for i, n in enumerate(order)}
    base = results["fp32"]["median_ms"]
    for n in order:
        results[n]["speedup_vs_fp32"] = round(base / results[n]["median_ms"], 3)
    speedup = results["pruned-int8"]["speedup_vs_fp32"]
    meta = {"image_size": args.image_size, "cpus": os.cpu_count(), "cpu": _cpu_name(), "cpu_model": _cpu_model(),
            "vnni": cpu_has_vnni(),
            "onnxruntime": onnxruntime.__version__, "rounds": args.rounds, "duration_s": args.duration,
            "loadavg_start": load_start, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(time.perf_counter() - started, 1),
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}
    doc = {"benchmark": "pruned_int8_speed", "meta": meta, "baseline": str(baseline), "pruned": pruned_from,
           "macs": {"fp32": before.macs, "pruned": after.macs, "kept": round(after.macs / before.macs, 4)},
           "params": {"fp32": before.params, "pruned": after.params}, "sizes_bytes": sizes,
           "int8_summaries": summaries, "latency": results, "int8_gemm": gemm,
           "claim": {"speedup_at_least": CLAIM, "measured": speedup, "passed": speedup >= CLAIM}}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# Pruned + INT8 vs FP32, ONNX Runtime CPU, ResNet-18 at {args.image_size} px, batch 1", "",
             f"Machine: {meta['cpu']} ({meta['cpu_model']}, {meta['cpus']} CPUs, VNNI: {meta['vnni']}), onnxruntime "
             f"{meta['onnxruntime']}, "
             f"load average {load_start} at start, {meta['loadavg_end']} at end; {args.rounds} interleaved rounds "
             f"of {args.duration} s per model.", "",
             f"Pruned model: {pruned_from}; MACs {before.gmacs:.3f} G -> {after.gmacs:.3f} G "
             f"({100 * after.macs / before.macs:.1f} % kept), params {before.mparams:.2f} M -> {after.mparams:.2f} M.", "",
             "| model | median ms | p90 ms | samples | speed-up vs FP32 | ONNX MB |", "|---|---:|---:|---:|---:|---:|"]
    for n in order:
        r = results[n]
        lines.append(f"| {n} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['n']} | x{r['speedup_vs_fp32']:.2f} | "
                     f"{sizes[n] / 1e6:.1f} |")
    lines += ["", f"INT8 head-room of this CPU: u8 x s8 MatMulInteger {gemm['int8_gops']} GOPS vs FP32 MatMul "
                  f"{gemm['fp32_gops']} GOPS ({gemm['size']}^3, one thread): x{gemm['int8_speedup']:.2f}.",
              "", f"Claim: pruned-int8 >= x{CLAIM} vs fp32: measured x{speedup:.2f} -> "
                  f"{'pass' if speedup >= CLAIM else 'FAIL'}"]
    if speedup < CLAIM and gemm["int8_speedup"] < 1.2:
        lines += ["", f"Why: INT8 arithmetic is no faster than FP32 on this CPU (x{gemm['int8_speedup']:.2f}), so INT8 "
                      f"adds ~nothing to pruning's x{results['pruned-fp32']['speedup_vs_fp32']:.2f}; the claim needs a "
                      "CPU whose int8 kernels beat FP32 (VNNI, or AVX2 with full-width 256-bit units)."]
    lines += ["", f"Command: `{meta['command']}`"]
    md = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0 if speedup >= CLAIM else 1


if __name__ == "__main__":
    sys.exit(main())
