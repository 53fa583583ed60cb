"""On a machine with a CUDA GPU and TensorRT (or TensorRT-RTX on an RTX-class GPU): build an engine from our
ONNX export, run it through the TrtRunner and compare with ONNX Runtime; a foreign engine is classified.

Skipped cleanly elsewhere. Never run on our CI machines (no GPU): see the README's TensorRT status table.
The TensorRT work runs in a subprocess so a native crash fails this test instead of killing pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeresnet.trt.cuda_python_backend import probe_gpu

pytestmark = pytest.mark.gpu

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    import torch
    from edgeresnet.artifacts import write_manifest
    from edgeresnet.data.presets import preset_for
    from edgeresnet.errors import UserError
    from edgeresnet.export import export_onnx
    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.export.parity import compare_runners
    from edgeresnet.runners.base import load_runner
    from edgeresnet.trt import adapter
    from edgeresnet.trt.cuda_mem import select_backend
    from edgeresnet.trt.engine_manifest import build_engine_manifest, collect_environment
    from edgeresnet.trt.onnx_info import inspect_onnx
    from edgeresnet.trt.plan import BuildSpec, DeviceCaps, plan_build

    out = Path(sys.argv[1])
    torch.manual_seed(0)
    spec = ModelSpec("resnet18", 10, small_stem=True)
    onnx_path = export_onnx(build_model(spec), preset_for("digits", 32, tuple("0123456789")),
                            out / "m.onnx", opset=17, batch=(1, 4, 8), exporter="torchscript").path
    trt = adapter.load_trt("auto")
    backend, reason = select_backend()
    assert backend is not None, reason
    gpu = backend.gpu_info()
    device = DeviceCaps(gpu.name, gpu.compute_capability)
    plan = plan_build(BuildSpec.from_onnx_info(inspect_onnx(onnx_path), precision="fp32", batch=(1, 4, 8)),
                      adapter.features_for(trt), device)
    engine_path = out / "m.engine"
    engine_path.write_bytes(adapter.build_engine(trt, plan))
    write_manifest(engine_path, build_engine_manifest(engine_path, plan=plan, target=None, onnx_path=onnx_path,
                                                      command="build", environment=collect_environment(trt)))
    images = np.random.default_rng(0).normal(size=(12, 3, 32, 32)).astype(np.float32)
    report = compare_runners(load_runner(engine_path), load_runner(onnx_path, backend="ort"), images,
                             batch_sizes=(1, 4, 8))
    runner = load_runner(engine_path)
    with runner:
        info = adapter.inspect_engine(trt, runner.session.engine)
    data = bytearray(engine_path.read_bytes())
    data[4:8] = b"\\x07\\x00\\x00\\x00"  # damage the header behind our checks' back
    try:
        adapter.deserialize_engine(trt, bytes(data), source="damaged")
        damaged = "loaded"
    except UserError as exc:
        damaged = getattr(exc, "kind", "user-error")
    print(json.dumps({"passed": report.passed, "summary": report.to_dict(), "layers": len(info.get("Layers", [])),
                      "damaged": damaged, "trt": trt.__version__}))
""")


def test_build_run_and_compare_with_onnx_runtime(tmp_path: Path) -> None:
    count, reason = probe_gpu()
    if count == 0:
        pytest.skip(f"no usable CUDA GPU ({reason})")
    from edgeresnet.errors import UserError
    from edgeresnet.trt.adapter import load_trt

    try:
        load_trt("auto")
    except UserError as exc:
        pytest.skip(str(exc))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["passed"], result["summary"]
    assert result["layers"] > 0  # DETAILED profiling verbosity gives per-layer inspector output
    assert result["damaged"] != "loaded"
