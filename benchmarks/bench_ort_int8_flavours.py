"""Is it our quantizer, or the CPU? ONNX Runtime's *own* static quantizer, every INT8 flavour, vs FP32.

    python benchmarks/bench_ort_int8_flavours.py [--image-size 224] [--rounds 5] [--duration 1.0]
                                                 [--json benchmarks/data/ort_int8_flavours.json]

A torchvision ResNet-18 (random weights: speed does not depend on their values) is exported to ONNX,
pre-processed with ``quant_pre_process`` and quantized by ``quantize_static`` exactly as ORT's documentation
shows (per-channel weights, 8 random calibration batches), once per activation/weight type pair, format
(QDQ / QOperator) and ``reduce_range``. All models are timed in interleaved rounds in one process
(``edgeresnet.compress.measure.ort_latencies``); the table gives each one's speed-up over FP32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_int8_latency import _cpu_name  # noqa: E402

# (name, activation type, weight type, format, reduce_range)
FLAVOURS = [("u8s8-qdq", "QUInt8", "QInt8", "QDQ", False), ("u8s8-qdq-rr", "QUInt8", "QInt8", "QDQ", True),
            ("u8s8-qop", "QUInt8", "QInt8", "QOperator", False), ("u8s8-qop-rr", "QUInt8", "QInt8", "QOperator", True),
            ("u8u8-qop", "QUInt8", "QUInt8", "QOperator", False), ("s8s8-qdq", "QInt8", "QInt8", "QDQ", False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--json", default="benchmarks/data/ort_int8_flavours.json")
    args = parser.parse_args(argv)

    import logging

    import numpy as np
    import onnxruntime
    import torch
    import torchvision
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeresnet.compress.int8_flavours import cpu_has_vnni
    from edgeresnet.compress.measure import ort_latencies

    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer talks on the root logger
    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    size = args.image_size
    rng = np.random.default_rng(0)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = 8

        def get_next(self) -> dict | None:
            self.left -= 1
            return {"input": rng.standard_normal((1, 3, size, size)).astype(np.float32)} if self.left >= 0 else None

    with tempfile.TemporaryDirectory(prefix="edgeresnet-ort-flavours-") as tmp:
        d = Path(tmp)
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10).eval()
        torch.onnx.export(model, torch.randn(1, 3, size, size), str(d / "fp32.onnx"), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["logits"])
        quant_pre_process(str(d / "fp32.onnx"), str(d / "pre.onnx"))
        for name, act, weight, fmt, reduce_range in FLAVOURS:
            quantize_static(str(d / "pre.onnx"), str(d / f"{name}.onnx"), Batches(),
                            quant_format=getattr(QuantFormat, fmt), per_channel=True, reduce_range=reduce_range,
                            activation_type=getattr(QuantType, act), weight_type=getattr(QuantType, weight))
        order = ["fp32"] + [f[0] for f in FLAVOURS]
        lat = ort_latencies([d / f"{n}.onnx" for n in order], size, rounds=args.rounds, duration_s=args.duration)
    base = lat[0].median_ms
    rows = [{"model": n, "median_ms": round(x.median_ms, 3), "p90_ms": round(x.p90_ms, 3), "n": x.n,
             "speedup_vs_fp32": round(base / x.median_ms, 3)} for n, x in zip(order, lat)]
    meta = {"image_size": size, "cpus": os.cpu_count(), "cpu": _cpu_name(), "vnni": cpu_has_vnni(),
            "onnxruntime": onnxruntime.__version__, "rounds": args.rounds, "duration_s": args.duration,
            "loadavg_start": load_start, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(time.perf_counter() - started, 1),
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "ort_int8_flavours", "meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"# ONNX Runtime's own quantizer, ResNet-18 at {size} px, batch 1", "",
             f"Machine: {meta['cpu']} ({meta['cpus']} CPUs, VNNI: {meta['vnni']}), onnxruntime {meta['onnxruntime']}, "
             f"load average {load_start} at start, {meta['loadavg_end']} at end; {args.rounds} interleaved rounds of "
             f"{args.duration} s per model.", "",
             "| model | median ms | p90 ms | samples | speed-up vs FP32 |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['n']} | x{r['speedup_vs_fp32']:.2f} |"
              for r in rows]
    lines += ["", f"Command: `{meta['command']}`"]
    md = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
