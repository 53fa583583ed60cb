"""Artifacts and their sidecar manifests, atomic writes, safe checkpoint loading.

Every file the pipeline makes (checkpoint, ONNX, engine, benchmark result) gets ``<file>.json`` beside it:
what made it, from what (sha256 of inputs), with which library versions and settings. Later stages read
the manifest of their input instead of asking the user again. Outputs are written to a temporary name in
the same directory and renamed, so a crash never leaves a half-written artifact under the real name.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
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

# Re-exported: the typed manifests (artifacts/manifests.py) are imported from here like the helpers below.
from edgeresnet.artifacts.manifests import (
    BENCHMARK_KIND,  # noqa: F401
    CHECKPOINT_KIND,  # noqa: F401
    ENGINE_KIND,  # noqa: F401
    MANIFEST_VERSION,  # noqa: F401
    BenchmarkManifest,  # noqa: F401
    CheckpointManifest,  # noqa: F401
    EngineManifest,  # noqa: F401
    EngineSection,  # noqa: F401
    GpuRecord,  # noqa: F401
    InputRef,  # noqa: F401
    Manifest,  # noqa: F401
    OnnxManifest,  # noqa: F401
    as_manifest,  # noqa: F401
    check_manifest_version,  # noqa: F401
    load_manifest_data,  # noqa: F401
    parse_manifest,  # noqa: F401
    read_any_manifest,  # noqa: F401
)
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


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_output_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Fail early, in one line, when the file ``path`` cannot be written; creates nothing.

    Missing parent directories are fine (``atomic_output`` makes them, as Ultralytics' increment_path
    and torchvision's references/classification/train.py ``utils.mkdir(args.output_dir)`` do); what is
    refused is a parent that cannot become a directory: a regular file on the way, or no write permission.
    """
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{option} {target}: is a directory; pass a file name inside it")
    parent = target.parent if str(target.parent) not in ("", ".") else Path(".")
    _check_creatable(parent, target, option)
    return target


