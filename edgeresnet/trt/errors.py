"""Turn what TensorRT and CUDA log on a failed load into one readable reason and its fix.

``deserialize_cuda_engine`` returns None and the reason is only in the logger ("returns: The ICudaEngine, or
None if it could not be deserialized", RuntimeDoc in python/docstrings/infer/pyCoreDoc.h of
github.com/NVIDIA/TensorRT at v10.3.0), and a missing driver shows up as "CUDA initialization failure with
error: N" followed by a nullptr factory TypeError (github.com/NVIDIA/TensorRT/issues/2913).
``classify_trt_messages`` reads the recorded messages and returns an ``EngineLoadError`` (a ``UserError``, so
the CLI prints it as one line) of one of these kinds: ``version_mismatch``, ``wrong_compute_capability``, ``not_a_plan``, ``no_cuda_driver``, ``no_device``,
``unknown``. Pure: regexes over strings, tested with strings from public logs
(tests/test_trt_errors.py names the source of each).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from edgeresnet.errors import UserError

KINDS = ("version_mismatch", "wrong_compute_capability", "not_a_plan", "no_cuda_driver", "no_device", "unknown")

# CUDA runtime error codes seen in these messages (cuda_runtime_api.h): 35 = cudaErrorInsufficientDriver,
# 34 = cudaErrorStubLibrary, 3 = cudaErrorInitializationError, 100 = cudaErrorNoDevice,
# 101 = cudaErrorInvalidDevice.
_NO_DEVICE_CODES = {100, 101}

_CUDA_INIT = re.compile(r"CUDA initialization failure with error:?\s*(\d+)", re.IGNORECASE)
_CUDA_ERROR = re.compile(r"cudaError\w*\s*\(?(\d+)\)?|cuda(?:Error)?\s*(\d+)\s*:", re.IGNORECASE)
_VERSION_TAG = re.compile(r"Version tag does not match", re.IGNORECASE)
_VERSION_NUMBERS = re.compile(r"Current Version:\s*(\d+),\s*Serialized Engine Version:\s*(\d+)", re.IGNORECASE)
_MAGIC_TAG = re.compile(r"Magic tag does not match", re.IGNORECASE)
_INCOMPATIBLE_DEVICE = re.compile(
    r"generated on an incompatible device,\s*expecting compute\s*(\d+\.\d+)\s*got compute\s*(\d+\.\d+)", re.IGNORECASE
)
_INCOMPATIBLE_DEVICE_LOOSE = re.compile(r"incompatible device|different (?:GPU|device|compute capability)", re.IGNORECASE)
_SERIALIZATION = re.compile(r"Serialization assertion .* failed|Serialization \(|deserialization failed", re.IGNORECASE)
_INSUFFICIENT_DRIVER = re.compile(r"driver version is insufficient|libcuda\.so|isCudaInstalledCorrectly",
                                  re.IGNORECASE)
_NO_DEVICE = re.compile(r"no CUDA-capable device|no CUDA device|cudaErrorNoDevice", re.IGNORECASE)


class EngineLoadError(UserError):
    """A classified engine-load or CUDA-init failure: ``kind``, the reason, the fix, the evidence."""

    def __init__(self, kind: str, reason: str, fix: str, *, evidence: str | None = None,
                 details: dict[str, Any] | None = None, engine: str | None = None) -> None:
        prefix = f"{engine}: " if engine else ""
        super().__init__(f"{prefix}{reason}; {fix}")
        self.kind = kind
        self.reason = reason
        self.fix = fix
        self.evidence = evidence
        self.details = details or {}
        self.engine = engine

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reason": self.reason, "fix": self.fix, "evidence": self.evidence,
                "details": self.details, "engine": self.engine}


def _text(message: Any) -> str:
    """Accept plain strings or (severity, message) pairs as a recording logger stores them."""
    if isinstance(message, (tuple, list)) and message:
        return str(message[-1])
    return str(message)


def classify_trt_messages(
    messages: Iterable[Any], *, engine: str | None = None, rebuild: str | None = None, context: str | None = None,
) -> EngineLoadError:
    """Classify a failed load from the logger's messages (strings or ``(severity, message)`` pairs).

    ``engine`` (alias ``context``) prefixes the message with the file; ``rebuild`` is the command that
    rebuilds the engine for this machine and goes into the fix where rebuilding is the fix. The result is
    returned, not raised: ``raise classify_trt_messages(...)`` or read ``.kind``/``.reason``/``.fix``."""
    engine = engine or context
    lines = [_text(m) for m in messages]
    rebuild_fix = f"rebuild it here: {rebuild}" if rebuild else "rebuild the engine on this machine with edgeresnet build"

    # CUDA first: when CUDA cannot start, nothing after it means anything.
    for line in lines:
        match = _CUDA_INIT.search(line)
        if match:
            code = int(match.group(1))
            if code in _NO_DEVICE_CODES:
                return EngineLoadError(
                    "no_device", f"no usable CUDA GPU (CUDA initialization error {code})",
                    "check CUDA_VISIBLE_DEVICES and that the GPU is visible (nvidia-smi, or tegrastats on Jetson)",
                    evidence=line, details={"cuda_error": code}, engine=engine)
            return EngineLoadError(
                "no_cuda_driver", f"CUDA could not start (initialization error {code}"
                + (", driver too old or missing" if code == 35 else "") + ")",
                "install or update the NVIDIA driver (on Jetson: reflash or repair JetPack), then retry",
                evidence=line, details={"cuda_error": code}, engine=engine)
    for line in lines:
        if _NO_DEVICE.search(line):
            return EngineLoadError("no_device", "no CUDA-capable device is visible",
                                   "check CUDA_VISIBLE_DEVICES and the GPU (nvidia-smi)", evidence=line, engine=engine)
    for line in lines:
        code_match = _CUDA_ERROR.search(line)
        code = next((int(g) for g in code_match.groups() if g), None) if code_match else None
        if code in _NO_DEVICE_CODES:
            return EngineLoadError("no_device", f"no usable CUDA GPU (CUDA error {code})",
                                   "check CUDA_VISIBLE_DEVICES and the GPU (nvidia-smi)", evidence=line,
                                   details={"cuda_error": code}, engine=engine)
        if code == 35 or _INSUFFICIENT_DRIVER.search(line):
            return EngineLoadError("no_cuda_driver", "the CUDA driver is missing or too old for this TensorRT",
                                   "install or update the NVIDIA driver, then retry", evidence=line,
                                   details={"cuda_error": code} if code is not None else {}, engine=engine)

    for line in lines:
        if _VERSION_TAG.search(line):
            details: dict[str, Any] = {}
            numbers = _VERSION_NUMBERS.search(line)
            reason = "the engine was built by a different TensorRT version (plan version tag does not match)"
            if numbers:
                details = {"runtime_serialization_version": int(numbers.group(1)),
                           "engine_serialization_version": int(numbers.group(2))}
                reason = (f"the engine was built by a different TensorRT version (serialization version "
                          f"{numbers.group(2)}, this runtime reads {numbers.group(1)})")
            return EngineLoadError("version_mismatch", reason, rebuild_fix, evidence=line, details=details, engine=engine)
    for line in lines:
        match = _INCOMPATIBLE_DEVICE.search(line)
        if match:
            expected, got = match.group(1), match.group(2)
            return EngineLoadError(
                "wrong_compute_capability",
                f"the engine was built for a GPU of compute capability {expected}, this GPU is {got}",
                rebuild_fix, evidence=line, details={"engine_compute_capability": expected, "device_compute_capability": got},
                engine=engine)
        if _INCOMPATIBLE_DEVICE_LOOSE.search(line):
            return EngineLoadError("wrong_compute_capability", "the engine was built for a different GPU",
                                   rebuild_fix, evidence=line, engine=engine)
    for line in lines:
        if _MAGIC_TAG.search(line):
            return EngineLoadError(
                "not_a_plan", "not a TensorRT engine (plan magic tag does not match)",
                "pass the .engine file written by edgeresnet build (an ONNX or other file was given)",
                evidence=line, engine=engine)
    for line in lines:
        if _SERIALIZATION.search(line):
            return EngineLoadError(
                "not_a_plan", "the engine file is corrupt or truncated (deserialization failed)",
                f"copy it again or {rebuild_fix}", evidence=line, engine=engine)
    evidence = next((line for line in reversed(lines) if line.strip()), None)
    return EngineLoadError(
        "unknown", "TensorRT could not load the engine" + (f" ({evidence[:160]})" if evidence else " (no log message)"),
        f"run with a VERBOSE logger for details, or {rebuild_fix}", evidence=evidence, engine=engine)
