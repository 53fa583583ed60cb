"""A recording fake of the ``tensorrt`` module, limited to the names a real release has.

``FakeTrt("10.3")`` reads ``edgeresnet/trt/api/trt-10.3.json`` (extracted from the real bindings by
``tools/extract_trt_api.py``): every class, enum member, method and property outside that list raises
AttributeError, as the real module does, and enum members carry the real integer values (11.x moved
STRONGLY_TYPED from bit 1 to bit 0). Every call the code under test makes is appended to ``.calls``
as a readable line (``"IBuilderConfig.set_flag(BuilderFlag.FP16)"``), so tests compare exact sequences.

Behaviour is scripted: ``parser_errors`` (list of dicts) makes ``parse_from_file`` fail; ``build_result``
(bytes or None) is what ``build_serialized_network`` returns; ``engine`` / ``deserialize_messages`` decide
what ``deserialize_cuda_engine`` does; ``builder_fails`` makes ``Builder(logger)`` raise the nullptr
TypeError of a machine without a CUDA driver (``runtime_fails`` the same for ``Runtime``). ``FakeMemory`` stands in for device memory so the runtime
can run end to end: the fake execution context computes ``logits = mean_hw(x) @ weights``.

The builder is as unkind as the real one where our code depends on it:

* an INT8 build with ``config.int8_calibrator`` drives the calibrator through the callbacks the real
  pybind11 trampoline (``python/src/infer/pyInt8.cpp``, TensorRT 8.5+) wraps in ``try/catch``: an exception
  raised in ``get_batch`` (or any other callback) is printed to stderr and read as "no more batches" /
  "no cache"; a cache whose ``TRT-<version>-<Algorithm>`` header is not this release's and this
  calibrator's is skipped ("trt will skip the file if it is incompatible",
  https://github.com/NVIDIA/TensorRT/issues/1378), and calibrating on zero batches fails the build with
  TensorRT's "no scaling factors" error;
* ``set_timing_cache`` returns False for a cache written by another release ("A failure will be reported if
  the CUDA device property in the provided cache is different", pyCoreDoc.h), ``get_timing_cache`` returns
  None when none is set, and ``create_timing_cache`` of bytes that are not a timing cache logs warnings and
  returns an *empty* cache (both as the real TensorRT-RTX 1.7.1 builder does on this machine);
* a plan built with ``VERSION_COMPATIBLE`` deserializes only when ``runtime.engine_host_code_allowed`` is
  True (NvInferRuntime.h ``setEngineHostCodeAllowed``: "Set whether the runtime is allowed to deserialize
  engines with host executable code", default false).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

API_DIR = Path(__file__).resolve().parents[1] / "edgeresnet" / "trt" / "api"


def api_names() -> list[str]:
    """The committed list names, e.g. ["10.0", "10.13", ..., "rtx-1.7"]."""
    return sorted(p.stem[len("trt-"):] for p in API_DIR.glob("trt-*.json"))


def load_api(name: str) -> dict[str, Any]:
    return json.loads((API_DIR / f"trt-{name}.json").read_text(encoding="utf-8"))


TIMING_CACHE_MAGIC = b"\x00\x01fake-timing-cache "  # stand-in for the real binary header (magic + version)
NO_SCALING_FACTORS = ("4: [standardEngineBuilder.cpp::initCalibrationParams::1460] Error Code 4: Internal Error "
                      "(Calibration failure occurred with no scaling factors detected. This could be due to no int8 "
                      "calibrator or insufficient custom scales for network layers. Please see int8 sample to setup "
                      "calibration correctly.)")


def fake_timing_cache(version: str, payload: bytes = b"") -> bytes:
    """What ``ITimingCache.serialize()`` of the fake release ``version`` (its ``__version__``) returns."""
    return TIMING_CACHE_MAGIC + version.encode() + b"\n" + payload


def version_code(version: str) -> int:
    """``NV_TENSORRT_VERSION`` as NvInferVersion.h defines it: major*1000+minor*100+patch up to 8.x,
    major*10000+minor*100+patch from 10.0 (e.g. 8601 for 8.6.1, 100300 for 10.3.0)."""
    parts = [int(p) for p in version.split("post")[0].split(".")[:3] if p.isdigit()] + [0, 0, 0]
    major, minor, patch = parts[:3]
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def _trampoline(what: str, fn: Any, fallback: Any, *args: Any) -> Any:
    """pyInt8.cpp: ``catch (std::exception const& e) { std::cerr << "[ERROR] Exception caught in get_batch(): "
    << e.what() ...}`` then the neutral value; pybind11 turns every Python exception into error_already_set."""
    try:
        return fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the real trampoline catches everything
        print(f"[ERROR] Exception caught in {what}(): {exc}", file=sys.stderr)
        return fallback


def _fmt(value: Any) -> str:
    if isinstance(value, FakeEnumMember):
        return repr(value)
    if isinstance(value, FakeObject):
        return value._label
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_fmt(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if hasattr(value, "messages") and hasattr(value, "log"):
        return "logger"
    if type(value).__name__ == "Calibrator":
        return f"calibrator<{type(value).__mro__[1].__name__}>"
    return repr(value)


class FakeEnumMember:
    def __init__(self, enum: str, name: str, value: int) -> None:
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeEnumMember) and (self.enum, self.name) == (other.enum, other.name)

    def __hash__(self) -> int:
        return hash((self.enum, self.name))

    def __repr__(self) -> str:
        return f"{self.enum.rsplit('.', 1)[-1]}.{self.name}"


class FakeEnum:
    def __init__(self, name: str, values: dict[str, int]) -> None:
        self._name = name
        self.__members__ = {m: FakeEnumMember(name, m, v) for m, v in values.items()}

    def __getattr__(self, member: str) -> FakeEnumMember:
        members = self.__dict__.get("__members__", {})
        if member in members:
            return members[member]
        raise AttributeError(f"type object '{self._name}' has no attribute '{member}'")


class FakeObject:
    """An instance of a TensorRT class: only the attributes the real class has, every use recorded."""

    _own = ("_trt", "_cls", "_label", "_state")

    def __init__(self, trt: FakeTrt, cls: str, label: str | None = None, **state: Any) -> None:
        object.__setattr__(self, "_trt", trt)
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_label", label or cls)
        object.__setattr__(self, "_state", dict(state))

    def _allowed(self, name: str) -> bool:
        return name in self._trt._api["classes"].get(self._cls, [])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or not self._allowed(name):
            raise AttributeError(f"'tensorrt.{self._cls}' object has no attribute '{name}'")
        state = self._state
        if name in state:  # a property (value) or a scripted method (callable)
            value = state[name]
            if callable(value) and not isinstance(value, FakeObject):
                def method(*args: Any) -> Any:
                    self._trt._record(f"{self._cls}.{name}({', '.join(_fmt(a) for a in args)})")
                    return value(*args)

                return method
            return value

        def recorder(*args: Any) -> Any:
            self._trt._record(f"{self._cls}.{name}({', '.join(_fmt(a) for a in args)})")
            return None

        return recorder

    def __setattr__(self, name: str, value: Any) -> None:
        if not self._allowed(name):
            raise AttributeError(f"'tensorrt.{self._cls}' object has no attribute '{name}'")
        self._trt._record(f"{self._cls}.{name} = {_fmt(value)}")
        self._state[name] = value


class FakeMemory:
    """Device memory on the host, behind the DeviceBackend interface of edgeresnet.trt.cuda_mem."""

    name = "fake"

    def __init__(self) -> None:
        self.buffers: dict[int, bytearray] = {}
        self.next_ptr = 0x1000
        self.log: list[str] = []
        self.streams = 0

    def alloc(self, nbytes: int) -> int:
        ptr = self.next_ptr
        self.next_ptr += max(int(nbytes), 1) + 0x100
        self.buffers[ptr] = bytearray(max(int(nbytes), 1))
        self.log.append(f"alloc({nbytes})")
        return ptr

    def free(self, ptr: int) -> None:
        del self.buffers[ptr]
        self.log.append("free")

    def device_count(self) -> tuple[int, str]:
        return 1, "1 CUDA device(s) (fake)"

    def use_device(self, device: int) -> None:
        self.log.append(f"use_device({device})")

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Stands in for pinned memory: a host array this fake remembers until ``host_free``."""
        array = np.empty(shape, dtype=dtype)
        self.pinned = getattr(self, "pinned", {})
        self.pinned[id(array)] = array
        self.log.append(f"host_alloc({array.nbytes})")
        return array

    def host_free(self, array: Any) -> None:
        del self.pinned[id(array)]
        self.log.append("host_free")

    def is_pinned(self, array: Any) -> bool:
        return id(array) in getattr(self, "pinned", {})

    def h2d_async(self, dst: int, host: Any, stream: int) -> None:
        assert stream != 0, "work must not go to the default stream"
        data = np.ascontiguousarray(host).tobytes()
        self.buffers[dst][: len(data)] = data
        self.log.append(f"h2d({len(data)})")

    def d2h_async(self, host: Any, src: int, stream: int) -> None:
        assert stream != 0
        host.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(self.buffers[src][: host.nbytes]), dtype=np.uint8)
        self.log.append(f"d2h({host.nbytes})")

    def stream_create(self) -> int:
        self.streams += 1
        self.log.append("stream_create")
        return 0xABC0 + self.streams

    def stream_sync(self, stream: int) -> None:
        self.log.append("sync")

    def stream_destroy(self, stream: int) -> None:
        self.log.append("stream_destroy")

    def event_create(self) -> int:
        self.events = getattr(self, "events", {})
        handle = 0xE000 + len(self.events) + 1
        self.events[handle] = None
        return handle

    def event_record(self, event: int, stream: int) -> None:
        assert stream != 0 and event in self.events, "events go on the session's stream"
        self.clock = getattr(self, "clock", 0) + 1  # a fake device clock: 1 ms per recorded event
        self.events[event] = float(self.clock)
        self.log.append(f"record({event:#x})")

    def event_elapsed_ms(self, start: int, end: int) -> float:
        return self.events[end] - self.events[start]

    def event_destroy(self, event: int) -> None:
        del self.events[event]
        self.log.append("event_destroy")

    def gpu_info(self, device: int = 0) -> Any:
        from edgeresnet.trt.cuda_mem import GpuInfo

        return GpuInfo(name="NVIDIA Fake GPU", compute_capability=(8, 7), total_memory=1 << 30)


