"""Typed sidecar manifests: the one place that reads and writes ``<artifact>.json``.

Every manifest starts with the fields ``build_manifest`` writes for any artifact (kind, file, sha256, size,
when, how, from what); what a kind adds (a checkpoint's preprocessing, an ONNX model's batch profile, an
engine's build record) stays in ``extra`` in the order it was written, so a manifest read and written back
has the same keys as before. Typed accessors replace digging through nested dicts, and a damaged manifest
(not JSON, not an object, a field of the wrong type) is a one-line UserError naming the file.

``manifest_version`` says which layout a file has: files written before the field existed read as version 1;
a file from a newer edgeresnet is refused instead of half-understood.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from edgeresnet.errors import UserError

# 1: the layout before the field existed (no "manifest_version" key); 2: the same keys plus "manifest_version".
MANIFEST_VERSION = 2
MANIFEST_SUFFIX = ".json"

CHECKPOINT_KIND = "checkpoint"
ONNX_KINDS = ("onnx", "onnx-int8")
ENGINE_KIND = "tensorrt-engine"
ENGINE_FORMAT = "edgeresnet-trt-engine"
ENGINE_FORMAT_VERSION = 1
BENCHMARK_KIND = "benchmark-results"

# The fields every manifest has, in the order build_manifest writes them.
COMMON_KEYS = ("kind", "file", "sha256", "size_bytes", "created", "command", "argv", "versions", "host",
               "inputs", "settings")

_M = TypeVar("_M", bound="Manifest")


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    """The sidecar of ``model.onnx`` is ``model.onnx.json``."""
    return Path(str(artifact) + MANIFEST_SUFFIX)


def check_manifest_version(data: dict[str, Any], where: str | os.PathLike[str]) -> int:
    """The layout version of a parsed manifest (1 when the field is absent); newer than ours is refused."""
    version = data.get("manifest_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"{where}: manifest_version {version!r} is not a positive whole number; "
                        "delete or regenerate the manifest")
    if version > MANIFEST_VERSION:
        raise UserError(f"{where}: manifest version {version} is newer than this edgeresnet understands "
                        f"({MANIFEST_VERSION}); upgrade edgeresnet")
    return version


def load_manifest_data(artifact: str | os.PathLike[str], required: bool = False) -> dict[str, Any] | None:
    """The parsed ``<artifact>.json`` (version checked); ``None`` when absent unless ``required``."""
    path = sidecar_path(artifact)
    if not path.exists():
        if required:
            raise UserError(f"{artifact}: no manifest {path.name} beside it; re-create the file with edgeresnet")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: manifest is not valid JSON ({exc.__class__.__name__}); delete or regenerate it"
                        ) from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: manifest is not a JSON object; delete or regenerate it")
    check_manifest_version(data, path)
    return data


# -- small typed pieces ------------------------------------------------------------------------------------


def _damaged(where: str, key: str, expected: str) -> UserError:
    return UserError(f"{where}: manifest field {key!r} is not {expected}; delete or regenerate the manifest")


def _opt_str(value: Any, where: str, key: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _damaged(where, key, "a string")


def _opt_int(value: Any, where: str, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _damaged(where, key, "a whole number")
    return value


def _opt_dict(value: Any, where: str, key: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise _damaged(where, key, "an object")


def _opt_list(value: Any, where: str, key: str) -> list[Any] | None:
    if value is None or isinstance(value, list):
        return value
    raise _damaged(where, key, "a list")


@dataclass(frozen=True)
class InputRef:
    """One input an artifact was made from, by path and sha256."""

    path: str | None
    sha256: str | None

    @classmethod
    def from_dict(cls, data: Any, where: str, role: str) -> InputRef:
        entry = _opt_dict(data, where, f"inputs.{role}") or {}
        return cls(_opt_str(entry.get("path"), where, f"inputs.{role}.path"),
                   _opt_str(entry.get("sha256"), where, f"inputs.{role}.sha256"))


@dataclass(frozen=True)
class GpuRecord:
    """The GPU an engine was built on (or, ``source == "target file"``, the one its target file names)."""

    name: str | None = None
    compute_capability: str | None = None
    source: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> GpuRecord:
        gpu = _opt_dict(data, where, "gpu") or {}
        cc = gpu.get("compute_capability")
        if cc is not None and not isinstance(cc, (str, int, float)):
            raise _damaged(where, "gpu.compute_capability", "a version such as \"8.7\"")
        return cls(_opt_str(gpu.get("name"), where, "gpu.name"), None if cc is None else str(cc),
                   _opt_str(gpu.get("source"), where, "gpu.source"))


@dataclass(frozen=True)
class BatchRange:
    """Profile 0 of an engine: the batch dimension's min / opt / max."""

    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class EngineSection:
    """The ``engine`` section of an engine manifest: what the validated build plan made."""

    format: str | None = None
    format_version: int = 0
    builder: str | None = None
    tensorrt_version: str | None = None
    target: str | None = None
    precision: str | None = None
    precision_label: str | None = None
    input_shape: tuple[int, ...] | None = None
    profiles: tuple[BatchRange, ...] = ()
    dla_core: int | None = None
    version_compatible: bool = False
    hardware_compatibility: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> EngineSection:
        section = _opt_dict(data, where, "engine") or {}
        options = _opt_dict(section.get("build_options"), where, "engine.build_options") or {}
        input_entry = _opt_dict(section.get("input"), where, "engine.input") or {}
        shape = _opt_list(input_entry.get("shape"), where, "engine.input.shape")
        profiles = []
        for profile in _opt_list(section.get("profiles"), where, "engine.profiles") or []:
            entry = _opt_dict(profile, where, "engine.profiles[]") or {}
            try:
                profiles.append(BatchRange(*(int(entry[k][0]) for k in ("min", "opt", "max"))))
            except (KeyError, IndexError, TypeError, ValueError):
                raise _damaged(where, "engine.profiles", "a list of {min, opt, max} shapes") from None
        try:
            dims = None if not shape else tuple(int(d) for d in shape)
            fmt_version = int(section.get("format_version", 0))
        except (TypeError, ValueError):
            raise _damaged(where, "engine.input.shape / engine.format_version", "whole numbers") from None
        tensorrt_version = section.get("tensorrt_version")
        return cls(
            format=_opt_str(section.get("format"), where, "engine.format"),
            format_version=fmt_version,
            builder=_opt_str(section.get("builder"), where, "engine.builder"),
            tensorrt_version=None if tensorrt_version is None else str(tensorrt_version),
            target=_opt_str(section.get("target"), where, "engine.target"),
            precision=_opt_str(section.get("precision"), where, "engine.precision"),
            precision_label=_opt_str(section.get("precision_label"), where, "engine.precision_label"),
            input_shape=dims,
            profiles=tuple(profiles),
            dla_core=_opt_int(section.get("dla_core"), where, "engine.dla_core"),
            version_compatible=bool(options.get("version_compatible")),
            hardware_compatibility=_opt_str(options.get("hardware_compatibility"), where,
                                            "engine.build_options.hardware_compatibility"),
        )


