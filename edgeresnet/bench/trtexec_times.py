"""Read a ``trtexec --exportTimes`` JSON file into a ``TimesFile``: every run's per-query records, canonical keys.

The file is a list of per-query records (``startEnqMs`` ... ``endD2hMs``, ``h2dMs``, ``computeMs``, ``d2hMs``,
``latencyMs``); TensorRT 7.x-8.4 write the whole trace, warm-ups included, 8.0-8.2 add ``endToEndMs``,
TensorRT 7 spells the copies ``in``/``out``; 8.5+ leave the warm-ups out. Key case is ignored. Several arrays
back to back (runs appended to one file) are read as consecutive runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgeresnet.errors import UserError

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
class TimesFile:
    """One ``--exportTimes`` file: one or more runs' per-query records, canonical keys."""

    runs: list[list[dict[str, float]]]
    whole_trace: bool | None  # True: the writer is known to include warm-ups; None: cannot tell from the keys
    trt7_keys: bool = False


def parse_times_text(text: str, source: str) -> TimesFile | None:
    """The runs in the text of an ``--exportTimes`` file; None when the text is not JSON (a log, then)."""
    values = _json_values(text, source)
    return _times_file(values, source) if values else None


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


def _times_file(values: list[Any], source: str) -> TimesFile:
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
