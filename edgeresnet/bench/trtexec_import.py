"""Import a ``trtexec`` run (its printed log, its ``--exportTimes`` JSON, or both) as a benchmark result.

Why: boards that cannot install edgeresnet (old JetPack, locked-down CI runners) still have trtexec;
their numbers join comparisons and the regression gate in the same format. Formats handled:

* log, TensorRT 7.x (JetPack 4.4/4.5): ``Host Latency`` / ``Enqueue Time`` / ``GPU Compute`` blocks with
  ``min: X ms (end to end Y ms)`` and ``percentile: X ms at 99%`` lines, ``throughput: N qps`` (0 for
  explicit-batch engines, derived here from the other figures) and no version banner;
* log, TensorRT 8.0-8.5: ``=== Performance summary ===`` with one ``percentile(99%)`` per metric and, in
  some releases, an ``End-to-End Host Latency`` line;
* log, TensorRT 8.6-10.x: ``percentile(90%)``, ``percentile(95%)``, ``percentile(99%)``, CV warnings;
  10.x banners carry a build tag (``[TensorRT v101601] [b11]``), 8.0 prints ``TensorRT version: 8003``;
* pastes: without the ``[date] [I]`` prefixes, with extra ones (``[INFO] [date] [I]``), indented, with the
  shell prompt and backslash continuation lines of the command, hand-edited (``max 6.19 ms`` without ``=``,
  summary lines run together);
* ``--exportTimes`` JSON: a list of per-query records (``startEnqMs`` ... ``endD2hMs``, ``h2dMs``,
  ``computeMs``, ``d2hMs``, ``latencyMs``; TensorRT 7.x-8.4 write the whole trace, warm-ups included,
  8.0-8.2 add ``endToEndMs``, TensorRT 7 spells the copies ``in``/``out``; 8.5+ leave the warm-ups out).
  Key case is ignored. Several arrays back to back (runs appended to one file) are read as consecutive runs.

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

# "[05/27/2023-12:05:31] [I] ", "[INFO] [05/27/2023-12:05:31] [I] " (a wrapper's logger), "[I] ", indented.
_PREFIX = re.compile(r"^\s*(?:\[[^\]\n]*\]\s*)*?\[([IWEVF])\]\s?")
_METRIC = re.compile(r"^(" + "|".join(re.escape(k) for k in METRICS) + r"):\s*(min\b.*)$")
# A decimal figure as trtexec prints it ("0.254", "1e-05", "12"); strict, so a hand-edited "..." or "-" is no number.
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# "=" optional: hand-edited pastes drop it ("max 6.19507 ms").
_VALUE = re.compile(r"(min|max|mean|median|percentile\(([\d.]+)%\))\s*=?\s*(" + _NUM + r"|inf|nan)\s*ms")
# Where a summary line starts inside a line that a paste ran together; the alternation tries the longer
# label first at each position, so "End-to-End Host Latency" is one label, not "... Latency".
_LABEL = re.compile(r"(?:^|(?<=\s))(End-to-End Host Latency|Total Host Walltime|Total GPU Compute Time|"
                    r"GPU Compute Time|Enqueue Time|H2D Latency|D2H Latency|Latency|Throughput)(?=:)"
                    r"|(?:^|(?<=\s))(?=GPU compute time is unstable)")
_TRT_WARNING = re.compile(r"^(GPU compute time is unstable|Throughput may be bound|\* )")
# TensorRT 7 summary blocks (TRT 7.1.3 samples/common/sampleReporting.cpp printEpilog)
_TRT7_SECTIONS = {"Host Latency": "latency", "Enqueue Time": "enqueue", "GPU Compute": "gpu_compute"}
_TRT7_VALUE = re.compile(r"^(min|max|mean|median): (" + _NUM + r"|inf|nan) ms"
                         r"(?: \(end to end (" + _NUM + r"|inf|nan) ms\))?$")
_TRT7_PCT = re.compile(r"^percentile: (" + _NUM + r"|inf|nan) ms at ([\d.]+)%"
                       r"(?: \(end to end (" + _NUM + r"|inf|nan) ms at [\d.]+%\))?$")
# A command typed at a prompt: "user@host:~$ trtexec --onnx=...", "PS C:\x> trtexec.exe ...",
# "# /usr/src/tensorrt/bin/trtexec ..."
_PROMPT_COMMAND = re.compile(r"(?:^|[\s>$#%])((?:[^\s>$#%]*[\\/])?trtexec(?:\.exe)?(?:\s+--?\S+)+.*)$")
_CONTINUATION = ("\\", "^", "`")  # bash, cmd.exe, PowerShell line continuation
_NUMBER = "(" + _NUM + ")"

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
    format: str = "summary"  # or "trt7": TensorRT 7's Host Latency blocks

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
    return None, line.strip()


def _float(text: str) -> float:
    return float(text)


def _parse_flags(command: str) -> dict[str, str]:
    try:
        words = shlex.split(command, posix="\\" not in command)  # Windows paths keep their backslashes
    except ValueError:
        words = command.split()
    flags: dict[str, str] = {}
    for word in words[1:]:
        if word.startswith("--"):
            key, _, value = word[2:].partition("=")
            flags[key] = value
    return flags


def _join_continuations(lines: list[str]) -> list[str]:
    """A command pasted from a terminal: 'trtexec --onnx=m.onnx \\' + '>   --fp16' -> one line."""
    out: list[str] = []
    joining = False
    for raw in lines:
        text = raw.rstrip()
        if joining and out:
            out[-1] = out[-1][:-1].rstrip() + " " + re.sub(r"^\s*(?:>>?\s)?\s*", "", text)
        else:
            out.append(text)
        joining = bool(text) and text.endswith(_CONTINUATION) and "trtexec" in out[-1]
    return out


def _split_merged(line: str) -> list[str]:
    """'D2H Latency: ... ms Total Host Walltime: 3.05 s' (a paste ran lines together) -> two lines."""
    starts = [m.start() for m in _LABEL.finditer(line)]
    if len(starts) <= 1:
        return [line]
    starts = ([0] if starts[0] else []) + starts
    return [line[a:b].strip() for a, b in zip(starts, starts[1:] + [len(line)]) if line[a:b].strip()]


def parse_log(text: str, source: str = "trtexec log") -> TrtexecLog:
    """Parse the text trtexec printed. Raises UserError when it holds no trtexec figures."""
    lines = _join_continuations(text.splitlines())
    starts = [i for i, line in enumerate(lines) if _strip(line)[1].strip() == SUMMARY_HEADER]
    log = TrtexecLog(source=source)
    if not starts:
        if not _parse_trt7(log, lines):
            _refuse_log(text, source)
        return _check_complete(log, source)
    for raw in lines[: starts[-1]]:
        severity, line = _strip(raw)
        _parse_preamble(log, line, prompt=severity is None)
    for raw in lines[starts[-1] + 1:]:
        severity, whole = _strip(raw)
        if whole.startswith("&&&&"):
            _parse_preamble(log, whole)
            continue
        if severity == "V":  # the verbose "Explanations of the performance metrics" repeat the labels
            continue
        for line in _split_merged(whole):
            _parse_summary_line(log, severity, line)
    return _check_complete(log, source)


def _parse_summary_line(log: TrtexecLog, severity: str | None, line: str) -> None:
    metric = _METRIC.match(line)
    if metric:
        log.metrics[METRICS[metric.group(1)]] = _parse_metric(metric.group(2))
        return
    m = re.match(r"Throughput: " + _NUMBER + r" qps", line)
    if m:
        log.throughput_qps = _float(m.group(1))
        return
    m = re.match(r"Total Host Walltime: " + _NUMBER + r" s", line)
    if m:
        log.walltime_s = _float(m.group(1))
        return
    m = re.match(r"Total GPU Compute Time: " + _NUMBER + r" s", line)
    if m:
        log.gpu_compute_total_s = _float(m.group(1))
        return
    body = line[2:].strip() if line.startswith("* ") else line
    if (severity == "W" and line.startswith("* ")) or (severity in ("W", None) and _TRT_WARNING.match(line)):
        log.trt_warnings.append("trtexec: " + body)
        cv = re.search(r"coefficient of variance = " + _NUMBER + "%", line)
        if cv:
            log.gpu_compute_cv = _float(cv.group(1))
    elif log.trt_warnings and ((severity == "W" and not line.startswith("*"))
                               or (severity is None and line.startswith("If not already in use"))):
        log.trt_warnings[-1] += " " + line.strip()


def _parse_trt7(log: TrtexecLog, lines: list[str]) -> bool:
    """TensorRT 7's summary (TRT 7.1.3 samples/common/sampleReporting.cpp printEpilog); False if absent."""
    section: str | None = None
    found = False
    for raw in lines:
        severity, line = _strip(raw)
        if line in _TRT7_SECTIONS:
            section = _TRT7_SECTIONS[line]
            found = True
            log.metrics.setdefault(section, {"percentiles": {}})
            if section == "latency":
                log.metrics.setdefault("end_to_end", {"percentiles": {}})
            continue
        m = _TRT7_VALUE.match(line)
        if section and m:
            log.metrics[section][m.group(1)] = float(m.group(2))
            if section == "latency" and m.group(3):
                log.metrics["end_to_end"][m.group(1)] = float(m.group(3))
            continue
        m = _TRT7_PCT.match(line)
        if section and m:
            log.metrics[section]["percentiles"][float(m.group(2))] = float(m.group(1))
            if section == "latency" and m.group(3):
                log.metrics["end_to_end"]["percentiles"][float(m.group(2))] = float(m.group(3))
            continue
        m = re.match(r"throughput: " + _NUMBER + r" qps$", line)
        if section and m:
            log.throughput_qps = _float(m.group(1))
            continue
        m = re.match(r"walltime: " + _NUMBER + r" s$", line)
        if section and m:
            log.walltime_s = _float(m.group(1))
            continue
        m = re.match(r"total compute time: " + _NUMBER + r" s$", line)
        if section and m:
            log.gpu_compute_total_s = _float(m.group(1))
            continue
        section = None if section and line else section
        _parse_preamble(log, line, prompt=severity is None)
    if found:
        log.format = "trt7"
        if not log.metrics.get("end_to_end", {}).get("min"):
            log.metrics.pop("end_to_end", None)
    return found and "min" in log.metrics.get("latency", {})