class FakeEngineSpec:
    """What the fake engine computes: input (N,C,H,W) float32 -> logits = mean over H,W @ weights (C,K)."""

    def __init__(self, channels: int = 3, size: int = 8, classes: int = 4, profile: tuple[int, int, int] = (1, 4, 8),
                 seed: int = 0, static_batch: int | None = None, io_dtype: str = "FLOAT") -> None:
        """``static_batch`` N: the input is (N, C, H, W), not -1 (a profile is then N..N); ``io_dtype`` the
        DataType member of both I/O tensors (e.g. "BF16", "FP8")."""
        self.channels, self.size, self.classes, self.profile = channels, size, classes, profile
        self.static_batch, self.io_dtype = static_batch, io_dtype
        if static_batch is not None:
            self.profile = (static_batch, static_batch, static_batch)
        self.weights = np.random.default_rng(seed).normal(size=(channels, classes)).astype(np.float32)

    def numpy_dtype(self) -> Any:
        if self.io_dtype == "BF16":
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype({"FLOAT": np.float32, "HALF": np.float16}[self.io_dtype])

    def reference(self, images: np.ndarray) -> np.ndarray:
        return images.mean(axis=(2, 3)) @ self.weights


class FakeTrt(types.ModuleType):
    """The fake module. Attribute access follows the real release's name list."""

    def __init__(self, api: str = "10.3", *, parser_errors: list[dict[str, Any]] | None = None,
                 empty_network: bool = False, build_result: bytes | None = b"ftrt-fake-plan",
                 builder_fails: bool = False, runtime_fails: bool = False, engine: FakeEngineSpec | None = None,
                 deserialize_messages: list[tuple[str, str]] | None = None, memory: FakeMemory | None = None,
                 build_messages: list[tuple[str, str]] | None = None) -> None:
        data = load_api(api)
        rtx = api.startswith("rtx-")
        super().__init__("tensorrt_rtx" if rtx else "tensorrt")
        self.__version__ = data["version"]
        self._api = data
        self.calls: list[str] = []
        self.options = {
            "parser_errors": parser_errors or [], "empty_network": empty_network, "build_result": build_result,
            "builder_fails": builder_fails, "runtime_fails": runtime_fails, "engine": engine, "deserialize_messages": deserialize_messages or [],
            "memory": memory, "build_messages": build_messages or [],
        }
        self._enums = {name: FakeEnum(name, values) for name, values in data["enum_values"].items()}
        self._classes = self._make_classes()
        self._version_compatible_plans: set[bytes] = set()
        self.calibration_batches = 0  # batches the last calibration consumed

    # -- recording ------------------------------------------------------------------------------
    def _record(self, line: str) -> None:
        self.calls.append(line)

    def _has_class(self, name: str) -> bool:
        return name in self._api["classes"] or name in self._api["enums"]

    # -- module attributes ----------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        classes = self.__dict__.get("_classes", {})
        enums = self.__dict__.get("_enums", {})
        if name in enums:
            return enums[name]
        if name in classes:
            return classes[name]
        if name in self._api["functions"]:
            return getattr(self, "_fn_" + name, self._recording_function(name))
        raise AttributeError(f"module 'tensorrt' has no attribute '{name}'")

    def _recording_function(self, name: str) -> Any:
        def function(*args: Any) -> Any:
            self._record(f"trt.{name}({', '.join(_fmt(a) for a in args)})")

        return function

    def _fn_nptype(self, dtype: Any) -> Any:
        # The real mapping and error (TensorRT 10.3 python/packaging/bindings_wheel/tensorrt/__init__.py): BF16,
        # FP8, INT4 and the other types without a numpy equivalent raise TypeError.
        mapping = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
                   "INT64": np.int64, "UINT8": np.uint8}
        if dtype.name in mapping:
            return mapping[dtype.name]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    def _make_classes(self) -> dict[str, Any]:
        trt = self
        classes: dict[str, Any] = {}

        def factory(cls: str, build: Any) -> Any:
            def construct(*args: Any) -> Any:
                trt._record(f"trt.{cls}({', '.join(_fmt(a) for a in args)})")
                return build(*args)

            construct.__name__ = cls
            return construct

        if self._has_class("ILogger"):
            severity = self._enums["ILogger.Severity"]

            class ILogger:
                Severity = severity

                def __init__(self) -> None:
                    trt._record("trt.ILogger.__init__")

            ILogger.__name__ = "ILogger"
            classes["ILogger"] = ILogger
        for base in ("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator"):
            if self._has_class(base):
                classes[base] = type(base, (), {"__init__": (lambda b: lambda self: trt._record(f"trt.{b}.__init__"))(base)})
        classes["Builder"] = factory("Builder", self._new_builder)
        classes["OnnxParser"] = factory("OnnxParser", self._new_parser)
        classes["Runtime"] = factory("Runtime", self._new_runtime)
        for name in self._api["classes"]:
            classes.setdefault(name, type(name, (), {}))
        return classes

    # -- object factories -----------------------------------------------------------------------
    def log(self, logger: Any, severity: str, msg: str) -> None:
        logger.log(self._enums["ILogger.Severity"].__members__[severity], msg)

    def _new_builder(self, logger: Any) -> Any:
        if self.options["builder_fails"]:
            self.log(logger, "ERROR", "CUDA initialization failure with error: 35. Please check your CUDA installation")
            raise TypeError("pybind11::init(): factory function returned nullptr")
        trt = self

        def create_network(flags: int) -> Any:
            return FakeObject(trt, "INetworkDefinition", "network", num_inputs=0, num_outputs=0, flags=flags)

        def create_builder_config() -> Any:
            state: dict[str, Any] = {"profiles": 0}

            def add_optimization_profile(profile: Any) -> int:
                state["profiles"] += 1
                return state["profiles"] - 1

            flags: set[str] = set()

            def set_flag(flag: Any) -> None:
                flags.add(flag.name)

            def create_timing_cache(blob: Any) -> Any:
                data = bytes(blob)
                if data and not data.startswith(TIMING_CACHE_MAGIC):
                    # what the real TensorRT-RTX 1.7.1 builder logs and does for bytes that are no timing cache
                    # (run here on the CPU-only wheel): two warnings, then an empty cache, not None
                    trt.log(logger, "WARNING", "The timing cache will not be used!")
                    trt.log(logger, "WARNING", "Failed to deserialize timing cache. Returning an empty timing cache.")
                    data = b""
                version, _, payload = data[len(TIMING_CACHE_MAGIC):].partition(b"\n")
                written_by = version.decode() if data else trt.__version__
                return FakeObject(trt, "ITimingCache", "timing_cache", written_by=written_by,
                                  serialize=lambda: fake_timing_cache(trt.__version__, payload))

            config = FakeObject(trt, "IBuilderConfig", "config",
                                add_optimization_profile=add_optimization_profile, set_flag=set_flag,
                                create_timing_cache=create_timing_cache,
                                set_compute_capability=lambda member, index: True)
            config._state["_flags"] = flags

            def get_timing_cache() -> Any:
                return config._state.get("_timing_cache")  # None when no cache is set (pyCoreDoc.h)

            def set_timing_cache(cache: Any, ignore: bool) -> bool:
                if cache._state["written_by"] != trt.__version__ and not ignore:
                    trt.log(logger, "ERROR", "IBuilderConfig::setTimingCache: Error Code 3: API Usage Error (timing "
                                             "cache was created by another TensorRT or device; it will not be used)")
                    return False
                config._state["_timing_cache"] = cache
                return True

            config._state["get_timing_cache"] = get_timing_cache
            config._state["set_timing_cache"] = set_timing_cache
            return config

        def build_serialized_network(network: Any, config: Any) -> Any:
            for severity, msg in self.options["build_messages"]:
                self.log(logger, severity, msg)
            flags = config._state.get("_flags", set())
            calibrator = config._state.get("int8_calibrator")
            if calibrator is not None and "INT8" in flags and not self._calibrate(logger, calibrator):
                self.log(logger, "ERROR", NO_SCALING_FACTORS)
                return None
            result = self.options["build_result"]
            if result is not None and "VERSION_COMPATIBLE" in flags:
                self._version_compatible_plans.add(bytes(result))
            return None if result is None else memoryview(result)

        return FakeObject(self, "Builder", "builder", create_network=create_network,
                          create_builder_config=create_builder_config,
                          create_optimization_profile=lambda: FakeObject(self, "IOptimizationProfile", "profile"),
                          build_serialized_network=build_serialized_network)

    def _calibrate(self, logger: Any, calibrator: Any) -> bool:
        """What the builder does with an implicit-INT8 calibrator; False = no scales (the build fails)."""
        self.calibration_batches = 0
        _trampoline("get_batch_size", calibrator.get_batch_size, -1)
        raw = _trampoline("read_calibration_cache", calibrator.read_calibration_cache, None)
        if raw is not None:
            raw = _trampoline("read_calibration_cache", lambda: bytes(memoryview(raw)), None)  # py::buffer cast
        minmax = self._classes.get("IInt8MinMaxCalibrator")
        algorithm = "MinMaxCalibration" if minmax is not None and isinstance(calibrator, minmax) else "EntropyCalibration2"
        header = f"TRT-{version_code(self.__version__)}-{algorithm}"
        if raw:
            if raw.decode("utf-8", "replace").splitlines()[0].strip() == header:
                return True  # scales from the cache; no calibration
            self.log(logger, "WARNING", f"Calibration cache header does not match {header}; the cache is ignored "
                                        "and the network is calibrated")
        while self.calibration_batches < 100000:
            pointers = _trampoline("get_batch", calibrator.get_batch, None, ["input"])
            if pointers is None or len(pointers) == 0:
                break
            if _trampoline("get_batch", lambda got=pointers: [int(p) for p in got], None) is None:  # vector<size_t>
                break
            self.calibration_batches += 1
        if self.calibration_batches == 0:
            return False
        _trampoline("write_calibration_cache", calibrator.write_calibration_cache, None,
                    memoryview(f"{header}\ninput: 3c010a14\n".encode()))
        return True

    def _new_parser(self, network: Any, logger: Any) -> Any:
        trt = self
        errors = [self._parser_error(e) for e in self.options["parser_errors"]]

        def parse_from_file(path: str) -> bool:
            if errors:
                for error in self.options["parser_errors"]:
                    self.log(logger, "ERROR", error.get("desc", ""))
                return False
            if not self.options["empty_network"]:
                network._state["num_inputs"] = 1
                network._state["num_outputs"] = 1
            return True

        return FakeObject(trt, "OnnxParser", "parser", parse_from_file=parse_from_file, num_errors=len(errors),
                          get_error=lambda i: errors[i])

    def _parser_error(self, spec: dict[str, Any]) -> Any:
        code = self._enums["ErrorCode"].__members__[spec.get("code", "UNSUPPORTED_NODE")]
        return FakeObject(self, "ParserError", "parser_error", code=lambda: code, desc=lambda: spec.get("desc", ""),
                          node=lambda: spec.get("node", -1), node_name=lambda: spec.get("node_name", ""),
                          node_operator=lambda: spec.get("node_operator", ""))

    def _new_runtime(self, logger: Any) -> Any:
        if self.options["runtime_fails"]:
            self.log(logger, "ERROR", "CUDA initialization failure with error: 35. Please check your CUDA installation")
            raise TypeError("pybind11::init(): factory function returned nullptr")
        def deserialize_cuda_engine(data: Any) -> Any:
            for severity, msg in self.options["deserialize_messages"]:
                self.log(logger, severity, msg)
            if bytes(data) in self._version_compatible_plans and not runtime._state.get("engine_host_code_allowed"):
                self.log(logger, "ERROR", "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (the plan "
                                          "has an embedded lean runtime but engine host code is not allowed)")
                return None
            spec = self.options["engine"]
            return None if spec is None else self._new_engine(spec)

        runtime = FakeObject(self, "Runtime", "runtime", deserialize_cuda_engine=deserialize_cuda_engine)
        return runtime

    def _new_engine(self, spec: FakeEngineSpec) -> Any:
        modes = self._enums["TensorIOMode"].__members__
        dtype = self._enums["DataType"].__members__[spec.io_dtype]
        lo, opt, hi = spec.profile
        names = ["input", "logits"]
        first = -1 if spec.static_batch is None else spec.static_batch
        static = {"input": (first, spec.channels, spec.size, spec.size), "logits": (first, spec.classes)}

        def create_execution_context() -> Any:
            shapes = dict(static)
            addresses: dict[str, int] = {}

            def set_input_shape(name: str, shape: Any) -> bool:
                batch = tuple(shape)[0]
                if not lo <= batch <= hi:
                    return False
                shapes["input"] = tuple(shape)
                shapes["logits"] = (batch, spec.classes)
                return True

            def set_tensor_address(name: str, ptr: int) -> bool:
                addresses[name] = ptr
                return True

            def execute_async_v3(stream: int) -> bool:
                memory = self.options["memory"]
                x_shape = shapes["input"]
                io = spec.numpy_dtype()
                raw = bytes(memory.buffers[addresses["input"]][: int(np.prod(x_shape)) * io.itemsize])
                x = np.frombuffer(raw, dtype=io).reshape(x_shape).astype(np.float32)
                y = np.ascontiguousarray(spec.reference(x).astype(io)).tobytes()
                memory.buffers[addresses["logits"]][: len(y)] = y
                return True

            return FakeObject(self, "IExecutionContext", "context", set_input_shape=set_input_shape,
                              get_tensor_shape=lambda name: shapes[name], set_tensor_address=set_tensor_address,
                              execute_async_v3=execute_async_v3)

        def create_engine_inspector() -> Any:
            layers = json.dumps({"Layers": [{"Name": "fake", "LayerType": "Reduce"}], "Bindings": names})
            return FakeObject(self, "EngineInspector", "inspector", get_engine_information=lambda fmt: layers)

        return FakeObject(
            self, "ICudaEngine", "engine", num_io_tensors=2, get_tensor_name=lambda i: names[i],
            get_tensor_mode=lambda name: modes["INPUT" if name == "input" else "OUTPUT"],
            get_tensor_dtype=lambda name: dtype, get_tensor_shape=lambda name: static[name],
            get_tensor_profile_shape=lambda name, index: [(lo, spec.channels, spec.size, spec.size),
                                                          (opt, spec.channels, spec.size, spec.size),
                                                          (hi, spec.channels, spec.size, spec.size)],
            create_execution_context=create_execution_context, create_engine_inspector=create_engine_inspector,
        )
