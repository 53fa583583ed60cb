"""Artifacts and their sidecar manifests, atomic writes, safe checkpoint loading.

Every file the pipeline makes (checkpoint, ONNX, engine, benchmark result) gets ``<file>.json`` beside it:
what made it, from what (sha256 of inputs), with which library versions and settings. Later stages read
the manifest of their input instead of asking the user again. Outputs are written to a temporary name in
the same directory and renamed, so a crash never leaves a half-written artifact under the real name.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeresnet import __version__
from edgeresnet.errors import UserError

MANIFEST_SUFFIX = ".json"
CHECKPOINT_FORMAT = "edgeresnet-checkpoint"
CHECKPOINT_VERSION = 1

_TRACKED_LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "numpy", "tensorrt", "tensorrt_rtx")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """The sidecar of ``model.onnx`` is ``model.onnx.json``."""
    return Path(str(artifact) + MANIFEST_SUFFIX)


def library_versions(names: tuple[str, ...] = _TRACKED_LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries that change numbers; absent ones are left out."""
    versions = {"python": platform.python_version(), "edgeresnet": __version__}
    dist_names = {"tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
                  "tensorrt_rtx": ("tensorrt-rtx-cu12-bindings", "tensorrt-rtx-cu13-bindings")}
    for name in names:
        for dist in dist_names.get(name, (name,)):
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def check_output_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Fail early, in one line, when an output cannot be written where the user asked."""
    target = Path(path)
    parent = target.parent if target.parent != Path("") else Path(".")
    if not parent.exists():
        raise UserError(f"{option} {target}: directory {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{option} {target}: directory {parent} is not writable; choose another path")
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], option: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    target = check_output_dir(path, option)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; artifacts must be readable like any file
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str, option: str = "--out") -> Path:
    with atomic_output(path, option) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], data: Any, option: str = "--out") -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n", option)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def build_manifest(
    kind: str,
    artifact: str | os.PathLike[str],
    *,
    command: str,
    inputs: dict[str, str | os.PathLike[str]] | None = None,
    settings: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of one artifact: kind, sha256, what made it and from which inputs (by sha256)."""
    manifest: dict[str, Any] = {
        "kind": kind,
        "file": Path(artifact).name,
        "sha256": sha256_file(artifact),
        "size_bytes": Path(artifact).stat().st_size,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "argv": sys.argv[1:],
        "versions": library_versions(),
        "host": {"machine": platform.machine(), "system": platform.system(), "processor": platform.processor()},
        "inputs": {
            role: {"path": str(p), "sha256": sha256_file(p)} for role, p in (inputs or {}).items() if p is not None
        },
        "settings": settings or {},
    }
    manifest.update(extra or {})
    return manifest


def write_manifest(artifact: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    return write_json_atomic(manifest_path(artifact), manifest)


def read_manifest(artifact: str | os.PathLike[str], required: bool = False) -> dict[str, Any] | None:
    """Read ``<artifact>.json``; ``None`` when absent unless ``required``."""
    path = manifest_path(artifact)
    if not path.exists():
        if required:
            raise UserError(f"{artifact}: no manifest {path.name} beside it; re-create the file with edgeresnet")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: manifest is not valid JSON ({exc.__class__.__name__}); delete or regenerate it") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: manifest is not a JSON object; delete or regenerate it")
    return data


def require_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: {what} not found; check the path")
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a {what}")
    return p


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """Load a torch file with ``weights_only=True``: a pickle that would run code is refused, never run."""
    import pickle
    import zipfile

    import torch

    p = require_file(path, "weights file")
    if p.stat().st_size == 0:
        raise UserError(f"{p}: file is empty; expected a PyTorch checkpoint or state dict")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc):
            raise UserError(
                f"{p}: refused, the file contains Python objects that would run code when loaded "
                "(only tensors and plain containers are accepted); re-save it as a plain state_dict"
            ) from exc
        raise UserError(f"{p}: not a readable PyTorch file ({first[:120]})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise UserError(f"{p}: truncated or not a PyTorch file ({first[:120]}); re-create or re-download it") from exc


def emit_json(data: Any, destination: str | None) -> None:
    """``--json PATH`` writes atomically; ``--json -`` prints to stdout; ``None`` does nothing."""
    if destination is None:
        return
    if destination == "-":
        sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
        return
    write_json_atomic(destination, data, option="--json")
