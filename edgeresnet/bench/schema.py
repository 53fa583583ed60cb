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
    return out


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


def read_results(path: str | Path) -> dict[str, Any]:
    """Load and validate one results file; every problem is one UserError line naming the file."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: results file not found; check the path")
    if p.is_dir():
        raise UserError(f"{p}: is a directory; pass the results JSON files (e.g. results/*.json)")
    try:
        document = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not a text file; pass a results JSON written by `edgeresnet benchmark --json`") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg}); "
                        "pass a results file written by `edgeresnet benchmark --json`") from exc
    return validate(document, str(p))
