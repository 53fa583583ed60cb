"""Loading a built engine back (needs a GPU): deserialization with classified failures, and its layer report."""

from __future__ import annotations

import json
from typing import Any

from edgeresnet.trt.adapter.logs import classify_failure, make_logger


def deserialize_engine(trt: Any, data: bytes, logger: Any = None, *, dla_core: int | None = None,
                       host_code_allowed: bool = False, source: str = "engine", rebuild: str | None = None) -> Any:
    """``Runtime.deserialize_cuda_engine`` with a None or a CUDA start failure turned into trt-core's
    classified one-line error (version tag, compute capability, not a plan, no driver)."""
    logger = logger if logger is not None else make_logger(trt)
    try:
        runtime = trt.Runtime(logger)
    except TypeError as exc:  # factory returned nullptr: CUDA could not be initialised
        # (github.com/NVIDIA/TensorRT/issues/2913)
        raise classify_failure(logger, source, rebuild) from exc
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)
    if host_code_allowed and hasattr(runtime, "engine_host_code_allowed"):
        # a version-compatible plan embeds a lean runtime; NvInferRuntime.h setEngineHostCodeAllowed: "Set whether
        # the runtime is allowed to deserialize engines with host executable code" (default false, TensorRT >= 8.6)
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise classify_failure(logger, source, rebuild)
    return engine


def inspect_engine(trt: Any, engine: Any) -> dict[str, Any]:
    """The engine inspector's JSON (per-layer precision, tactic, DLA placement; DETAILED verbosity)."""
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        info = json.loads(text)
    except (TypeError, ValueError):
        return {"raw": str(text)}
    return info if isinstance(info, dict) else {"Layers": info}
