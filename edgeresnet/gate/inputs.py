"""Reading, validating and pairing benchmark result files, and the environment check between them.

Why here: everything the gate learns from the user's files, and every way those files can be wrong, is in
one place; each problem is one ``UserError`` line (exit 2) naming the file and the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.gate.decision import Rendered

KEY_FIELDS = ("model", "target", "backend", "precision", "batch")
Key = tuple[str, str, str, str, int]  # (model, target, backend, precision, batch)
Documents = Sequence[tuple[str, Mapping[str, Any]]]  # (file name, parsed result document), in order given

# environment fields that make latencies incomparable: (label, how to read it)
ENV_FIELDS: tuple[tuple[str, str], ...] = (
    ("target", "target"),
    ("GPU", "gpu.name"),
    ("TensorRT", "tensorrt"),
    ("power mode", "power_mode"),
    ("CPU", "host.cpu"),
)
# versions that may legitimately change between baseline and current: reported, never refused
INFO_VERSIONS = ("onnxruntime", "torch", "cuda", "cudnn", "driver", "jetpack", "l4t", "edgeresnet", "python")


def load_results(path: str | Path, option: str) -> dict[str, Any]:
    """Read and validate one benchmark result file; every problem is one UserError line (exit 2)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{option} {p}: file not found; check the path")
    if p.is_dir():
        raise UserError(f"{option} {p}: is a directory; pass a benchmark result JSON file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{option} {p}: not a text file; pass a result written by "
                        "`edgeresnet benchmark --json`") from None
    except OSError as exc:
        raise UserError(f"{option} {p}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{option} {p}: not valid JSON (line {exc.lineno}: {exc.msg}); "
                        "pass a result written by `edgeresnet benchmark --json`") from None
    validate_results(document, f"{option} {p}")
    validated: dict[str, Any] = document  # validate_results refused anything but a JSON object
    return validated


def validate_results(document: Any, source: str) -> None:
    """The bench helper's schema check when available, then the checks the gate itself depends on."""
    try:
        from edgeresnet.bench import schema as bench_schema
    except ImportError:  # pragma: no cover - bench ships with the package
        _minimal_checks(document, source)
        return
    bench_schema.check_version(document, source)
    try:
        errors = bench_schema.validation_errors(document)
    except ImportError:  # jsonschema not installed: the minimal checks below still run
        errors = []
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(f"{source}: does not match {bench_schema.SCHEMA_ID} at {errors[0]}{more}")
    _minimal_checks(document, source)


def _minimal_checks(document: Any, source: str) -> None:
    if not isinstance(document, dict) or not str(document.get("schema", "")).startswith("edgeresnet.benchmark/"):
        raise UserError(f"{source}: not an edgeresnet benchmark result; pass a file written by "
                        "`edgeresnet benchmark --json`")
    if not isinstance(document.get("environment"), dict):
        raise UserError(f"{source}: no \"environment\" object; re-run `edgeresnet benchmark`")
    results = document.get("results")
    if not isinstance(results, list):
        raise UserError(f"{source}: no \"results\" list; re-run `edgeresnet benchmark`")
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise UserError(f"{source}: results/{index} is not an object")
        missing = [k for k in KEY_FIELDS if k not in result]
        if missing:
            raise UserError(f"{source}: results/{index} lacks {', '.join(missing)}")
        latency = result.get("latency_ms")
        if not isinstance(latency, dict) or not isinstance(latency.get("samples"), list):
            raise UserError(f"{source}: results/{index} has no latency_ms.samples list")
        for value in latency["samples"]:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise UserError(f"{source}: results/{index} latency_ms.samples holds {value!r}; "
                                "latencies must be positive finite numbers")
        accuracy = result.get("accuracy")
        top1 = accuracy.get("top1") if isinstance(accuracy, dict) else None
        if accuracy is not None and (isinstance(top1, bool) or not isinstance(top1, (int, float))):
            raise UserError(f"{source}: results/{index} accuracy has no numeric top1")


def result_key(result: Mapping[str, Any]) -> Key:
    return (str(result["model"]), str(result["target"]), str(result["backend"]), str(result["precision"]),
            int(result["batch"]))


def key_label(key: Sequence[Any]) -> str:
    model, target, backend, precision, batch = key
    return f"{model} {target}/{backend}/{precision}/b{batch}"