# -- the manifests -----------------------------------------------------------------------------------------


@dataclass
class Manifest:
    """Any artifact's manifest: the common fields, typed; whatever its kind adds, in ``extra``.

    A common field that the file lacks is ``None`` and is not written back.
    """

    kind: str | None = None
    file: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    created: str | None = None
    command: str | None = None
    argv: list[str] | None = None
    versions: dict[str, str] | None = None
    host: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    manifest_version: int = MANIFEST_VERSION
    source: Path | None = field(default=None, compare=False)  # the .json it was read from

    KINDS: ClassVar[tuple[str, ...]] = ()

    # -- reading and writing
    @classmethod
    def from_dict(cls: type[_M], data: dict[str, Any], where: str | os.PathLike[str] = "manifest") -> _M:
        """Check the fields' types and the version; ``where`` names the file in errors."""
        label = str(where)
        version = check_manifest_version(data, label)
        argv = _opt_list(data.get("argv"), label, "argv")
        manifest = cls(
            kind=_opt_str(data.get("kind"), label, "kind"),
            file=_opt_str(data.get("file"), label, "file"),
            sha256=_opt_str(data.get("sha256"), label, "sha256"),
            size_bytes=_opt_int(data.get("size_bytes"), label, "size_bytes"),
            created=_opt_str(data.get("created"), label, "created"),
            command=_opt_str(data.get("command"), label, "command"),
            argv=None if argv is None else [str(a) for a in argv],
            versions=_opt_dict(data.get("versions"), label, "versions"),
            host=_opt_dict(data.get("host"), label, "host"),
            inputs=_opt_dict(data.get("inputs"), label, "inputs"),
            settings=_opt_dict(data.get("settings"), label, "settings"),
            extra={k: v for k, v in data.items() if k not in COMMON_KEYS and k != "manifest_version"},
            manifest_version=version,
            source=Path(where) if isinstance(where, (str, os.PathLike)) and where != "manifest" else None,
        )
        manifest.validate()
        return manifest

    def validate(self) -> None:
        """Type-check what this kind's accessors read, so a damaged file fails at read time."""
        for role, entry in (self.inputs or {}).items():
            InputRef.from_dict(entry, self.where, str(role))
        self.preprocess_dict  # noqa: B018 - read for its check

    @classmethod
    def read(cls: type[_M], artifact: str | os.PathLike[str], required: bool = False) -> _M | None:
        """The manifest beside ``artifact`` (``None`` when there is none, unless ``required``)."""
        data = load_manifest_data(artifact, required=required)
        if data is None:
            return None
        return cls.from_dict(data, sidecar_path(artifact))

    @classmethod
    def require(cls: type[_M], artifact: str | os.PathLike[str]) -> _M:
        """The manifest beside ``artifact``; a one-line UserError when it is missing or damaged."""
        manifest = cls.read(artifact, required=True)
        assert manifest is not None  # required=True raises instead of returning None
        return manifest

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the common fields in build_manifest's order, the version, then ``extra``."""
        data: dict[str, Any] = {}
        for key in COMMON_KEYS:
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        data["manifest_version"] = self.manifest_version
        data.update(self.extra)
        return data

    def write(self, artifact: str | os.PathLike[str]) -> Path:
        """Write ``<artifact>.json`` atomically."""
        from edgeresnet.artifacts import write_json_atomic

        return write_json_atomic(sidecar_path(artifact), self.to_dict())

    # -- accessors every kind shares
    @property
    def where(self) -> str:
        return str(self.source) if self.source is not None else "manifest"

    def input(self, role: str) -> InputRef | None:
        """The input of ``role`` (``"onnx"``, ``"checkpoint"`` ...), or None."""
        entry = (self.inputs or {}).get(role)
        return None if entry is None else InputRef.from_dict(entry, self.where, role)

    def setting(self, key: str) -> Any:
        return (self.settings or {}).get(key)

    @property
    def preprocess_dict(self) -> dict[str, Any] | None:
        """The preprocessing the model was trained with, as written (checkpoints, ONNX models, engines)."""
        return _opt_dict(self.extra.get("preprocess"), self.where, "preprocess")

    @property
    def image_size(self) -> int | None:
        """The preprocessing's input size (H = W), or None when the manifest does not say."""
        pre = self.preprocess_dict
        if not pre or not pre.get("image_size"):
            return None
        try:
            return int(pre["image_size"])
        except (TypeError, ValueError):
            raise _damaged(self.where, "preprocess.image_size", "a whole number") from None

    @property
    def preprocess(self) -> Any:
        """``edgeresnet.data.Preprocess`` of the manifest, or None (imported here: edgeresnet.data is light)."""
        from edgeresnet.data.presets import Preprocess

        pre = self.preprocess_dict
        if not pre:
            return None
        try:
            return Preprocess.from_dict(pre)
        except (TypeError, ValueError) as exc:
            raise _damaged(self.where, "preprocess", f"a preprocessing record ({exc})") from exc

    @property
    def precision(self) -> str | None:
        """The precision the artifact runs in, lower-case: an engine's label, an ONNX model's precision,
        else the training precision a checkpoint's settings record; None when nothing says."""
        for value in (self.extra.get("precision_label"), self._engine_precision(), self.extra.get("precision"),
                      self.setting("precision")):
            if isinstance(value, str) and value:
                return value.lower()
        return None

    def _engine_precision(self) -> Any:
        section = self.extra.get("engine")
        return section.get("precision_label") if isinstance(section, dict) else None


