"""Import a ``trtexec`` run (its printed log, its ``--exportTimes`` JSON, or both) as a benchmark result.

Why: boards that cannot install edgeresnet (old JetPack, locked-down CI runners) still have trtexec;
their numbers join comparisons and the regression gate in the same format. Formats handled:

* log, TensorRT 8.2-8.5: ``=== Performance summary ===`` with one ``percentile(99%)`` per metric and, in
  some releases, an ``End-to-End Host Latency`` line;
* log, TensorRT 8.6-10.x: ``percentile(90%)``, ``percentile(95%)``, ``percentile(99%)``, CV warnings;
* ``--exportTimes`` JSON: a list of per-query records (``startEnqMs`` ... ``endD2hMs``, ``h2dMs``,
  ``computeMs``, ``d2hMs``, ``latencyMs``; TensorRT 8.2-era files also hold the warm-up queries and
  ``endToEndMs``; TensorRT 7 spells the copies ``in``/``out``). Key case is ignored.

trtexec's "Latency" is H2D + GPU compute + D2H of one query (CUDA events), not host wall time; results
say so in ``latency_kind: "trtexec_latency"``. Its Throughput is queries/s; we multiply by the batch.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.artifacts import sha256_file
from edgeresnet.bench import stats
from edgeresnet.errors import UserError

SUMMARY_HEADER = "=== Performance summary ==="
METRICS = {
    "Latency": "latency",
    "End-to-End Host Latency": "end_to_end",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
}
DEFAULT_WARMUP_MS = 200.0  # trtexec --warmUp default

_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)?\[([IWEVF])\]\s?")
_METRIC = re.compile(r"^(" + "|".join(re.escape(k) for k in METRICS) + r"): (min = .*)$")
_VALUE = re.compile(r"(min|max|mean|median|percentile\(([\d.]+)%\)) = ([-+\d.eE]+|inf|nan) ms")
_NUMBER = r"([-+\d.eE]+)"

# exportTimes key -> canonical name (lower-cased keys; TensorRT 7 used in/out for the copies)
_TIME_KEYS = {
    "startenqms": "enq_start", "endenqms": "enq_end",
    "starth2dms": "h2d_start", "endh2dms": "h2d_end", "startinms": "h2d_start", "endinms": "h2d_end",
    "startcomputems": "compute_start", "endcomputems": "compute_end",
    "startd2hms": "d2h_start", "endd2hms": "d2h_end", "startoutms": "d2h_start", "endoutms": "d2h_end",
    "h2dms": "h2d", "inms": "h2d", "computems": "gpu_compute", "d2hms": "d2h", "outms": "d2h",
    "latencyms": "latency", "endtoendms": "end_to_end",
}


@dataclass
class TrtexecLog:
    """What one trtexec log says about its run."""

    source: str
    version: str | None = None
    command: str | None = None
    flags: dict[str, str] = field(default_factory=dict)
    device: str | None = None
    compute_capability: str | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {min,max,mean,median,percentiles}
    throughput_qps: float | None = None
    walltime_s: float | None = None
    gpu_compute_total_s: float | None = None
    timed_queries: int | None = None
    warmup_queries: int | None = None
    warmup_ms: float | None = None
    implicit_batch: int | None = None
    input_shape: list[int] | None = None
    trt_warnings: list[str] = field(default_factory=list)
    gpu_compute_cv: float | None = None
    passed: bool | None = None

    @property
    def precision(self) -> str | None:
        f = self.flags
        if "stronglyTyped" in f:
            return "typed"
        for flag, name in (("int8", "int8"), ("fp8", "fp8"), ("best", "best"), ("bf16", "bf16"), ("fp16", "fp16")):
            if flag in f:
                return name
        if "onnx" in f:  # built in this run with no precision flag: FP32 (TF32 allowed unless --noTF32)
            return "fp32"
        return None

    @property
    def batch(self) -> int | None:
        if self.implicit_batch:
            return self.implicit_batch
        if self.input_shape:
            return self.input_shape[0]
        return None

    @property
    def model_path(self) -> str | None:
        for key in ("loadEngine", "onnx", "saveEngine", "deploy", "uff"):
            if self.flags.get(key):
                return self.flags[key]
        return None


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------
def _strip(line: str) -> tuple[str | None, str]:
    match = _PREFIX.match(line)
    if match:
        return match.group(1), line[match.end():].rstrip()
    return None, line.rstrip()


def _float(text: str) -> float:
    return float(text)


def _parse_flags(command: str) -> dict[str, str]:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    flags: dict[str, str] = {}
    for word in words[1:]:
        if word.startswith("--"):
            key, _, value = word[2:].partition("=")
            flags[key] = value
    return flags


def parse_log(text: str, source: str = "trtexec log") -> TrtexecLog:
    """Parse the text trtexec printed. Raises UserError when it is not a usable trtexec log."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _strip(line)[1].strip() == SUMMARY_HEADER]
    if not starts:
        _refuse_log(text, source)
    log = TrtexecLog(source=source)
    for raw in lines[: starts[-1]]:
        _, line = _strip(raw)
        _parse_preamble(log, line)
    for raw in lines[starts[-1] + 1:]:
        severity, line = _strip(raw)
        if line.startswith("&&&&"):
            _parse_preamble(log, line)
            continue
        metric = _METRIC.match(line)
        if metric:
            log.metrics[METRICS[metric.group(1)]] = _parse_metric(metric.group(2))
            continue
        m = re.match(r"Throughput: " + _NUMBER + r" qps", line)
        if m:
            log.throughput_qps = _float(m.group(1))
            continue
        m = re.match(r"Total Host Walltime: " + _NUMBER + r" s", line)
        if m:
            log.walltime_s = _float(m.group(1))
            continue
        m = re.match(r"Total GPU Compute Time: " + _NUMBER + r" s", line)
        if m:
            log.gpu_compute_total_s = _float(m.group(1))
            continue
        if severity == "W" and line.startswith("* "):
            log.trt_warnings.append("trtexec: " + line[2:].strip())
            cv = re.search(r"coefficient of variance = " + _NUMBER + "%", line)
            if cv:
                log.gpu_compute_cv = _float(cv.group(1))
        elif severity == "W" and line.startswith("  ") and log.trt_warnings:
            log.trt_warnings[-1] += " " + line.strip()
    if "latency" not in log.metrics or log.throughput_qps is None:
        raise UserError(f"{source}: the trtexec performance summary is incomplete (no Latency or Throughput line); "
                        "pass the complete trtexec output")
    return log