@dataclass
class Side:
    """All results of one side (baseline or current), pooled by key over its files in the order given."""

    runs: dict[Key, list[list[float]]] = field(default_factory=dict)
    accuracy: dict[Key, dict[str, Any] | None] = field(default_factory=dict)
    warnings: dict[Key, list[str]] = field(default_factory=dict)
    order: list[Key] = field(default_factory=list)


def collect(documents: Documents) -> Side:
    """Pool results by key; a key twice in one file is ambiguous (exit 2), across files it is a repeat run."""
    side = Side()
    for source, document in documents:
        seen: set[Key] = set()
        for result in document["results"]:
            key = result_key(result)
            if key in seen:
                raise UserError(f"{source}: two results share the key {key_label(key)}; "
                                "give them distinct model names or split the file")
            seen.add(key)
            samples = [float(v) for v in result["latency_ms"]["samples"]]
            if not samples:
                raise UserError(f"{source}: {key_label(key)} has no raw latency samples (a trtexec summary "
                                "import?); the gate needs per-iteration samples: add --exportTimes to trtexec "
                                "or benchmark with `edgeresnet benchmark`")
            if key not in side.runs:
                side.order.append(key)
                side.runs[key] = []
                side.accuracy[key] = None
                side.warnings[key] = []
            side.runs[key].append(samples)
            side.accuracy[key] = _merge_accuracy(side.accuracy[key], result.get("accuracy"))
            side.warnings[key].extend(str(w) for w in result.get("warnings") or [])
    return side


def _merge_accuracy(old: dict[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Repeat runs of one artifact: top-1 weighted by image count."""
    if new is None:
        return old
    new_n = int(new.get("n") or 1)
    if old is None:
        return {"top1": float(new["top1"]), "n": new_n}
    total = old["n"] + new_n
    return {"top1": (old["top1"] * old["n"] + float(new["top1"]) * new_n) / total, "n": total}


def _env_value(environment: Mapping[str, Any], path: str) -> Any:
    value: Any = environment
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


@dataclass(frozen=True)
class EnvDifference(Rendered):
    """A field that makes latencies incomparable, as read from the first baseline file and from ``file``."""

    label: str
    reference: Any
    other: Any
    file: str | None = None  # named when more than two files are compared

    def text(self) -> str:
        return f"{self.label} {_show(self.reference)} vs {_show(self.other)}" + (f" ({self.file})" if self.file else "")


@dataclass(frozen=True)
class VersionChange(Rendered):
    """A library version that changed: worth knowing, never refused."""

    library: str
    reference: Any
    other: Any

    def text(self) -> str:
        return f"{self.library} {self.reference} -> {self.other}"


@dataclass
class EnvComparison:
    changed: list[EnvDifference]  # fields that make latencies incomparable
    versions: list[VersionChange]  # version changes worth knowing, never refused
    allowed: bool

    @property
    def differences(self) -> list[str]:
        return [d.text() for d in self.changed]

    @property
    def info(self) -> list[str]:
        return [v.text() for v in self.versions]

    @property
    def refused(self) -> bool:
        return bool(self.changed) and not self.allowed

    def refusal(self) -> str:
        return ("environments differ: " + "; ".join(self.differences)
                + "; latencies are not comparable, re-benchmark on the same setup or pass --allow-env-change")


def compare_environments(base_docs: Documents, cur_docs: Documents, allow: bool) -> EnvComparison:
    """What differs between the first baseline file and every other file, in the fields that matter."""
    ref_env = base_docs[0][1]["environment"]
    changed: list[EnvDifference] = []
    versions: list[VersionChange] = []
    for name, doc in list(base_docs[1:]) + list(cur_docs):
        env = doc["environment"]
        for label, path in ENV_FIELDS:
            a, b = _env_value(ref_env, path), _env_value(env, path)
            if a != b:
                difference = EnvDifference(label, a, b, name if len(base_docs) + len(cur_docs) > 2 else None)
                if difference.text() not in (d.text() for d in changed):
                    changed.append(difference)
        for lib in INFO_VERSIONS:
            a = _env_value(ref_env, f"versions.{lib}")
            b = _env_value(env, f"versions.{lib}")
            if a != b and a is not None and b is not None:
                change = VersionChange(lib, a, b)
                if change.text() not in (v.text() for v in versions):
                    versions.append(change)
    return EnvComparison(changed=changed, versions=versions, allowed=allow)


def _show(value: Any) -> str:
    return "none" if value is None else repr(str(value))
