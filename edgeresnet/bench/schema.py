"""The versioned benchmark-result format: build, validate on write, validate on read.

Why: results travel between machines (a Jetson without our package, a CI runner, a laptop making the
report) and outlive the code that wrote them. The schema file ``edgeresnet/schemas/benchmark.schema.json``
is the contract; a file of another version is refused in one line instead of being misread.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import re
from pathlib import Path
from typing import Any

from edgeresnet import __version__
from edgeresnet.artifacts import build_manifest, write_json_atomic, write_manifest
from edgeresnet.errors import UserError

SCHEMA_ID = "edgeresnet.benchmark/1"
SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "benchmark.schema.json"
_ID_PATTERN = re.compile(r"^edgeresnet\.benchmark/(\d+)$")


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validation_errors(document: Any) -> list[str]:
    """Every schema violation as ``path: message`` (empty when the document is valid)."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    out = []
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        message = " ".join(error.message.split())
        out.append(f"{where}: {message[:200]}")
    return out or content_errors(document)


# Statistics a result holds (schema $defs/stats); each is milliseconds, so never negative.
_STAT_FIELDS = ("latency_ms", "gpu_compute_ms", "h2d_ms", "d2h_ms", "enqueue_ms")
_STAT_VALUES = ("min", "max", "mean", "median", "p90", "p95", "p99", "std")


def content_errors(document: Any) -> list[str]:
    """What JSON Schema cannot say: at least one result, finite numbers, no negative times, min <= median <= max.

    Python's json module reads NaN and Infinity although RFC 8259 section 6 excludes them from JSON, and
    every statistic here is a duration or a rate, so such a value (or a negative one) means a damaged file.
    """
    out: list[str] = []
    _non_finite(document, "", out)
    results = document.get("results") if isinstance(document, dict) else None
    if isinstance(results, list) and not results:
        out.append("results: the list is empty; the file holds no measurement")
    for index, result in enumerate(results if isinstance(results, list) else []):
        if not isinstance(result, dict):
            continue
        for name in _STAT_FIELDS:
            stats = result.get(name)
            if not isinstance(stats, dict):
                continue
            for key in _STAT_VALUES:
                if _is_number(stats.get(key)) and stats[key] < 0:
                    out.append(f"results/{index}/{name}/{key}: {stats[key]!r} ms is negative")
            samples = stats.get("samples")
            if isinstance(samples, list) and any(_is_number(v) and v < 0 for v in samples):
                out.append(f"results/{index}/{name}/samples: holds negative times (positive finite numbers expected)")
            low, mid, high = (stats.get(k) for k in ("min", "median", "max"))
            if all(_is_number(v) for v in (low, mid, high)) and not low <= mid <= high:
                out.append(f"results/{index}/{name}: min {low} <= median {mid} <= max {high} does not hold")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _non_finite(value: Any, where: str, out: list[str]) -> None:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        out.append(f"{where or '(top level)'}: {value!r} is not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            _non_finite(item, f"{where}/{key}" if where else str(key), out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _non_finite(item, f"{where}/{i}" if where else str(i), out)


def validate(document: Any, source: str = "results") -> dict[str, Any]:
    """Check the version first (clear message for old/new/foreign files), then the full schema."""
    check_version(document, source)
    errors = validation_errors(document)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(f"{source}: does not match {SCHEMA_ID} at {errors[0]}{more}")
    return document


def check_version(document: Any, source: str) -> None:
    if not isinstance(document, dict):
        raise UserError(f"{source}: not an edgeresnet benchmark result (a JSON object is expected); "
                        "pass a file written by `edgeresnet benchmark --json`")
    tag = document.get("schema")
    if tag is None:
        hint = " (this looks like a sidecar manifest)" if "kind" in document and "sha256" in document else ""
        raise UserError(f"{source}: not an edgeresnet benchmark result, no \"schema\" field{hint}; "
                        "pass a file written by `edgeresnet benchmark --json`")
    match = _ID_PATTERN.match(str(tag))
    if not match:
        raise UserError(f"{source}: unknown result schema {tag!r}; expected {SCHEMA_ID} "
                        "(a file written by `edgeresnet benchmark --json`)")
    version = int(match.group(1))
    if version < SCHEMA_VERSION:
        raise UserError(f"{source}: schema {tag} is older than {SCHEMA_ID} which this edgeresnet reads; "
                        "re-run `edgeresnet benchmark` to regenerate it")
    if version > SCHEMA_VERSION:
        raise UserError(f"{source}: schema {tag} is newer than {SCHEMA_ID} which edgeresnet {__version__} reads; "
                        "upgrade edgeresnet")


def make_document(environment: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": SCHEMA_ID,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool": {"edgeresnet": __version__},
        "environment": environment,
        "results": results,
    }


def write_results(path: str | Path, document: dict[str, Any], *, option: str = "--json",
                  inputs: dict[str, str | Path] | None = None, command: str = "benchmark") -> Path:
    """Validate, write atomically, and add the sidecar manifest (inputs = the measured artifacts)."""
    validate(document, str(path))
    out = write_json_atomic(path, document, option=option)
    write_manifest(out, build_manifest("benchmark-results", out, command=command, inputs=inputs or {},
                                       settings={"schema": SCHEMA_ID, "results": len(document["results"])}))
    return out


def is_sidecar_manifest(path: str | Path) -> bool:
    """``x.json.json`` beside ``x.json`` is the manifest of a results file, not results."""
    p = Path(path)
    return p.name.endswith(".json.json") and p.with_name(p.name[: -len(".json")]).exists()


def read_results(path: str | Path, option: str | None = None) -> dict[str, Any]:
    """Load and validate one results file; every problem is one UserError line naming the option and file."""
    p = Path(path)
    where = f"{option} {p}" if option else str(p)
    if not p.exists():
        raise UserError(f"{where}: results file not found; check the path")
    if p.is_dir():
        raise UserError(f"{where}: is a directory; pass the results JSON files (e.g. results/*.json)")
    try:
        document = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{where}: not a text file; pass a results JSON written by `edgeresnet benchmark --json`"
                        ) from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg}); "
                        "pass a results file written by `edgeresnet benchmark --json`") from exc
    except OSError as exc:
        raise UserError(f"{where}: cannot be read ({exc.strerror or exc.__class__.__name__}); check its "
                        "permissions") from exc
    except RecursionError as exc:
        raise UserError(f"{where}: JSON nested too deeply to be a results file") from exc
    return validate(document, where)