@dataclass
class CheckpointManifest(Manifest):
    """A ``.pt`` made by train / import / prune / distill: its preprocessing, model spec, metrics."""

    KINDS: ClassVar[tuple[str, ...]] = (CHECKPOINT_KIND,)

    @property
    def model(self) -> dict[str, Any] | None:
        return _opt_dict(self.extra.get("model"), self.where, "model")

    @property
    def metrics(self) -> dict[str, Any] | None:
        return _opt_dict(self.extra.get("metrics"), self.where, "metrics")

    @property
    def epoch(self) -> int | None:
        return _opt_int(self.extra.get("epoch"), self.where, "epoch")

    @property
    def role(self) -> str | None:
        return _opt_str(self.extra.get("role"), self.where, "role")

    def validate(self) -> None:
        super().validate()
        self.model  # noqa: B018
        self.metrics  # noqa: B018


@dataclass
class OnnxManifest(Manifest):
    """An ``.onnx`` made by export / fp16 conversion / PTQ / QAT: preprocessing, batch profile, precision."""

    KINDS: ClassVar[tuple[str, ...]] = ONNX_KINDS

    @property
    def batch_profile_dict(self) -> dict[str, Any] | None:
        return _opt_dict(self.extra.get("batch_profile"), self.where, "batch_profile")

    @property
    def batch_profile(self) -> Any:
        """``edgeresnet.export.onnx_meta.BatchProfile`` of the manifest, or None."""
        from edgeresnet.export.onnx_meta import BatchProfile

        profile = self.batch_profile_dict
        return None if profile is None else BatchProfile.from_dict(profile)

    @property
    def ir_version(self) -> int | None:
        return _opt_int(self.extra.get("ir_version"), self.where, "ir_version")

    @property
    def fp16(self) -> dict[str, Any] | None:
        return _opt_dict(self.extra.get("fp16"), self.where, "fp16")

    def validate(self) -> None:
        super().validate()
        self.batch_profile_dict  # noqa: B018