def _parse_preamble(log: TrtexecLog, line: str) -> None:
    m = re.match(r"&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec(?: \[TensorRT v(\d+)\])? # (.*)$", line)
    if m:
        if m.group(1) == "RUNNING":
            log.command = m.group(3).strip()
            log.flags = _parse_flags(log.command)
            if log.flags.get("warmUp", "").replace(".", "", 1).isdigit():
                log.warmup_ms = float(log.flags["warmUp"])
            if m.group(2):
                log.version = decode_version(m.group(2))
        else:
            log.passed = m.group(1) == "PASSED"
        return
    m = re.match(r"TensorRT version: (\d+\.\d+\.\d+)", line)
    if m:
        log.version = m.group(1)
        return
    m = re.match(r"Selected Device: (.+)$", line)
    if m:
        log.device = m.group(1).strip()
        return
    m = re.match(r"Compute Capability: ([\d.]+)", line)
    if m:
        log.compute_capability = m.group(1)
        return
    m = re.match(r"Batch: (\d+)$", line)
    if m and int(m.group(1)) > 0:
        log.implicit_batch = int(m.group(1))
        return
    m = re.match(r"Input inference shape\s*:\s*\S+?=(\d+(?:x\d+)*)", line)
    if m and log.input_shape is None:
        log.input_shape = [int(x) for x in m.group(1).split("x")]
        return
    m = re.match(r"Warmup: " + _NUMBER + r"\s*ms", line)
    if m:
        log.warmup_ms = _float(m.group(1))
        return
    m = re.match(r"Duration: \S+ \(\+ " + _NUMBER + r"ms warm up\)", line)
    if m:
        log.warmup_ms = _float(m.group(1))
        return
    m = re.match(r"Warmup completed (\d+) queries over " + _NUMBER + " ms", line)
    if m:
        log.warmup_queries = int(m.group(1))
        log.warmup_ms = _float(m.group(2))
        return
    m = re.match(r"Timing trace has (\d+) queries over " + _NUMBER + " s", line)
    if m:
        log.timed_queries = int(m.group(1))