def _check_creatable(directory: Path, target: Path, option: str) -> None:
    existing = _nearest_existing(directory)
    if not existing.is_dir():
        raise UserError(f"{option} {target}: {existing} is a file, not a directory; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "directory" if existing == directory else "cannot create directories under"
        raise UserError(f"{option} {target}: {what} {existing} is not writable; choose another path")


def check_output_folder(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Fail early, in one line, when the directory ``path`` cannot be used or created; creates nothing."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UserError(f"{option} {target}: is a file; pass a directory")
    _check_creatable(target, target, option)
    return target


def make_output_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create the output directory ``path`` with its missing parents; one-line UserError when it cannot be.

    An existing directory is used as it is. On failure (ENOSPC, EACCES, EROFS ...) the directories this call
    made are removed again, so nothing is left half-made.
    """
    _make_dirs(Path(path), Path(path), option)
    return Path(path)


def _make_dirs(directory: Path, target: Path, option: str) -> list[Path]:
    """Create ``directory`` and its missing parents; returns the directories made (outermost first)."""
    if directory.is_dir():
        return []
    if directory.exists() or directory.is_symlink():
        raise UserError(f"{option} {target}: {directory} exists and is not a directory; choose another path")
    _check_creatable(directory, target, option)
    missing: list[Path] = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        if probe == probe.parent:
            break
        probe = probe.parent
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
    except FileExistsError:  # another process made it meanwhile: fine when it is a directory
        if not directory.is_dir():
            _remove_dirs(made)
            raise UserError(f"{option} {target}: {directory} exists and is not a directory; choose another path"
                            ) from None
    except OSError as exc:
        _remove_dirs(made)
        raise UserError(f"{option} {target}: cannot create directory {folder} "
                        f"({exc.strerror or exc.__class__.__name__}); choose another path or free the disk") from exc
    return made


def _remove_dirs(made: list[Path]) -> None:
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if still empty


# errno values that mean the disk, not the code, refused a write (man 3 errno: ENOSPC, EDQUOT, EFBIG)
DISK_FULL_ERRNOS = tuple(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, name))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], option: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    Missing parent directories are created; when the block fails they are removed again with the temporary.
    A full disk is a one-line UserError naming the output.
    """
    target = check_output_dir(path, option)
    parent = target.parent if str(target.parent) not in ("", ".") else Path(".")
    made = _make_dirs(parent, target, option)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        _remove_dirs(made)
        raise UserError(f"{option} {target}: cannot write in {parent} ({exc.strerror}); choose another path") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; artifacts must be readable like any file
    done = False
    try:
        try:
            yield tmp
            os.replace(tmp, target)
            done = True
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise no_space_error(option, target, parent, exc) from exc
            raise
    finally:
        if tmp.exists():
            tmp.unlink()
        if not done:
            _remove_dirs(made)


def no_space_error(option: str, target: Path, parent: Path, exc: OSError) -> UserError:
    """The one line for an output that did not fit on its disk (nothing of it was left behind)."""
    return UserError(f"{option} {target}: no space left to write it ({exc.strerror}); free space on {parent} or "
                     "choose another path; nothing was written")


def current_umask() -> int:
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
        "manifest_version": MANIFEST_VERSION,
    }
    manifest.update(extra or {})
    return manifest


def write_manifest(artifact: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    return write_json_atomic(manifest_path(artifact), manifest)


def read_manifest(artifact: str | os.PathLike[str], required: bool = False) -> dict[str, Any] | None:
    """Read ``<artifact>.json`` as a plain dict (version checked); ``None`` when absent unless ``required``.

    Typed reading: ``manifests.read_any_manifest`` or ``CheckpointManifest.read`` and its siblings."""
    return load_manifest_data(artifact, required=required)


def require_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: {what} not found; check the path")
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a {what}")
    return p


# File signatures, checked before any parser sees the bytes. PyTorch >= 1.6 torch.save writes a zip archive
# (torch/serialization.py: _use_new_zipfile_serialization, local header "PK\x03\x04"); the legacy format is a
# pickle of protocol 2 (opcode PROTO 0x80, then the version byte). safetensors: an 8-byte little-endian header
# length, then that many bytes of JSON (https://github.com/huggingface/safetensors, "Format").
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def _sniff_weights(head: bytes, size: int) -> str | None:
    """'zip', 'pickle', 'safetensors' or None (not a weights file at all)."""
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if len(head) >= 2 and head[0] == _PICKLE_PROTO and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    return None


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """Load a weights file without running code from it: ``torch.load(weights_only=True)`` or safetensors.

    The one loader of every .pt/.pth/.safetensors the user hands us. Anything else (text, a truncated zip,
    a pickle that would import code) is a one-line UserError naming the file.
    """
    p = require_file(path, "weights file")
    size = p.stat().st_size
    if size == 0:
        raise UserError(f"{p}: file is empty; expected a PyTorch checkpoint, state dict or .safetensors file")
    with open(p, "rb") as handle:
        head = handle.read(16)
    kind = _sniff_weights(head, size)
    if kind is None and p.suffix.lower() == ".safetensors":
        kind = "safetensors"  # let safetensors say what is wrong with it (a cut header, say)
    if kind is None:
        raise UserError(f"{p}: not a PyTorch checkpoint or .safetensors file (unknown content); pass a file saved "
                        "by torch.save or safetensors")
    if kind == "safetensors":
        return _load_safetensors(p)
    return _load_torch(p)


def _load_safetensors(p: Path) -> dict[str, Any]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as exc:  # a declared dependency; only a broken install lacks it
        raise UserError(f"{p}: reading .safetensors needs the 'safetensors' package; pip install safetensors") from exc
    try:
        return dict(load_file(str(p), device="cpu"))
    except (SafetensorError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise UserError(f"{p}: truncated or not a .safetensors file ({first[:120]}); re-create or re-download it"
                        ) from exc


def _torch_safe_globals() -> list[Any]:
    """Plain classes that real checkpoints hold besides tensors, safe to rebuild (no code runs).

    torchvision references/classification/train.py saves ``"args": args`` (an argparse.Namespace) beside
    ``model``/``model_ema``; timm's CheckpointSaver (timm/utils/checkpoint_saver.py) saves ``'args'`` too.
    A Namespace is rebuilt by ``__new__`` plus a ``__dict__`` update, its values by the same restricted unpickler.
    """
    import argparse

    return [argparse.Namespace]


def _load_torch(p: Path) -> Any:
    import pickle

    import torch

    # torch.serialization.safe_globals: PyTorch >= 2.5; on older releases such files stay refused.
    allow = getattr(torch.serialization, "safe_globals", None)
    scope = allow(_torch_safe_globals()) if allow is not None else contextlib.nullcontext()
    try:
        with scope:
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # torch 2.14.1 names the import ("Unsupported global: GLOBAL posix.system ..."); torch 2.3.0's
        # torch/_weights_only_unpickler.py raises "Unsupported class posix.system" / "Trying to instantiate
        # unsupported class ..." inside torch.load's "Weights only load failed" UnpicklingError.
        if "GLOBAL" in text or "global" in text or "nsupported class" in text:
            raise UserError(
                f"{p}: refused, the file contains Python objects that would run code when loaded "
                "(only tensors and plain containers are accepted); re-save it as a plain state_dict"
            ) from exc
        raise UserError(f"{p}: truncated or not a PyTorch file (the pickle stream is malformed); "
                        "re-create or re-download it") from exc
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        # torch's weights-only unpickler (torch/_weights_only_unpickler.py) reads a damaged stream with plain
        # dict/struct/list operations, so a corrupt file surfaces as KeyError, struct.error, IndexError ...
        # as well as RuntimeError ("PytorchStreamReader failed ...") for a damaged zip.
        first = (str(exc).strip().splitlines() or [""])[0] or exc.__class__.__name__
        raise UserError(f"{p}: truncated or not a PyTorch file ({first[:120]}); re-create or re-download it") from exc


def check_json_dest(destination: str | None) -> None:
    """``--json PATH`` checked before the work, so a bad path fails early instead of after minutes of it."""
    if destination is not None and destination != "-":
        check_output_dir(destination, "--json")


def emit_json(data: Any, destination: str | None) -> None:
    """``--json PATH`` writes atomically; ``--json -`` prints to stdout; ``None`` does nothing."""
    if destination is None:
        return
    if destination == "-":
        sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
        return
    write_json_atomic(destination, data, option="--json")
