"""The preprocessing contract inside an ONNX file, and of any artifact.

An exported ONNX carries, in ``metadata_props``, everything a deployment must reproduce (input size,
mean/std, channel order, class names) and its batch profile, so the file alone is enough to run it right.
``preprocess_of(path)`` answers "how do I feed this model?" for a checkpoint, an ONNX file or an engine
(engines through their manifest, which names the ONNX they were built from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeresnet.artifacts import read_manifest, require_file
from edgeresnet.data.presets import Preprocess
from edgeresnet.errors import UserError

KEY_PREPROCESS = "edgeresnet.preprocess"
KEY_CLASS_NAMES = "edgeresnet.class_names"
KEY_BATCH_PROFILE = "edgeresnet.batch_profile"
KEY_MODEL = "edgeresnet.model"
KEY_SOURCE_SHA256 = "edgeresnet.source_sha256"
KEY_VERSION = "edgeresnet.version"

_CHECKPOINT_SUFFIXES = (".pt", ".pth")
_ONNX_SUFFIXES = (".onnx",)
_ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an artifact takes: static when min == opt == max and not ``dynamic``."""

    min: int
    opt: int
    max: int
    dynamic: bool

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise UserError(f"batch profile {self.min}:{self.opt}:{self.max}: need 1 <= MIN <= OPT <= MAX")

    @classmethod
    def static(cls, batch: int) -> BatchProfile:
        if batch < 1:
            raise UserError(f"--batch {batch}: must be at least 1")
        return cls(batch, batch, batch, dynamic=False)

    @classmethod
    def parse(cls, text: str, option: str = "--dynamic-batch") -> BatchProfile:
        """``MIN:OPT:MAX`` (e.g. ``1:8:32``) as typed on the command line."""
        parts = str(text).split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 3:
            raise UserError(f"{option} {text}: expected MIN:OPT:MAX as three integers, e.g. 1:8:32")
        lo, opt, hi = values
        if not 1 <= lo <= opt <= hi:
            raise UserError(f"{option} {text}: need 1 <= MIN <= OPT <= MAX (got MIN={lo}, OPT={opt}, MAX={hi}), e.g. 1:8:32")
        return cls(lo, opt, hi, dynamic=True)

    def to_dict(self) -> dict[str, Any]:
        return {"min": self.min, "opt": self.opt, "max": self.max, "dynamic": self.dynamic}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchProfile:
        return cls(int(data["min"]), int(data["opt"]), int(data["max"]), bool(data.get("dynamic", True)))

    def parity_batches(self) -> list[int]:
        """Batch 1 (or the smallest allowed) and the largest batch of the profile."""
        return sorted({self.min, self.max})

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}" if self.dynamic else f"static {self.max}"


# -- ONNX metadata_props ------------------------------------------------------------------------------