def decode_version(digits: str) -> str:
    """trtexec's ``[TensorRT v8201]`` -> 8.2.1, ``v100300`` -> 10.3.0, ``v8600`` -> 8.6.0."""
    if len(digits) >= 6:
        return f"{int(digits[:-4])}.{int(digits[-4:-2])}.{int(digits[-2:])}"
    if len(digits) == 4:
        return f"{int(digits[0])}.{int(digits[1])}.{int(digits[2:])}"
    return digits


def _parse_metric(body: str) -> dict[str, Any]:
    out: dict[str, Any] = {"percentiles": {}}
    for name, pct, value in _VALUE.findall(body):
        number = float(value)
        if pct:
            out["percentiles"][float(pct)] = number
        else:
            out[name] = number
    return out


def _refuse_log(text: str, source: str) -> None:
    if re.search(r"^\s*(?:\[[^\]]*\]\s*)?\[I\] Host Latency\s*$", text, re.MULTILINE) and "at 99%" in text:
        raise UserError(f"{source}: trtexec log in the TensorRT 7 format (no '{SUMMARY_HEADER}'); "
                        "re-run with TensorRT >= 8.2 or pass its --exportTimes JSON")
    if "TensorRT.trtexec" in text:
        failed = [ln for ln in text.splitlines() if "[E]" in ln or "&&&& FAILED" in ln]
        why = f" (last error: {_strip(failed[-1])[1][:120]})" if failed else ""
        raise UserError(f"{source}: trtexec log without a performance summary, the run failed or was cut short{why}; "
                        "re-run trtexec to completion")
    raise UserError(f"{source}: not a trtexec log (no '{SUMMARY_HEADER}' section); pass the text trtexec printed "
                    "(trtexec ... 2>&1 | tee run.log) or its --exportTimes JSON")


