"""Per-conv latency table for latency-aware pruning: measured on the backend, cached per machine.

What a pruned width costs cannot be read off MACs (a 48-wide conv can be as slow as a 64-wide one on a
given kernel library), so it is measured: every conv the dependency analysis touches is exported alone as a
one-node ONNX graph at each candidate width and timed in ONNX Runtime through the package's runner layer
(``runners.load_runner`` and ``bench.timing.measure``), the median kept. Entries are keyed by the conv's
full shape (batch, channels in/out, kernel, stride, padding, groups, input size), so models sharing shapes
share entries and a second run re-times nothing.

A table is only valid where it was measured: the file records the CPU model, the intra-op thread count,
the backend and the onnxruntime version, and a table whose key differs from this run's is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError

BACKENDS = ("ort-cpu",)
FORMAT = "edgeresnet-latency-table/1"
CACHE_ENV = "EDGERESNET_CACHE_DIR"


@dataclass(frozen=True)
class ConvShape:
    """One conv as it runs in the model: NCHW input (batch, cin, h, w) and its kernel geometry."""

    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    hw: tuple[int, int]
    batch: int = 1

    def key(self) -> str:
        return (f"conv b{self.batch} {self.cin}->{self.cout} k{self.kernel[0]}x{self.kernel[1]} "
                f"s{self.stride[0]}x{self.stride[1]} p{self.padding[0]}x{self.padding[1]} g{self.groups} "
                f"{self.hw[0]}x{self.hw[1]}")


def cpu_model() -> str:
    """The CPU's name: x86 Linux prints 'model name' in /proc/cpuinfo; arm64 Linux (Jetson) prints no name there,
    only 'CPU implementer'/'CPU part' ids (Linux arch/arm64/kernel/cpuinfo.c), so those ids plus the board's
    device-tree model (/proc/device-tree/model) name it; elsewhere what ``platform`` reports."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name, sep, value = line.partition(":")
                if sep and name.strip().lower() not in fields:
                    fields[name.strip().lower()] = " ".join(value.split())
    except OSError:
        pass
    if fields.get("model name"):
        return fields["model name"]
    if "cpu part" in fields:
        board = ""
        try:
            with open("/proc/device-tree/model", "rb") as handle:
                board = handle.read().decode("utf-8", "replace").strip("\x00 \n")
        except OSError:
            pass
        ids = f"{platform.machine()} implementer {fields.get('cpu implementer')} part {fields['cpu part']}"
        return f"{board} ({ids})" if board else ids
    return platform.processor() or platform.machine() or "unknown"


def machine_key(backend: str, threads: int | None) -> dict[str, Any]:
    """What a measurement depends on: CPU, intra-op threads (None = ONNX Runtime's default), backend, version."""
    if backend not in BACKENDS:
        raise UserError(f"--latency-backend {backend}: only {', '.join(BACKENDS)} can be timed on this machine "
                        "(a table per backend is measured where that backend runs)")
    import onnxruntime as ort

    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "threads": threads if threads else "onnxruntime default",
            "backend": backend, "onnxruntime": ort.__version__}


