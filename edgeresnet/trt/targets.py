"""Deployment targets (``targets/*.yaml``): what each board or GPU class runs, validated on load.

A target says which JetPack/TensorRT/CUDA/Python a device ships, what its GPU can do (compute capability,
FP16, INT8, DLA cores), the highest ONNX opset its parser takes, how to install on it (our package, or a
generated trtexec script where the board's Python is too old) and public reference latencies with their
source. Every file is checked strictly: an unknown key, a wrong type or a missing field is one line naming
the file and the key, so a typo never silently changes a build.

The files are found in ``$EDGERESNET_TARGETS_DIR``, else the repository's ``targets/`` beside the package,
else ``edgeresnet/targets/`` (package data of an installed wheel).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError

KINDS = ("jetson", "desktop", "cpu")
BACKENDS = ("trt", "ort")
INSTALL_PATHS = ("package", "trtexec")
ENV_VAR = "EDGERESNET_TARGETS_DIR"

_NONE = type(None)
# key -> (allowed types, required)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "description": ((str,), True),
    "kind": ((str,), True),
    "gpu": ((str, _NONE), True),
    "jetpack": ((str, _NONE), True),
    "tensorrt": ((str, _NONE), True),
    "cuda": ((str, _NONE), True),
    "compute_capability": ((str, _NONE), True),
    "fp16": ((bool,), True),
    "int8": ((bool,), True),
    "dla_cores": ((int,), True),
    "max_onnx_opset": ((int, _NONE), True),
    "python": ((str,), True),
    "power_mode": ((str, _NONE), True),
    "backend": ((str,), True),
    "install_path": ((str,), True),
    "reference_latencies": ((list,), True),
    "notes": ((list,), False),
    "alt_stacks": ((list,), False),
}
_LATENCY_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "model": ((str,), True),
    "metric": ((str,), True),
    "value": ((int, float), True),
    "unit": ((str,), True),
    "batch": ((int,), True),
    "precision": ((str,), True),
    "source": ((str,), True),
    "input": ((str,), False),
    "stack": ((str,), False),
    "note": ((str,), False),
}
_STACK_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "jetpack": ((str,), True),
    "tensorrt": ((str,), True),
    "cuda": ((str,), True),
    "python": ((str,), True),
}
_VERSION = re.compile(r"\d+\.\d+(\.\d+){0,2}")
_RANGE = re.compile(r"(\d+\.\d+(?:\.\d+)?)-(\d+\.\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class ReferenceLatency:
    """A published number to sanity-check our own measurements against (never invented)."""

    model: str
    metric: str
    value: float
    unit: str
    batch: int
    precision: str
    source: str
    input: str | None = None
    stack: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Stack:
    """One JetPack software stack: the TensorRT, CUDA and Python it ships."""

    jetpack: str | None
    tensorrt: str
    cuda: str | None
    python: str


@dataclass(frozen=True)
class Target:
    """One deployment target as read from ``targets/<name>.yaml``."""

    name: str
    description: str
    kind: str
    gpu: str | None
    jetpack: str | None
    tensorrt: str | None
    cuda: str | None
    compute_capability: str | None
    fp16: bool
    int8: bool
    dla_cores: int
    max_onnx_opset: int | None
    python: str
    power_mode: str | None
    backend: str
    install_path: str
    reference_latencies: tuple[ReferenceLatency, ...] = ()
    notes: tuple[str, ...] = ()
    alt_stacks: tuple[Stack, ...] = ()
    path: str = field(default="", compare=False)

    # -- derived --------------------------------------------------------------------------------
    @property
    def gpu_name(self) -> str:
        return self.gpu or self.name

    @property
    def is_jetson(self) -> bool:
        return self.kind == "jetson"

    @property
    def platform(self) -> str:
        return "jetson" if self.kind == "jetson" else "desktop"

    @property
    def trt_range(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(lowest, highest) TensorRT version of the main stack; equal ends for a single version."""
        if not self.tensorrt:
            return None
        match = _RANGE.fullmatch(self.tensorrt)
        if match:
            return _vtuple(match.group(1)), _vtuple(match.group(2))
        return _vtuple(self.tensorrt), _vtuple(self.tensorrt)

    @property
    def default_trt_version(self) -> str | None:
        """The version planned for when none is given: the only one, or the newest of a desktop range
        (what ``pip install tensorrt`` resolves to)."""
        if not self.tensorrt:
            return None
        match = _RANGE.fullmatch(self.tensorrt)
        return match.group(2) if match else self.tensorrt

    @property
    def stacks(self) -> tuple[Stack, ...]:
        main = Stack(jetpack=self.jetpack, tensorrt=self.tensorrt or "", cuda=self.cuda, python=self.python)
        return (main,) + self.alt_stacks

    def resolve_stack(self, trt_version: str | None = None) -> Stack:
        """The software stack for ``trt_version`` (default: the main one), or a UserError listing choices.

        On Jetson the TensorRT version is fixed by JetPack, so it must match one of the listed stacks by
        major.minor. On a desktop it must lie in the supported range.
        """
        if self.kind == "cpu" or not self.tensorrt:
            raise UserError(f"target {self.name} runs ONNX Runtime on the CPU; it has no TensorRT (pick a GPU target)")
        if trt_version is None:
            return Stack(jetpack=self.jetpack, tensorrt=self.default_trt_version or "", cuda=self.cuda, python=self.python)
        wanted = _vtuple(trt_version)
        if self.is_jetson:
            for stack in self.stacks:
                if _vtuple(stack.tensorrt)[:2] == wanted[:2]:
                    return Stack(jetpack=stack.jetpack, tensorrt=_merge(trt_version, stack.tensorrt), cuda=stack.cuda,
                                 python=stack.python)
            offered = ", ".join(f"{s.tensorrt} (JetPack {s.jetpack})" for s in self.stacks)
            raise UserError(
                f"--trt-version {trt_version}: {self.name} runs TensorRT {offered}; JetPack fixes the version, "
                "so pick one of those"
            )
        lo, hi = self.trt_range  # type: ignore[misc]
        if not (lo[:2] <= wanted[:2] <= hi[:2]):
            raise UserError(f"--trt-version {trt_version}: target {self.name} supports TensorRT {self.tensorrt}")
        return Stack(jetpack=None, tensorrt=trt_version, cuda=self.cuda, python=self.python)

    def features(self, trt_version: str | None = None) -> Any:
        """The ``TrtFeatures`` of this target at ``trt_version`` (default: its own TensorRT)."""
        from edgeresnet.trt.features import TrtFeatures

        stack = self.resolve_stack(trt_version)
        return TrtFeatures.for_version(stack.tensorrt, platform=self.platform, board=self.name, jetpack=stack.jetpack)

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        data = dataclasses.asdict(self)
        data["reference_latencies"] = [dataclasses.asdict(r) for r in self.reference_latencies]
        data["alt_stacks"] = [dataclasses.asdict(s) for s in self.alt_stacks]
        data["notes"] = list(self.notes)
        data["default_trt_version"] = self.default_trt_version
        return data


