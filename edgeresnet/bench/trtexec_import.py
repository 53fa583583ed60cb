"""Import a ``trtexec`` run (its printed log, its ``--exportTimes`` JSON, or both) as a benchmark result.

Why: boards that cannot install edgeresnet (old JetPack, locked-down CI runners) still have trtexec;
their numbers join comparisons and the regression gate in the same format. The log is read by
``bench.trtexec_log``, the ``--exportTimes`` file by ``bench.trtexec_times``; this module turns what they
found into the result record and environment of a results document.

trtexec's "Latency" is H2D + GPU compute + D2H of one query (CUDA events), not host wall time; results
say so in ``latency_kind: "trtexec_latency"``. Its Throughput is queries/s; we multiply by the batch.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from edgeresnet.artifacts import sha256_file
from edgeresnet.bench import stats
from edgeresnet.bench.trtexec_log import LOG_PREFIX, METRICS, TrtexecLog, parse_log
from edgeresnet.bench.trtexec_times import TimesFile, parse_times_text
from edgeresnet.errors import UserError

DEFAULT_WARMUP_MS = 200.0  # trtexec --warmUp default


def read_trtexec_file(path: str | Path) -> tuple[str, Any]:
    """("log", TrtexecLog) or ("times", TimesFile) for one file; UserError for anything else."""
    p = Path(path)
    source = f"--from-trtexec {p}"
    if not p.exists():
        raise UserError(f"{source}: file not found; check the path")
    if p.is_dir():
        raise UserError(f"{source}: is a directory; pass a trtexec log or --exportTimes JSON file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("utf-16")  # PowerShell's `>` writes UTF-16
        except UnicodeDecodeError:
            raise UserError(f"{source}: binary file, not a trtexec log; pass the text trtexec printed "
                            "or its --exportTimes JSON") from None
    if "\x00" in text:
        raise UserError(f"{source}: binary file, not a trtexec log; pass the text trtexec printed "
                        "or its --exportTimes JSON")
    stripped = text.lstrip()
    if stripped[:1] in "[{" and not LOG_PREFIX.match(stripped):
        times = parse_times_text(stripped, source)
        if times is not None:
            return "times", times
    return "log", parse_log(text, source)


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
    times: list[tuple[TimesFile, Path]] = []
    for path in paths:
        kind, value = read_trtexec_file(path)
        if kind == "log":
            logs.append(value)
        else:
            times.append((value, Path(path)))
    if len(logs) > 1 or len(times) > 1:
        raise UserError("--from-trtexec: pass one trtexec run at a time (one log and/or one --exportTimes JSON)")
    log = logs[0] if logs else None
    warnings: list[str] = list(log.trt_warnings) if log else []
    if log and log.version is None:
        warnings.append("the log names no TensorRT version (no '&&&& RUNNING ... [TensorRT vNNNN]' banner or "
                        "'TensorRT version:' line" + ("; TensorRT 7 prints none" if log.format == "trt7" else "")
                        + "): the result's TensorRT version is unknown")

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
        why = ("an --exportTimes file does not record it" if not log else
               "the log has no trtexec command line" if not log.command else
               "the engine was loaded with --loadEngine" if "loadEngine" in log.flags else
               "the command line names no precision flag")
        warnings.append(f"precision unknown ({why}); pass --precision to set it")
    model_path = log.model_path if log else None
    model = model_name or (Path(model_path).stem if model_path else None) or "trtexec-model"
    device = log.device if log else None
    from edgeresnet.bench.core import guess_target

    resolved_target = target or guess_target(device) or (_slug(device) if device else "unknown")

    latency_kind = "trtexec_latency"
    components: dict[str, dict[str, Any] | None] = {}
    if times:
        times_file, times_path = times[0]
        records, duration_s = _timed_records(times_file, times_path, log, warmup_ms, warnings)
        latency = stats.summarize([r["latency"] for r in records], seed=seed)
        for name in ("gpu_compute", "h2d", "d2h"):
            values = [r[name] for r in records if name in r]
            components[name] = stats.summarize(values, seed=seed) if len(values) == len(records) else None
        enq = [r["enq_end"] - r["enq_start"] for r in records if {"enq_start", "enq_end"} <= r.keys()]
        components["enqueue"] = None
        if times_file.trt7_keys:
            # TRT 7.1.3/7.2.1 sampleReporting.cpp exportJSONTrace writes t.inStart under "startEnqMs" and
            # t.enqStart under "startInMs": the enqueue span cannot be told from the input copy.
            warnings.append("enqueue time not imported: TensorRT 7 --exportTimes files swap the enqueue and "
                            "input-copy timestamps")
        elif len(enq) == len(records):
            components["enqueue"] = stats.summarize(enq, seed=seed)
        if duration_s is None:
            duration_s = log.walltime_s if log and log.walltime_s else math.fsum(r["latency"] for r in records) / 1000.0
        iterations = len(records)
        throughput = stats.throughput_ips(resolved_batch, iterations, duration_s)
        if log:
            warnings.extend(_cross_check(log, latency))
        source = {"kind": "trtexec", "export_times": str(times_path), "export_times_sha256": sha256_file(times_path)}
    else:
        assert log is not None
        queries, qps = _queries_and_qps(log, warnings)
        iterations = queries or 0
        if log.implicit_batch and queries:
            iterations = queries // log.implicit_batch  # implicit batch: trtexec counts images
        if not queries:
            warnings.append("the log states neither the timed query count nor the walltime: iterations "
                            "recorded as 0")
        for name, metric in log.metrics.items():
            if metric.get("unreadable"):
                label = next(k for k, v in METRICS.items() if v == name)
                warnings.append(f"trtexec {label} {', '.join(metric['unreadable'])} unreadable in the log "
                                "(cut or edited); left out")
        latency = _summary_block(log.metrics["latency"], iterations)
        for name in ("gpu_compute", "h2d", "d2h", "enqueue"):
            metric = log.metrics.get(name)
            cv = log.gpu_compute_cv if name == "gpu_compute" else None
            components[name] = None
            if metric:
                lacking = [k for k in ("min", "max", "mean", "median") if k not in metric]
                if lacking:
                    warnings.append(f"{name.replace('_', ' ')} not imported: the log prints no "
                                    f"{'/'.join(lacking)} for it")
                else:
                    components[name] = _summary_block(metric, iterations, cv)
        duration_s = log.walltime_s or 0.0
        # trtexec already multiplied by the batch for implicit-batch engines; explicit batch is one query.
        throughput = qps * (1 if log.implicit_batch else resolved_batch)
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
        "warnings": list(dict.fromkeys(warnings)),
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


def _queries_and_qps(log: TrtexecLog, warnings: list[str]) -> tuple[int | None, float]:
    """Timed query count and queries/s as the log states them, derived when it prints 0 or nothing."""
    queries = log.timed_queries or (round(log.throughput_qps * log.walltime_s)
                                    if log.throughput_qps and log.walltime_s else None)
    if log.throughput_qps:
        return queries, log.throughput_qps
    gpu = log.metrics.get("gpu_compute", {})
    why = "printed as 0 qps" if log.throughput_qps == 0 else "not in the log"
    if log.format == "trt7" and log.throughput_qps == 0:
        # TRT 7.1.3 trtexec.cpp passes inference.batch (0 for explicit-batch engines, sampleOptions.cpp) as
        # the query multiplier, so sampleReporting.cpp printEpilog prints "throughput: 0 qps".
        why = "printed as 0 qps: TensorRT 7 multiplies by the implicit batch, 0 for explicit-batch engines"
    if log.walltime_s and log.timed_queries:
        queries, how = log.timed_queries, "the timed query count"
    elif log.walltime_s and log.gpu_compute_total_s and gpu.get("mean"):
        # total GPU compute time is the sum over the timed queries of their GPU compute time
        queries, how = round(log.gpu_compute_total_s * 1000.0 / gpu["mean"]), "total GPU compute time / mean GPU compute"
    else:
        raise UserError(f"{log.source}: trtexec throughput {why}, and the log lacks the walltime and query count "
                        "to derive it; pass the complete trtexec output")
    qps = queries / log.walltime_s
    warnings.append(f"trtexec throughput {why}; derived {qps:.6g} qps from {queries} queries "
                    f"({how}) over the {log.walltime_s:g} s walltime")
    return queries, qps


def _timed_records(times_file: TimesFile, path: Path, log: TrtexecLog | None, warmup_ms: float | None,
                   warnings: list[str]) -> tuple[list[dict[str, float]], float | None]:
    """The timed queries of every run in the file (warm-ups dropped like trtexec) and their wall time (s)."""
    cut = warmup_ms if warmup_ms is not None else (log.warmup_ms if log and log.warmup_ms is not None
                                                   else DEFAULT_WARMUP_MS)
    whole = times_file.whole_trace
    if whole is None and log and log.version:
        major_minor = tuple(int(x) for x in log.version.split(".")[:2])
        whole = major_minor < (8, 5)
    kept_all: list[dict[str, float]] = []
    duration_ms = 0.0
    dropped = 0
    for records in times_file.runs:
        if whole is not False:
            # trtexec's report skips the traces before the first with computeStart >= warmUp
            # (sampleReporting.cpp printPerformanceReport, std::find_if on computeStart)
            first = next((i for i, r in enumerate(records) if r.get("compute_start", cut) >= cut), len(records))
            dropped += first
            records = records[first:]
        if records:
            # trtexec's Total Host Walltime: last d2hEnd - first (timed) h2dStart (printPerformanceReport)
            start = records[0].get("h2d_start", records[0].get("compute_start"))
            end = records[-1].get("d2h_end", records[-1].get("compute_end"))
            if start is not None and end is not None:
                duration_ms += max(end - start, 0.0)
        kept_all.extend(records)
    if dropped:
        how = ("the writer exports warm-ups" if times_file.whole_trace else
               f"TensorRT {log.version if log else ''} exports warm-ups" if whole else
               "assumed to be warm-ups: TensorRT <= 8.4 exports them; a log of the run settles it")
        warnings.append(f"dropped {dropped} warm-up queries (computeStart < {cut:g} ms) from the --exportTimes "
                        f"trace, as trtexec does ({how})")
    if len(times_file.runs) > 1:
        warnings.append(f"--exportTimes file holds {len(times_file.runs)} JSON arrays back to back: read as "
                        "consecutive runs, their timed queries pooled and their wall times added")
    if not kept_all:
        raise UserError(f"--from-trtexec {path}: no timed queries left after the warm-up")
    return kept_all, (duration_ms / 1000.0 if duration_ms > 0 else None)


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

