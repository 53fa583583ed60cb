"""Parse the text ``trtexec`` printed (its log) into a ``TrtexecLog``: the command line, the device, the
warm-up and the figures of its performance summary.

Formats handled:

* TensorRT 7.x (JetPack 4.4/4.5): ``Host Latency`` / ``Enqueue Time`` / ``GPU Compute`` blocks with
  ``min: X ms (end to end Y ms)`` and ``percentile: X ms at 99%`` lines, ``throughput: N qps`` (0 for
  explicit-batch engines) and no version banner;
* TensorRT 8.0-8.5: ``=== Performance summary ===`` with one ``percentile(99%)`` per metric and, in
  some releases, an ``End-to-End Host Latency`` line;
* TensorRT 8.6-10.x: ``percentile(90%)``, ``percentile(95%)``, ``percentile(99%)``, CV warnings;
  10.x banners carry a build tag (``[TensorRT v101601] [b11]``), 8.0 prints ``TensorRT version: 8003``;
* pastes: without the ``[date] [I]`` prefixes, with extra ones (``[INFO] [date] [I]``), indented, with the
  shell prompt and backslash continuation lines of the command, hand-edited (``max 6.19 ms`` without ``=``,
  summary lines run together).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

# "[05/27/2023-12:05:31] [I] ", "[INFO] [05/27/2023-12:05:31] [I] " (a wrapper's logger), "[I] ", indented.
LOG_PREFIX = re.compile(r"^\s*(?:\[[^\]\n]*\]\s*)*?\[([IWEVF])\]\s?")
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

# Lines that state one figure of the run: (pattern, TrtexecLog attribute, how to read the captured text)
Figures = tuple[tuple[re.Pattern[str], str, Callable[[str], Any]], ...]
_SUMMARY_FIGURES: Figures = (
    (re.compile(r"Throughput: " + _NUMBER + r" qps"), "throughput_qps", float),
    (re.compile(r"Total Host Walltime: " + _NUMBER + r" s"), "walltime_s", float),
    (re.compile(r"Total GPU Compute Time: " + _NUMBER + r" s"), "gpu_compute_total_s", float),
)
_TRT7_FIGURES: Figures = (
    (re.compile(r"throughput: " + _NUMBER + r" qps$"), "throughput_qps", float),
    (re.compile(r"walltime: " + _NUMBER + r" s$"), "walltime_s", float),
    (re.compile(r"total compute time: " + _NUMBER + r" s$"), "gpu_compute_total_s", float),
)
_PREAMBLE_FIGURES: Figures = (
    (re.compile(r"Selected Device: (.+)$"), "device", str.strip),
    (re.compile(r"Compute Capability: ([\d.]+)"), "compute_capability", str),
    (re.compile(r"Warmup: " + _NUMBER + r"\s*ms"), "warmup_ms", float),
    (re.compile(r"Duration: \S+ \(\+ " + _NUMBER + r"ms warm up\)"), "warmup_ms", float),
)


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


def _strip(line: str) -> tuple[str | None, str]:
    match = LOG_PREFIX.match(line)
    if match:
        return match.group(1), line[match.end():].rstrip()
    return None, line.strip()


def _read_figure(log: TrtexecLog, line: str, figures: Figures) -> bool:
    """Set the attribute of the figure that ``line`` states; False when it states none of ``figures``."""
    for pattern, attribute, read in figures:
        match = pattern.match(line)
        if match:
            setattr(log, attribute, read(match.group(1)))
            return True
    return False


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
    if _read_figure(log, line, _SUMMARY_FIGURES):
        return
    body = line[2:].strip() if line.startswith("* ") else line
    if (severity == "W" and line.startswith("* ")) or (severity in ("W", None) and _TRT_WARNING.match(line)):
        log.trt_warnings.append("trtexec: " + body)
        cv = re.search(r"coefficient of variance = " + _NUMBER + "%", line)
        if cv:
            log.gpu_compute_cv = float(cv.group(1))
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
        if section and _read_figure(log, line, _TRT7_FIGURES):
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
    if _read_figure(log, line, _PREAMBLE_FIGURES):
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
    m = re.match(r"Warmup completed (\d+) queries over " + _NUMBER + " ms", line)
    if m:
        log.warmup_queries = int(m.group(1))
        log.warmup_ms = float(m.group(2))
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

