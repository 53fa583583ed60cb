"""Checkpoint writing for training (atomic, with manifest) and the resumable training state.

``last.pt`` carries, beside the weights, the optimizer state, the gradient-scaler state, the step and
epoch counters, the history and every random-number-generator state, all as tensors and plain
containers, so it loads with ``weights_only=True`` and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.artifacts import DISK_FULL_ERRNOS, _json_default, build_manifest, current_umask, manifest_path
from edgeresnet.models import make_checkpoint

TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"  # the temporaries beside OUT's files: '.<name>.XXXX.tmp'


def save_checkpoint(path: Path, model: Any, spec: Any, preprocess: dict[str, Any], *, recipe: dict[str, Any],
                    epoch: int, metrics: dict[str, Any], role: str, train_state: dict[str, Any] | None = None,
                    inputs: dict[str, Any] | None = None) -> Path:
    """A training checkpoint (``best.pt``/``last.pt``): the epoch, metrics and recipe, and with ``train_state``
    what ``--resume`` needs; written by ``write_checkpoint_file``."""
    extra: dict[str, Any] = {"epoch": epoch, "metrics": metrics, "recipe": recipe, "role": role}
    if train_state is not None:
        extra["train_state"] = train_state
    checkpoint = make_checkpoint(model, spec, preprocess, **extra)
    return write_checkpoint_file(path, checkpoint, command="train", inputs=inputs or {}, settings=recipe,
                                 manifest_extra={"preprocess": preprocess, "model": spec.to_dict(),
                                                 "metrics": metrics, "epoch": epoch, "role": role})


def write_checkpoint_file(path: Path, checkpoint: dict[str, Any], *, command: str, inputs: dict[str, Any],
                          settings: dict[str, Any], manifest_extra: dict[str, Any]) -> Path:
    """The one checkpoint writer (training, pruning, distillation): ``path`` and its manifest, durably, each
    replaced atomically.

    Both go to temporaries beside their names, are flushed and fsync'ed, and only then renamed over the
    old files (then the directory is fsync'ed), so a crash, a kill or a full disk at any point before the
    renames leaves the previous checkpoint and its manifest untouched and loadable, and the partial
    temporaries are removed. The two renames are two system calls, the checkpoint's first: a crash between
    them leaves the new checkpoint beside the previous manifest, whose sha256 then no longer matches it (and
    ``--resume`` reads the epoch from the checkpoint itself). A full disk raises ``OSError`` with its real errno.
    """
    side = manifest_path(path)
    with _durable_temp(path) as tmp, _durable_temp(side) as side_tmp:
        _torch_save(checkpoint, tmp)
        manifest = build_manifest("checkpoint", tmp, command=command, inputs=inputs, settings=settings,
                                  extra=manifest_extra)
        manifest["file"] = Path(path).name  # hashed under its temporary name, renamed below
        _write_synced(side_tmp, (json.dumps(manifest, indent=2, default=_json_default) + "\n").encode("utf-8"))
        os.replace(tmp, path)
        os.replace(side_tmp, side)
    _fsync_dir(Path(path).parent)
    return path


@contextlib.contextmanager
def _durable_temp(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary beside ``path`` (same file system, so the rename is atomic), removed unless renamed."""
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; checkpoints are read like any file
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


class _RecordingWriter:
    """A file wrapper that keeps the ``OSError`` of a failed write.

    ``torch.save`` reports a failed write of its zip container as ``RuntimeError('[enforce fail at
    inline_container.cc] ... unexpected pos')`` and drops the errno (measured with PyTorch 2.14 on a full
    tmpfs, to a path and to a file object alike); writing through this wrapper keeps the real error.
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def _torch_save(obj: Any, path: Path) -> None:
    import torch

    with open(path, "wb") as handle:
        writer = _RecordingWriter(handle)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise
        handle.flush()
        os.fsync(handle.fileno())


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make the renames durable: POSIX fsync(2) on the directory (not possible on Windows, skipped there)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def remove_stale_temporaries(out: Path) -> list[str]:
    """Delete the '.<name>.XXXX.tmp' partial files a killed run left in ``out`` (call with ``out`` locked)."""
    removed = []
    if out.is_dir():
        for tmp in out.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp.name)
    return sorted(removed)


def capture_rng(loader_generator: Any) -> dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "loader": loader_generator.get_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], loader_generator: Any) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def last_good_epoch(out: Path) -> int | None:
    """The epoch of ``out/last.pt`` from its manifest (cheap: the checkpoint itself is not loaded)."""
    from edgeresnet.artifacts import read_manifest

    try:
        manifest = read_manifest(Path(out) / "last.pt")
    except Exception:  # an unreadable manifest: report no epoch rather than fail the error message itself
        return None
    epoch = manifest.get("epoch") if manifest else None
    return epoch if isinstance(epoch, int) else None


def disk_full_error(out: Path, exc: OSError) -> Exception:
    """One line for a full disk: which directory, the OS's words, what survived and how to go on."""
    from edgeresnet.errors import UserError

    reason = exc.strerror or os.strerror(exc.errno or 0)
    epoch = last_good_epoch(out)
    kept = (f"the last good checkpoint {Path(out) / 'last.pt'} (epoch {epoch}) is intact; free space, then continue "
            "with --resume") if epoch is not None else "no checkpoint was completed; free space and start again"
    return UserError(f"--out {out}: {reason} (errno {errno.errorcode.get(exc.errno or 0, exc.errno)}) while "
                     f"writing the run's files; {kept}")
