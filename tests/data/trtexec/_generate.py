"""Regenerate the trtexec sample files in this folder (run: python tests/data/trtexec/_generate.py).

These are NOT recordings from a device: no Jetson was available. They are seeded synthetic runs written
in the exact output formats of trtexec as found in TensorRT's ``samples/common/sampleReporting.cpp`` (8.2
era: one percentile, End-to-End Host Latency, warm-up queries and ``endToEndMs`` in --exportTimes; 8.6+
and 10.x: percentiles 90/95/99, warm-ups left out of --exportTimes) and in public trtexec logs quoted in
NVIDIA/TensorRT and OE4T/meta-tegra issues. Timing magnitudes follow published figures (Nano ResNet-18
FP16 ~11 ms, torch2trt benchmarks; Orin-class INT8 ResNet-50). Summary numbers are computed from the same
trace with trtexec's definitions in float32 and printed with C++'s default 6 significant digits, so log and
trace agree the way a real run's do.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def g(x: float) -> str:
    return f"{x:.6g}"


def percentile(sorted_values: list[float], p: float) -> float:
    n = len(sorted_values)
    exclude = int(f32(f32(1.0 - f32(f32(p) / 100.0)) * f32(float(n))))
    return sorted_values[max(n - 1 - exclude, 0)]


def median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    m = n // 2
    return sorted_values[m] if n % 2 else f32((sorted_values[m - 1] + sorted_values[m]) / 2)


def perf(values: list[float], percentiles: tuple[float, ...]) -> str:
    s = sorted(values)
    acc = 0.0
    for v in s:
        acc = f32(acc + v)
    mean = f32(acc / len(s))
    text = f"min = {g(s[0])} ms, max = {g(s[-1])} ms, mean = {g(mean)} ms, median = {g(median(s))} ms"
    for p in percentiles:
        text += f", percentile({p:g}%) = {g(percentile(s, p))} ms"
    return text


def cv(values: list[float]) -> float:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return var ** 0.5 / mean * 100


def simulate(seed: int, compute_ms: float, jitter: float, h2d_ms: float, d2h_ms: float, enq_ms: float,
             warmup_ms: float = 200.0, duration_s: float = 3.0, spikes: float = 0.01) -> list[dict[str, float]]:
    """Back-to-back queries on one stream, trtexec's loop: warm-up by time, then >= duration."""
    rng = random.Random(seed)
    t = 0.12
    trace = []
    while True:
        enq_start = t
        enq = enq_ms * rng.uniform(0.8, 1.3)
        h2d = max(0.001, rng.gauss(h2d_ms, h2d_ms * 0.05))
        comp = max(0.01, rng.gauss(compute_ms, compute_ms * jitter))
        if rng.random() < spikes:
            comp *= rng.uniform(1.2, 1.6)
        d2h = max(0.0005, rng.gauss(d2h_ms, d2h_ms * 0.1))
        h2d_start = t + 0.01
        rec = {"enqStart": f32(enq_start), "enqEnd": f32(enq_start + enq), "h2dStart": f32(h2d_start),
               "h2dEnd": f32(h2d_start + h2d)}
        rec["computeStart"] = rec["h2dEnd"]
        rec["computeEnd"] = f32(rec["computeStart"] + comp)
        rec["d2hStart"] = rec["computeEnd"]
        rec["d2hEnd"] = f32(rec["d2hStart"] + d2h)
        trace.append(rec)
        t = rec["d2hEnd"] + rng.uniform(0.005, 0.03)
        timed = [r for r in trace if r["computeStart"] >= warmup_ms]
        if len(timed) >= 10 and timed and (timed[-1]["d2hEnd"] - timed[0]["h2dStart"]) >= duration_s * 1000:
            return trace


def timings(rec: dict[str, float], previous_end: float | None) -> dict[str, float]:
    h2d = f32(rec["h2dEnd"] - rec["h2dStart"])
    comp = f32(rec["computeEnd"] - rec["computeStart"])
    d2h = f32(rec["d2hEnd"] - rec["d2hStart"])
    return {"enq": f32(rec["enqEnd"] - rec["enqStart"]), "h2d": h2d, "compute": comp, "d2h": d2h,
            "latency": f32(f32(h2d + comp) + d2h), "e2e": f32(rec["d2hEnd"] - rec["h2dStart"])}