def default_path(key: dict[str, Any]) -> Path:
    """``$EDGERESNET_CACHE_DIR`` (else ``$XDG_CACHE_HOME/edgeresnet``, else ``~/.cache/edgeresnet``) /
    latency/<backend>-<hash of the key>.json: one file per machine/backend/version, never mixed."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                     os.path.join(os.path.expanduser("~"), ".cache"), "edgeresnet")
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / "latency" / f"{key['backend']}-{digest}.json"


def _describe(key: dict[str, Any]) -> str:
    return (f"{key.get('backend')} onnxruntime {key.get('onnxruntime')} on {key.get('cpu')} "
            f"threads={key.get('threads')}")


@dataclass
class LatencyTable:
    """Median milliseconds per conv shape, for one machine key; ``timed`` counts entries measured by this run."""

    key: dict[str, Any]
    path: Path
    entries: dict[str, float] = field(default_factory=dict)
    timed: int = 0
    reused: int = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None, key: dict[str, Any]) -> LatencyTable:
        """The table at ``path`` (default: the per-key cache file); a missing file is an empty table, a file
        measured elsewhere or unreadable is a one-line UserError."""
        target = Path(path) if path is not None else default_path(key)
        if not target.exists():
            return cls(key, target)
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"--latency-table {target}: not a readable latency table ({exc.__class__.__name__}); "
                            "delete it to re-measure") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
            raise UserError(f"--latency-table {target}: not an edgeresnet latency table ({FORMAT}); "
                            "delete it or pass another path")
        recorded = data.get("key")
        if recorded != key:
            raise UserError(f"--latency-table {target}: measured with {_describe(recorded or {})}, this run is "
                            f"{_describe(key)}; a table is valid only where it was measured: pass another "
                            "--latency-table path (or none, for this machine's cache)")
        try:
            entries = {str(k): float(v) for k, v in data["entries"].items()}
        except (TypeError, ValueError) as exc:  # an entry that is not a number of milliseconds
            raise UserError(f"--latency-table {target}: not an edgeresnet latency table (an entry is not a number "
                            "of milliseconds); delete it or pass another path") from exc
        if any(not math.isfinite(ms) or ms <= 0 for ms in entries.values()):
            raise UserError(f"--latency-table {target}: not an edgeresnet latency table (an entry is not a positive "
                            "number of milliseconds); delete it or pass another path")
        return cls(key, target, entries)

    def save(self) -> Path:
        from edgeresnet.artifacts import write_json_atomic

        return write_json_atomic(self.path, {"format": FORMAT, "key": self.key,
                                             "entries": dict(sorted(self.entries.items()))}, "--latency-table")

    def ensure(self, shapes: Iterable[ConvShape], *, threads: int | None, duration_s: float,
               say: Callable[[str], None] | None = None) -> None:
        """Time every shape not yet in the table (each alone), then save the table once."""
        missing = []
        for shape in shapes:
            if shape.key() in self.entries:
                self.reused += 1
            elif shape not in missing:
                missing.append(shape)
        if not missing:
            return
        if say is not None:
            say(f"latency table: timing {len(missing)} conv shapes in ONNX Runtime ({duration_s:g} s each), "
                f"{len(self.entries)} cached in {self.path}")
        with tempfile.TemporaryDirectory(prefix="edgeresnet-convs-") as tmp:
            for i, shape in enumerate(missing):
                self.entries[shape.key()] = time_conv(shape, Path(tmp) / f"conv{i}.onnx", threads=threads,
                                                      duration_s=duration_s)
                self.timed += 1
        self.save()

    def ms(self, shape: ConvShape) -> float:
        return self.entries[shape.key()]


def conv_onnx(shape: ConvShape, seed: int = 0) -> Any:
    """A one-node ONNX graph: input [batch, cin, h, w] -> Conv (random weights, no bias) -> output."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((shape.cout, shape.cin // shape.groups, *shape.kernel)).astype(np.float32) * 0.05
    # ONNX Conv (onnx/docs/Operators.md#Conv): pads = [x1_begin, x2_begin, x1_end, x2_end]; torch pads symmetrically
    node = helper.make_node("Conv", ["input", "weight"], ["output"], kernel_shape=list(shape.kernel),
                            strides=list(shape.stride), pads=[shape.padding[0], shape.padding[1]] * 2,
                            group=shape.groups)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [shape.batch, shape.cin, *shape.hw])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "weight")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeresnet")


def time_conv(shape: ConvShape, path: Path, *, threads: int | None, duration_s: float) -> float:
    """Median host latency (ms) of one conv alone in ONNX Runtime CPU."""
    import numpy as np
    import onnx

    from edgeresnet.bench.timing import TimingConfig, measure
    from edgeresnet.runners import load_runner

    onnx.save(conv_onnx(shape), str(path))
    images = np.random.default_rng(0).standard_normal((shape.batch, shape.cin, *shape.hw)).astype(np.float32)
    config = TimingConfig(warmup_ms=min(20.0, duration_s * 200), warmup_iterations=2, min_iterations=5,
                          duration_s=duration_s)
    with load_runner(path, "ort", threads=threads, providers=["CPUExecutionProvider"]) as runner:
        latencies = sorted(measure(runner.benchmark_step(images), config).latency_ms)
    return float(np.median(latencies))
