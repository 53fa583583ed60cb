"""Calibration: which images, streaming range statistics, the three range methods, and the cache file.

Shared by PTQ (ranges of ONNX tensors) and QAT (ranges of fake-quantizer inputs). Pure numpy plus the
data module: the statistics are collected batch by batch (ONNX Runtime's own histogram calibrators keep every
intermediate output of every image in memory, which does not fit ResNet-50 at 224 with 500 images).

Methods, as TensorRT and NVIDIA's pytorch-quantization define them, all on the histogram of ``|x|``:
``max`` (the largest magnitude seen), ``percentile`` (the magnitude below which 99.99 % of values lie) and
``entropy`` (TensorRT's EntropyCalibration2: the clipping threshold whose 128-level quantized distribution
has the least KL divergence from the observed one).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.errors import UserError

METHODS = ("entropy", "max", "percentile")
MIN_RECOMMENDED_IMAGES = 500
DEFAULT_PERCENTILE = 99.99
HISTOGRAM_BINS = 2048
ENTROPY_LEVELS = 128  # |x| of a symmetric int8 tensor maps to 0..127
# named in-memory data sets whose samples are referenced as NAME:SPLIT:INDEX (edgeresnet.data.BUILTIN_SOURCES)
MEMORY_PREFIXES = ("digits:", "fashion-mnist:")
IDX_PREFIX = "idx:"  # idx:<absolute directory of the four IDX files>:<split>:<index>, e.g. a copy of MNIST
REFERENCE_PREFIXES = (*MEMORY_PREFIXES, IDX_PREFIX)  # entries that name an in-memory sample, not an image file
# TensorRT 10.3 (JetPack 6) is the last release line with implicit calibrators that read these caches.
DEFAULT_TRT_VERSION = (10, 3, 0)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"--method {method}: unknown calibration method; choose one of {', '.join(METHODS)}")
    return method


# -- which images ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationSet:
    """The images to calibrate with, as canonical references (``digits:train:17`` or absolute file paths)."""

    entries: tuple[str, ...]
    source: str  # human description: "--data digits, train split, first 500" or the list path
    list_path: Path | None = None
    warnings: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        """Key of the image list: the same images in the same order give the same key, however they were named."""
        return hashlib.sha256(("\n".join(self.entries) + "\n").encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.entries)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "count": len(self.entries), "list_sha256": self.sha256,
                "list_path": str(self.list_path) if self.list_path else None}


def _count_warning(count: int, what: str) -> tuple[str, ...]:
    if count < MIN_RECOMMENDED_IMAGES:
        return (f"{what}: only {count} calibration image(s), fewer than the recommended {MIN_RECOMMENDED_IMAGES}; "
                "ranges may be less representative",)
    return ()


def calibration_from_data(data_spec: str, samples: Sequence[Any], count: int | None) -> CalibrationSet:
    """The first ``count`` images of a data set's train split (never the held-out splits)."""
    if count is not None and count < 1:
        raise UserError(f"--images {count}: must be at least 1")
    if not samples:
        raise UserError(f"--data {data_spec}: the train split has no images to calibrate with")
    wanted = MIN_RECOMMENDED_IMAGES if count is None else count
    chosen = list(samples)[:wanted]
    entries = tuple(_sample_reference(data_spec, s, i) for i, s in enumerate(chosen))
    warns = list(_count_warning(len(entries), f"--data {data_spec}"))
    if len(chosen) < wanted:
        warns.insert(0, f"--data {data_spec}: the train split has {len(chosen)} images, using all of them "
                        f"(asked for {wanted})")
    return CalibrationSet(entries, f"--data {data_spec}, train split, first {len(entries)}", None, tuple(warns))


def _sample_reference(data_spec: str, sample: Any, index: int) -> str:
    if getattr(sample, "path", None) is not None:
        return str(Path(sample.path).resolve())
    if f"{data_spec}:" in MEMORY_PREFIXES:
        return f"{data_spec}:train:{index}"
    from edgeresnet.data.idx import is_idx_dir

    if is_idx_dir(Path(data_spec)):
        return f"{IDX_PREFIX}{Path(data_spec).resolve()}:train:{index}"
    raise UserError(f"--data {data_spec}: these in-memory samples cannot be referenced in a calibration set; pass "
                    "--calib-list with image files")