def export(trace: list[dict[str, float]], with_e2e: bool) -> str:
    lines = ["["]
    sep = "  "
    for rec in trace:
        t = timings(rec, None)
        fields = [("startEnqMs", rec["enqStart"]), ("endEnqMs", rec["enqEnd"]), ("startH2dMs", rec["h2dStart"]),
                  ("endH2dMs", rec["h2dEnd"]), ("startComputeMs", rec["computeStart"]),
                  ("endComputeMs", rec["computeEnd"]), ("startD2hMs", rec["d2hStart"]), ("endD2hMs", rec["d2hEnd"]),
                  ("h2dMs", t["h2d"]), ("computeMs", t["compute"]), ("d2hMs", t["d2h"]), ("latencyMs", t["latency"])]
        if with_e2e:
            fields.append(("endToEndMs", t["e2e"]))
        body = ", ".join(f'"{k}" : {g(v)}' for k, v in fields)
        lines.append(f"{sep}{{ {body} }}")
        sep = ", "
    lines.append("]")
    return "\n".join(lines) + "\n"


def log(stamp: str, version_tag: str, command: str, sections: list[str], trace: list[dict[str, float]],
        warmup_ms: float, percentiles: tuple[float, ...], end_to_end: bool, cv_limit: float | None,
        trace_e2e: bool) -> str:
    out = [f"&&&& RUNNING TensorRT.trtexec [TensorRT {version_tag}] # {command}"]
    for line in sections:
        out.append(f"[{stamp}] [I] {line}".rstrip() if line else f"[{stamp}] [I] ")
    timed = [r for r in trace if r["computeStart"] >= warmup_ms]
    warm = len(trace) - len(timed)
    wall = f32(timed[-1]["d2hEnd"] - timed[0]["h2dStart"])
    out.append(f"[{stamp}] [I] Warmup completed {warm} queries over {warmup_ms:g} ms")
    out.append(f"[{stamp}] [I] Timing trace has {len(timed)} queries over {g(wall / 1000)} s")
    out.append(f"[{stamp}] [I] ")
    out.append(f"[{stamp}] [I] === Trace details ===")
    out.append(f"[{stamp}] [I] Trace averages of 10 runs:")
    ts = [timings(r, None) for r in timed]
    for i in range(0, len(ts) - len(ts) % 10, 10):
        chunk = ts[i:i + 10]
        gpu = sum(c["compute"] for c in chunk) / 10
        host = sum(c["latency"] for c in chunk) / 10
        enq = sum(c["enq"] for c in chunk) / 10
        if trace_e2e:
            e2e = sum(c["e2e"] for c in chunk) / 10
            out.append(f"[{stamp}] [I] Average on 10 runs - GPU latency: {g(gpu)} ms - Host latency: {g(host)} ms "
                       f"(end to end {g(e2e)} ms, enqueue {g(enq)} ms)")
        else:
            out.append(f"[{stamp}] [I] Average on 10 runs - GPU latency: {g(gpu)} ms - Host latency: {g(host)} ms "
                       f"(enqueue {g(enq)} ms)")
    out.append(f"[{stamp}] [I] ")
    out.append(f"[{stamp}] [I] === Performance summary ===")
    out.append(f"[{stamp}] [I] Throughput: {g(len(timed) / wall * 1000)} qps")
    col = {k: [t[k] for t in ts] for k in ("latency", "e2e", "enq", "h2d", "compute", "d2h")}
    out.append(f"[{stamp}] [I] Latency: {perf(col['latency'], percentiles)}")
    if end_to_end:
        out.append(f"[{stamp}] [I] End-to-End Host Latency: {perf(col['e2e'], percentiles)}")
    out.append(f"[{stamp}] [I] Enqueue Time: {perf(col['enq'], percentiles)}")
    out.append(f"[{stamp}] [I] H2D Latency: {perf(col['h2d'], percentiles)}")
    out.append(f"[{stamp}] [I] GPU Compute Time: {perf(col['compute'], percentiles)}")
    out.append(f"[{stamp}] [I] D2H Latency: {perf(col['d2h'], percentiles)}")
    out.append(f"[{stamp}] [I] Total Host Walltime: {g(wall / 1000)} s")
    out.append(f"[{stamp}] [I] Total GPU Compute Time: {g(sum(col['compute']) / 1000)} s")
    if cv_limit is not None and cv(col["compute"]) > cv_limit:
        out.append(f"[{stamp}] [W] * GPU compute time is unstable, with coefficient of variance = {g(cv(col['compute']))}%.")
        out.append(f"[{stamp}] [W]   If not already in use, locking GPU clock frequency or adding --useSpinWait may "
                   "improve the stability.")
    out.append(f"[{stamp}] [I] Explanations of the performance metrics are printed in the verbose logs.")
    out.append(f"[{stamp}] [I] ")
    out.append(f"&&&& PASSED TensorRT.trtexec [TensorRT {version_tag}] # {command}")
    return "\n".join(out) + "\n"


