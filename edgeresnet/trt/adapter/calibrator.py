"""INT8 calibration for weakly typed builds (TensorRT < 11): the data checked up front, and the calibrator.

Everything a user can get wrong (cache file, data folder, image shape) is checked before any TensorRT object
exists; the calibrator class is made from the injected module, so it subclasses the real (or the fake's) base.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.trt.adapter.loader import trt_label, trt_version


def calibration_batches(data: str, shape: list[int], batch_size: int, max_images: int) -> Iterator[Any]:
    """Preprocessed NCHW float32 batches for calibration from ``.npy``/``.npz`` images or a data spec
    (``digits`` or an ImageFolder, read with ``edgeresnet.data.load_data`` at the engine's image size).

    Everything is checked here, eagerly (file or folder exists, has images, image shape matches the network
    input); only the iterator it returns is lazy. A problem found inside ``get_batch`` would reach TensorRT,
    which swallows it (pyInt8.cpp) and fails with its generic "no scaling factors" error."""
    import numpy as np

    path = Path(data)
    where = f"--calib-data {data}"
    if path.suffix in (".npy", ".npz"):
        if not path.is_file():
            raise UserError(f"{where}: file not found; check the path")
        try:
            loaded = np.load(path, allow_pickle=False, mmap_mode="r" if path.suffix == ".npy" else None)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                if not loaded.files:
                    raise UserError(f"{where}: the .npz holds no arrays; save the images as 'images'")
                key = "images" if "images" in loaded.files else loaded.files[0]
                images = loaded[key]
            else:
                images = loaded
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{where}: not a readable numpy file ({' '.join(str(exc).split())[:120]})") from exc
    else:
        from edgeresnet.compress.calibration import IMAGE_SUFFIXES
        from edgeresnet.data import load_data
        from edgeresnet.data.sources import in_memory_source

        if not in_memory_source(data):
            if not path.is_dir():
                raise UserError(f"{where}: no such folder (or .npy/.npz file); pass 'digits', 'fashion-mnist', an "
                                "ImageFolder or IDX "
                                "directory or a .npy/.npz of preprocessed NCHW images")
            if not any(f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES for f in path.rglob("*")):
                raise UserError(f"{where}: the folder has no images ({', '.join(IMAGE_SUFFIXES[:4])} ...); "
                                "add calibration images in class sub-folders")
        size = int(shape[-1]) if shape else 224
        try:
            images, _ = load_data(data, size).arrays("train", limit=max_images)
        except UserError as exc:
            raise UserError(f"{where}: {str(exc).split(': ', 1)[-1]}") from exc
        except ValueError as exc:  # np.stack of an empty split
            raise UserError(f"{where}: no calibration images could be read from the train split") from exc
    if getattr(images, "ndim", 0) != 4:
        raise UserError(f"{where}: images are {list(getattr(images, 'shape', []))}, expected N x C x H x W "
                        f"({list(shape[1:]) if shape else 'C x H x W'}); prepare them at the model's image size")
    if shape and tuple(images.shape[1:]) != tuple(shape[1:]):
        raise UserError(f"{where}: images are {list(images.shape[1:])}, the engine input is {list(shape[1:])}; "
                        "prepare them at the model's image size")
    count = min(len(images), int(max_images))
    if count < batch_size:
        raise UserError(f"{where}: {count} images, fewer than one batch of {batch_size}")

    def batches() -> Iterator[Any]:
        for start in range(0, count - batch_size + 1, batch_size):
            yield np.ascontiguousarray(np.asarray(images[start:start + batch_size], dtype=np.float32))

    return batches()


class CalibrationInput:
    """What the calibrator will serve, decided before the build: cache bytes or batches (+ device backend)."""

    def __init__(self, cache_bytes: bytes | None = None, batches: Iterator[Any] | None = None, backend: Any = None,
                 notes: list[str] | None = None, warnings: list[str] | None = None) -> None:
        self.cache_bytes, self.batches, self.backend = cache_bytes, batches, backend
        self.notes = notes or []
        self.warnings = warnings or []


def prepare_calibration(trt: Any, args: dict[str, Any], backend: Any = None) -> CalibrationInput:
    """Check the calibration cache and data of a ``calibrator`` step before any TensorRT object exists.

    A cache is used when its algorithm is this calibrator's, its header rewritten for the installed release
    (``calib_cache``): with a cache no batches are passed. A cache that cannot be used needs ``--calib-data``.
    Calibrating needs device memory: the backend is created here, first (pycuda's ``import pycuda.autoinit``
    makes the CUDA context, as NVIDIA's samples do before creating the builder)."""
    from edgeresnet.trt.calib_cache import cache_for_release, calibrator_algorithm

    kind = str(args.get("kind", "entropy2"))
    cache, data = args.get("cache"), args.get("data")
    algorithm = calibrator_algorithm(kind)
    result = CalibrationInput()
    if cache and Path(cache).is_file():
        fitted = cache_for_release(cache, kind, trt_version(trt))
        if fitted.same_algorithm:
            if fitted.rewritten:
                result.notes.append(fitted.rewrite_note(f"--calib-cache {cache}:", trt_label(trt)))
            result.cache_bytes = fitted.text().encode("utf-8")
            return result
        found = fitted.cache.algorithm
        if data is None:
            raise UserError(f"--calib-cache {cache}: written by the {found} calibrator, this build uses "
                            f"{kind} ({algorithm}) and TensorRT would ignore it; add --calib-data to recalibrate, or "
                            f"pass a cache made for {kind}")
        result.warnings.append(f"--calib-cache {cache}: made by {found}, not {algorithm}; recalibrating "
                               f"from --calib-data {data} and replacing it")
    elif data is None:
        raise UserError(f"--calib-cache {cache}: file not found; make it with edgeresnet calibrate or add --calib-data")
    shape = list(args.get("shape") or [])
    result.batches = calibration_batches(str(data), shape, int(args.get("batch_size", 1)),
                                         int(args.get("max_images", 512)))
    if backend is None:
        from edgeresnet.trt.cuda_mem import require_backend

        backend = require_backend()
    result.backend = backend
    return result


def make_calibrator(trt: Any, kind: str = "entropy2", *, cache: str | None = None,
                    batches: Iterable[Any] | None = None, batch_size: int = 1, input_name: str = "input",
                    backend: Any = None, cache_bytes: bytes | None = None, use_cache_file: bool = True) -> Any:
    """An ``IInt8EntropyCalibrator2`` (or ``IInt8MinMaxCalibrator``) subclass instance made from ``trt``.

    It serves ``cache_bytes`` (or the cache file when ``use_cache_file`` and it exists; then TensorRT skips
    calibration), otherwise copies ``batches`` to the device one by one, and writes the cache TensorRT
    produces. TensorRT's trampoline catches and prints whatever a callback raises (pyInt8.cpp), so every
    callback keeps its exception instead: ``raise_failure()`` raises it after the build, and a failed cache
    write is ``write_failure`` (a warning: the engine itself is fine)."""
    base = {"entropy2": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}.get(kind)
    if base is None:
        raise UserError(f"calibrator {kind!r}: choose entropy2 or minmax")

    class Calibrator(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # required: without it pybind11 calibrators crash ("Will mysteriously segfault without
            # this", TRT@HEAD:tools/Polygraphy/polygraphy/backend/trt/calibrator.py)
            self.cache_path = Path(cache) if cache else None
            self.batches = iter(batches) if batches is not None else iter(())
            self.backend = backend
            self.device_ptr: int | None = None
            self.stream: int | None = None
            self.served = 0
            self.failure: BaseException | None = None
            self.write_failure: str | None = None

        def get_batch_size(self) -> int:
            return int(batch_size)

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.failure is not None:
                return None
            try:
                return self._next_batch(names)
            except BaseException as exc:  # noqa: BLE001 - TensorRT would swallow it; raise_failure() re-raises
                self.failure = exc
                return None

        def _next_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            if self.backend is None:
                from edgeresnet.trt.cuda_mem import require_backend

                self.backend = require_backend()
            if self.device_ptr is None:
                self.device_ptr = self.backend.alloc(batch.nbytes)
                self.stream = self.backend.stream_create()
            self.backend.h2d_async(self.device_ptr, batch, self.stream)
            self.backend.stream_sync(self.stream)
            self.served += 1
            return [int(self.device_ptr) for _ in names]

        def read_calibration_cache(self) -> bytes | None:
            try:
                if cache_bytes is not None:
                    return cache_bytes
                if use_cache_file and self.cache_path is not None and self.cache_path.is_file():
                    return self.cache_path.read_bytes()
            except BaseException as exc:  # noqa: BLE001
                self.failure = exc
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if self.cache_path is None:
                return
            try:
                from edgeresnet.artifacts import atomic_output

                with atomic_output(self.cache_path, "--calib-cache") as tmp:
                    tmp.write_bytes(bytes(memoryview(data)))
            except Exception as exc:  # noqa: BLE001 - the engine is fine; the caller warns
                self.write_failure = (f"--calib-cache {self.cache_path}: not written "
                                      f"({' '.join(str(exc).split())[:160] or exc.__class__.__name__})")

        def raise_failure(self) -> None:
            exc = self.failure
            if exc is None:
                return
            if isinstance(exc, (UserError, KeyboardInterrupt, SystemExit)):
                raise exc
            detail = " ".join(str(exc).split())[:200] or exc.__class__.__name__
            raise UserError(f"calibration failed at batch {self.served + 1} ({exc.__class__.__name__}: {detail}); "
                            "check --calib-data and the CUDA setup") from exc

        def release(self) -> None:
            if self.backend is not None and self.device_ptr is not None:
                self.backend.free(self.device_ptr)
                self.device_ptr = None
            if self.backend is not None and self.stream is not None:
                self.backend.stream_destroy(self.stream)
                self.stream = None

    calibrator = Calibrator()
    calibrator.input_name = input_name
    return calibrator
