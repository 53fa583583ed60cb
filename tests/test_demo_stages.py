"""The demo calls the package's stage functions in-process; a child process only for real TensorRT-RTX builds."""

from __future__ import annotations

import io
import json

import pytest


@pytest.mark.slow  # train, export, prune, INT8 and build on the digits (--fast budgets): a few minutes on 2 cores
def test_demo_runs_prune_int8_and_planning_in_process(tmp_path, monkeypatch):
    from rich.console import Console

    from edgeresnet import demo

    children: list[list[str]] = []
    real = demo._run_cli

    def record(ctx, args):
        children.append(list(args))
        return real(ctx, args)

    monkeypatch.setattr(demo, "_run_cli", record)
    stages = [s for s in demo.STAGES if s.name in ("train", "export", "prune", "quantize", "build")]
    out = tmp_path / "demo"
    report = demo.run_demo(out, fast=True, progress=False, console=Console(file=io.StringIO(), width=200),
                           stages=stages)
    # only TensorRT-RTX engine builds run in a child process (crash isolation), none when it is not installed
    assert all(a[0] == "build" and "--builder" in a and a[a.index("--builder") + 1] == "rtx" for a in children)
    from edgeresnet.trt.rtx import import_rtx

    assert bool(children) == (import_rtx() is not None)
    entries = {s["name"]: s for s in report["stages"]}
    prune_json = json.loads((out / "compress" / "prune.json").read_text())
    assert entries["prune"]["numbers"]["prune"] == prune_json and prune_json["macs"]["kept"] <= 0.55
    for flavour in ("trt", "ort"):
        written = json.loads((out / "compress" / f"calibrate-{flavour}.json").read_text())
        assert written["gate"]["passed"] and written["written"] and written["flavour"] == flavour
        assert entries["quantize"]["numbers"][f"calibrate_{flavour}"] == written
    assert (out / "compress" / "resnet18-qat.onnx").is_file() and json.loads((out / "compress" / "qat.json").read_text())
    jetson = out / "build" / "agx-orin"
    assert (jetson / "resnet18.trtexec.txt").is_file() and (jetson / "resnet18.nvinfer.txt").is_file()
    assert "INT8 test top-1 vs FP32" in entries["quantize"]["headline"]