def device_section(name: str, cc: str, sms: int, mem: int, clock: str) -> list[str]:
    return ["=== Device Information ===", f"Selected Device: {name}", f"Compute Capability: {cc}", f"SMs: {sms}",
            f"Compute Clock Rate: {clock}", f"Device Global Memory: {mem} MiB", "Shared Memory per SM: 64 KiB",
            "Memory Bus Width: 64 bits (ECC disabled)", f"Memory Clock Rate: {clock}", ""]


def system_section(*extra: str) -> list[str]:
    return ["=== System Options ===", "Device: 0", "DLACore: ", "Plugins:", *extra, ""]


def reporting_section(percentiles: str, export_times: str) -> list[str]:
    """The Reporting Options block; ``percentiles`` is the whole line (8.2 prints "Percentile: 99")."""
    return ["=== Reporting Options ===", "Verbose: Disabled", "Averages: 10 inferences", percentiles,
            "Dump refittable layers:Disabled", "Dump output: Disabled", "Profile: Disabled",
            f"Export timing to JSON file: {export_times}", "Export output to JSON file: ",
            "Export profile to JSON file: ", ""]


def bindings(input_dims: str, output_dims: str) -> list[str]:
    """TensorRT 8.x's lines between the engine and the timed run."""
    return ["Using random values for input input", f"Created input binding for input with dimensions {input_dims}",
            "Using random values for output output", f"Created output binding for output with dimensions {output_dims}",
            "Starting inference"]


