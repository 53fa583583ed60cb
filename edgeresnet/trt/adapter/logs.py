"""TensorRT's log as data: a recording ILogger, and the one-line errors made from what it recorded."""

from __future__ import annotations

import re
from typing import Any

from edgeresnet.errors import UserError

SEVERITIES = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")


def severity_name(severity: Any) -> str:
    name = getattr(severity, "name", None)
    if isinstance(name, str):
        return name
    text = str(severity)
    return text.rsplit(".", 1)[-1]


def make_logger(trt: Any, min_severity: str = "INFO") -> Any:
    """A ``trt.ILogger`` subclass instance that records ``(severity name, message)`` pairs in ``.messages``.

    The class is made from the injected module, so it subclasses the real ILogger (or the fake's)."""
    if min_severity not in SEVERITIES:
        raise ValueError(f"min_severity must be one of {SEVERITIES}")
    keep = set(SEVERITIES[: SEVERITIES.index(min_severity) + 1])
    base = trt.ILogger

    class RecordingLogger(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # pybind11 trampolines need the base __init__
            self.messages: list[tuple[str, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            name = severity_name(severity)
            if name in keep:
                self.messages.append((name, str(msg)))

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s in ("INTERNAL_ERROR", "ERROR")]

    return RecordingLogger()


def logged_messages(logger: Any) -> list[tuple[str, str]]:
    return list(getattr(logger, "messages", []))


def classify_failure(logger: Any, source: str, rebuild: str | None = None) -> UserError:
    """The logged reason of a failed load or CUDA start as trt-core's one-line ``EngineLoadError``."""
    from edgeresnet.trt.errors import classify_trt_messages

    return classify_trt_messages(logged_messages(logger), engine=source, rebuild=rebuild)


_NOISE = ("catchCudaError", "cudaError 35")  # CPU-only builders append the missing-driver error to parser errors


def _clean_line(line: str) -> str:
    """``... Error Code 4: API Usage Error (detail. In checkType at /x.cpp:456)`` -> ``detail``."""
    text = line.strip()
    match = re.search(r"Error Code \d+: [^(]*\((.*?)(?:\.? In \w+ at [^)]*)?\)\s*$", text)
    if match:
        text = match.group(1)
    text = re.sub(r"^\[\d+\]\s*", "", text)
    text = re.sub(r"^Assertion failed: [^:]+: ", "", text)  # the C++ expression says nothing to a user
    return text.rstrip(".")


def error_lines(text: str) -> list[str]:
    out: list[str] = []
    for line in str(text).splitlines():
        if not line.strip() or any(n in line for n in _NOISE):
            continue
        cleaned = _clean_line(line)
        if cleaned and cleaned not in out:
            out.append(cleaned)
    return out