def _check_complete(log: TrtexecLog, source: str) -> TrtexecLog:
    """Import what the log states; refuse only when the Latency figures themselves are missing."""
    latency = log.metrics.get("latency")
    if latency is None:
        have = ", ".join(sorted(log.metrics)) or "no metric"
        raise UserError(f"{source}: the trtexec performance summary has no Latency line (found: {have}); "
                        "pass the complete trtexec output")
    lacking = [k for k in ("min", "max", "mean", "median") if k not in latency]
    if lacking:
        raise UserError(f"{source}: the trtexec Latency line has no {'/'.join(lacking)} figure; "
                        "pass the complete trtexec output")
    return log


def _parse_preamble(log: TrtexecLog, line: str, prompt: bool = False) -> None:
    # 10.x banners add a build tag: "&&&& RUNNING TensorRT.trtexec [TensorRT v101601] [b11] # trtexec ..."
    m = re.match(r"&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec(?: \[TensorRT v(\d+)\])?(?: \[[^\]]*\])* # (.*)$",
                 line)
    if m:
        if m.group(1) == "RUNNING" or log.command is None:
            log.command = m.group(3).strip()
            log.flags = _parse_flags(log.command)
            if log.flags.get("warmUp", "").replace(".", "", 1).isdigit() and log.warmup_ms is None:
                log.warmup_ms = float(log.flags["warmUp"])
            # --batch=N (implicit batch, removed in TensorRT 10): its throughput counts images
            # (TRT 8.4.1 sampleReporting.cpp printPerformanceReport: batchSize = options.inference.batch)
            if log.flags.get("batch", "").isdigit() and int(log.flags["batch"]) > 0 and log.implicit_batch is None:
                log.implicit_batch = int(log.flags["batch"])
        if m.group(2) and log.version is None:
            log.version = decode_version(m.group(2))
        if m.group(1) != "RUNNING":
            log.passed = m.group(1) == "PASSED"
        return
    # "TensorRT version: 8.6.0"; TensorRT 8.0 printed the integer: "TensorRT version: 8003"
    m = re.match(r"TensorRT version: (\d+\.\d+\.\d+|\d{4,})\b", line)
    if m:
        log.version = m.group(1) if "." in m.group(1) else decode_version(m.group(1))
        return
    if prompt and log.command is None and "&&&&" not in line:  # a line trtexec printed has a [I] prefix
        m = _PROMPT_COMMAND.search(line)
        if m:
            log.command = m.group(1).strip()
            log.flags = _parse_flags(log.command)
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
    # trtexec picks a shape itself when a dynamic input got none (seen in TensorRT 10.16 logs)
    m = re.search(r"Automatically overriding shape to: (\d+(?:x\d+)*)", line)
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
    # a label whose figure did not parse ("percentile(99%) = 0.2551s": a paste cut by terminal wrapping)
    read = {k for k in out if k != "percentiles"} | {f"percentile({p:g}%)" for p in out["percentiles"]}
    named = re.findall(r"\b(min|max|mean|median|percentile\([\d.]+%\))", body)
    out["unreadable"] = [n for n in named if n not in read]
    return out