def _vtuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(text).split(".") if p.isdigit())


def _merge(requested: str, stack_version: str) -> str:
    """Prefer the stack's full version (e.g. 10.3.0) when the user gave only major.minor."""
    return stack_version if len(_vtuple(requested)) < len(_vtuple(stack_version)) else requested


# -- locating and loading --------------------------------------------------------------------------


def targets_dir() -> Path:
    """Where the target files live (see the module docstring for the order)."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise UserError(f"${ENV_VAR}={env}: not a directory; point it at a folder of target YAML files or unset it")
        return path
    repo = Path(__file__).resolve().parents[2] / "targets"  # this file is edgeresnet/trt/targets.py
    if repo.is_dir() and any(repo.glob("*.yaml")):
        return repo
    packaged = Path(__file__).resolve().parents[1] / "targets"  # edgeresnet/targets/ in a wheel
    if packaged.is_dir():
        return packaged
    raise UserError(f"no targets directory found (looked in {repo} and {packaged}); set ${ENV_VAR}")


def _type_name(types: tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true/false", int: "an integer", float: "a number", list: "a list",
             dict: "a mapping", _NONE: "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_mapping(data: Any, schema: dict[str, tuple[tuple[type, ...], bool]], where: str) -> None:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    for key in data:
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{where}: unknown key {key!r}{hint}; known keys: {', '.join(schema)}")
    for key, (types, required) in schema.items():
        if key not in data:
            if required:
                raise UserError(f"{where}: missing key {key!r} ({_type_name(types)})")
            continue
        value = data[key]
        # bool is an int in Python: a true/false must not pass as a count or an opset.
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            raise UserError(f"{where}: key {key!r} must be {_type_name(types)}, got {type(value).__name__} {value!r}")


def parse_target(data: Any, path: Path) -> Target:
    """Validate one parsed YAML document and build the Target; UserError names the file and the key."""
    where = str(path)
    _check_mapping(data, _FIELDS, where)
    if data["name"] != path.stem:
        raise UserError(f"{where}: key 'name' is {data['name']!r} but the file is {path.name}; make them match")
    if data["kind"] not in KINDS:
        raise UserError(f"{where}: key 'kind' must be one of {', '.join(KINDS)}, got {data['kind']!r}")
    if data["backend"] not in BACKENDS:
        raise UserError(f"{where}: key 'backend' must be one of {', '.join(BACKENDS)}, got {data['backend']!r}")
    if data["install_path"] not in INSTALL_PATHS:
        raise UserError(f"{where}: key 'install_path' must be one of {', '.join(INSTALL_PATHS)}, got {data['install_path']!r}")
    if data["dla_cores"] < 0:
        raise UserError(f"{where}: key 'dla_cores' must be >= 0, got {data['dla_cores']}")
    gpu_keys = ("gpu", "tensorrt", "cuda", "compute_capability")
    if data["kind"] == "cpu":
        if data["backend"] != "ort":
            raise UserError(f"{where}: key 'backend' must be 'ort' for a cpu target")
        for key in gpu_keys + ("jetpack",):
            if data[key] is not None:
                raise UserError(f"{where}: key {key!r} must be null for a cpu target")
        if data["dla_cores"] or data["fp16"] or data["int8"]:
            raise UserError(f"{where}: keys 'fp16', 'int8', 'dla_cores' must be false/0 for a cpu target")
    else:
        if data["backend"] != "trt":
            raise UserError(f"{where}: key 'backend' must be 'trt' for a {data['kind']} target")
        for key in gpu_keys:
            if data[key] is None:
                raise UserError(f"{where}: key {key!r} must be set for a {data['kind']} target")
        if not re.fullmatch(r"\d+\.\d+", data["compute_capability"]):
            raise UserError(f"{where}: key 'compute_capability' must look like 8.7, got {data['compute_capability']!r}")
        trt = data["tensorrt"]
        if not (_VERSION.fullmatch(trt) or _RANGE.fullmatch(trt)):
            raise UserError(f"{where}: key 'tensorrt' must be a version (10.3.0) or a range (8.6-11.4), got {trt!r}")
        if data["max_onnx_opset"] is None:
            raise UserError(f"{where}: key 'max_onnx_opset' must be set for a {data['kind']} target")
    if data["kind"] == "jetson":
        if data["jetpack"] is None or not _VERSION.fullmatch(data["jetpack"]):
            raise UserError(f"{where}: key 'jetpack' must be a version like 6.2 for a jetson target")
        if _RANGE.fullmatch(data["tensorrt"]):
            raise UserError(f"{where}: key 'tensorrt' must be one version on a jetson target (JetPack fixes it); list others in alt_stacks")
        # The package needs Python >= 3.10; older boards get the trtexec script instead.
        py = _vtuple(data["python"])
        expected = "package" if py >= (3, 10) else "trtexec"
        if data["install_path"] != expected:
            raise UserError(f"{where}: key 'install_path' must be {expected!r} for Python {data['python']} (package needs >= 3.10)")
    elif data["jetpack"] is not None:
        raise UserError(f"{where}: key 'jetpack' must be null for a {data['kind']} target")
    latencies = []
    for i, item in enumerate(data["reference_latencies"]):
        spot = f"{where}: reference_latencies[{i}]"
        _check_mapping(item, _LATENCY_FIELDS, spot)
        if item["value"] <= 0 or item["batch"] < 1:
            raise UserError(f"{spot}: 'value' must be > 0 and 'batch' >= 1")
        latencies.append(ReferenceLatency(**{**item, "value": float(item["value"])}))
    stacks = []
    for i, item in enumerate(data.get("alt_stacks", [])):
        spot = f"{where}: alt_stacks[{i}]"
        _check_mapping(item, _STACK_FIELDS, spot)
        if not _VERSION.fullmatch(item["tensorrt"]) or not _VERSION.fullmatch(item["jetpack"]):
            raise UserError(f"{spot}: 'jetpack' and 'tensorrt' must be versions like 5.1.2")
        stacks.append(Stack(**item))
    notes = data.get("notes", [])
    for i, note in enumerate(notes):
        if not isinstance(note, str):
            raise UserError(f"{where}: notes[{i}] must be a string, got {type(note).__name__}")
    fields = {k: v for k, v in data.items() if k not in ("reference_latencies", "notes", "alt_stacks")}
    return Target(**fields, reference_latencies=tuple(latencies), notes=tuple(notes), alt_stacks=tuple(stacks),
                  path=str(path))


MAX_TARGET_BYTES = 1 << 20  # the packaged target files are under 4 KB


def _read(path: Path) -> Target:
    import yaml

    try:
        size = path.stat().st_size
        if size > MAX_TARGET_BYTES:
            raise UserError(f"{path}: {size} bytes is far more than a target file holds (a few KB); pass a target YAML")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text file; pass a target YAML (see edgeresnet targets show NAME)") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read target file ({exc.strerror or exc.__class__.__name__})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{where}; fix the file") from exc
    return parse_target(data, path)


def target_names() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.yaml"))


def load_target(name_or_path: str | os.PathLike[str], option: str = "--target") -> Target:
    """A target by name (``agx-orin``) or by path to a YAML file; UserError if unknown or invalid.

    A user's file is checked like the packaged ones, and every refusal names ``option`` and the file.
    """
    text = str(name_or_path)
    candidate = Path(text)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        if candidate.is_dir():
            raise UserError(f"{option} {text}: is a directory; give a target name (edgeresnet targets list) or a "
                            "YAML file")
        if not candidate.is_file():
            raise UserError(f"{option} {text}: file not found; give a target name (edgeresnet targets list) or a "
                            "YAML path")
        try:
            return _read(candidate)
        except UserError as exc:
            raise UserError(f"{option} {exc}", exc.exit_code) from exc.__cause__
    directory = targets_dir()
    path = directory / f"{text}.yaml"
    if not path.is_file():
        names = target_names()
        close = difflib.get_close_matches(text, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"--target {text}: unknown target{hint}; known: {', '.join(names)}")
    return _read(path)


_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}


def list_targets() -> list[Target]:
    """All targets, Jetson boards first (by compute capability), then desktops, then the CPU."""
    targets = [_read(p) for p in sorted(targets_dir().glob("*.yaml"))]
    return sorted(targets, key=lambda t: (_KIND_ORDER[t.kind], _vtuple(t.compute_capability or "0.0"), t.name))