def main() -> None:
    # TensorRT 8.2.1 (JetPack 4.6.x), Jetson Nano, ResNet-18 FP16 batch 1, built from ONNX in this run.
    cmd = ("/usr/src/tensorrt/bin/trtexec --onnx=resnet18.onnx --fp16 --shapes=input:1x3x224x224 "
           "--saveEngine=resnet18_fp16.engine --exportTimes=trtexec_8.2_nano.times.json")
    sections = (["=== Model Options ===", "Format: ONNX", "Model: resnet18.onnx", "Output:", "",
                 "=== Build Options ===", "Max batch: explicit batch", "Workspace: 16 MiB", "minTiming: 1",
                 "avgTiming: 8", "Precision: FP32+FP16", "Calibration: ", "Refit: Disabled", "Sparsity: Disabled",
                 "Safe mode: Disabled", "Restricted mode: Disabled", "Save engine: resnet18_fp16.engine",
                 "Load engine: ", "Input(s)s format: fp32:CHW", "Output(s)s format: fp32:CHW",
                 "Input build shape: input=1x3x224x224+1x3x224x224+1x3x224x224", ""]
                + system_section()
                + ["=== Inference Options ===", "Batch: Explicit", "Input inference shape: input=1x3x224x224",
                 "Iterations: 10", "Duration: 3s (+ 200ms warm up)", "Sleep time: 0ms", "Streams: 1",
                 "ExposeDMA: Disabled", "Data transfers: Enabled", "Spin-wait: Disabled", "Multithreading: Disabled",
                 "CUDA Graph: Disabled", "Separate profiling: Disabled", "Time Deserialize: Disabled",
                 "Time Refit: Disabled", "Skip inference: Disabled", "Inputs:"]
                + reporting_section("Percentile: 99", "trtexec_8.2_nano.times.json")
                + device_section("NVIDIA Tegra X1", "5.3", 1, 3956, "0.9216 GHz")
                + ["[MemUsageChange] Init CUDA: CPU +229, GPU +0, now: CPU 248, GPU 3311 (MiB)",
                   "Start parsing network model", "Finish parsing network model",
                   "[MemUsageChange] Init CUDA: CPU +0, GPU +0, now: CPU 300, GPU 3324 (MiB)",
                   "Engine built in 412.315 sec."]
                + bindings("1x3x224x224", "1x1000"))
    trace = simulate(seed=82, compute_ms=11.3, jitter=0.012, h2d_ms=0.085, d2h_ms=0.0062, enq_ms=1.9)
    (HERE / "trtexec_8.2_nano.log").write_text(
        log("11/02/2022-14:21:07", "v8201", cmd, sections, trace, 200.0, (99.0,), True, None, True))
    (HERE / "trtexec_8.2_nano.times.json").write_text(export(trace, with_e2e=True))

    # TensorRT 8.5.2 (JetPack 5.1), Xavier NX, ResNet-18 INT8 engine loaded, batch 8: summary only.
    cmd = "/usr/src/tensorrt/bin/trtexec --loadEngine=resnet18_int8_b8.engine --shapes=input:8x3x224x224"
    sections = (["=== Model Options ===", "Format: *", "Model: ", "Output:", ""]
                + system_section()
                + ["=== Inference Options ===", "Batch: Explicit",
                 "Input inference shape: input=8x3x224x224", "Iterations: 10", "Duration: 3s (+ 200ms warm up)",
                 "Sleep time: 0ms", "Idle time: 0ms", "Streams: 1", "ExposeDMA: Disabled", "Data transfers: Enabled",
                 "Spin-wait: Disabled", "Multithreading: Disabled", "CUDA Graph: Disabled",
                 "Separate profiling: Disabled", "Time Deserialize: Disabled", "Time Refit: Disabled",
                 "NVTX verbosity: 0", "Persistent Cache Ratio: 0", "Inputs:"]
                + reporting_section("Percentiles: 99", "")
                + device_section("Xavier", "7.2", 6, 6854, "1.109 GHz")
                + ["Engine loaded in 0.0213 sec.", "[MemUsageChange] Init CUDA: CPU +0, GPU +0, now: CPU 382, GPU 4410 (MiB)",
                   "Setting persistentCacheLimit to 0 bytes."]
                + bindings("8x3x224x224", "8x10"))
    trace = simulate(seed=85, compute_ms=4.41, jitter=0.03, h2d_ms=0.52, d2h_ms=0.0041, enq_ms=0.41)
    (HERE / "trtexec_8.5_xavier_nx.log").write_text(
        log("01/17/2023-09:44:52", "v8502", cmd, sections, trace, 200.0, (99.0,), True, 1.0, False))

    # TensorRT 10.3 (JetPack 6), Orin Nano, ResNet-50 INT8 batch 8, built from ONNX, with --exportTimes.
    cmd = ("/usr/src/tensorrt/bin/trtexec --onnx=resnet50.onnx --int8 --fp16 --shapes=input:8x3x224x224 "
           "--exportTimes=trtexec_10.3_orin_nano.times.json")
    sections = (["=== Model Options ===", "Format: ONNX", "Model: resnet50.onnx", "Output:", "",
                 "=== Build Options ===", "Memory Pools: workspace: default, dlaSRAM: default, dlaLocalDRAM: default, "
                 "dlaGlobalDRAM: default, tacticSharedMem: default", "avgTiming: 8", "Precision: FP32+FP16+INT8",
                 "LayerPrecisions: ", "Layer Device Types: ", "Calibration: Dynamic", "Refit: Disabled",
                 "Strip weights: Disabled", "Version Compatible: Disabled", "Sparsity: Disabled",
                 "Safe mode: Disabled", "Build DLA standalone loadable: Disabled", "Allow GPU fallback for DLA: Disabled",
                 "DirectIO mode: Disabled", "Restricted mode: Disabled", "Skip inference: Disabled",
                 "Save engine: ", "Load engine: ", "Profiling verbosity: 0", "Tactic sources: Using default tactic sources",
                 "timingCacheMode: local", "timingCacheFile: ", "Enable Compilation Cache: Enabled",
                 "errorOnTimingCacheMiss: Disabled", "Preview Features: Use default preview flags.",
                 "MaxAuxStreams: -1", "BuilderOptimizationLevel: -1", "Calibration Profile Index: 0",
                 "Weight Streaming: Disabled", "Runtime Platform: Same As Build", "Debug Tensors: ",
                 "Input(s)s format: fp32:CHW", "Output(s)s format: fp32:CHW",
                 "Input build shape : input=8x3x224x224+8x3x224x224+8x3x224x224",
                 "Input calibration shape : input=8x3x224x224+8x3x224x224+8x3x224x224", ""]
                + system_section("setPluginsToSerialize:", "dynamicPlugins:", "ignoreParsedPluginLibs: 0")
                + ["=== Inference Options ===", "Batch: Explicit",
                 "Input inference shape : input=8x3x224x224", "Iterations: 10", "Duration: 3s (+ 200ms warm up)",
                 "Sleep time: 0ms", "Idle time: 0ms", "Inference Streams: 1", "ExposeDMA: Disabled",
                 "Data transfers: Enabled", "Spin-wait: Disabled", "Multithreading: Disabled", "CUDA Graph: Disabled",
                 "Separate profiling: Disabled", "Time Deserialize: Disabled", "Time Refit: Disabled",
                 "NVTX verbosity: 0", "Persistent Cache Ratio: 0", "Optimization Profile Index: 0",
                 "Weight Streaming Budget: 100.000000%", "Inputs:", "Debug Tensor Save Destinations:"]
                + reporting_section("Percentiles: 90,95,99", "trtexec_10.3_orin_nano.times.json")
                + ["=== Device Information ===", "Available Devices: ",
                 '  Device 0: "Orin" UUID: GPU-5b0e7c3a-1f4d-5e2a-9c61-0d2b7a9e4f10', "Selected Device: Orin",
                 "Selected Device ID: 0", "Selected Device UUID: GPU-5b0e7c3a-1f4d-5e2a-9c61-0d2b7a9e4f10",
                 "Compute Capability: 8.7", "SMs: 8", "Device Global Memory: 7620 MiB", "Shared Memory per SM: 164 KiB",
                 "Memory Bus Width: 128 bits (ECC disabled)", "Application Compute Clock Rate: 1.02 GHz",
                 "Application Memory Clock Rate: 1.02 GHz", "",
                 "Note: The application clock rates do not reflect the actual clock rates that the GPU is currently "
                 "running at.", "", "TensorRT version: 10.3.0", "Loading standard plugins",
                 "[MemUsageChange] Init CUDA: CPU +12, GPU +0, now: CPU 31, GPU 3012 (MiB)",
                 "Start parsing network model.", "Finished parsing network model. Parse time: 0.0912",
                 "Engine built in 188.21 sec.", "Created engine with size: 26.9043 MiB",
                 "Engine deserialized in 0.0311 sec.", "Setting persistentCacheLimit to 0 bytes.",
                 "Created execution context with device memory size: 18.3789 MiB",
                 "Using random values for input input",
                 "Input binding for input with dimensions 8x3x224x224 is created.",
                 "Output binding for output with dimensions 8x10 is created.", "Starting inference"])
    trace = simulate(seed=103, compute_ms=4.86, jitter=0.006, h2d_ms=0.41, d2h_ms=0.0049, enq_ms=0.18)
    timed = [r for r in trace if r["computeStart"] >= 200.0]
    (HERE / "trtexec_10.3_orin_nano.log").write_text(
        log("11/20/2025-10:02:11", "v100300", cmd, sections, trace, 200.0, (90.0, 95.0, 99.0), False, 1.0, False))
    (HERE / "trtexec_10.3_orin_nano.times.json").write_text(export(timed, with_e2e=False))
    json.loads((HERE / "trtexec_10.3_orin_nano.times.json").read_text())  # must stay valid JSON


if __name__ == "__main__":
    main()