def _refuse_log(text: str, source: str) -> None:
    if "TensorRT.trtexec" in text:
        failed = [ln for ln in text.splitlines() if "[E]" in ln or "&&&& FAILED" in ln]
        why = f" (last error: {_strip(failed[-1])[1][:120]})" if failed else ""
        raise UserError(f"{source}: trtexec log without a performance summary, the run failed or was cut short{why}; "
                        "re-run trtexec to completion")
    raise UserError(f"{source}: not a trtexec log (no '{SUMMARY_HEADER}' section and no TensorRT 7 "
                    "'Host Latency' block); pass the text trtexec printed (trtexec ... 2>&1 | tee run.log) "
                    "or its --exportTimes JSON")


@dataclass
class TimesFile:
    """One ``--exportTimes`` file: one or more runs' per-query records, canonical keys."""

    runs: list[list[dict[str, float]]]
    whole_trace: bool | None  # True: the writer is known to include warm-ups; None: cannot tell from the keys
    trt7_keys: bool = False


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


def _json_values(text: str, source: str) -> list[Any] | None:
    """Every JSON value in ``text``, back to back ('[...][...]' or one per line); None if it is not JSON."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return values
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if not values:
                return None
            raise UserError(f"{source}: JSON value {len(values) + 1} is cut short or malformed "
                            f"({exc.msg} at line {exc.lineno}); pass the file trtexec wrote") from None
        values.append(value)


def _read_times(values: list[Any], source: str) -> TimesFile:
    first = values[0]
    if isinstance(first, dict):
        if str(first.get("schema", "")).startswith("edgeresnet."):
            raise UserError(f"{source}: an edgeresnet results file, not a trtexec log or --exportTimes JSON; "
                            "pass it to 'edgeresnet compare' or 'edgeresnet regress' instead")
        raise UserError(f"{source}: JSON object, not a trtexec --exportTimes file (expected a list of per-query "
                        "records such as {\"startComputeMs\": ..., \"computeMs\": ...})")
    runs = []
    for index, data in enumerate(values):
        where = source if len(values) == 1 else f"{source} (array {index + 1})"
        runs.append(parse_export_times(data, where))
    keys = {str(k).lower() for data in values for r in data for k in r}
    trt7 = bool(keys & {"startinms", "inms", "outms"})
    # Writers that export the whole trace, warm-ups included: TRT 7.x-8.4 (samples/common/sampleReporting.cpp
    # exportJSONTrace loops over every trace); 8.0-8.2 add endToEndMs. From TRT 8.5.1 it starts at
    # trace.begin() + nbWarmups. Keys alone cannot tell 8.4 from 8.5+.
    whole = True if (trt7 or "endtoendms" in keys) else None
    return TimesFile(runs=runs, whole_trace=whole, trt7_keys=trt7)


# ---------------------------------------------------------------------------------------------
# files -> result
# ---------------------------------------------------------------------------------------------
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
    if stripped[:1] in "[{" and not _PREFIX.match(stripped):
        values = _json_values(stripped, source)
        if values:
            return "times", _read_times(values, source)
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


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]
