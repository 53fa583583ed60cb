"""Record real latency noise on this machine for the regression gate's power study (benchmarks/gate_power.py).

Why: the gate's false-alarm and detection rates depend on how noisy real measurements are, and simulated
noise alone would flatter it. This exports a small ResNet-18 (torchvision layout, random weights, 32x32
input, batch 1) to ONNX once, then times it with ONNX Runtime on the CPU (1 thread) and writes the raw
per-inference latencies to ``benchmarks/data/<name>.json``, as pairs of runs "a" and "b" of the same model:

* default: "a" and "b" are separate processes run back to back (a CI job that benchmarks baseline, then
  current);
* ``--interleave``: "a" and "b" are two sessions in one process, timed in alternation, one inference each,
  in ABBA order, so both see the same machine load.

    python benchmarks/record_gate_noise.py --pairs 12 --samples 300 --out benchmarks/data/ort_cpu_pairs_300x12.json
    python benchmarks/record_gate_noise.py --pairs 60 --samples 100 --gap-s 0 --out benchmarks/data/ort_cpu_pairs_100x60.json
    python benchmarks/record_gate_noise.py --interleave --pairs 24 --samples 300 --gap-s 1 \
        --out benchmarks/data/ort_cpu_interleaved_300x24.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

_CHILD = r"""
import json, os, sys, time
import numpy as np
import onnxruntime as ort
path, samples, warmup, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
for _ in range(warmup):
    session.run(None, {"input": x})
load = os.getloadavg()[0]
out = []
for _ in range(samples):
    t0 = time.perf_counter_ns()
    session.run(None, {"input": x})
    out.append((time.perf_counter_ns() - t0) / 1e6)
print(json.dumps({"samples_ms": [round(v, 3) for v in out], "loadavg_1min": round(load, 2)}))
"""

_CHILD_INTERLEAVED = r"""
import json, os, sys, time
import numpy as np
import onnxruntime as ort
path, samples, warmup, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
sessions = [ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]) for _ in range(2)]
x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
for _ in range(warmup):
    for s in sessions:
        s.run(None, {"input": x})
load = os.getloadavg()[0]
out = [[], []]
for i in range(samples):
    for k in ((0, 1) if i % 2 == 0 else (1, 0)):
        t0 = time.perf_counter_ns()
        sessions[k].run(None, {"input": x})
        out[k].append((time.perf_counter_ns() - t0) / 1e6)
print(json.dumps([{"samples_ms": [round(v, 3) for v in o], "loadavg_1min": round(load, 2)} for o in out]))
"""


def _export(path: Path) -> None:
    import torch

    from edgeresnet.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet18", 10)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), input_names=["input"],
                          output_names=["logits"], dynamo=False)


def _run(path: Path, samples: int, warmup: int, threads: int, child: str = _CHILD) -> Any:
    proc = subprocess.run([sys.executable, "-c", child, str(path), str(samples), str(warmup), str(threads)],
                          check=True, capture_output=True, text=True)
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12, help="back-to-back (a, b) process pairs")
    parser.add_argument("--samples", type=int, default=300, help="timed inferences per run")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--interleave", action="store_true", help="a and b alternate inside one process (ABBA)")
    parser.add_argument("--gap-s", type=float, default=5.0, help="pause between pairs, so pairs see different load")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data/ort_cpu_pairs.json"))
    args = parser.parse_args()
    import onnxruntime

    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "resnet18_32.onnx"
        _export(model)
        for index in range(args.pairs):
            if args.interleave:
                a, b = _run(model, args.samples, args.warmup, args.threads, _CHILD_INTERLEAVED)
            else:
                a = _run(model, args.samples, args.warmup, args.threads)
                b = _run(model, args.samples, args.warmup, args.threads)
            pairs.append({"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "a": a, "b": b})
            med_a, med_b = (sorted(r["samples_ms"])[len(r["samples_ms"]) // 2] for r in (a, b))
            print(f"pair {index + 1}/{args.pairs}: median a {med_a:.2f} ms, b {med_b:.2f} ms, "
                  f"load {a['loadavg_1min']}", flush=True)
            if index + 1 < args.pairs:
                time.sleep(args.gap_s)
    data = {
        "what": "per-inference latency (ms) of ResNet-18 (torchvision layout, 32x32, batch 1, random weights) "
                "with ONNX Runtime CPUExecutionProvider; "
                + ("each pair is two sessions in one process timed in alternation (ABBA)" if args.interleave
                   else "each pair is two separate processes run back to back"),
        "recorded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/record_gate_noise.py " + " ".join(sys.argv[1:]),
        "host": {"machine": platform.machine(), "system": platform.system(), "processor": platform.processor(),
                 "cpu_count": os.cpu_count()},
        "onnxruntime": onnxruntime.__version__,
        "settings": {"interleave": args.interleave, "threads": args.threads, "warmup": args.warmup,
                     "samples": args.samples, "gap_s": args.gap_s},
        "pairs": pairs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