@dataclass
class EngineManifest(Manifest):
    """A TensorRT engine's manifest: the build record (``engine``), the build GPU, how to rebuild it."""

    KINDS: ClassVar[tuple[str, ...]] = (ENGINE_KIND,)

    @property
    def engine(self) -> EngineSection:
        return EngineSection.from_dict(self.extra.get("engine"), self.where)

    @property
    def gpu(self) -> GpuRecord:
        return GpuRecord.from_dict(self.extra.get("gpu"), self.where)

    @property
    def rebuild_command(self) -> str | None:
        value = self.extra.get("rebuild_command")
        return str(value) if value else None

    @property
    def is_edgeresnet_engine(self) -> bool:
        """Written by ``edgeresnet build``: the engine kind with the engine section's format."""
        section = self.extra.get("engine")
        return (self.kind == ENGINE_KIND and isinstance(section, dict)
                and section.get("format") == ENGINE_FORMAT)

    def validate(self) -> None:
        super().validate()
        self.engine  # noqa: B018
        self.gpu  # noqa: B018


@dataclass
class BenchmarkManifest(Manifest):
    """The manifest of a benchmark results JSON: its schema and how many results it holds."""

    KINDS: ClassVar[tuple[str, ...]] = (BENCHMARK_KIND,)

    @property
    def schema(self) -> str | None:
        return _opt_str(self.setting("schema"), self.where, "settings.schema")

    @property
    def results(self) -> int | None:
        return _opt_int(self.setting("results"), self.where, "settings.results")

    def validate(self) -> None:
        super().validate()
        self.schema  # noqa: B018
        self.results  # noqa: B018


_BY_KIND: dict[str, type[Manifest]] = {
    kind: cls for cls in (CheckpointManifest, OnnxManifest, EngineManifest, BenchmarkManifest) for kind in cls.KINDS
}


def manifest_class(kind: str | None) -> type[Manifest]:
    """The typed manifest class for ``kind`` (the plain ``Manifest`` for reports, caches, recipes ...)."""
    return _BY_KIND.get(kind or "", Manifest)


def parse_manifest(data: dict[str, Any], where: str | os.PathLike[str] = "manifest") -> Manifest:
    """A parsed manifest object as the class its ``kind`` names."""
    kind = data.get("kind")
    return manifest_class(kind if isinstance(kind, str) else None).from_dict(data, where)


def read_any_manifest(artifact: str | os.PathLike[str], required: bool = False) -> Manifest | None:
    """The manifest beside ``artifact`` as the class its ``kind`` names; None when absent unless ``required``."""
    data = load_manifest_data(artifact, required=required)
    if data is None:
        return None
    return parse_manifest(data, sidecar_path(artifact))


def as_manifest(value: Manifest | dict[str, Any] | None, cls: type[_M], where: str = "manifest") -> _M | None:
    """Accept a typed manifest or a plain dict (as tests and older callers pass) as ``cls``."""
    if value is None:
        return None
    if isinstance(value, cls):
        return value
    if isinstance(value, Manifest):
        return cls.from_dict(value.to_dict(), value.where)
    return cls.from_dict(value, where)