def parse_export_times(data: Any, source: str = "exportTimes") -> list[dict[str, float]]:
    """Normalise ``--exportTimes`` records to canonical keys (see ``_TIME_KEYS``)."""
    if not isinstance(data, list) or not data or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{source}: JSON but not a trtexec --exportTimes file (expected a non-empty list of "
                        "per-query records)")
    records = []
    for index, raw in enumerate(data):
        record: dict[str, float] = {}
        for key, value in raw.items():
            name = _TIME_KEYS.get(str(key).lower())
            if name is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                record[name] = float(value)
        if "gpu_compute" not in record and {"compute_start", "compute_end"} <= record.keys():
            record["gpu_compute"] = record["compute_end"] - record["compute_start"]
        if "gpu_compute" not in record:
            raise UserError(f"{source}: record {index} has no computeMs / startComputeMs; "
                            "not a trtexec --exportTimes file")
        if "latency" not in record:
            record["latency"] = record["gpu_compute"] + record.get("h2d", 0.0) + record.get("d2h", 0.0)
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------------
# files -> result
# ---------------------------------------------------------------------------------------------
def read_trtexec_file(path: str | Path) -> tuple[str, Any]:
    """("log", TrtexecLog) or ("times", records) for one file; UserError for anything else."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"--from-trtexec {p}: file not found; check the path")
    if p.is_dir():
        raise UserError(f"--from-trtexec {p}: is a directory; pass a trtexec log or --exportTimes JSON file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = raw.decode("utf-16")  # PowerShell's `>` writes UTF-16
        except UnicodeDecodeError:
            raise UserError(f"--from-trtexec {p}: binary file, not a trtexec log; pass the text trtexec printed "
                            "or its --exportTimes JSON") from None
    if "\x00" in text:
        raise UserError(f"--from-trtexec {p}: binary file, not a trtexec log; pass the text trtexec printed "
                        "or its --exportTimes JSON")
    stripped = text.lstrip()
    if stripped.startswith("[") and not _PREFIX.match(stripped):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            data = None
        if data is not None:
            return "times", (parse_export_times(data, f"--from-trtexec {p}"), _has_warmups(data))
    return "log", parse_log(text, f"--from-trtexec {p}")


def _has_warmups(data: list[dict[str, Any]]) -> bool:
    """TensorRT 8.2-era exports (they carry ``endToEndMs``) include the warm-up queries; later ones do not."""
    return any(str(k).lower() == "endtoendms" for k in data[0])


def _summary_block(metric: dict[str, Any], n: int | None, cv: float | None = None) -> dict[str, Any]:
    pct = metric.get("percentiles", {})
    block: dict[str, Any] = {
        "samples": [],
        "n": n or 0,
        "min": metric["min"],
        "max": metric["max"],
        "mean": metric["mean"],
        "median": metric["median"],
        "p90": pct.get(90.0),
        "p95": pct.get(95.0),
        "p99": pct.get(99.0),
        "std": cv * metric["mean"] / 100.0 if cv is not None else None,
        "cv": cv,
        "median_ci": None,
        "ci_level": stats.CI_LEVEL,
        "source": "trtexec summary (printed with 6 significant digits)",
    }
    for p, value in pct.items():
        if p not in (90.0, 95.0, 99.0):
            block[stats.percentile_key(p)] = value
    return block


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def import_trtexec(
    paths: list[str | Path],
    *,
    batch: int | None = None,
    precision: str | None = None,
    model_name: str | None = None,
    target: str | None = None,
    warmup_ms: float | None = None,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(result, environment) from a trtexec log and/or its --exportTimes JSON of the same run."""
    logs: list[TrtexecLog] = []
    times: list[tuple[list[dict[str, float]], bool, Path]] = []
    for path in paths:
        kind, value = read_trtexec_file(path)
        if kind == "log":
            logs.append(value)
        else:
            times.append((value[0], value[1], Path(path)))
    if len(logs) > 1 or len(times) > 1:
        raise UserError("--from-trtexec: pass one trtexec run at a time (one log and/or one --exportTimes JSON)")
    log = logs[0] if logs else None
    warnings: list[str] = list(log.trt_warnings) if log else []

    resolved_batch = batch or (log.batch if log else None)
    if resolved_batch is None:
        resolved_batch = 1
        why = "no --shapes or input shape in the log" if log else "an --exportTimes file does not record it"
        warnings.append(f"batch size unknown ({why}); assumed 1, pass --batch to set it")
    if resolved_batch < 1:
        raise UserError(f"--batch {resolved_batch}: must be >= 1")
    resolved_precision = precision or (log.precision if log else None)
    if resolved_precision is None:
        resolved_precision = "unknown"
        why = "the engine was loaded with --loadEngine" if log else "an --exportTimes file does not record it"
        warnings.append(f"precision unknown ({why}); pass --precision to set it")
    model_path = log.model_path if log else None
    model = model_name or (Path(model_path).stem if model_path else None) or "trtexec-model"
    device = log.device if log else None
    from edgeresnet.bench.core import guess_target

    resolved_target = target or guess_target(device) or (_slug(device) if device else "unknown")

    latency_kind = "trtexec_latency"
    components: dict[str, dict[str, Any] | None] = {}
    if times:
        records, with_warmups, times_path = times[0]
        if with_warmups:
            cut = warmup_ms if warmup_ms is not None else (log.warmup_ms if log and log.warmup_ms is not None
                                                           else DEFAULT_WARMUP_MS)
            kept = [r for r in records if r.get("compute_start", cut) >= cut]
            dropped = len(records) - len(kept)
            if dropped:
                warnings.append(f"dropped {dropped} warm-up queries (computeStart < {cut:g} ms) from the "
                                "--exportTimes trace, as trtexec does")
            records = kept
        if not records:
            raise UserError(f"--from-trtexec {times_path}: no timed queries left after the warm-up")
        latency = stats.summarize([r["latency"] for r in records], seed=seed)
        for name in ("gpu_compute", "h2d", "d2h"):
            values = [r[name] for r in records if name in r]
            components[name] = stats.summarize(values, seed=seed) if len(values) == len(records) else None
        enq = [r["enq_end"] - r["enq_start"] for r in records if {"enq_start", "enq_end"} <= r.keys()]
        components["enqueue"] = stats.summarize(enq, seed=seed) if len(enq) == len(records) else None
        if {"h2d_start", "d2h_end"} <= records[0].keys() and {"h2d_start", "d2h_end"} <= records[-1].keys():
            duration_s = max(records[-1]["d2h_end"] - records[0]["h2d_start"], 0.0) / 1000.0
        elif log and log.walltime_s:
            duration_s = log.walltime_s
        else:
            duration_s = math.fsum(r["latency"] for r in records) / 1000.0
        iterations = len(records)
        throughput = stats.throughput_ips(resolved_batch, iterations, duration_s)
        if log:
            warnings.extend(_cross_check(log, latency))
        source = {"kind": "trtexec", "export_times": str(times_path), "export_times_sha256": sha256_file(times_path)}
    else:
        assert log is not None
        iterations = log.timed_queries or (round(log.throughput_qps * log.walltime_s) if log.walltime_s else 0)
        if log.implicit_batch and log.timed_queries:
            iterations = log.timed_queries // log.implicit_batch  # implicit batch: trtexec counts images
        latency = _summary_block(log.metrics["latency"], iterations)
        for name in ("gpu_compute", "h2d", "d2h", "enqueue"):
            metric = log.metrics.get(name)
            cv = log.gpu_compute_cv if name == "gpu_compute" else None
            components[name] = _summary_block(metric, iterations, cv) if metric else None
        duration_s = log.walltime_s or 0.0
        # trtexec already multiplied by the batch for implicit-batch engines; explicit batch is one query.
        throughput = log.throughput_qps * (1 if log.implicit_batch else resolved_batch)
        warnings.append("imported from a trtexec summary without per-iteration samples: no confidence interval; "
                        "add --exportTimes=times.json to the trtexec run and import that file too")
        source = {"kind": "trtexec"}
    if log:
        source.update({"log": log.source.removeprefix("--from-trtexec "), "trtexec_version": log.version,
                       "command": log.command, "device": device, "compute_capability": log.compute_capability})
        log_file = Path(source["log"])
        if log_file.exists():
            source["log_sha256"] = sha256_file(log_file)
    warnings.extend(stats.diagnose(latency, gpu_compute=components.get("gpu_compute"), h2d=components.get("h2d"),
                                   d2h=components.get("d2h"), enqueue=components.get("enqueue")))
    result = {
        "model": model,
        "artifact": model_path or "",
        "artifact_sha256": "",
        "target": resolved_target,
        "backend": "trtexec",
        "precision": resolved_precision,
        "batch": resolved_batch,
        "latency_ms": latency,
        "throughput_ips": throughput,
        "iterations": iterations,
        "duration_s": duration_s,
        "gpu_compute_ms": components.get("gpu_compute"),
        "h2d_ms": components.get("h2d"),
        "d2h_ms": components.get("d2h"),
        "enqueue_ms": components.get("enqueue"),
        "accuracy": None,
        "warnings": _dedupe(warnings),
        "latency_kind": latency_kind,
        "device": device or "unknown",
        "source": source,
        "model_bytes": None,
    }
    environment = {
        "host": {"cpu": "unknown (imported from trtexec)", "cores": None, "machine": "unknown", "system": "unknown"},
        "versions": {"tensorrt": log.version} if log and log.version else {},
        "gpu": {"name": device, "compute_capability": log.compute_capability, "source": "trtexec log"} if device else None,
        "jetson": None,
        "target": resolved_target,
        "power_mode": None,
        "tensorrt": log.version if log else None,
        "probes": {},
        "warnings": ["environment reconstructed from a trtexec log: clocks, power mode and host were not recorded"],
    }
    return result, environment


def _cross_check(log: TrtexecLog, latency: dict[str, Any]) -> list[str]:
    """The log's printed median/p99 must match the trace's (to trtexec's 6 printed digits)."""
    printed = log.metrics.get("latency", {})
    out = []
    for key, value in (("median", printed.get("median")), ("p99", printed.get("percentiles", {}).get(99.0))):
        if value is None:
            continue
        ours = latency[key]
        if not math.isclose(ours, value, rel_tol=2e-5, abs_tol=1e-6):
            out.append(f"the trtexec log's latency {key} {value:g} ms differs from its --exportTimes trace "
                       f"({ours:g} ms): are they from the same run?")
    return out


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]
