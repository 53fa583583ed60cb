"""Timing cache files: the key that names one per GPU and TensorRT, the check before a build, the path to use.

TensorRT owns what is inside a timing cache; here is only what can be said about the file before the build (the
adapter reads and writes it around the build).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgeresnet.errors import UserError
from edgeresnet.trt.features import VersionLike, format_version

if TYPE_CHECKING:
    from edgeresnet.trt.features import TrtFeatures
    from edgeresnet.trt.plan import DeviceCaps


def timing_cache_key(gpu_name: str, compute_capability: tuple[int, int] | str | None,
                     trt_version: VersionLike) -> str:
    """A file-name-safe key for a timing cache: caches are only valid for one GPU and one TensorRT
    ("A failure will be reported if the CUDA device property in the provided cache is different",
    IBuilderConfig.create_timing_cache docstring, TRT@v10.3.0:python/docstrings/infer/pyCoreDoc.h)."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(gpu_name).lower()).strip("-") or "gpu"
    if isinstance(compute_capability, (tuple, list)):
        cc = "".join(str(int(p)) for p in compute_capability[:2])
    else:
        cc = str(compute_capability or "").replace(".", "") or "x"
    if isinstance(trt_version, (tuple, list)):
        version = ".".join(str(int(p)) for p in trt_version)
    else:
        version = str(trt_version)
    return f"{slug}-sm{cc}-trt{version}"


def check_timing_cache_file(path: str | Path, option: str = "--timing-cache") -> None:
    """Refuse, before the build, a ``--timing-cache`` file that is recognisably something else.

    TensorRT's timing-cache layout is not documented (it checks a magic tag: "Serialization assertion
    magicTagRead == kMAGIC_TAG failed"), so a cache cannot be proven valid here; what is refused is a file that
    is clearly another artifact: a TensorRT plan (tag ``ftrt``/``vtrt``, see planfile.py), a calibration cache or
    other text (a timing cache is binary), numpy/zip files (``.npy``, ``.npz``, ``.pt``) and ONNX protobuf.
    A missing or empty file starts a new cache."""
    from edgeresnet.trt.planfile import parse_plan_header

    p = Path(path)
    if not p.exists():
        return
    if not p.is_file():
        raise UserError(f"{option} {p}: not a file; pass a timing cache file or a directory for keyed caches")
    with p.open("rb") as handle:
        head = handle.read(4096)
    if not head:
        return
    what = None
    if parse_plan_header(head, size=p.stat().st_size).is_plan:
        what = "a TensorRT engine"
    elif head.startswith(b"TRT-"):
        what = "an INT8 calibration cache (pass it as --calib-cache)"
    elif head.startswith(b"\x93NUMPY"):
        what = "a numpy array"
    elif head.startswith(b"PK\x03\x04"):
        what = "a zip archive (.npz or a PyTorch checkpoint)"
    elif len(head) > 2 and head[0] == 0x08 and head[1] < 0x80 and head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x3A, 0x42):
        what = "an ONNX model"  # ModelProto: field 1 ir_version (varint), then producer/domain/graph fields
    elif b"\0" not in head:
        try:
            head.decode("utf-8")
            what = "a text file"
        except UnicodeDecodeError:
            pass
    if what:
        raise UserError(f"{option} {p}: is {what}, not a TensorRT timing cache; pass the timing cache path "
                        "(a new one is created when the file does not exist)")



def resolve_timing_cache(path: str | None, device: DeviceCaps, features: TrtFeatures) -> str | None:
    """The ``--timing-cache`` file to use: a directory (or a path ending in a separator) gets the keyed file for
    this GPU and release inside it; the file is checked with ``check_timing_cache_file``."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir() or path.endswith(("/", "\\")):
        if not p.exists():
            raise UserError(f"--timing-cache {path}: directory does not exist; create it or give a file path")
        key = timing_cache_key(device.name, device.compute_capability, format_version(features.version))
        resolved = p / f"timing-{key}.cache"
    else:
        if not p.parent.exists():
            raise UserError(f"--timing-cache {path}: directory {p.parent} does not exist")
        resolved = p
    check_timing_cache_file(resolved)
    return str(resolved)