def contract_props(preprocess: Preprocess, profile: BatchProfile, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The metadata_props we write: every value a JSON string."""
    from edgeresnet import __version__

    props = {
        KEY_PREPROCESS: json.dumps(preprocess.to_dict(), sort_keys=True),
        KEY_CLASS_NAMES: json.dumps(list(preprocess.class_names)),
        KEY_BATCH_PROFILE: json.dumps(profile.to_dict(), sort_keys=True),
        KEY_VERSION: __version__,
    }
    for key, value in (extra or {}).items():
        props[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return props


def set_metadata(model: Any, props: dict[str, str]) -> None:
    """Replace our keys in ``model.metadata_props`` (an onnx ModelProto), keeping foreign ones."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in kept + sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def metadata_of(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _json_prop(props: dict[str, str], key: str, path: Path) -> Any:
    if key not in props:
        return None
    try:
        return json.loads(props[key])
    except ValueError as exc:
        raise UserError(f"{path}: metadata {key} is not valid JSON; re-export the model") from exc


def preprocess_from_props(props: dict[str, str], path: Path) -> Preprocess | None:
    data = _json_prop(props, KEY_PREPROCESS, path)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise UserError(f"{path}: metadata {KEY_PREPROCESS} is not a JSON object; re-export the model")
    names = _json_prop(props, KEY_CLASS_NAMES, path)
    if names and not data.get("class_names"):
        data["class_names"] = names
    try:
        return Preprocess.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: metadata {KEY_PREPROCESS} is incomplete ({exc}); re-export the model") from exc


def profile_from_props(props: dict[str, str], path: Path) -> BatchProfile | None:
    data = _json_prop(props, KEY_BATCH_PROFILE, path)
    if not isinstance(data, dict):
        return None
    try:
        return BatchProfile.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: metadata {KEY_BATCH_PROFILE} is malformed; re-export the model") from exc


def load_onnx_model(path: str | Path, *, weights: bool = False, option: str | None = None, check: bool = False) -> Any:
    """The one ONNX loader: ``onnx.load`` with a one-line error for every way a user's file can be wrong.

    ``weights`` loads external tensor data too (a graph-only read is enough for metadata and inspection);
    ``option`` prefixes the message with the CLI option that named the file (``MODEL``); ``check`` also runs
    ``onnx.checker.check_model``, whose first line becomes the message.
    """
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    label = f"{option} {p}" if option else str(p)
    fix = "re-export it with edgeresnet export"
    if not p.exists():
        raise UserError(f"{label}: ONNX file not found; check the path or run edgeresnet export first")
    if p.is_dir():
        raise UserError(f"{label}: is a directory, expected an ONNX model file")
    if p.stat().st_size == 0:
        raise UserError(f"{label}: file is empty, not an ONNX model; {fix}")
    try:
        model = onnx.load(str(p), load_external_data=weights)
    except (DecodeError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{label}: not an ONNX model ({exc.__class__.__name__}); {fix}") from exc
    graph = model.graph
    if not graph.node or not graph.input or not graph.output or not model.opset_import or model.ir_version <= 0:
        raise UserError(f"{label}: not an ONNX model (no graph nodes, inputs, outputs or opset); {fix}")
    if check:
        try:
            onnx.checker.check_model(str(p))
        except Exception as exc:  # onnx.checker.ValidationError and friends; one line for the user
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:160]
            raise UserError(f"{label}: invalid ONNX model ({first}); {fix}") from exc
    return model


def onnx_contract(path: str | Path) -> tuple[Preprocess | None, BatchProfile | None, dict[str, str]]:
    """(preprocess, batch profile, all metadata_props) of an ONNX file; manifest as the fallback."""
    p = Path(path)
    props = metadata_of(load_onnx_model(p))
    preprocess = preprocess_from_props(props, p)
    profile = profile_from_props(props, p)
    if preprocess is None or profile is None:
        manifest = read_manifest(p) or {}
        if preprocess is None and isinstance(manifest.get("preprocess"), dict):
            preprocess = Preprocess.from_dict(manifest["preprocess"])
        if profile is None and isinstance(manifest.get("batch_profile"), dict):
            profile = BatchProfile.from_dict(manifest["batch_profile"])
    return preprocess, profile, props


# -- any artifact ------------------------------------------------------------------------------------


def artifact_kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in _CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in _ONNX_SUFFIXES:
        return "onnx"
    if suffix in _ENGINE_SUFFIXES:
        return "engine"
    raise UserError(f"{path}: unknown model file type {suffix or '(none)'}; expected .pt, .onnx or .engine")


def preprocess_of(path: str | Path, required: bool = True, _seen: frozenset[str] = frozenset()) -> Preprocess | None:
    """The preprocessing contract of a checkpoint, an ONNX file or an engine (via its manifest).

    Engines: the manifest's ``preprocess`` if present, else that of the ONNX/checkpoint it names in
    ``inputs``. ``required=False`` returns None instead of raising when no contract is found.
    """
    p = Path(path)
    kind = artifact_kind(p)
    found: Preprocess | None = None
    if kind == "checkpoint":
        from edgeresnet.models import load_checkpoint

        found = Preprocess.from_dict(load_checkpoint(p)["preprocess"])
    elif kind == "onnx":
        found = onnx_contract(p)[0]
    else:
        require_file(p, "engine")
        found = _preprocess_from_manifest(p, _seen | {str(p.resolve())})
    if found is None and required:
        raise UserError(f"{p}: no preprocessing contract found (no edgeresnet metadata or manifest); "
                        "re-export it with edgeresnet export")
    return found


def _preprocess_from_manifest(path: Path, seen: frozenset[str]) -> Preprocess | None:
    manifest = read_manifest(path) or {}
    if isinstance(manifest.get("preprocess"), dict):
        return Preprocess.from_dict(manifest["preprocess"])
    for entry in (manifest.get("inputs") or {}).values():
        source = Path(entry.get("path", "")) if isinstance(entry, dict) else None
        if source is None or not source.is_file() or str(source.resolve()) in seen:
            continue
        try:
            artifact_kind(source)
        except UserError:
            continue
        found = preprocess_of(source, required=False, _seen=seen | {str(source.resolve())})
        if found is not None:
            return found
    return None


def batch_profile_of(path: str | Path) -> BatchProfile | None:
    """The batch profile recorded for an artifact (ONNX metadata or any manifest); None if unknown."""
    p = Path(path)
    if artifact_kind(p) == "onnx":
        return onnx_contract(p)[1]
    manifest = read_manifest(p) or {}
    data = manifest.get("batch_profile")
    return BatchProfile.from_dict(data) if isinstance(data, dict) else None


def data_spec_of(path: str | Path) -> str | None:
    """The data set an artifact was made from or checked on, as recorded in its manifest(s)."""
    p = Path(path)
    seen: set[str] = set()
    queue = [p]
    while queue:
        current = queue.pop(0)
        key = str(current.resolve()) if current.exists() else str(current)
        if key in seen:
            continue
        seen.add(key)
        manifest = read_manifest(current) or {}
        settings = manifest.get("settings") or {}
        for holder in (settings, manifest):
            for name in ("data", "dataset", "parity_data"):
                value = holder.get(name) if isinstance(holder, dict) else None
                if isinstance(value, str) and value:
                    return value
        inputs = manifest.get("inputs") or {}
        data_entry = inputs.get("data")
        if isinstance(data_entry, dict) and data_entry.get("path"):
            return str(data_entry["path"])
        for entry in inputs.values():
            if isinstance(entry, dict) and entry.get("path"):
                queue.append(Path(entry["path"]))
    return None