def _split_memory_entry(entry: str) -> tuple[str, str, str]:
    """(data set, split, index) of ``digits:train:3`` or ``idx:/data/mnist:train:3`` (a path may hold colons)."""
    if entry.startswith(IDX_PREFIX):
        name, split, index = entry[len(IDX_PREFIX):].rsplit(":", 2)
        return name, split, index
    name, split, index = entry.split(":")
    return name, split, index


def read_calibration_list(path: str | Path) -> CalibrationSet:
    """A list file (one image path or ``digits:SPLIT:INDEX`` per line, ``#`` comments) or a folder of images."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"--calib-list {p}: not found; pass a list file (see calibration/README.md) or an image folder")
    if p.is_dir():
        files = sorted(f.resolve() for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not f.name.startswith("."))
        if not files:
            raise UserError(f"--calib-list {p}: folder has no images ({', '.join(IMAGE_SUFFIXES[:4])} ...); "
                            "add calibration images or pass a list file")
        entries = tuple(str(f) for f in files)
        return CalibrationSet(entries, f"folder {p}", p, _count_warning(len(entries), f"--calib-list {p}"))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--calib-list {p}: not a readable text list ({exc.__class__.__name__})") from exc
    entries_list: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(REFERENCE_PREFIXES):
            kind = line.split(":")[0]
            try:
                _name, split, index = _split_memory_entry(line)
            except ValueError:  # not three fields
                split = index = ""
            if split not in ("train", "val", "test") or not index.isdigit():
                form = "idx:DIRECTORY:train:INDEX" if kind == "idx" else f"{kind}:train:INDEX"
                raise UserError(f"--calib-list {p}:{lineno}: {line!r} is not a {kind} reference; write {form}")
            entries_list.append(line)
            continue
        image = Path(line)
        if not image.is_absolute():
            image = (p.parent / image)
        if not image.is_file():
            raise UserError(f"--calib-list {p}:{lineno}: image {line} not found (paths are relative to the list file)")
        entries_list.append(str(image.resolve()))
    if not entries_list:
        raise UserError(f"--calib-list {p}: the list names no images; add one image path or digits:train:N per line")
    entries = tuple(entries_list)
    return CalibrationSet(entries, f"list {p}", p, _count_warning(len(entries), f"--calib-list {p}"))


def load_calibration_images(calib: CalibrationSet, preprocess: Any, digits_loader: Any = None,
                            batch_size: int = 32) -> Iterator[np.ndarray]:
    """Yield preprocessed NCHW float32 batches of the calibration images (read lazily, a batch at a time)."""
    from PIL import Image, UnidentifiedImageError

    transform = preprocess.eval_transform()
    loaded: dict[str, Any] = {}  # in-memory data set name -> its DataSplits, loaded once
    batch: list[np.ndarray] = []
    for entry in calib.entries:
        if entry.startswith(REFERENCE_PREFIXES):
            name, split, index = _split_memory_entry(entry)
            if name not in loaded:
                given = digits_loader() if digits_loader else None
                loaded[name] = given if given is not None and given.name == name \
                    else _memory_splits(name, preprocess.image_size)
            samples = loaded[name].splits[split]
            if int(index) >= len(samples):
                raise UserError(f"calibration entry {entry}: the {name} {split} split has only {len(samples)} images")
            image = samples[int(index)].image()
        else:
            try:
                with Image.open(entry) as img:
                    image = img.convert("RGB")
            except (UnidentifiedImageError, OSError) as exc:
                raise UserError(f"calibration image {entry}: not a readable image ({exc.__class__.__name__}); "
                                "remove it from the list") from exc
        batch.append(transform(image).numpy().astype(np.float32))
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _memory_splits(name: str, image_size: int) -> Any:
    from edgeresnet.data import load_data

    return load_data(name, image_size)


# -- statistics ------------------------------------------------------------------------------------
@dataclass
class TensorStats:
    """Streaming statistics of one tensor: min, max, and a histogram of |x| over [0, absmax of pass 1]."""

    lo: float = float("inf")
    hi: float = float("-inf")
    hist: np.ndarray | None = None
    hist_max: float = 0.0
    count: int = 0

    @property
    def absmax(self) -> float:
        return float(max(abs(self.lo), abs(self.hi))) if self.count else 0.0

    def update_range(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        self.count += int(x.size)

    def start_histogram(self, bins: int = HISTOGRAM_BINS) -> None:
        self.hist = np.zeros(bins, dtype=np.int64)
        self.hist_max = self.absmax

    def update_histogram(self, x: np.ndarray) -> None:
        assert self.hist is not None, "start_histogram first"
        bins = len(self.hist)
        if self.hist_max <= 0:
            self.hist[0] += x.size
            return
        idx = np.abs(x.reshape(-1), dtype=np.float32) * np.float32(bins / self.hist_max)
        idx = np.minimum(idx.astype(np.int64), bins - 1)  # pass-2 values above pass-1 max cannot exist: same data
        self.hist += np.bincount(idx, minlength=bins)

    def to_dict(self) -> dict[str, Any]:
        return {"min": self.lo, "max": self.hi, "absmax": self.absmax}


class StatsCollector:
    """Two passes over the calibration batches: ranges first, then histograms (only when the method needs them)."""

    def __init__(self, names: Sequence[str], method: str) -> None:
        self.method = check_method(method)
        self.stats: dict[str, TensorStats] = {n: TensorStats() for n in names}
        self.passes = 1 if method == "max" else 2
        self.current_pass = 1

    def begin_pass(self, number: int) -> None:
        self.current_pass = number
        if number == 2:
            for s in self.stats.values():
                s.start_histogram()

    def update(self, name: str, x: np.ndarray) -> None:
        stats = self.stats[name]
        if self.current_pass == 1:
            stats.update_range(x)
        else:
            stats.update_histogram(x)

    def amax(self, percentile: float = DEFAULT_PERCENTILE) -> dict[str, float]:
        return {n: compute_amax(s, self.method, percentile) for n, s in self.stats.items()}


def compute_amax(stats: TensorStats, method: str, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The symmetric clipping threshold of one tensor for ``method``."""
    if stats.count == 0:
        return 0.0
    if method == "max" or stats.hist is None or stats.hist_max <= 0:
        return stats.absmax
    edges = np.linspace(0.0, stats.hist_max, len(stats.hist) + 1)
    if method == "percentile":
        return percentile_amax(stats.hist, edges, percentile)
    return entropy_amax(stats.hist, edges)


