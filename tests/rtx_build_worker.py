"""Runs real TensorRT-RTX builds for tests/test_trt_rtx_build.py in a separate process.

A native crash while building or deserializing must fail a test, not kill pytest, so the builds run
here: ``python tests/rtx_build_worker.py jobs.json results.json``. Each job goes through the project's
own path (ONNX facts -> BuildSpec -> plan_build with TensorRT-RTX's feature table -> adapter.build_engine)
and its result (engine facts, or the UserError line) is written as JSON.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def run_build(job: dict[str, Any]) -> dict[str, Any]:
    from edgeresnet.artifacts import write_manifest
    from edgeresnet.trt import adapter
    from edgeresnet.trt.engine_manifest import build_engine_manifest, collect_environment, rebuild_command
    from edgeresnet.trt.onnx_info import inspect_onnx
    from edgeresnet.trt.plan import BuildSpec, DeviceCaps, parse_batch, plan_build
    from edgeresnet.trt.planfile import read_plan_header
    from edgeresnet.trt.targets import load_target

    trt = adapter.load_trt("rtx")
    target = load_target(job.get("target", "desktop-ada"))
    options = {"precision": job.get("precision", "fp32"), "batch": parse_batch(job.get("batch", "1"))}
    if job.get("skip_inspect"):  # drive the adapter with a file the ONNX inspection would refuse
        spec = BuildSpec(onnx=job["onnx"], input_shape=tuple(job["input_shape"]), **options)
    else:
        spec = BuildSpec.from_onnx_info(inspect_onnx(job["onnx"]), **options)
    plan = plan_build(spec, adapter.features_for(trt), DeviceCaps.from_target(target))
    logger = adapter.make_logger(trt)
    start = time.perf_counter()
    data = adapter.build_engine(trt, plan, logger)
    seconds = time.perf_counter() - start
    out = Path(job["out"])
    out.write_bytes(data)
    manifest = build_engine_manifest(out, plan=plan, target=target, onnx_path=job["onnx"], command="build",
                                     environment=collect_environment(trt, target),
                                     rebuild=rebuild_command(spec, target.name))
    write_manifest(out, manifest)
    header = read_plan_header(out)
    return {"ok": True, "size": len(data), "seconds": seconds, "head": data[:32].hex(), "header": header.to_dict(),
            "version": trt.__version__, "ops": list(plan.ops()), "strongly_typed": plan.strongly_typed,
            "int8_mode": plan.int8_mode, "warnings": list(plan.warnings)}


def run_deserialize(job: dict[str, Any]) -> dict[str, Any]:
    from edgeresnet.trt import adapter

    trt = adapter.load_trt("rtx")
    logger = adapter.make_logger(trt)
    adapter.deserialize_engine(trt, Path(job["engine"]).read_bytes(), logger, source=job["engine"])
    return {"ok": True}


def main() -> int:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    results: dict[str, Any] = {}
    from edgeresnet.errors import UserError

    for job in jobs:
        kind = job.get("kind", "build")
        try:
            results[job["name"]] = run_build(job) if kind == "build" else run_deserialize(job)
        except UserError as exc:
            results[job["name"]] = {"ok": False, "error": str(exc), "type": type(exc).__name__,
                                    "kind": getattr(exc, "kind", None)}
        except Exception:  # anything else is a bug the test must show
            results[job["name"]] = {"ok": False, "error": traceback.format_exc(), "type": "crash"}
        Path(sys.argv[2]).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
