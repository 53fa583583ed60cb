"""FP32 vs INT8 latency in ONNX Runtime (CPU), both INT8 flavours, as ratios from one interleaved run.

    python benchmarks/bench_int8_latency.py [--arch resnet18,resnet50] [--image-size 224] [--rounds 5]
                                            [--duration 1.0] [--calib-images 64] [--threads N]
                                            [--json benchmarks/data/int8_latency.json]

For each architecture at 224 px, batch 1: the FP32 ONNX and the INT8 models ``edgeresnet calibrate`` writes,
made with the same functions (``edgeresnet.compress.ptq``):

  fp32           legacy export, opset 17 (BN folded by the exporter)
  trt            TensorRT flavour: symmetric int8, Q/DQ only on weighted-layer inputs and residual adds,
                 biases float (for TensorRT; ONNX Runtime runs it but is not its target)
  ort-qdq        ONNX Runtime flavour, QDQ format: uint8 asymmetric activations, per-channel int8 weights
  ort-qoperator  the same in QOperator form (QLinearConv ...)

ResNet-18 is the digits model ``benchmarks/compression_accuracy.py`` trains (``--baseline``; it is fully
convolutional, so it runs at 224), or a fresh one if none exists; ResNet-50 is a fresh ResNet-50. Fresh
models get BatchNorm statistics from digits images so activations have realistic ranges. Calibration uses
real digits images upsampled to 224 (``--calib-images``, ``max`` method: ranges do not change speed).
Latency: ``edgeresnet.compress.measure.ort_latencies`` (ONNX Runtime CPU runner, interleaved rounds, pooled
samples); the report gives medians and ratios against FP32 of the same run, and the machine's load.
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

DEFAULT_BASELINE = ROOT / "runs" / "compression" / "baseline" / "best.pt"


def load_model(arch: str, baseline: Path, image_size: int) -> tuple[Any, Any, str]:
    """(model, preprocess at ``image_size``, where it came from)."""
    import torch
    import torch.nn as nn

    from edgeresnet.data import Preprocess, load_data
    from edgeresnet.models import ModelSpec, build_model, load_checkpoint, model_from_checkpoint

    if arch == "resnet18" and baseline.exists():
        ckpt = load_checkpoint(baseline)
        model, _spec = model_from_checkpoint(ckpt, baseline)
        return model, Preprocess.from_dict(ckpt["preprocess"]).with_size(image_size), f"trained digits model {baseline}"
    data = load_data("digits", image_size)
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch, data.num_classes))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    model.train()
    images = data.arrays("train", limit=16)[0]
    with torch.no_grad():
        for i in range(0, len(images), 4):
            model(torch.from_numpy(images[i:i + 4]))
    return model.eval(), data.preprocess, f"fresh {arch}, BatchNorm statistics from 16 digits images"


def make_variants(model: Any, preprocess: Any, workdir: Path, calib_images: int) -> tuple[dict[str, Path], dict]:
    """Export FP32 and write the three INT8 variants with the calibrate command's own functions."""
    import onnx

    from edgeresnet.compress import calibration as cal
    from edgeresnet.compress import ptq
    from edgeresnet.compress.qat import export_float_onnx
    from edgeresnet.data import load_data

    fp32 = workdir / "fp32.onnx"
    export_float_onnx(model, preprocess, fp32)
    proto = onnx.load(str(fp32))
    folded, _ = ptq.prepare_float_model(proto)
    work = ptq.with_dynamic_batch(folded) or folded
    data = load_data("digits", preprocess.image_size)
    calib = cal.calibration_from_data("digits", data.splits["train"], calib_images)
    batch = ptq.calibration_batch(preprocess.image_size) if work is not folded else 1
    source = ptq.BatchSource(calib, preprocess, batch, digits_loader=lambda: data)
    t0 = time.perf_counter()
    table = ptq.calibrate(work, "-", calib, source, "max", cal.DEFAULT_PERCENTILE)
    info = {"calibration_s": round(time.perf_counter() - t0, 1), "calibration_images": len(calib)}
    reduce_range, why = ptq.default_reduce_range()
    info["ort_reduce_range"] = {"value": reduce_range, "why": why}
    paths = {"fp32": fp32}
    builders = {"trt": lambda: ptq.build_trt(folded, table),
                "ort-qdq": lambda: ptq.build_ort(folded, table, fmt="qdq", reduce_range=reduce_range),
                "ort-qoperator": lambda: ptq.build_ort(folded, table, fmt="qoperator", reduce_range=reduce_range)}
    for name, build in builders.items():
        built, _summary = build()
        paths[name] = workdir / f"{name}.onnx"
        onnx.save(built, str(paths[name]))
    info["sizes_bytes"] = {k: p.stat().st_size for k, p in paths.items()}
    return paths, info


def bench_arch(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    from edgeresnet.compress.measure import ort_latencies

    model, preprocess, origin = load_model(arch, Path(args.baseline), args.image_size)
    with tempfile.TemporaryDirectory(prefix=f"edgeresnet-int8-{arch}-") as tmp:
        paths, info = make_variants(model, preprocess, Path(tmp), args.calib_images)
        names = list(paths)
        lat = ort_latencies([paths[n] for n in names], args.image_size, rounds=args.rounds, duration_s=args.duration,
                            threads=args.threads)
    results = {n: lat[i].to_dict() for i, n in enumerate(names)}
    base = results["fp32"]["median_ms"]
    for n in names:
        results[n]["speedup_vs_fp32"] = round(base / results[n]["median_ms"], 3)
    return {"arch": arch, "model": origin, "image_size": args.image_size, "batch": 1, "latency": results, **info}


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# FP32 vs INT8 latency, ONNX Runtime CPU, {meta['image_size']} px, batch 1", "",
             f"Machine: {meta['cpu']} ({meta['cpus']} CPUs, VNNI: {meta['vnni']}), onnxruntime {meta['onnxruntime']}, "
             f"load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at end; {meta['rounds']} "
             f"interleaved rounds of {meta['duration_s']} s per model.", "",
             "| model | variant | median ms | p90 ms | samples | speed-up vs FP32 | ONNX MB |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        for name, lat in r["latency"].items():
            lines.append(f"| {r['arch']} | {name} | {lat['median_ms']:.2f} | {lat['p90_ms']:.2f} | {lat['n']} | "
                         f"x{lat['speedup_vs_fp32']:.2f} | {r['sizes_bytes'][name] / 1e6:.1f} |")
    lines += ["", f"Command: `{meta['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18", help="comma-separated: resnet18, resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--baseline", default=str(DEFAULT_BASELINE), help="trained digits ResNet-18 checkpoint")
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per model per round")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    parser.add_argument("--json", default="benchmarks/data/int8_latency.json")
    args = parser.parse_args(argv)

    import onnxruntime

    from edgeresnet.compress.int8_flavours import cpu_has_vnni

    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    rows = [bench_arch(a.strip(), args) for a in args.arch.split(",") if a.strip()]
    import platform

    meta = {"image_size": args.image_size, "cpus": os.cpu_count(), "cpu": _cpu_name() or platform.processor(),
            "vnni": cpu_has_vnni(), "onnxruntime": onnxruntime.__version__, "rounds": args.rounds,
            "duration_s": args.duration, "loadavg_start": load_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()], "wall_s": round(time.perf_counter() - started, 1),
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}
    doc = {"benchmark": "int8_latency", "meta": meta, "rows": rows}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(rows, meta)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


if __name__ == "__main__":
    sys.exit(main())