def percentile_amax(hist: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    if not 0 < percentile <= 100:
        raise UserError(f"--percentile {percentile}: must be in (0, 100]")
    cdf = np.cumsum(hist, dtype=np.float64)
    if cdf[-1] <= 0:
        return float(edges[-1])
    idx = int(np.searchsorted(cdf, cdf[-1] * percentile / 100.0))
    return float(edges[min(idx + 1, len(edges) - 1)])


def entropy_amax(hist: np.ndarray, edges: np.ndarray, levels: int = ENTROPY_LEVELS, start_bin: int = 128) -> float:
    """TensorRT's EntropyCalibration2 threshold search (as NVIDIA's pytorch-quantization implements it).

    For every candidate threshold ``i`` (in bins): the reference distribution P is ``hist[:i]`` with the clipped
    tail added to its last bin; the candidate Q is ``hist[:i]`` merged into ``levels`` groups, each group's mass
    spread evenly over its non-empty bins. The threshold with the least KL(P||Q) wins (ties: the larger).
    KL is computed per group with prefix sums of ``b`` and ``b log b`` (O(candidates x levels), not x bins),
    then corrected for the last bin that carries the tail; equal to the bin-by-bin reference to float precision.
    """
    b = hist.astype(np.float64).copy()
    n = len(b)
    if n < 2 or b.sum() <= 0:
        return float(edges[-1])
    b[0] = b[1]  # the zero bin (ReLU zeros) would dominate the distribution
    total = b.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        blogb = np.where(b > 0, b * np.log(b), 0.0)
    prefix = np.concatenate([[0.0], np.cumsum(b)])
    nz_prefix = np.concatenate([[0.0], np.cumsum(b > 0)])
    blogb_prefix = np.concatenate([[0.0], np.cumsum(blogb)])
    cand = np.arange(min(start_bin, n), n + 1)
    k = np.arange(levels + 1)
    bounds = np.minimum(-(-(k[None, :] * cand[:, None]) // levels), cand[:, None])  # group k: [bounds[k], bounds[k+1])
    sums = prefix[bounds[:, 1:]] - prefix[bounds[:, :-1]]
    counts = nz_prefix[bounds[:, 1:]] - nz_prefix[bounds[:, :-1]]
    mass = prefix[cand]  # total of hist[:i] = normaliser of Q
    with np.errstate(divide="ignore", invalid="ignore"):
        avg = sums / np.maximum(counts, 1.0)
        log_q_group = np.log(avg) - np.log(mass)[:, None]  # log of Q on each non-empty bin of group g
        cross = np.where(counts > 0, sums * log_q_group, 0.0).sum(axis=1)
        div = (blogb_prefix[cand] - mass * np.log(total) - cross) / total
        last = b[cand - 1]
        tail = total - mass
        log_q_last = log_q_group[np.arange(len(cand)), np.minimum(((cand - 1) * levels) // cand, levels - 1)]
        old = np.where(last > 0, (last / total) * (np.log(last / total) - log_q_last), 0.0)
        new = np.where(last > 0, ((last + tail) / total) * (np.log((last + tail) / total) - log_q_last), np.inf)
        div = np.where(tail > 0, div - old + new, div)
    div = np.where(mass > 0, div, np.inf)
    idx = len(div) - 1 - int(np.argmin(div[::-1]))
    return float(edges[min(int(cand[idx]), len(edges) - 1)])


def ranges_from_stats(stats: dict[str, TensorStats], amax: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Asymmetric (min, max) ranges clipped to each tensor's symmetric threshold (for uint8 activations)."""
    out = {}
    for name, s in stats.items():
        a = amax[name]
        lo, hi = (max(s.lo, -a), min(s.hi, a)) if s.count else (0.0, 0.0)
        out[name] = (min(lo, 0.0), max(hi, 0.0))
    return out


# -- cache -----------------------------------------------------------------------------------------
@dataclass
class CalibrationTable:
    """The outcome of calibration: per-tensor thresholds and ranges, plus the key that says what it is valid for."""

    method: str
    percentile: float
    source_sha256: str
    list_sha256: str
    image_count: int
    amax: dict[str, float] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        return cache_key(self.source_sha256, self.list_sha256, self.method, self.percentile)

    def scale(self, name: str) -> float:
        return scale_from_amax(self.amax[name])

    def to_json(self) -> dict[str, Any]:
        return {"format": "edgeresnet-calibration", "version": 1, "key": self.key(), "image_count": self.image_count,
                "tensors": {n: {"amax": self.amax[n], "min": self.ranges[n][0], "max": self.ranges[n][1]}
                            for n in self.amax}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CalibrationTable:
        key = data["key"]
        tensors = data["tensors"]
        percentile = DEFAULT_PERCENTILE if key.get("percentile") is None else float(key["percentile"])
        return cls(key["method"], percentile, key["source_sha256"], key["list_sha256"],
                   int(data.get("image_count", 0)),
                   {n: float(v["amax"]) for n, v in tensors.items()},
                   {n: (float(v["min"]), float(v["max"])) for n, v in tensors.items()})


CALIBRATOR_VERSION = "edgeresnet-calibration/1"  # bump when the statistics or the range rules change


def cache_key(source_sha256: str, list_sha256: str, method: str, percentile: float) -> dict[str, Any]:
    return {"calibrator": CALIBRATOR_VERSION, "source_sha256": source_sha256, "list_sha256": list_sha256,
            "method": method,
            "percentile": float(percentile) if method == "percentile" else None}


def scale_from_amax(amax: float) -> float:
    """int8 scale of a symmetric threshold; a tensor that was always zero gets a harmless non-zero scale."""
    return float(amax) / 127.0 if amax > 0 else 1.0 / 127.0


def trt_version_code(version: tuple[int, int, int]) -> int:
    """``NV_TENSORRT_VERSION``: major*1000+minor*100+patch up to 8.x, major*10000+minor*100+patch from 10."""
    major, minor, patch = version
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def trt_cache_text(table: CalibrationTable, version: tuple[int, int, int] = DEFAULT_TRT_VERSION) -> str:
    """TensorRT's calibration cache: a header line, then ``tensor: <float32 scale as big-endian hex>`` lines."""
    calibrator = "MinMaxCalibration" if table.method == "max" else "EntropyCalibration2"
    lines = [f"TRT-{trt_version_code(version)}-{calibrator}"]
    for name in sorted(table.amax):
        lines.append(f"{name}: {struct.pack('>f', np.float32(table.scale(name))).hex()}")
    return "\n".join(lines) + "\n"


#: calibrator class -> the algorithm name TensorRT writes in the cache header (IInt8Calibrator.getAlgorithm:
#: kENTROPY_CALIBRATION_2 / kMINMAX_CALIBRATION; header as TensorRT 8.6/10.x write it, e.g. TRT-8601-EntropyCalibration2)
CACHE_ALGORITHMS = {"entropy2": "EntropyCalibration2", "minmax": "MinMaxCalibration"}
_HEADER_RE = re.compile(r"^TRT-(\d+)-([A-Za-z][A-Za-z0-9]*)$")
_SCALE_RE = re.compile(r"^(.+):\s*([0-9a-fA-F]{8})$")


@dataclass(frozen=True)
class TrtCache:
    """A TensorRT calibration cache as read from disk: header fields and per-tensor scales."""

    version_code: int  # NV_TENSORRT_VERSION of the TensorRT the header names
    algorithm: str  # "EntropyCalibration2", "MinMaxCalibration", ...
    scales: dict[str, float]
    lines: tuple[str, ...]  # the scale lines as written (kept verbatim when the header is rewritten)

    @property
    def header(self) -> str:
        return f"TRT-{self.version_code}-{self.algorithm}"

    def text(self, version_code: int | None = None) -> str:
        """The cache text, with the header naming ``version_code`` when given (scales unchanged)."""
        code = self.version_code if version_code is None else int(version_code)
        return "\n".join([f"TRT-{code}-{self.algorithm}", *self.lines]) + "\n"


def parse_trt_cache(text: str, where: str = "calibration cache") -> tuple[str, dict[str, float]]:
    """The header and the per-tensor scales of a TensorRT calibration cache."""
    cache = parse_trt_cache_text(text, where)
    return cache.header, cache.scales


def parse_trt_cache_text(text: str, where: str = "calibration cache") -> TrtCache:
    """A ``TRT-<digits>-<Algorithm>`` header line, then ``tensor: <8 hex digits>`` lines (big-endian float32)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    header = _HEADER_RE.match(lines[0]) if lines else None
    if header is None:
        first = repr(lines[0][:40]) if lines else "nothing"
        raise UserError(f"{where}: first line is {first}, not a TRT-<version>-<Calibrator> header; "
                        "pass a calibration cache written by edgeresnet calibrate or TensorRT")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], 2):
        match = _SCALE_RE.match(line)
        if match is None:
            raise UserError(f"{where}: line {number} {line[:60]!r} is not 'tensor: <8 hex digits>'; "
                            "the file is not a TensorRT calibration cache or is damaged, recreate it")
        scales[match.group(1).strip()] = struct.unpack(">f", bytes.fromhex(match.group(2)))[0]
    if not scales:
        raise UserError(f"{where}: the cache has a header but no tensor scales; recreate it with edgeresnet calibrate")
    return TrtCache(int(header.group(1)), header.group(2), scales, tuple(lines[1:]))


def read_trt_cache(path: str | Path, option: str = "--calib-cache") -> TrtCache:
    """Read and validate a calibration cache file; every problem is one line naming ``option`` and the file."""
    p = Path(path)
    where = f"{option} {p}"
    if not p.is_file():
        raise UserError(f"{where}: file not found; make it with edgeresnet calibrate or add --calib-data")
    raw = p.read_bytes()
    if b"\0" in raw[:4096]:
        raise UserError(f"{where}: binary file, not a TensorRT calibration cache (a text file starting TRT-<version>-); "
                        "did you pass an engine or a timing cache?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text, not a TensorRT calibration cache") from None
    return parse_trt_cache_text(text, where)


def load_cached_table(cache: Path, key: dict[str, Any]) -> CalibrationTable | None:
    """The cached table when its sidecar key matches ``key`` exactly; None otherwise (then we recalibrate)."""
    sidecar = Path(str(cache) + ".json")
    if not cache.is_file() or not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        table = CalibrationTable.from_json(data["calibration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if table.key() != key:
        return None
    header, scales = parse_trt_cache(cache.read_text(encoding="utf-8"))
    if set(scales) != set(table.amax):
        return None
    return table
